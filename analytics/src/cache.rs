//! The result cache: answers of interactive queries, kept for as long as the read model
//! holds the same data, shared by the dashboard, HTTP SQL and the Postgres endpoint.
//!
//! A festival sale puts the same dashboard in front of many people who refresh it every few
//! seconds, while the read model changes once per applied batch. Between two batches every
//! one of those reads would compute the same answer; with the cache only the first does.
//!
//! - **Key.** The normalized statement (parsed and printed again, so spacing, comments and
//!   keyword case do not matter; identifiers and literals are kept as written), its bound parameters, whether personal data is visible (the only
//!   thing that makes two readers' answers differ) and the read model's watermark as the
//!   reader saw it *before* the query ran: the live generation, the freshness watermark and
//!   the data version, which grows with every change of the data ([`FreshnessReport`]'s
//!   `data_version`). A newer batch means a new key, so an entry is never served for data
//!   it was not computed from; old entries age out.
//! - **What is cached.** Only what gives the same answer whenever it runs on the same data:
//!   every table it reads is one of the read model's (or a CTE of the statement, so no
//!   catalog table, whose answer depends on the session), and every function it calls is
//!   immutable (no `now()`, `random()`, `current_user`). Interactive queries only; exports
//!   stream past it.
//! - **Bounds.** The cache holds at most `result_cache_mb` of Arrow data, one answer at most
//!   an eighth of that; a larger answer is served and not kept. Least recently used entries
//!   leave first.
//! - **Metrics.** `shoplens_analytics_result_cache_lookups{outcome}` (`hit`, `miss`, `uncacheable`)
//!   gives the hit rate; `shoplens_analytics_result_cache_bytes` what it holds.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::logical_expr::Volatility;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Query as SqlQuery, Visit, Visitor};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use shoplens_kit::metrics::Metrics;
use shoplens_readmodel::freshness::FreshnessReport;

use crate::AnalyticsError;
use crate::engine::{Pii, parse_read_only};
use crate::isolation::BatchStream;

/// One cached answer.
#[derive(Debug)]
pub struct Cached {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    bytes: usize,
}

impl Cached {
    /// An answer computed without the cache.
    pub fn uncached(schema: SchemaRef, batches: Vec<RecordBatch>) -> Cached {
        Cached::new(schema, batches)
    }

    fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Cached {
        let bytes = batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum::<usize>()
            + 256;
        Cached {
            schema,
            batches,
            bytes,
        }
    }

    /// The answer as a stream of its batches.
    pub fn stream(self: &Arc<Self>) -> BatchStream {
        let batches = self.batches.clone();
        Box::pin(futures::stream::iter(batches.into_iter().map(Ok)))
    }
}

/// A cacheable statement as its reader asks it. Built by [`ResultCache::query`] only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    sql: String,
    params: Option<String>,
    pii: Pii,
}

/// What identifies an answer: the query and the read model's state it was computed at.
/// Built by [`ResultCache::key_at`] only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    query: Query,
    generation: u32,
    as_of_ms: Option<i64>,
    visible_at_ms: Option<i64>,
    data_version: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    outcome: &'static str,
}

/// The result cache. Cheap to clone; a disabled cache (size 0) caches nothing.
#[derive(Clone)]
pub struct ResultCache {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    answers: moka::future::Cache<Key, Arc<Cached>>,
    max_entry: usize,
    /// Functions that always give the same result for the same arguments.
    immutable: HashSet<String>,
    /// The tables (and views) of the read model.
    tables: HashSet<String>,
    lookups: Family<LookupLabels, Counter>,
    bytes: Gauge<i64, AtomicI64>,
}

