//! The ClickHouse back end: DataFusion table providers over the live generation's database.
//!
//! Read-only by construction: every request is a `SELECT` this module builds from our own
//! schemas, sent over ClickHouse's HTTP interface; nothing here creates or inserts anything.
//! The SQL keeps to what works on 18.16 and current versions (`sql/README.md`).
//!
//! - **Live generation.** Every scan, and [`ReadModel::freshness`], reads the live pointer the
//!   way the ingest store does (`argMax(generation, set_at)` over `{base}_meta.live`), cached
//!   for at most [`LIVE_TTL`], so a blue/green switch shows within a second. No meta
//!   database, or no row in it yet, means no generation: empty tables, freshness `(0, none)`.
//! - **Merged aggregates.** A SummingMergeTree table holds partial-sum rows until merges
//!   catch up, so an aggregate is read as `SELECT keys, sum(..) .. GROUP BY keys HAVING
//!   sum(contributions) != 0`: one row per key, the keys of the Rust reference (as
//!   `ClickHouseSink::aggregate` reads them).
//! - **Pushdown.** Only the projected columns are selected. A filter is pushed (`Exact`) only
//!   where ClickHouse gives exactly DataFusion's answer: comparisons, BETWEEN, IN lists and
//!   IS [NOT] NULL between one column and literals of its own type, and AND/OR/NOT of those.
//!   Three-valued logic differs between ClickHouse versions (18.16: `NULL IN (..)` is 0,
//!   `NULL AND 0` is NULL), so a filter is rendered two-valued, as "DataFusion's value is
//!   TRUE" (or FALSE, under NOT) with nullable columns guarded. On an aggregate, filters on
//!   key columns go before the GROUP BY, the others after it. A LIMIT is pushed too: every
//!   filter DataFusion hands the scan is then one ClickHouse applies exactly.
//! - **Rows** come as `FORMAT JSONEachRow`, decoded batch by batch while the body streams in
//!   with Arrow's JSON decoder. ClickHouse's own forms (Int64 milliseconds, `Date` as its day
//!   number through `toInt32`, the dead letters' payload bytes through `hex`) become the
//!   exposed Arrow types after decoding, so both back ends return identical batches.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use bytes::{Buf, Bytes};
use datafusion::arrow::compute::cast;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::Decoder;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::expr::{Between, InList};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::{HeaderMap, HeaderValue};
use shoplens_readmodel::clickhouse::{freshness_sql, generation_database, live_pointer_sql};
use shoplens_readmodel::config::{ClickHouseConfig, ReadModelConfig, ReadModelKind};
use shoplens_readmodel::freshness::Freshness;

use crate::read_model::{ReadModel, ReadModelError, Table};

/// How long a read of the live pointer is reused: a blue/green switch is seen this late at
/// worst, and a dashboard refresh (a dozen scans) costs one look-up instead of a dozen.
pub const LIVE_TTL: Duration = Duration::from_secs(1);

/// A pushed filter's ClickHouse text may be at most this long: a query must stay under
/// 18.16's 256 KiB `max_query_size`. A longer filter (a huge IN list) is left to DataFusion.
const MAX_FILTER_SQL: usize = 8 * 1024;

/// ClickHouse's "database does not exist" and "table does not exist": for the live pointer,
/// that no generation was ever made live.
const UNKNOWN_DATABASE: u32 = 81;
const UNKNOWN_TABLE: u32 = 60;

/// The read model in ClickHouse, read through its HTTP interface. Cheap to clone.
#[derive(Clone)]
pub struct ClickHouseReadModel {
    inner: Arc<Inner>,
}

impl fmt::Debug for ClickHouseReadModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseReadModel")
            .field("database", &self.inner.base)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// What this reader was opened with (query workers open the same).
    config: ClickHouseConfig,
    http: reqwest::Client,
    url: String,
    base: String,
    timeout: Duration,
    /// The live generation as last read, and when.
    live: Mutex<Option<(Instant, Option<u32>)>>,
}

fn unavailable(msg: impl Into<String>) -> ReadModelError {
    ReadModelError::Unavailable(msg.into())
}

fn corrupt(msg: impl Into<String>) -> ReadModelError {
    ReadModelError::Corrupt(msg.into())
}

/// Why one request to ClickHouse failed.
#[derive(Debug)]
enum CallError {
    /// No answer: connection refused, timed out, cut.
    Unreachable(String),
    /// An error answer; `code` is ClickHouse's error code when the body names one.
    Refused { code: Option<u32>, message: String },
}

impl From<CallError> for ReadModelError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable(m) => unavailable(format!("ClickHouse unreachable: {m}")),
            CallError::Refused { message, .. } => {
                unavailable(format!("ClickHouse refused the read: {message}"))
            }
        }
    }
}

/// A reqwest error without its URL (which could carry credentials).
fn http_error(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

/// The error code of an error answer: `Code: 81, e.displayText() = ..` (18.16) or
/// `Code: 81. DB::Exception: ..` (current versions).
fn error_code(body: &str) -> Option<u32> {
    let rest = body.trim_start().strip_prefix("Code: ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl ClickHouseReadModel {
    /// A reader of the read model `config` names. Does not need ClickHouse to be up: the
    /// analytics server starts anyway and each query reports the store unavailable until it
    /// answers. Fails only on a configuration no request could use.
    pub async fn connect(config: &ClickHouseConfig) -> Result<ClickHouseReadModel, ReadModelError> {
        let base = &config.database;
        if base.is_empty() || !base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(unavailable(format!(
                "ClickHouse database base name `{base}` must be letters, digits and `_`"
            )));
        }
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| unavailable(format!("ClickHouse URL `{}`: {e}", config.url)))?;
        let mut headers = HeaderMap::new();
        // A reader: the read-only user when one is configured.
        let (user, password) = config.reader();
        let user = HeaderValue::from_str(user)
            .map_err(|_| unavailable("the ClickHouse user name is not a valid HTTP header"))?;
        let mut key = HeaderValue::from_str(password)
            .map_err(|_| unavailable("the ClickHouse password is not a valid HTTP header"))?;
        key.set_sensitive(true);
        headers.insert("X-ClickHouse-User", user);
        headers.insert("X-ClickHouse-Key", key);
        let timeout = Duration::from_millis(config.request_timeout_ms.max(1));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(timeout)
            // Between two reads of an answer, not for all of it: an export streams for hours.
            .read_timeout(timeout)
            // Below ClickHouse's keep-alive timeout (10 s on 18.16), so a pooled connection
            // is never one the server is closing.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| unavailable(format!("HTTP client: {}", http_error(e))))?;
        let model = ClickHouseReadModel {
            inner: Arc::new(Inner {
                config: config.clone(),
                http,
                url: url.to_string(),
                base: base.clone(),
                timeout,
                live: Mutex::new(None),
            }),
        };
        let mut shown = url.clone();
        let _ = shown.set_password(None);
        match model.inner.live().await {
            Ok(generation) => tracing::info!(
                url = %shown,
                database = %base,
                ?generation,
                "reading the ClickHouse read model"
            ),
            Err(e) => tracing::warn!(
                url = %shown,
                error = %e,
                "ClickHouse not readable yet; queries fail until it is"
            ),
        }
        Ok(model)
    }
}

