//! The audit trail: every SQL query and export, on every surface (HTTP SQL, exports, the
//! Postgres endpoint), is one structured log line (target `shoplens::audit`: user, role,
//! surface, query fingerprint, rows, bytes, duration, outcome) when it ends, however it
//! ends, and is counted in metrics (`analytics_audited_queries` by surface, role and
//! outcome; `analytics_audited_bytes`).
//!
//! The fingerprint identifies a query's shape, not its values: literals are replaced before
//! hashing, so `... WHERE id = 1` and `... WHERE id = 2` share one fingerprint and no
//! literal (a customer's e-mail address in a filter) reaches the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use sha2::{Digest, Sha256};
use shoplens_kit::identity::Role;

use crate::metrics::AnalyticsMetrics;

/// A query's shape: its tokens with literals replaced by `?`, hashed (16 hex digits).
pub fn fingerprint(sql: &str) -> String {
    let dialect = PostgreSqlDialect {};
    let normalized = match Tokenizer::new(&dialect, sql).tokenize() {
        Ok(tokens) => tokens
            .into_iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .map(|t| match t {
                Token::Number(..)
                | Token::SingleQuotedString(_)
                | Token::DoubleQuotedByteStringLiteral(_)
                | Token::SingleQuotedByteStringLiteral(_)
                | Token::NationalStringLiteral(_)
                | Token::EscapedStringLiteral(_)
                | Token::UnicodeStringLiteral(_)
                | Token::HexStringLiteral(_)
                | Token::DollarQuotedString(_) => "?".to_owned(),
                Token::Word(w) if w.quote_style.is_none() => w.value.to_lowercase(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        // Not even tokens: the text itself (it is hashed, never logged).
        Err(_) => sql.to_owned(),
    };
    let digest = Sha256::digest(normalized.as_bytes());
    hex::encode(&digest[..8])
}

/// One audited query, from its start until it is dropped (the log line is written then).
pub struct Audit {
    surface: &'static str,
    user: String,
    role: Role,
    fingerprint: String,
    started: Instant,
    rows: Arc<AtomicU64>,
    bytes: u64,
    outcome: Option<String>,
    metrics: AnalyticsMetrics,
}

impl Audit {
    pub fn start(
        metrics: &AnalyticsMetrics,
        surface: &'static str,
        user: &str,
        role: Role,
        sql: &str,
    ) -> Audit {
        Audit {
            surface,
            user: user.to_owned(),
            role,
            fingerprint: fingerprint(sql),
            started: Instant::now(),
            rows: Arc::new(AtomicU64::new(0)),
            bytes: 0,
            outcome: None,
            metrics: metrics.clone(),
        }
    }

    /// A counter the answer's producer adds its rows to.
    pub fn rows(&self) -> Arc<AtomicU64> {
        self.rows.clone()
    }

    pub fn add(&mut self, rows: u64, bytes: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.bytes += bytes;
    }

    /// How the query ended (`ok`, or an error's code); an audit dropped without one ended
    /// because its client went away (`abandoned`).
    pub fn finish(&mut self, outcome: impl Into<String>) {
        if self.outcome.is_none() {
            self.outcome = Some(outcome.into());
        }
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        let outcome = self
            .outcome
            .take()
            .unwrap_or_else(|| "abandoned".to_owned());
        let rows = self.rows.load(Ordering::Relaxed);
        let ms = self.started.elapsed().as_millis() as u64;
        tracing::info!(
            target: "shoplens::audit",
            surface = self.surface,
            user = %self.user,
            role = %self.role,
            fingerprint = %self.fingerprint,
            rows,
            bytes = self.bytes,
            duration_ms = ms,
            outcome = %outcome,
            "query"
        );
        self.metrics
            .audited(self.surface, self.role.as_str(), &outcome, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_literals_case_and_spacing_but_not_shape() {
        let a = fingerprint("SELECT * FROM customers WHERE email = 'ann@example.com'");
        let b = fingerprint("select *   from customers where email = 'bob@example.com'");
        let c = fingerprint("SELECT * FROM customers WHERE name = 'ann@example.com'");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 16);
        assert_eq!(
            fingerprint("SELECT 1 LIMIT 10"),
            fingerprint("SELECT 2 LIMIT 20")
        );
        assert_eq!(fingerprint("'unterminated").len(), 16);
    }
}
