//! The HTTP client of the ClickHouse reader: one query per request (the whole answer within
//! the timeout for small ones, streamed for scans), and ClickHouse's answers as errors:
//! unreachable, or refused with ClickHouse's error code.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use shoplens_readmodel::clickhouse::generation_database;
use shoplens_readmodel::config::ClickHouseConfig;

use crate::read_model::ReadModelError;

pub(super) struct Inner {
    /// What this reader was opened with (query workers open the same).
    pub(super) config: ClickHouseConfig,
    pub(super) http: reqwest::Client,
    pub(super) url: String,
    pub(super) base: String,
    pub(super) timeout: Duration,
    /// The live generation as last read, and when.
    pub(super) live: Mutex<Option<(Instant, Option<u32>)>>,
}

pub(super) fn unavailable(msg: impl Into<String>) -> ReadModelError {
    ReadModelError::Unavailable(msg.into())
}

pub(super) fn corrupt(msg: impl Into<String>) -> ReadModelError {
    ReadModelError::Corrupt(msg.into())
}

/// Why one request to ClickHouse failed.
#[derive(Debug)]
pub(super) enum CallError {
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
pub(super) fn http_error(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

/// The error code of an error answer: `Code: 81, e.displayText() = ..` (18.16) or
/// `Code: 81. DB::Exception: ..` (current versions).
fn error_code(body: &str) -> Option<u32> {
    let rest = body.trim_start().strip_prefix("Code: ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Inner {
    pub(super) fn database(&self, generation: u32) -> String {
        generation_database(&self.base, generation)
    }

    /// Sends one query; an error answer is read (a little of it) into the error.
    pub(super) async fn send(
        &self,
        sql: String,
        whole_timeout: bool,
    ) -> Result<reqwest::Response, CallError> {
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
    pub(super) async fn text(&self, sql: String) -> Result<String, CallError> {
        let response = self.send(sql, true).await?;
        response
            .text()
            .await
            .map_err(|e| CallError::Unreachable(http_error(e)))
    }
}

/// Up to `limit` bytes of a body, as text, whatever fails on the way.
pub(super) async fn read_some(
    mut body: BoxStream<'static, reqwest::Result<Bytes>>,
    limit: usize,
) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