impl Inner {
    fn database(&self, generation: u32) -> String {
        generation_database(&self.base, generation)
    }

    /// Sends one query; an error answer is read (a little of it) into the error.
    async fn send(&self, sql: String, whole_timeout: bool) -> Result<reqwest::Response, CallError> {
        let mut request = self.http.post(&self.url).body(sql);
        if whole_timeout {
            request = request.timeout(self.timeout);
        }
        let response = request
            .send()
            .await
            .map_err(|e| CallError::Unreachable(http_error(e)))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = read_some(response.bytes_stream().boxed(), 4096).await;
        let body = body.trim();
        Err(CallError::Refused {
            code: error_code(body),
            message: if body.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {body}")
            },
        })
    }

    /// The whole answer of a small query, as text.
    async fn text(&self, sql: String) -> Result<String, CallError> {
        let response = self.send(sql, true).await?;
        response
            .text()
            .await
            .map_err(|e| CallError::Unreachable(http_error(e)))
    }

    /// The live generation, read at most [`LIVE_TTL`] ago; `None` before one was made live.
    async fn live(&self) -> Result<Option<u32>, ReadModelError> {
        if let Some((at, generation)) = *self.live.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < LIVE_TTL
        {
            return Ok(generation);
        }
        let sql = format!("{} FORMAT TabSeparated", live_pointer_sql(&self.base));
        let generation = match self.text(sql).await {
            Ok(text) => {
                let fields: Vec<&str> = text.trim_end_matches('\n').split('\t').collect();
                let parsed = match fields.as_slice() {
                    [generation, count] => generation
                        .parse::<u32>()
                        .ok()
                        .zip(count.parse::<u64>().ok()),
                    _ => None,
                };
                let (generation, count) = parsed
                    .ok_or_else(|| corrupt(format!("unexpected live pointer answer `{text}`")))?;
                (count > 0).then_some(generation)
            }
            Err(CallError::Refused {
                code: Some(UNKNOWN_DATABASE | UNKNOWN_TABLE),
                ..
            }) => None,
            Err(e) => return Err(e.into()),
        };
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), generation));
        Ok(generation)
    }

    /// The freshness watermark of generation `generation`, as the sink reads it.
    async fn freshness(&self, generation: u32) -> Result<Freshness, ReadModelError> {
        let sql = format!(
            "{} FORMAT TabSeparated",
            freshness_sql(&self.database(generation))
        );
        let text = self.text(sql).await?;
        let line = text.trim_end_matches('\n');
        if line.is_empty() {
            return Ok(Freshness::default());
        }
        let parsed = match line.split('\t').collect::<Vec<_>>().as_slice() {
            [as_of, visible] => as_of.parse::<i64>().ok().zip(visible.parse::<i64>().ok()),
            _ => None,
        };
        let (as_of, visible) =
            parsed.ok_or_else(|| corrupt(format!("unexpected freshness answer `{line}`")))?;
        Ok(Freshness {
            as_of_ms: Some(as_of),
            visible_at_ms: Some(visible),
        })
    }
}

