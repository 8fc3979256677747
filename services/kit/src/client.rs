//! Calling another service over HTTP: JSON, pooled keep-alive connections, a timeout.

use std::time::Duration;

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service did not answer in time, refused the connection or returned a 5xx.
    #[error("{service} is unavailable: {reason}")]
    Unavailable { service: String, reason: String },
    /// The service answered, but not as the contract says.
    #[error("{service} answered {status}: {body}")]
    Unexpected {
        service: String,
        status: u16,
        body: String,
    },
}

/// A client for one service at one base URL; cheap to clone (shares the connection pool).
#[derive(Clone, Debug)]
pub struct ServiceClient {
    name: String,
    base: String,
    http: reqwest::Client,
    /// Sent with every call: the services only answer other ShopLens servers.
    token: Option<crate::identity::ServiceToken>,
}

impl ServiceClient {
    pub fn new(
        name: impl Into<String>,
        base: impl Into<String>,
        timeout: Duration,
    ) -> ServiceClient {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .expect("a reqwest client with these options always builds");
        ServiceClient {
            name: name.into(),
            base: base.into().trim_end_matches('/').to_owned(),
            http,
            token: None,
        }
    }

    /// Calls carry `token` (`Authorization: Bearer`).
    pub fn with_token(mut self, token: crate::identity::ServiceToken) -> ServiceClient {
        self.token = Some(token);
        self
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => req.header(reqwest::header::AUTHORIZATION, token.header()),
            None => req,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// GETs `path` and decodes the JSON answer; `Ok(None)` for a 404.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, ClientError> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status.is_server_error() {
            return Err(ClientError::Unavailable {
                service: self.name.clone(),
                reason: format!("status {status}"),
            });
        }
        if !status.is_success() {
            return Err(ClientError::Unexpected {
                service: self.name.clone(),
                status: status.as_u16(),
                body: resp.text().await.unwrap_or_default(),
            });
        }
        resp.json()
            .await
            .map(Some)
            .map_err(|e| ClientError::Unexpected {
                service: self.name.clone(),
                status: status.as_u16(),
                body: e.to_string(),
            })
    }

    fn unavailable(&self, e: reqwest::Error) -> ClientError {
        ClientError::Unavailable {
            service: self.name.clone(),
            reason: if e.is_timeout() {
                "timed out".to_owned()
            } else {
                e.to_string()
            },
        }
    }
}