impl ResultCache {
    /// A cache of at most `mb` MiB over the functions and tables of `ctx` (the interactive
    /// session), its metrics registered with `metrics`. `mb == 0`: no cache.
    pub fn new(mb: usize, ctx: &SessionContext, metrics: &Metrics) -> ResultCache {
        if mb == 0 {
            return ResultCache { inner: None };
        }
        let capacity = mb.saturating_mul(1024 * 1024);
        let bytes: Gauge<i64, AtomicI64> = Gauge::default();
        let gauge = bytes.clone();
        let answers = moka::future::Cache::builder()
            .max_capacity(capacity as u64)
            .weigher(|_: &Key, v: &Arc<Cached>| u32::try_from(v.bytes).unwrap_or(u32::MAX))
            .eviction_listener(move |_, v: Arc<Cached>, _| {
                gauge.dec_by(v.bytes as i64);
            })
            .build();
        let state = ctx.state();
        let immutable = state
            .scalar_functions()
            .iter()
            .filter(|(_, f)| f.signature().volatility == Volatility::Immutable)
            .map(|(name, _)| name.to_ascii_lowercase())
            // Aggregates and window functions give the same answer over the same rows.
            .chain(
                state
                    .aggregate_functions()
                    .keys()
                    .map(|n| n.to_ascii_lowercase()),
            )
            .chain(
                state
                    .window_functions()
                    .keys()
                    .map(|n| n.to_ascii_lowercase()),
            )
            .filter(|name| !SESSION_DEPENDENT.contains(&name.as_str()))
            .collect();
        let tables = crate::read_model::Table::all()
            .into_iter()
            .map(|t| t.name().to_owned())
            .chain(crate::engine::view_names().map(str::to_owned))
            .collect();
        let lookups = Family::<LookupLabels, Counter>::default();
        metrics.register(
            "analytics_result_cache_lookups",
            "Result cache look-ups by outcome (hit, miss, uncacheable)",
            lookups.clone(),
        );
        metrics.register(
            "analytics_result_cache_bytes",
            "Arrow bytes of the answers the result cache holds",
            bytes.clone(),
        );
        ResultCache {
            inner: Some(Arc::new(Inner {
                answers,
                max_entry: capacity / 8,
                immutable,
                tables,
                lookups,
                bytes,
            })),
        }
    }

    /// No cache at all.
    pub fn disabled() -> ResultCache {
        ResultCache { inner: None }
    }

    /// `sql` as a cacheable query, or `None` when its answer is not cached (the cache is
    /// off, or the statement is not one [`Inner::is_cacheable`] accepts). Checked before the
    /// read model's state is read, which a query that is never cached need not pay for.
    pub fn query(&self, sql: &str, params: Option<&ParamValues>, pii: Pii) -> Option<Query> {
        let inner = self.inner.as_ref()?;
        let statement = parse_read_only(sql).ok().filter(|s| inner.is_cacheable(s));
        let Some(statement) = statement else {
            inner.count("uncacheable");
            return None;
        };
        Some(Query {
            sql: statement.to_string(),
            // A prepared statement without parameters is the plain statement.
            params: params
                .filter(|p| !matches!(p, ParamValues::List(l) if l.is_empty()))
                .map(|p| format!("{p:?}")),
            pii,
        })
    }

    /// The key of `query` as read at `seen` (`None` if `seen` has no data version).
    pub fn key_at(&self, query: Query, seen: &FreshnessReport) -> Option<Key> {
        let inner = self.inner.as_ref()?;
        let Some(data_version) = seen.data_version else {
            inner.count("uncacheable");
            return None;
        };
        Some(Key {
            query,
            generation: seen.generation,
            as_of_ms: seen.as_of_ms,
            visible_at_ms: seen.visible_at_ms,
            data_version,
        })
    }

    /// The key of `sql` as read at `seen`: [`ResultCache::query`], then
    /// [`ResultCache::key_at`].
    pub fn key(
        &self,
        sql: &str,
        params: Option<&ParamValues>,
        pii: Pii,
        seen: &FreshnessReport,
    ) -> Option<Key> {
        self.key_at(self.query(sql, params, pii)?, seen)
    }

    /// The cached answer of `key`, counting the look-up.
    pub async fn get(&self, key: &Key) -> Option<Arc<Cached>> {
        let inner = self.inner.as_ref()?;
        let found = inner.answers.get(key).await;
        inner.count(if found.is_some() { "hit" } else { "miss" });
        found
    }

    /// Keeps `batches` as the answer of `key`, unless it is too large.
    pub async fn insert(&self, key: Key, schema: SchemaRef, batches: Vec<RecordBatch>) {
        let Some(inner) = self.inner.as_ref() else {
            return;
        };
        let cached = Cached::new(schema, batches);
        if cached.bytes > inner.max_entry {
            return;
        }
        inner.bytes.inc_by(cached.bytes as i64);
        inner.answers.insert(key, Arc::new(cached)).await;
    }

    /// The answer of `key`: cached, or computed by `compute` and kept. Concurrent callers
    /// with the same key wait for one computation (a dashboard refreshed by many people
    /// after a batch computes each view once).
    pub async fn get_or_compute<F>(
        &self,
        key: Key,
        compute: F,
    ) -> Result<Arc<Cached>, AnalyticsError>
    where
        F: Future<Output = Result<(SchemaRef, Vec<RecordBatch>), AnalyticsError>>,
    {
        let Some(inner) = self.inner.as_ref() else {
            let (schema, batches) = compute.await?;
            return Ok(Arc::new(Cached::new(schema, batches)));
        };
        let computed = std::sync::atomic::AtomicBool::new(false);
        let result = inner
            .answers
            .try_get_with(key, async {
                computed.store(true, std::sync::atomic::Ordering::Relaxed);
                let (schema, batches) = compute.await?;
                Ok::<_, AnalyticsError>(Arc::new(Cached::new(schema, batches)))
            })
            .await;
        let computed = computed.load(std::sync::atomic::Ordering::Relaxed);
        inner.count(if computed { "miss" } else { "hit" });
        match result {
            Ok(cached) => {
                if computed {
                    inner.bytes.inc_by(cached.bytes as i64);
                }
                Ok(cached)
            }
            Err(e) => Err(e.as_ref().clone()),
        }
    }