/// Up to `limit` bytes of a body, as text, whatever fails on the way.
async fn read_some(mut body: BoxStream<'static, reqwest::Result<Bytes>>, limit: usize) -> String {
    let mut out = Vec::new();
    while out.len() < limit {
        match body.next().await {
            Some(Ok(chunk)) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(limit);
    String::from_utf8_lossy(&out).into_owned()
}

#[async_trait]
impl ReadModel for ClickHouseReadModel {
    fn kind(&self) -> &'static str {
        "clickhouse"
    }

    fn config(&self) -> ReadModelConfig {
        ReadModelConfig {
            kind: ReadModelKind::Clickhouse,
            clickhouse: self.inner.config.clone(),
            ..ReadModelConfig::default()
        }
    }

    fn provider(&self, table: Table) -> Arc<dyn TableProvider> {
        Arc::new(ClickHouseTable {
            model: self.inner.clone(),
            table,
            schema: table.schema(),
        })
    }

    async fn freshness(&self) -> Result<(u32, Freshness), ReadModelError> {
        match self.inner.live().await? {
            None => Ok((0, Freshness::default())),
            Some(generation) => Ok((generation, self.inner.freshness(generation).await?)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Columns: how each exposed column is stored in ClickHouse and read back.

/// A column's ClickHouse form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `String` -> Utf8.
    Str,
    /// Bytes shown as text (the dead letters' `payload`): read as `hex(..)` and made UTF-8
    /// lossily, as the embedded store does; never filtered in ClickHouse, whose bytes may
    /// differ from that text.
    Bytes,
    Int32,
    UInt64,
    /// `Int64` milliseconds -> Timestamp(ms, UTC).
    Millis,
    /// `Date` -> Date32, read and compared as its day number (`toInt32`), which also
    /// covers literals outside `Date`'s range.
    Date,
    /// `Decimal(p, s)`: `wide` when p > 18 (`Decimal128` rather than `Decimal64`).
    Decimal {
        wide: bool,
        scale: i8,
    },
}

#[derive(Debug, Clone)]
struct Col {
    name: String,
    kind: Kind,
    nullable: bool,
    /// A key column of an aggregate (or any column of a raw table): readable before the
    /// GROUP BY. The others are sums.
    key: bool,
}

/// A table's columns in its exposed order.
#[derive(Debug, Clone)]
struct Layout {
    table: Table,
    cols: Vec<Col>,
}

impl Layout {
    fn new(table: Table) -> DfResult<Layout> {
        let schema = table.schema();
        let keys = match table {
            Table::Agg(t) => t.key_columns(),
            _ => schema.fields().len(),
        };
        let cols = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let kind = match f.data_type() {
                    DataType::Utf8 if table == Table::DeadLetters && f.name() == "payload" => {
                        Kind::Bytes
                    }
                    DataType::Utf8 => Kind::Str,
                    DataType::Int32 => Kind::Int32,
                    DataType::UInt64 => Kind::UInt64,
                    DataType::Date32 => Kind::Date,
                    DataType::Timestamp(TimeUnit::Millisecond, _) => Kind::Millis,
                    DataType::Decimal128(p, s) => Kind::Decimal {
                        wide: *p > 18,
                        scale: *s,
                    },
                    other => {
                        return Err(DataFusionError::Internal(format!(
                            "table `{}`: column `{}` has type {other}, which the ClickHouse \
                             back end does not read",
                            table.name(),
                            f.name()
                        )));
                    }
                };
                Ok(Col {
                    name: f.name().clone(),
                    kind,
                    nullable: f.is_nullable(),
                    key: i < keys,
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Layout { table, cols })
    }

    fn is_agg(&self) -> bool {
        matches!(self.table, Table::Agg(_))
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.cols.iter().position(|c| c.name == name)
    }

    /// The column as stored, in the form it is read and compared in (before any GROUP BY).
    fn base_expr(&self, i: usize) -> String {
        let c = &self.cols[i];
        match c.kind {
            Kind::Date => format!("toInt32(`{}`)", c.name),
            Kind::Bytes => format!("hex(`{}`)", c.name),
            _ => format!("`{}`", c.name),
        }
    }

    /// What the scan selects for column `i`: an aggregate's sums are summed.
    fn read_expr(&self, i: usize) -> String {
        if self.is_agg() && !self.cols[i].key {
            format!("sum(`{}`)", self.cols[i].name)
        } else {
            self.base_expr(i)
        }
    }

    /// The type the JSON decoder reads column `i` as.
    fn wire_field(&self, i: usize) -> Field {
        let c = &self.cols[i];
        let ty = match c.kind {
            Kind::Str | Kind::Bytes => DataType::Utf8,
            Kind::Int32 | Kind::Date => DataType::Int32,
            Kind::UInt64 => DataType::UInt64,
            Kind::Millis => DataType::Int64,
            Kind::Decimal { wide, scale } => {
                DataType::Decimal128(if wide { 38 } else { 18 }, scale)
            }
        };
        Field::new(alias(i), ty, c.nullable)
    }
}

/// The name column `i` goes by in the SQL we send: never one of the tables' own column
/// names, so ClickHouse never confuses an alias with a column (`sum(x) AS x`).
fn alias(i: usize) -> String {
    format!("c{i}")
}

// ---------------------------------------------------------------------------------------
// Filters: DataFusion expressions as ClickHouse SQL, where the answer is exactly the same.

/// Where a filter is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// On stored rows (a raw table, or an aggregate's keys before its GROUP BY).
    Base,
    /// On an aggregate's merged rows, by alias.
    Merged,
}

struct Translator<'a> {
    layout: &'a Layout,
    scope: Scope,
    /// The columns the filter reads.
    used: Vec<usize>,
}

/// A string as a ClickHouse string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A scaled decimal as text: `-1234` at scale 2 is `-12.34`.
fn decimal_text(value: i128, scale: i8) -> Option<String> {
    let scale = u32::try_from(scale).ok()?;
    let digits = value.unsigned_abs().to_string();
    let sign = if value < 0 { "-" } else { "" };
    if scale == 0 {
        return Some(format!("{sign}{digits}"));
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    Some(format!("{sign}{int}.{frac}"))
}

fn integer(v: &ScalarValue) -> Option<i128> {
    Some(match v {
        ScalarValue::Int8(Some(v)) => i128::from(*v),
        ScalarValue::Int16(Some(v)) => i128::from(*v),
        ScalarValue::Int32(Some(v)) => i128::from(*v),
        ScalarValue::Int64(Some(v)) => i128::from(*v),
        ScalarValue::UInt8(Some(v)) => i128::from(*v),
        ScalarValue::UInt16(Some(v)) => i128::from(*v),
        ScalarValue::UInt32(Some(v)) => i128::from(*v),
        ScalarValue::UInt64(Some(v)) => i128::from(*v),
        _ => return None,
    })
}

/// A literal compared with a column of `kind`, as ClickHouse SQL of the column's own type;
/// `None` for NULL, another type, or a value the column's type cannot hold.
fn literal(kind: Kind, e: &Expr) -> Option<String> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    match kind {
        Kind::Str => match v {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => Some(quote(s)),
            _ => None,
        },
        Kind::Bytes => None,
        Kind::Int32 => integer(v)
            .filter(|v| i32::try_from(*v).is_ok())
            .map(|v| v.to_string()),
        Kind::UInt64 => integer(v)
            .filter(|v| u64::try_from(*v).is_ok())
            .map(|v| v.to_string()),
        Kind::Millis => match v {
            ScalarValue::TimestampMillisecond(Some(ms), _) => Some(ms.to_string()),
            _ => None,
        },
        Kind::Date => match v {
            ScalarValue::Date32(Some(day)) => Some(day.to_string()),
            _ => None,
        },
        Kind::Decimal { wide, scale } => match v {
            ScalarValue::Decimal128(Some(value), _, s) if *s == scale => {
                let digits = if wide { 38 } else { 18 };
                if value.unsigned_abs() >= 10u128.pow(digits) {
                    return None;
                }
                let text = decimal_text(*value, scale)?;
                let function = if wide { "toDecimal128" } else { "toDecimal64" };
                Some(format!("{function}('{text}', {scale})"))
            }
            _ => None,
        },
    }
}

fn comparison(op: Operator) -> Option<&'static str> {
    Some(match op {
        Operator::Eq => "=",
        Operator::NotEq => "!=",
        Operator::Lt => "<",
        Operator::LtEq => "<=",
        Operator::Gt => ">",
        Operator::GtEq => ">=",
        _ => return None,
    })
}

impl Translator<'_> {
    /// A plain column this scope can filter on: its index and SQL.
    fn column(&mut self, e: &Expr) -> Option<(usize, String)> {
        let Expr::Column(c) = e else {
            return None;
        };
        let i = self.layout.index(&c.name)?;
        let col = &self.layout.cols[i];
        if col.kind == Kind::Bytes {
            return None;
        }
        let sql = match self.scope {
            Scope::Base if self.layout.is_agg() && !col.key => return None,
            Scope::Base => self.layout.base_expr(i),
            Scope::Merged => alias(i),
        };
        self.used.push(i);
        Some((i, sql))
    }

    /// ClickHouse SQL that is 1 exactly when DataFusion evaluates `e` to `want` (TRUE, or
    /// FALSE), and 0 otherwise, NULL included: so it means the same under NOT and in WHERE
    /// on every ClickHouse version. `None` if `e` is not something we push.
    fn truth(&mut self, e: &Expr, want: bool) -> Option<String> {
        match e {
            Expr::Not(inner) => self.truth(inner, !want),
            Expr::BinaryExpr(BinaryExpr { left, op, right })
                if matches!(op, Operator::And | Operator::Or) =>
            {
                let l = self.truth(left, want)?;
                let r = self.truth(right, want)?;
                // TRUE of AND (FALSE of OR) needs both sides so; the others either.
                let joiner = if (*op == Operator::And) == want {
                    "AND"
                } else {
                    "OR"
                };
                Some(format!("({l} {joiner} {r})"))
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let symbol = comparison(*op)?;
                let (i, col, lit, symbol) = if let Some((i, col)) = self.column(left) {
                    (i, col, right, symbol)
                } else {
                    let (i, col) = self.column(right)?;
                    let swapped = comparison(op.swap()?)?;
                    (i, col, left, swapped)
                };
                let lit = literal(self.layout.cols[i].kind, lit)?;
                Some(self.atom(i, &col, format!("{col} {symbol} {lit}"), want))
            }
            Expr::Between(Between {
                expr,
                negated,
                low,
                high,
            }) => {
                let (i, col) = self.column(expr)?;
                let kind = self.layout.cols[i].kind;
                let low = literal(kind, low)?;
                let high = literal(kind, high)?;
                let sql = format!("{col} >= {low} AND {col} <= {high}");
                Some(self.atom(i, &col, sql, want != *negated))
            }
            Expr::InList(InList {
                expr,
                list,
                negated,
            }) => {
                if list.is_empty() {
                    return None;
                }
                let (i, col) = self.column(expr)?;
                let kind = self.layout.cols[i].kind;
                let values = list
                    .iter()
                    .map(|v| literal(kind, v))
                    .collect::<Option<Vec<_>>>()?;
                let sql = format!("{col} IN ({})", values.join(", "));
                Some(self.atom(i, &col, sql, want != *negated))
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                let (_, col) = self.column(inner)?;
                let is_null = matches!(e, Expr::IsNull(_)) == want;
                Some(if is_null {
                    format!("isNull({col})")
                } else {
                    format!("isNotNull({col})")
                })
            }
            _ => None,
        }
    }

    /// `sql`, a predicate on column `i` that is TRUE or FALSE whenever the column is not
    /// NULL, as "is `want`": NULL columns give 0 either way, as in DataFusion where the
    /// predicate is then NULL.
    fn atom(&self, i: usize, col: &str, sql: String, want: bool) -> String {
        let sql = if want { sql } else { format!("NOT ({sql})") };
        if self.layout.cols[i].nullable {
            format!("(isNotNull({col}) AND ifNull({sql}, 0))")
        } else {
            format!("({sql})")
        }
    }
}

/// Where a pushed filter goes and what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placement {
    /// WHERE on the stored rows.
    Base(String),
    /// WHERE on an aggregate's merged rows, reading these columns.
    Merged(String, Vec<usize>),
}

