//! Calling the domain services: one pooled keep-alive HTTP client, a timeout per attempt
//! that never outlives the request's deadline, a service's replicas taken in turn, each
//! behind its own circuit breaker, retries of these idempotent GETs within a budget (on
//! another replica when there is one), a metric and a tracing span per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use shoplens_contract::Service;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::ComposerConfig;
use crate::metrics::{CallLabels, ComposerMetrics, ReplicaLabels, ServiceLabels};
use crate::resilience::{Balancer, Pick, RetryBudget};

tokio::task_local! {
    /// Downstream calls made on behalf of the current composer request.
    pub static REQUEST_CALLS: Arc<AtomicU64>;
}

/// Why a section could not be fetched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The service says the thing does not exist (404).
    #[error("not found")]
    NotFound,
    /// The service is slow, down, failing (5xx) or its circuit is open.
    #[error("{0}")]
    Unavailable(String),
    /// The service answered, but not as its API says (another 4xx, a body we cannot read).
    #[error("{0}")]
    Unexpected(String),
}

enum AttemptError {
    /// Worth another attempt (refused, timed out, 5xx).
    Retryable(String),
    Final(FetchError),
}

struct Endpoint {
    replicas: Balancer,
    budget: RetryBudget,
}

/// The five services, as the composer calls them. Cheap to share (`Arc`).
pub struct Downstream {
    http: reqwest::Client,
    /// Every call carries it: the services answer only other ShopLens servers.
    token: shoplens_kit::identity::ServiceToken,
    endpoints: [Endpoint; 5],
    call_timeout: Duration,
    max_attempts: u32,
    backoff: Duration,
    metrics: Arc<ComposerMetrics>,
}

fn index(svc: Service) -> usize {
    match svc {
        Service::Customer => 0,
        Service::Product => 1,
        Service::Order => 2,
        Service::Payment => 3,
        Service::Shipping => 4,
    }
}