    /// `stream` passed through, its batches kept as the answer of `key` when it ends without
    /// an error and stays within the size of one entry.
    pub fn tee(&self, key: Key, schema: SchemaRef, stream: BatchStream) -> BatchStream {
        let Some(inner) = self.inner.clone() else {
            return stream;
        };
        let cache = self.clone();
        let kept: Option<(Vec<RecordBatch>, usize)> = Some((Vec::new(), 0));
        let state = (stream, kept, Some(key), schema, cache, inner.max_entry);
        Box::pin(futures::stream::unfold(
            state,
            |(mut stream, mut kept, mut key, schema, cache, max)| async move {
                match stream.next().await {
                    Some(Ok(batch)) => {
                        if let Some((batches, bytes)) = kept.as_mut() {
                            *bytes += batch.get_array_memory_size();
                            batches.push(batch.clone());
                            if *bytes > max {
                                kept = None;
                            }
                        }
                        Some((Ok(batch), (stream, kept, key, schema, cache, max)))
                    }
                    Some(Err(e)) => Some((Err(e), (stream, None, None, schema, cache, max))),
                    None => {
                        if let (Some((batches, _)), Some(key)) = (kept.take(), key.take()) {
                            cache.insert(key, schema.clone(), batches).await;
                        }
                        None
                    }
                }
            },
        ))
    }
}

/// Functions DataFusion calls immutable whose answer still depends on who asks or where.
const SESSION_DEPENDENT: &[&str] = &[
    "current_user",
    "session_user",
    "user",
    "current_role",
    "current_schema",
    "current_schemas",
    "current_database",
    "current_catalog",
    "current_setting",
    "version",
    "pg_backend_pid",
    "inet_server_addr",
    "inet_server_port",
    "has_table_privilege",
    "has_schema_privilege",
    "has_database_privilege",
    "has_any_column_privilege",
    "pg_has_role",
];

impl Inner {
    fn count(&self, outcome: &'static str) {
        self.lookups.get_or_create(&LookupLabels { outcome }).inc();
    }

    /// Whether `statement` reads only the read model's tables and calls only immutable
    /// functions (see the module docs). `EXPLAIN` is never cached.
    fn is_cacheable(&self, statement: &DfStatement) -> bool {
        let DfStatement::Statement(s) = statement else {
            return false;
        };
        let mut check = Check {
            inner: self,
            ctes: HashSet::new(),
            relations: Vec::new(),
        };
        if s.visit(&mut check).is_break() {
            return false;
        }
        check
            .relations
            .iter()
            .all(|name| self.is_read_model_table(name) || check.ctes.contains(&last(name)))
    }

    fn is_read_model_table(&self, name: &ObjectName) -> bool {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| p.to_string().trim_matches('"').to_ascii_lowercase())
            .collect();
        let table = match parts.as_slice() {
            [t] => t,
            [schema, t] if schema == crate::engine::SCHEMA => t,
            [catalog, schema, t]
                if catalog == crate::engine::CATALOG && schema == crate::engine::SCHEMA =>
            {
                t
            }
            _ => return false,
        };
        self.tables.contains(table)
    }
}

fn last(name: &ObjectName) -> String {
    name.0
        .last()
        .map(|p| p.to_string().trim_matches('"').to_ascii_lowercase())
        .unwrap_or_default()
}

/// Collects the relations and CTE names of a statement; breaks at a function that is not
/// immutable.
struct Check<'a> {
    inner: &'a Inner,
    ctes: HashSet<String>,
    relations: Vec<ObjectName>,
}

impl Visitor for Check<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &SqlQuery) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_ascii_lowercase());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.relations.push(relation.clone());
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        let cacheable = match expr {
            Expr::Function(f) => self.inner.immutable.contains(&last(&f.name)),
            // `current_user` and friends without parentheses.
            Expr::Identifier(i) => {
                !SESSION_DEPENDENT.contains(&i.value.to_ascii_lowercase().as_str())
            }
            _ => true,
        };
        if cacheable {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }
}