/// `filter` as ClickHouse SQL for `layout`, if ClickHouse answers it exactly as DataFusion.
fn translate(layout: &Layout, filter: &Expr) -> Option<Placement> {
    let mut t = Translator {
        layout,
        scope: Scope::Base,
        used: Vec::new(),
    };
    let placement = match t.truth(filter, true) {
        Some(sql) => Placement::Base(sql),
        None if layout.is_agg() => {
            let mut t = Translator {
                layout,
                scope: Scope::Merged,
                used: Vec::new(),
            };
            let sql = t.truth(filter, true)?;
            Placement::Merged(sql, t.used)
        }
        None => return None,
    };
    let len = match &placement {
        Placement::Base(sql) | Placement::Merged(sql, _) => sql.len(),
    };
    (len <= MAX_FILTER_SQL).then_some(placement)
}

// ---------------------------------------------------------------------------------------
// Scans: the SQL of one scan, and how its answer is read.

/// One scan of one table as a ClickHouse query.
#[derive(Debug, Clone)]
struct ScanQuery {
    sql: String,
    /// The columns of the answer as decoded.
    wire: SchemaRef,
    /// The exposed columns the scan returns (`projected` of [`Table::schema`]).
    output: SchemaRef,
    /// Per output column, its ClickHouse form.
    kinds: Vec<Kind>,
    /// No column wanted (`count(*)`): the query returns the row count instead of rows.
    count_only: bool,
}

/// The ClickHouse SQL of a scan of `table` in `database`: the columns of `projection` (all
/// if `None`), only rows passing every filter of `filters` (each must be one
/// `supports_filters_pushdown` accepts as `Exact`), at most `limit` rows. Public so the
/// pushdown can be seen and tested.
pub fn scan_sql(
    table: Table,
    database: &str,
    projection: Option<&[usize]>,
    filters: &[Expr],
    limit: Option<usize>,
) -> DfResult<String> {
    Ok(build_scan(table, database, projection, filters, limit)?.sql)
}

