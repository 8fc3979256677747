//! Calling another service over HTTP: JSON, pooled keep-alive connections, a timeout, and
//! the service's replicas taken in turn, one that fails ejected until it answers again
//! ([`crate::balance`]). A GET that one replica refuses, breaks off or answers with a 5xx is
//! retried once on another; one that timed out is not (the caller has waited long enough).

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::balance::{Balancer, BreakerConfig, Pick, ReplicaUrls};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service did not answer in time, refused the connection, returned a 5xx, or
    /// every replica's circuit is open.
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

/// How one replica's call ended, when it did not give an answer.
enum Failure {
    /// Worth the one retry on another replica (refused, broken off, 5xx).
    Retryable(ClientError),
    Final(ClientError),
}

/// A client for one service at one or several replicas' base URLs; cheap to clone (shares
/// the connection pool and the replicas' circuit breakers).
#[derive(Clone)]
pub struct ServiceClient {
    name: String,
    replicas: Arc<Balancer>,
    http: reqwest::Client,
    /// Sent with every call: the services only answer other ShopLens servers.
    token: Option<crate::identity::ServiceToken>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("name", &self.name)
            .field("replicas", &self.replicas.states())
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A client for the service at `urls` (one URL, or its replicas'), each replica behind
    /// a circuit breaker with the default settings ([`BreakerConfig::default`]).
    pub fn new(
        name: impl Into<String>,
        urls: impl Into<ReplicaUrls>,
        timeout: Duration,
    ) -> ServiceClient {
        ServiceClient::with_breaker(name, urls, timeout, &BreakerConfig::default())
    }

    /// [`ServiceClient::new`] with other circuit breaker settings.
    pub fn with_breaker(
        name: impl Into<String>,
        urls: impl Into<ReplicaUrls>,
        timeout: Duration,
        breaker: &BreakerConfig,
    ) -> ServiceClient {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .expect("a reqwest client with these options always builds");
        let name = name.into();
        ServiceClient {
            replicas: Arc::new(Balancer::new(&name, &urls.into(), breaker)),
            name,
            http,
            token: None,
        }
    }

    /// Calls carry `token` (`Authorization: Bearer`).
    pub fn with_token(mut self, token: crate::identity::ServiceToken) -> ServiceClient {
        self.token = Some(token);
        self
    }

    /// The replicas, and the state of their circuits.
    pub fn replicas(&self) -> &Balancer {
        &self.replicas
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(token) => req.header(reqwest::header::AUTHORIZATION, token.header()),
            None => req,
        }
    }