impl Downstream {
    pub fn new(
        config: &ComposerConfig,
        metrics: Arc<ComposerMetrics>,
    ) -> Result<Self, crate::Error> {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30))
            .connect_timeout(config.call_timeout())
            .build()
            .map_err(crate::Error::Client)?;
        let urls = &config.services;
        let endpoint = |svc: Service, urls| {
            let service = svc.as_str();
            let replica_gauge = |replica: &str| {
                metrics
                    .replica_circuit_state
                    .get_or_create(&ReplicaLabels {
                        service,
                        replica: replica.to_owned(),
                    })
                    .clone()
            };
            Endpoint {
                replicas: Balancer::with_gauges(
                    &format!("{svc} service"),
                    urls,
                    &config.breaker,
                    metrics
                        .circuit_state
                        .get_or_create(&ServiceLabels { service })
                        .clone(),
                    replica_gauge,
                ),
                budget: RetryBudget::new(&config.retry),
            }
        };
        Ok(Downstream {
            http,
            token: shoplens_kit::identity::ServiceToken::new(&config.auth, "composer"),
            endpoints: [
                endpoint(Service::Customer, &urls.customer),
                endpoint(Service::Product, &urls.product),
                endpoint(Service::Order, &urls.order),
                endpoint(Service::Payment, &urls.payment),
                endpoint(Service::Shipping, &urls.shipping),
            ],
            call_timeout: config.call_timeout(),
            max_attempts: config.retry.max_attempts.max(1),
            backoff: Duration::from_millis(config.retry.backoff_ms),
            metrics,
        })
    }

    /// GETs `path_and_query` from `svc` and decodes the JSON answer, retrying failures
    /// while the retry budget and the `deadline` allow.
    pub async fn get<T: DeserializeOwned>(
        &self,
        svc: Service,
        path_and_query: &str,
        deadline: Instant,
    ) -> Result<T, FetchError> {
        self.get_within(svc, path_and_query, deadline, Some(self.call_timeout))
            .await
    }

    /// [`Downstream::get`] with another per-attempt timeout; `None`: each attempt may take
    /// until the deadline (long reads, like a page of the all-orders scan).
    pub async fn get_within<T: DeserializeOwned>(
        &self,
        svc: Service,
        path_and_query: &str,
        deadline: Instant,
        call_timeout: Option<Duration>,
    ) -> Result<T, FetchError> {
        let ep = &self.endpoints[index(svc)];
        let labels = ServiceLabels {
            service: svc.as_str(),
        };
        ep.budget.deposit();
        let mut replica = ep.replicas.pick();
        let mut attempt = 1;
        loop {
            let Some(this) = replica.take() else {
                self.metrics.breaker_rejections.get_or_create(&labels).inc();
                return Err(FetchError::Unavailable(format!(
                    "{svc} service circuit is open (recent calls failed)"
                )));
            };
            let tried = this.index();
            let named = (ep.replicas.len() > 1).then(|| this.url());
            match self
                .attempt(svc, this, path_and_query, deadline, call_timeout)
                .await
            {
                Ok(v) => return Ok(v),
                Err(AttemptError::Final(e)) => return Err(e),
                Err(AttemptError::Retryable(reason)) => {
                    let reason = match named {
                        Some(url) => format!("{svc} service replica {url} {reason}"),
                        None => format!("{svc} service {reason}"),
                    };
                    if attempt >= self.max_attempts {
                        return Err(FetchError::Unavailable(reason));
                    }
                    // Another replica is tried at once; the same one after a pause.
                    let other = ep.replicas.pick_other(tried);
                    let pause = match other {
                        Some(_) => Duration::ZERO,
                        None => self.backoff,
                    };
                    let time_left = deadline.saturating_duration_since(Instant::now());
                    if time_left <= pause + Duration::from_millis(5) {
                        return Err(FetchError::Unavailable(reason));
                    }
                    if !ep.budget.try_withdraw() {
                        self.metrics.retries_denied.get_or_create(&labels).inc();
                        return Err(FetchError::Unavailable(reason));
                    }
                    self.metrics.retries.get_or_create(&labels).inc();
                    tracing::debug!(service = %svc, attempt, %reason, "retrying");
                    replica = match other {
                        Some(other) => Some(other),
                        None => {
                            tokio::time::sleep(pause).await;
                            ep.replicas.pick()
                        }
                    };
                    attempt += 1;
                }
            }
        }
    }

    /// One call to one replica; its outcome goes to the replica's circuit breaker.
    async fn attempt<T: DeserializeOwned>(
        &self,
        svc: Service,
        replica: Pick<'_>,
        path_and_query: &str,
        deadline: Instant,
        call_timeout: Option<Duration>,
    ) -> Result<T, AttemptError> {
        let service = svc.as_str();
        let now = Instant::now();
        if now >= deadline {
            return Err(AttemptError::Final(FetchError::Unavailable(format!(
                "{svc} service not called: request deadline reached"
            ))));
        }
        let limit = call_timeout.map_or(deadline - now, |t| t.min(deadline - now));
        let _ = REQUEST_CALLS.try_with(|c| c.fetch_add(1, Ordering::Relaxed));
        let url = format!("{}{path_and_query}", replica.url());
        let span = tracing::info_span!(
            "downstream",
            service,
            replica = replica.url(),
            path = path_and_query
        );
        let call = async {
            let resp = self
                .http
                .get(&url)
                .header(reqwest::header::AUTHORIZATION, self.token.header())
                .send()
                .await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        let result = tokio::time::timeout(limit, call).instrument(span).await;
        self.metrics
            .downstream_duration
            .get_or_create(&ServiceLabels { service })
            .observe(now.elapsed().as_secs_f64());
        let count = |outcome: &'static str| {
            self.metrics
                .downstream_calls
                .get_or_create(&CallLabels { service, outcome })
                .inc();
        };
        match result {
            Err(_) => {
                count("error");
                replica.failure();
                Err(AttemptError::Retryable(format!(
                    "timed out after {} ms",
                    limit.as_millis()
                )))
            }
            Ok(Err(e)) => {
                count("error");
                replica.failure();
                let what = if e.is_connect() {
                    "refused the connection".to_owned()
                } else {
                    format!("call failed: {e}")
                };
                Err(AttemptError::Retryable(what))
            }
            Ok(Ok((status, body))) => {
                if status.is_server_error() {
                    count("error");
                    replica.failure();
                    return Err(AttemptError::Retryable(format!("answered {status}")));
                }
                replica.success();
                if status == reqwest::StatusCode::NOT_FOUND {
                    count("not_found");
                    return Err(AttemptError::Final(FetchError::NotFound));
                }
                if !status.is_success() {
                    count("unexpected");
                    return Err(AttemptError::Final(FetchError::Unexpected(format!(
                        "{svc} service answered {status}: {}",
                        String::from_utf8_lossy(&body)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ))));
                }
                match serde_json::from_slice(&body) {
                    Ok(v) => {
                        count("ok");
                        Ok(v)
                    }
                    Err(e) => {
                        count("unexpected");
                        Err(AttemptError::Final(FetchError::Unexpected(format!(
                            "{svc} service sent an unreadable answer: {e}"
                        ))))
                    }
                }
            }
        }
    }
}