fn build_scan(
    table: Table,
    database: &str,
    projection: Option<&[usize]>,
    filters: &[Expr],
    limit: Option<usize>,
) -> DfResult<ScanQuery> {
    let layout = Layout::new(table)?;
    let schema = table.schema();
    let projection: Vec<usize> = match projection {
        Some(p) => p.to_vec(),
        None => (0..layout.cols.len()).collect(),
    };
    if let Some(bad) = projection.iter().find(|&&i| i >= layout.cols.len()) {
        return Err(DataFusionError::Internal(format!(
            "table `{}` has no column {bad}",
            table.name()
        )));
    }
    let output = Arc::new(schema.project(&projection)?);
    let mut base_where = Vec::new();
    let mut merged_where = Vec::new();
    let mut merged_reads = Vec::new();
    for f in filters {
        match translate(&layout, f) {
            Some(Placement::Base(sql)) => base_where.push(sql),
            Some(Placement::Merged(sql, used)) => {
                merged_where.push(sql);
                merged_reads.extend(used);
            }
            None => {
                return Err(DataFusionError::Internal(format!(
                    "filter `{f}` on `{}` cannot be evaluated by ClickHouse",
                    table.name()
                )));
            }
        }
    }
    let count_only = projection.is_empty();
    let select = |columns: &[usize], expr: &dyn Fn(usize) -> String| -> String {
        if columns.is_empty() {
            // Rows without columns (for a count): any constant.
            "1 AS c".to_owned()
        } else {
            columns
                .iter()
                .map(|&i| format!("{} AS {}", expr(i), alias(i)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let conjunction = |parts: &[String]| -> String {
        if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        }
    };
    let from = format!("{database}.`{}`", table.name());
    let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    let body = if layout.is_agg() {
        let keys: Vec<String> = layout
            .cols
            .iter()
            .filter(|c| c.key)
            .map(|c| format!("`{}`", c.name))
            .collect();
        let group = format!(
            " GROUP BY {} HAVING sum(`contributions`) != 0",
            keys.join(", ")
        );
        if merged_where.is_empty() {
            format!(
                "SELECT {} FROM {from}{}{group}{limit}",
                select(&projection, &|i| layout.read_expr(i)),
                conjunction(&base_where)
            )
        } else {
            let mut inner: Vec<usize> = projection.iter().copied().chain(merged_reads).collect();
            inner.sort_unstable();
            inner.dedup();
            let outer = if projection.is_empty() {
                select(&projection, &alias)
            } else {
                // Plain aliases: `c1 AS c1` would be a cyclic alias to ClickHouse.
                projection
                    .iter()
                    .map(|&i| alias(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "SELECT {outer} FROM (SELECT {} FROM {from}{}{group}){}{limit}",
                select(&inner, &|i| layout.read_expr(i)),
                conjunction(&base_where),
                conjunction(&merged_where)
            )
        }
    } else {
        format!(
            "SELECT {} FROM {from}{}{limit}",
            select(&projection, &|i| layout.read_expr(i)),
            conjunction(&base_where)
        )
    };
    let (sql, wire) = if count_only {
        (
            format!("SELECT count() AS n FROM ({body}) FORMAT JSONEachRow"),
            Arc::new(Schema::new(vec![Field::new("n", DataType::UInt64, false)])),
        )
    } else {
        let fields: Vec<Field> = projection.iter().map(|&i| layout.wire_field(i)).collect();
        (
            format!("{body} FORMAT JSONEachRow"),
            Arc::new(Schema::new(fields)),
        )
    };
    Ok(ScanQuery {
        sql,
        wire,
        output,
        kinds: projection.iter().map(|&i| layout.cols[i].kind).collect(),
        count_only,
    })
}

impl ScanQuery {
    /// A decoded batch as the exposed columns.
    fn convert(&self, batch: RecordBatch) -> DfResult<RecordBatch> {
        if self.count_only {
            let counts = batch
                .columns()
                .first()
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .ok_or_else(|| {
                    DataFusionError::Internal("the count came back without a number".into())
                })?;
            let rows: u64 = counts.iter().flatten().sum();
            let rows = usize::try_from(rows)
                .map_err(|_| DataFusionError::Internal(format!("{rows} rows")))?;
            return Ok(RecordBatch::try_new_with_options(
                self.output.clone(),
                vec![],
                &RecordBatchOptions::new().with_row_count(Some(rows)),
            )?);
        }
        let columns = batch
            .columns()
            .iter()
            .zip(&self.kinds)
            .zip(self.output.fields())
            .map(|((column, kind), field)| match kind {
                Kind::Millis | Kind::Date => Ok(cast(column, field.data_type())?),
                Kind::Bytes => unhex(column),
                _ => Ok(column.clone()),
            })
            .collect::<DfResult<Vec<ArrayRef>>>()?;
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
    }
}

/// ClickHouse's `hex(..)` of bytes back to the bytes, as text the way the embedded store
/// keeps them (`String::from_utf8_lossy`).
fn unhex(column: &ArrayRef) -> DfResult<ArrayRef> {
    let hex = column.as_string_opt::<i32>().ok_or_else(|| {
        DataFusionError::Internal(format!("hex column is {}", column.data_type()))
    })?;
    let digit = |b: u8| -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    };
    let decoded = hex
        .iter()
        .map(|v| {
            v.map(|s| {
                let s = s.as_bytes();
                if s.len() % 2 != 0 {
                    return None;
                }
                let bytes = s
                    .chunks_exact(2)
                    .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
                    .collect::<Option<Vec<u8>>>()?;
                Some(String::from_utf8_lossy(&bytes).into_owned())
            })
            .map(|s| s.ok_or(()))
            .transpose()
        })
        .collect::<Result<StringArray, ()>>()
        .map_err(|()| {
            DataFusionError::External(Box::new(corrupt("ClickHouse sent malformed hex")))
        })?;
    Ok(Arc::new(decoded))
}

// ---------------------------------------------------------------------------------------
// The provider and its execution plan.

/// One table of the ClickHouse read model; resolves the live generation at every scan.
struct ClickHouseTable {
    model: Arc<Inner>,
    table: Table,
    schema: SchemaRef,
}

impl fmt::Debug for ClickHouseTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClickHouseTable({})", self.table.name())
    }
}

#[async_trait]
impl TableProvider for ClickHouseTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// `Exact` for what ClickHouse evaluates exactly as DataFusion would (see the module
    /// docs); the rest DataFusion applies itself.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let layout = Layout::new(self.table)?;
        Ok(filters
            .iter()
            .map(|f| match translate(&layout, f) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(generation) = self.model.live().await? else {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        };
        let query = build_scan(
            self.table,
            &self.model.database(generation),
            projection.map(Vec::as_slice),
            filters,
            limit,
        )?;
        Ok(Arc::new(ClickHouseExec::new(
            self.model.clone(),
            self.table,
            query,
        )))
    }
}

/// Streams one ClickHouse query's rows as record batches.
struct ClickHouseExec {
    model: Arc<Inner>,
    table: Table,
    query: Arc<ScanQuery>,
    properties: Arc<PlanProperties>,
}

impl ClickHouseExec {
    fn new(model: Arc<Inner>, table: Table, query: ScanQuery) -> ClickHouseExec {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(query.output.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ClickHouseExec {
            model,
            table,
            query: Arc::new(query),
            properties: Arc::new(properties),
        }
    }
}

impl fmt::Debug for ClickHouseExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseExec")
            .field("table", &self.table.name())
            .field("sql", &self.query.sql)
            .finish()
    }
}

impl DisplayAs for ClickHouseExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ClickHouseExec: table={}, sql={}",
            self.table.name(),
            self.query.sql
        )
    }
}

