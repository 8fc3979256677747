//! Calls to the services: one pooled HTTP client, JSON bodies, `Idempotency-Key` on creates,
//! and a few retries of the calls that are safe to repeat.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Attempts of a call that is safe to repeat (a create with an idempotency key, a status
/// move) when the service is unreachable or answers 5xx / 429.
const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(10);

/// A failed call, with enough context to log.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{method} {url}: {source}")]
    Transport {
        method: &'static str,
        url: String,
        source: reqwest::Error,
    },
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{method} {url}: the answer is not the expected JSON: {reason}")]
    Decode {
        method: &'static str,
        url: String,
        reason: String,
    },
    /// The call succeeded but its answer contradicts what was asked.
    #[error("{what}")]
    Unexpected { what: String },
}

impl CallError {
    fn retryable(&self) -> bool {
        match self {
            CallError::Transport { source, .. } => !source.is_builder(),
            CallError::Status { status, .. } => *status >= 500 || *status == 429,
            CallError::Decode { .. } | CallError::Unexpected { .. } => false,
        }
    }
}

/// Whether a call may be repeated after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    Safe,
    Once,
}

#[derive(Clone, Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
}

impl Http {
    /// A client whose calls carry `token` (`Authorization: Bearer`; none when empty).
    pub(crate) fn new(token: &str) -> Result<Http, crate::SimError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if !token.is_empty() {
            let mut value: reqwest::header::HeaderValue = format!("Bearer {token}")
                .parse()
                .map_err(|_| crate::SimError::Token)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(crate::SimError::Client)?;
        Ok(Http { client })
    }

    /// POSTs `body` as JSON (with `key` as `Idempotency-Key` if given) and decodes a 2xx
    /// answer.
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        url: &str,
        key: Option<&str>,
        body: &impl Serialize,
        retry: Retry,
    ) -> Result<T, CallError> {
        let attempts = if retry == Retry::Safe { ATTEMPTS } else { 1 };
        let mut attempt = 1;
        loop {
            let mut req = self.client.post(url).json(body);
            if let Some(key) = key {
                req = req.header("Idempotency-Key", key);
            }
            match self.answer("POST", url, req).await {
                Err(e) if attempt < attempts && e.retryable() => {
                    tracing::debug!(error = %e, attempt, "retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        method: &'static str,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        let resp = req.send().await.map_err(|source| CallError::Transport {
            method,
            url: url.to_owned(),
            source,
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|source| CallError::Transport {
            method,
            url: url.to_owned(),
            source,
        })?;
        if !status.is_success() {
            return Err(CallError::Status {
                method,
                url: url.to_owned(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::Decode {
            method,
            url: url.to_owned(),
            reason: e.to_string(),
        })
    }
}