    /// GETs `path` from the next replica and decodes the JSON answer; `Ok(None)` for a 404.
    /// A refused or broken-off call or a 5xx is retried once on another replica.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, ClientError> {
        let Some(pick) = self.replicas.pick() else {
            return Err(self.every_circuit_open());
        };
        let tried = pick.index();
        match self.get_from(pick, path).await {
            Err(Failure::Retryable(e)) => match self.replicas.pick_other(tried) {
                Some(other) => {
                    tracing::debug!(service = %self.name, error = %e, "retrying on another replica");
                    self.get_from(other, path)
                        .await
                        .map_err(Failure::into_error)
                }
                None => Err(e),
            },
            done => done.map_err(Failure::into_error),
        }
    }

    async fn get_from<T: DeserializeOwned>(
        &self,
        replica: Pick<'_>,
        path: &str,
    ) -> Result<Option<T>, Failure> {
        let url = format!("{}{path}", replica.url());
        let resp = match self.request(reqwest::Method::GET, url).send().await {
            Ok(resp) => resp,
            Err(e) => {
                replica.failure();
                let timed_out = e.is_timeout();
                let error = self.unavailable(e);
                return Err(match timed_out {
                    true => Failure::Final(error),
                    false => Failure::Retryable(error),
                });
            }
        };
        let status = resp.status();
        if status.is_server_error() {
            let reason = format!("status {status} from {}", replica.url());
            replica.failure();
            return Err(Failure::Retryable(ClientError::Unavailable {
                service: self.name.clone(),
                reason,
            }));
        }
        replica.success();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Failure::Final(ClientError::Unexpected {
                service: self.name.clone(),
                status: status.as_u16(),
                body: resp.text().await.unwrap_or_default(),
            }));
        }
        resp.json().await.map(Some).map_err(|e| {
            Failure::Final(ClientError::Unexpected {
                service: self.name.clone(),
                status: status.as_u16(),
                body: e.to_string(),
            })
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

    fn every_circuit_open(&self) -> ClientError {
        ClientError::Unavailable {
            service: self.name.clone(),
            reason: "circuit open (recent calls failed); not called".to_owned(),
        }
    }
}

impl Failure {
    fn into_error(self) -> ClientError {
        match self {
            Failure::Retryable(e) | Failure::Final(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The client against real HTTP servers on port 0: replicas that answer, count their
    //! calls, and stop and come back on the same port.

    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::balance::CircuitState;

    /// A replica: answers `GET /thing` with its name, counting the calls.
    struct Replica {
        addr: SocketAddr,
        calls: Arc<AtomicUsize>,
        stop: CancellationToken,
        server: tokio::task::JoinHandle<()>,
    }

    impl Replica {
        async fn start(at: SocketAddr) -> Replica {
            let listener = bind(at).await;
            let addr = listener.local_addr().unwrap();
            let calls = Arc::new(AtomicUsize::new(0));
            let counted = calls.clone();
            let app = axum::Router::new().route(
                "/thing",
                axum::routing::get(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async move { axum::Json(serde_json::json!({"from": addr.port()})) }
                }),
            );
            let stop = CancellationToken::new();
            let token = stop.clone();
            let server = tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await
                    .unwrap();
            });
            Replica {
                addr,
                calls,
                stop,
                server,
            }
        }

        fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        /// Stops it; its port refuses connections until a replica starts on it again.
        async fn stop(self) -> SocketAddr {
            self.stop.cancel();
            self.server.await.unwrap();
            self.addr
        }
    }

    /// Binds `at`, waiting for the port a stopped server left to be free again.
    async fn bind(at: SocketAddr) -> tokio::net::TcpListener {
        for _ in 0..100 {
            if let Ok(l) = tokio::net::TcpListener::bind(at).await {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{at} stays taken");
    }

    fn any_port() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// A port nobody listens on.
    async fn closed_port() -> String {
        let l = tokio::net::TcpListener::bind(any_port()).await.unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }

    fn client(urls: Vec<String>, open_ms: u64) -> ServiceClient {
        ServiceClient::with_breaker(
            "thing service",
            urls,
            Duration::from_secs(5),
            &BreakerConfig {
                enabled: true,
                failure_threshold: 2,
                open_ms,
            },
        )
    }

    async fn get(c: &ServiceClient) -> u16 {
        let v: serde_json::Value = c.get_json("/thing").await.unwrap().unwrap();
        v["from"].as_u64().unwrap() as u16
    }

    #[tokio::test]
    async fn calls_are_spread_over_the_replicas() {
        let (a, b) = (
            Replica::start(any_port()).await,
            Replica::start(any_port()).await,
        );
        let c = client(vec![a.url(), b.url()], 60_000);
        let mut from = Vec::new();
        for _ in 0..10 {
            from.push(get(&c).await);
        }
        assert_eq!((a.calls(), b.calls()), (5, 5), "{from:?}");
        assert_ne!(from[0], from[1], "taken in turn");
    }

    #[tokio::test]
    async fn a_dead_replica_is_ejected_and_calls_keep_succeeding() {
        let a = Replica::start(any_port()).await;
        let dead = closed_port().await;
        let c = client(vec![dead.clone(), a.url()], 60_000);
        for _ in 0..10 {
            assert_eq!(get(&c).await, a.addr.port());
        }
        assert_eq!(a.calls(), 10);
        let states = c.replicas().states();
        assert_eq!(states[0], (dead.as_str(), CircuitState::Open), "ejected");
        assert_eq!(states[1].1, CircuitState::Closed);
        assert_eq!(c.replicas().state(), CircuitState::Closed);

        // With every replica gone: the caller's error, at once once all circuits are open.
        a.stop().await;
        for _ in 0..3 {
            let err = c.get_json::<serde_json::Value>("/thing").await.unwrap_err();
            assert!(matches!(err, ClientError::Unavailable { .. }), "{err}");
        }
        assert_eq!(c.replicas().state(), CircuitState::Open);
        let err = c.get_json::<serde_json::Value>("/thing").await.unwrap_err();
        assert!(err.to_string().contains("circuit open"), "{err}");
    }

    #[tokio::test]
    async fn a_replica_that_comes_back_gets_calls_again() {
        let (a, b) = (
            Replica::start(any_port()).await,
            Replica::start(any_port()).await,
        );
        let c = client(vec![a.url(), b.url()], 200);
        let at = b.stop().await;
        for _ in 0..6 {
            assert_eq!(get(&c).await, a.addr.port());
        }
        assert_eq!(c.replicas().states()[1].1, CircuitState::Open);

        let b = Replica::start(at).await;
        tokio::time::sleep(Duration::from_millis(250)).await; // past the open interval
        for _ in 0..6 {
            get(&c).await;
        }
        assert_eq!(c.replicas().states()[1].1, CircuitState::Closed);
        assert!(b.calls() >= 2, "back in the turn: {} calls", b.calls());
    }

    #[tokio::test]
    async fn a_5xx_is_retried_once_on_another_replica() {
        let a = Replica::start(any_port()).await;
        let failing = tokio::net::TcpListener::bind(any_port()).await.unwrap();
        let failing_url = format!("http://{}", failing.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { axum::http::StatusCode::SERVICE_UNAVAILABLE }
        });
        tokio::spawn(async move { axum::serve(failing, app).await.unwrap() });
        let c = client(vec![failing_url, a.url()], 60_000);
        for _ in 0..4 {
            assert_eq!(get(&c).await, a.addr.port());
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2, "ejected after two 5xx");
        assert_eq!(a.calls(), 4);
    }
}