impl ExecutionPlan for ClickHouseExec {
    fn name(&self) -> &'static str {
        "ClickHouseExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return Err(DataFusionError::Internal(
                "ClickHouseExec has no children".into(),
            ));
        }
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "ClickHouseExec has one partition, not {partition}"
            )));
        }
        let batch_size = context.session_config().batch_size().max(1);
        let model = self.model.clone();
        let query = self.query.clone();
        // The request goes out on the first poll; each later poll decodes one batch.
        let stream = futures::stream::try_unfold(None, move |reader: Option<Reader>| {
            let model = model.clone();
            let query = query.clone();
            async move {
                let mut reader = match reader {
                    Some(r) => r,
                    None => Reader::open(&model, &query, batch_size).await?,
                };
                match reader.next_batch().await? {
                    Some(batch) => Ok(Some((query.convert(batch)?, Some(reader)))),
                    None => Ok(None),
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.query.output.clone(),
            stream,
        )))
    }
}

/// An answer being read: the body as it arrives and the JSON decoder over it.
struct Reader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buf: Bytes,
    decoder: Decoder,
    ended: bool,
}

fn external(e: ReadModelError) -> DataFusionError {
    e.into()
}

impl Reader {
    async fn open(model: &Inner, query: &ScanQuery, batch_size: usize) -> DfResult<Reader> {
        let decoder = ReaderBuilder::new(query.wire.clone())
            .with_batch_size(batch_size)
            // A field we did not ask for (a current server's `{"exception": ..}` row) is an
            // error, never a row of NULLs.
            .with_strict_mode(true)
            .build_decoder()?;
        let response = model
            .send(query.sql.clone(), false)
            .await
            .map_err(|e| external(e.into()))?;
        Ok(Reader {
            body: response.bytes_stream().boxed(),
            buf: Bytes::new(),
            decoder,
            ended: false,
        })
    }

    /// The next batch of at most the batch size rows; `None` at the end of the answer.
    async fn next_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        loop {
            if self.buf.is_empty() {
                if self.ended {
                    return Ok(self.decoder.flush()?);
                }
                match self.body.next().await {
                    Some(Ok(chunk)) => self.buf = chunk,
                    Some(Err(e)) => {
                        return Err(external(unavailable(format!(
                            "reading ClickHouse's answer: {}",
                            http_error(e)
                        ))));
                    }
                    None => {
                        self.ended = true;
                        if self.decoder.has_partial_record() {
                            return Err(external(corrupt(
                                "ClickHouse's answer ended in the middle of a row",
                            )));
                        }
                    }
                }
                continue;
            }
            let read = match self.decoder.decode(&self.buf) {
                Ok(read) => read,
                Err(e) => return Err(external(self.failed(e).await)),
            };
            self.buf.advance(read);
            if !self.buf.is_empty() {
                // A batch is full.
                return Ok(self.decoder.flush()?);
            }
        }
    }

    /// Why the answer could not be decoded: ClickHouse reports an error that happens after
    /// it began answering (memory, timeout) as text after the rows.
    async fn failed(&mut self, e: datafusion::arrow::error::ArrowError) -> ReadModelError {
        let body = std::mem::replace(&mut self.body, futures::stream::empty().boxed());
        let mut text = String::from_utf8_lossy(&self.buf[..self.buf.len().min(4096)]).into_owned();
        text.push_str(&read_some(body, 4096).await);
        self.buf = Bytes::new();
        self.ended = true;
        match text.find("Code: ").or_else(|| text.find("Exception")) {
            Some(at) => unavailable(format!(
                "ClickHouse failed while answering: {}",
                text[at..].trim()
            )),
            None => corrupt(format!("cannot read ClickHouse's answer: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};
    use shoplens_contract::tables::RawTable;
    use shoplens_readmodel::tables::AggTable;

    fn ms(v: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(
            Some(v),
            Some("UTC".into()),
        ))
    }

    fn money(cents: i128) -> Expr {
        lit(ScalarValue::Decimal128(Some(cents), 18, 2))
    }

    fn day(d: i32) -> Expr {
        lit(ScalarValue::Date32(Some(d)))
    }

    fn base(table: Table, filter: &Expr) -> Option<String> {
        match translate(&Layout::new(table).unwrap(), filter)? {
            Placement::Base(sql) => Some(sql),
            Placement::Merged(..) => panic!("{filter} should go before the GROUP BY"),
        }
    }

    const ORDERS: Table = Table::Raw(RawTable::Orders);
    const PAYMENTS: Table = Table::Raw(RawTable::Payments);

    #[test]
    fn every_table_has_a_layout() {
        for table in Table::all() {
            let layout = Layout::new(table).unwrap();
            assert_eq!(layout.cols.len(), table.schema().fields().len());
        }
        let letters = Layout::new(Table::DeadLetters).unwrap();
        let payload = letters.index("payload").unwrap();
        assert_eq!(letters.cols[payload].kind, Kind::Bytes);
        assert_eq!(letters.read_expr(payload), "hex(`payload`)");
        let daily = Layout::new(Table::Agg(AggTable::DailySales)).unwrap();
        assert_eq!(daily.read_expr(0), "toInt32(`day`)");
        assert_eq!(daily.read_expr(4), "sum(`revenue`)");
        assert_eq!(
            daily.cols[4].kind,
            Kind::Decimal {
                wide: true,
                scale: 2
            }
        );
    }

    #[test]
    fn string_literals_are_escaped() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote(r"it's a \ test"), r"'it\'s a \\ test'");
        assert_eq!(quote("a\nb\0"), r"'a\nb\0'");
        assert_eq!(quote("Zürich"), "'Zürich'");
        assert_eq!(
            base(ORDERS, &col("customer_id").eq(lit("x' OR 1=1 --"))).unwrap(),
            r"(`customer_id` = 'x\' OR 1=1 --')"
        );
    }

    #[test]
    fn decimals_keep_their_scale() {
        assert_eq!(decimal_text(1234, 2).unwrap(), "12.34");
        assert_eq!(decimal_text(-5, 2).unwrap(), "-0.05");
        assert_eq!(decimal_text(0, 2).unwrap(), "0.00");
        assert_eq!(decimal_text(7, 0).unwrap(), "7");
        assert_eq!(
            decimal_text(i128::MIN, 2).unwrap(),
            "-1701411834604692317316873037158841057.28"
        );
        assert_eq!(
            base(ORDERS, &col("total").gt_eq(money(1050))).unwrap(),
            "(`total` >= toDecimal64('10.50', 2))"
        );
        // A value Decimal(18, 2) cannot hold, or another scale: left to DataFusion.
        assert_eq!(base(ORDERS, &col("total").gt(money(10i128.pow(18)))), None);
        assert_eq!(
            base(
                ORDERS,
                &col("total").gt(lit(ScalarValue::Decimal128(Some(1), 18, 3)))
            ),
            None
        );
    }

    #[test]
    fn comparisons_in_either_order_and_ranges() {
        assert_eq!(
            base(ORDERS, &ms(1000).lt(col("occurred_at"))).unwrap(),
            "(`occurred_at` > 1000)"
        );
        assert_eq!(
            base(ORDERS, &col("line_count").between(lit(1i32), lit(3i32))).unwrap(),
            "(`line_count` >= 1 AND `line_count` <= 3)"
        );
        assert_eq!(
            base(ORDERS, &col("line_count").not_between(lit(1i32), lit(3i32))).unwrap(),
            "(NOT (`line_count` >= 1 AND `line_count` <= 3))"
        );
        assert_eq!(
            base(
                ORDERS,
                &col("order_id").in_list(vec![lit("a"), lit("b")], false)
            )
            .unwrap(),
            "(`order_id` IN ('a', 'b'))"
        );
        // An Int32 column with a literal it cannot hold.
        assert_eq!(base(ORDERS, &col("line_count").eq(lit(1i64 << 40))), None);
    }

    #[test]
    fn nullable_columns_are_guarded_so_null_never_passes() {
        // 18.16 says `NULL NOT IN (..)` is 1; DataFusion says NULL. Guarded, both drop it.
        assert_eq!(
            base(PAYMENTS, &col("method").in_list(vec![lit("card")], true)).unwrap(),
            "(isNotNull(`method`) AND ifNull(NOT (`method` IN ('card')), 0))"
        );
        // NOT of AND: FALSE of either side.
        assert_eq!(
            base(
                PAYMENTS,
                &Expr::Not(Box::new(
                    col("method")
                        .eq(lit("card"))
                        .and(col("status").eq(lit("Failed")))
                ))
            )
            .unwrap(),
            "((isNotNull(`method`) AND ifNull(NOT (`method` = 'card'), 0)) OR \
             (NOT (`status` = 'Failed')))"
        );
        assert_eq!(
            base(
                PAYMENTS,
                &col("reason").is_null().or(col("amount").gt(money(0)))
            )
            .unwrap(),
            "(isNull(`reason`) OR \
             (isNotNull(`amount`) AND ifNull(`amount` > toDecimal64('0.00', 2), 0)))"
        );
        assert_eq!(
            base(PAYMENTS, &Expr::Not(Box::new(col("reason").is_not_null()))).unwrap(),
            "isNull(`reason`)"
        );
    }

    #[test]
    fn what_clickhouse_might_answer_differently_is_not_pushed() {
        let unsupported = [
            col("order_id").like(lit("a%")),
            col("total").eq(col("total")),
            col("order_id").eq(lit(ScalarValue::Utf8(None))),
            col("order_id").in_list(vec![lit("a"), lit(ScalarValue::Utf8(None))], false),
            col("line_count").eq(lit("3")),
            col("occurred_at").gt(lit(ScalarValue::TimestampSecond(Some(1), None))),
            Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(col("line_count")),
                DataType::Int64,
            ))
            .eq(lit(3i64)),
            col("nope").eq(lit(1i32)),
            col("order_id").in_list(
                (0..2000).map(|i| lit(format!("order-{i:08}"))).collect(),
                false,
            ),
        ];
        for f in &unsupported {
            assert_eq!(base(ORDERS, f), None, "{f}");
        }
        // The payload's bytes may differ from its text.
        let letters = Layout::new(Table::DeadLetters).unwrap();
        assert_eq!(translate(&letters, &col("payload").eq(lit("x"))), None);
        assert!(translate(&letters, &col("offset").gt(lit(3u64))).is_some());
    }

    #[test]
    fn raw_scans_select_the_projection_with_filters_and_limit() {
        let sql = scan_sql(
            ORDERS,
            "shop_g2",
            Some(&[2, 6]),
            &[
                col("customer_id").eq(lit("c1")),
                col("total").gt(money(100)),
            ],
            Some(5),
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT `order_id` AS c2, `total` AS c6 FROM shop_g2.`orders` \
             WHERE (`customer_id` = 'c1') AND (`total` > toDecimal64('1.00', 2)) LIMIT 5 \
             FORMAT JSONEachRow"
        );
        let all = scan_sql(ORDERS, "d", None, &[], None).unwrap();
        assert!(
            all.starts_with("SELECT `event_id` AS c0, `occurred_at` AS c1,"),
            "{all}"
        );
        assert!(!all.contains("WHERE") && !all.contains("LIMIT"), "{all}");
        assert_eq!(
            scan_sql(ORDERS, "d", Some(&[]), &[], Some(3)).unwrap(),
            "SELECT count() AS n FROM (SELECT 1 AS c FROM d.`orders` LIMIT 3) FORMAT JSONEachRow"
        );
        assert!(scan_sql(ORDERS, "d", Some(&[99]), &[], None).is_err());
        assert!(scan_sql(ORDERS, "d", None, &[col("order_id").like(lit("x"))], None).is_err());
    }

    #[test]
    fn aggregates_are_merged_and_filtered_before_or_after_the_group_by() {
        let daily = Table::Agg(AggTable::DailySales);
        let sql = scan_sql(
            daily,
            "d",
            Some(&[0, 4]),
            &[col("day").gt_eq(day(20_000))],
            Some(10),
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT toInt32(`day`) AS c0, sum(`revenue`) AS c4 FROM d.`daily_sales` \
             WHERE (toInt32(`day`) >= 20000) GROUP BY `day` HAVING sum(`contributions`) != 0 \
             LIMIT 10 FORMAT JSONEachRow"
        );
        let products = Table::Agg(AggTable::ProductSalesDaily);
        let sql = scan_sql(
            products,
            "d",
            Some(&[1]),
            &[
                col("product_id").eq(lit("p1")),
                col("units").gt(lit(2u64)).or(col("day").eq(day(3))),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT c1 FROM (SELECT toInt32(`day`) AS c0, `product_id` AS c1, sum(`units`) AS c2 \
             FROM d.`product_sales_daily` WHERE (`product_id` = 'p1') \
             GROUP BY `day`, `product_id` HAVING sum(`contributions`) != 0) \
             WHERE ((c2 > 2) OR (c0 = 3)) FORMAT JSONEachRow"
        );
        let count = scan_sql(
            products,
            "d",
            Some(&[]),
            &[col("units").gt(lit(2u64))],
            None,
        )
        .unwrap();
        assert_eq!(
            count,
            "SELECT count() AS n FROM (SELECT 1 AS c FROM (SELECT sum(`units`) AS c2 \
             FROM d.`product_sales_daily` GROUP BY `day`, `product_id` \
             HAVING sum(`contributions`) != 0) WHERE (c2 > 2)) FORMAT JSONEachRow"
        );
    }

    #[test]
    fn decoded_rows_become_the_exposed_types() {
        let query = build_scan(Table::DeadLetters, "d", Some(&[8, 9]), &[], None).unwrap();
        let mut decoder = ReaderBuilder::new(query.wire.clone())
            .with_strict_mode(true)
            .build_decoder()
            .unwrap();
        decoder
            .decode(b"{\"c8\":\"7B6FFF\",\"c9\":\"1700000000123\"}\n{\"c8\":\"\",\"c9\":-5}\n")
            .unwrap();
        let batch = query.convert(decoder.flush().unwrap().unwrap()).unwrap();
        assert_eq!(batch.schema(), query.output);
        let payload = batch.column(0).as_string::<i32>();
        assert_eq!(payload.value(0), "{o\u{FFFD}");
        assert_eq!(payload.value(1), "");
        let at = batch
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(at.value(0), 1_700_000_000_123);
        assert_eq!(at.value(1), -5);

        let daily = build_scan(Table::Agg(AggTable::DailySales), "d", None, &[], None).unwrap();
        let mut decoder = ReaderBuilder::new(daily.wire.clone())
            .with_strict_mode(true)
            .build_decoder()
            .unwrap();
        decoder
            .decode(
                b"{\"c0\":20454,\"c1\":\"18446744073709551615\",\"c2\":0,\"c3\":3,\
                  \"c4\":12345678901234567890123.45}\n",
            )
            .unwrap();
        let batch = daily.convert(decoder.flush().unwrap().unwrap()).unwrap();
        assert_eq!(batch.schema(), Table::Agg(AggTable::DailySales).schema());
        let rendered = datafusion::arrow::util::pretty::pretty_format_batches(&[batch])
            .unwrap()
            .to_string();
        assert!(rendered.contains("2026-01-01"), "{rendered}");
        assert!(rendered.contains("18446744073709551615"), "{rendered}");
        assert!(
            rendered.contains("12345678901234567890123.45"),
            "{rendered}"
        );

        // A field nobody asked for (an exception object) is an error, not a row.
        let mut decoder = ReaderBuilder::new(daily.wire.clone())
            .with_strict_mode(true)
            .build_decoder()
            .unwrap();
        let err = decoder
            .decode(b"{\"exception\":\"Code: 241\"}\n")
            .and_then(|_| decoder.flush());
        assert!(err.is_err());
    }

    #[test]
    fn error_codes_are_read_from_old_and_new_answers() {
        assert_eq!(
            error_code("Code: 81, e.displayText() = DB::Exception: Database x doesn't exist"),
            Some(81)
        );
        assert_eq!(
            error_code("Code: 60. DB::Exception: Table x.live does not exist. (UNKNOWN_TABLE)"),
            Some(60)
        );
        assert_eq!(error_code("Bad Gateway"), None);
    }

    #[tokio::test]
    async fn bad_names_are_refused_before_any_request() {
        let config = ClickHouseConfig {
            database: "x; DROP DATABASE y".into(),
            ..ClickHouseConfig::default()
        };
        assert!(matches!(
            ClickHouseReadModel::connect(&config).await,
            Err(ReadModelError::Unavailable(_))
        ));
    }
}
