//! Test helpers: the five real services in-process, a composer in front of them, data
//! seeding through the services' APIs, a fault-injecting double, metrics reading.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use reqwest::Method;
use serde_json::{Value, json};
use shoplens_composer::{ComposerConfig, ComposerHandle, ServiceUrls};
use shoplens_kit::ServiceHandle;
use shoplens_kit::identity::{Identity, Role, issue as issue_token};
use shoplens_test_support::services::TestEnv;
use tokio_util::sync::CancellationToken;

/// The services of the tests check tokens with the development key: the composer signs its
/// calls with the same.
pub const SECRET: &str = shoplens_kit::identity::DEV_SECRET;

/// The five services, each reachable through a [`Double`] (passing through by default) so
/// a test can make any of them fail or hang.
pub struct Shop {
    pub env: TestEnv,
    /// customer, product, order, payment, shipping (the real services).
    pub services: Vec<Option<ServiceHandle>>,
    pub doubles: Doubles,
    pub http: reqwest::Client,
}

pub struct Doubles {
    pub customer: Double,
    pub product: Double,
    pub order: Double,
    pub payment: Double,
    pub shipping: Double,
}

pub async fn spawn_shop() -> Shop {
    shoplens_kit::telemetry::init_tracing(false);
    let env = TestEnv::new();
    let customer = customer_service::start(&env.service_config("customer"), env.bus())
        .await
        .unwrap();
    let product = product_service::start(&env.service_config("product"), env.bus())
        .await
        .unwrap();
    let upstreams = order_service::Upstreams {
        customer_url: customer.url().into(),
        product_url: product.url().into(),
        timeout_ms: 5_000,
    };
    let order = order_service::start(&env.service_config("order"), &upstreams, env.bus())
        .await
        .unwrap();
    let payment = payment_service::start(&env.service_config("payment"), env.bus())
        .await
        .unwrap();
    let shipping = shipping_service::start(&env.service_config("shipping"), env.bus())
        .await
        .unwrap();
    let doubles = Doubles {
        customer: Double::start(customer.url()).await,
        product: Double::start(product.url()).await,
        order: Double::start(order.url()).await,
        payment: Double::start(payment.url()).await,
        shipping: Double::start(shipping.url()).await,
    };
    Shop {
        env,
        services: vec![
            Some(customer),
            Some(product),
            Some(order),
            Some(payment),
            Some(shipping),
        ],
        doubles,
        http: shoplens_test_support::services::authorized_client(&Default::default()),
    }
}

/// A composer config for tests: the test secret, the doubles as services, timeouts generous
/// enough that a busy machine cannot turn a test about values or call counts into a test
/// about timing.
pub fn config(shop: &Shop) -> ComposerConfig {
    ComposerConfig {
        call_timeout_ms: 2_000,
        deadline_ms: 5_000,
        ..fast(shop)
    }
}

/// [`config`] with the short timeouts the fault tests measure: 200 ms per call, 500 ms per
/// request.
pub fn fast(shop: &Shop) -> ComposerConfig {
    let mut c = ComposerConfig {
        services: ServiceUrls {
            customer: shop.doubles.customer.url.as_str().into(),
            product: shop.doubles.product.url.as_str().into(),
            order: shop.doubles.order.url.as_str().into(),
            payment: shop.doubles.payment.url.as_str().into(),
            shipping: shop.doubles.shipping.url.as_str().into(),
        },
        call_timeout_ms: 200,
        deadline_ms: 500,
        ..Default::default()
    };
    c.auth.secret = SECRET.into();
    c.breaker.open_ms = 300;
    c
}

/// A composer with the given config and, optionally, the invalidation consumer the
/// all-in-one launcher gives it.
pub async fn spawn_composer(shop: &Shop, config: ComposerConfig, events: bool) -> Composer {
    let source: Option<Box<dyn shoplens_bus::EventSource>> = events.then(|| {
        Box::new(
            shop.env
                .log
                .consumer(
                    "composer-invalidation",
                    &["shop.orders", "shop.payments", "shop.shipping"],
                )
                .unwrap(),
        ) as Box<dyn shoplens_bus::EventSource>
    });
    let handle = shoplens_composer::start(&config, source).await.unwrap();
    Composer {
        url: handle.url(),
        _handle: handle,
        http: reqwest::Client::new(),
    }
}

pub struct Composer {
    pub url: String,
    pub _handle: ComposerHandle,
    pub http: reqwest::Client,
}

pub fn customer_token(customer_id: &str) -> String {
    issue_token(
        SECRET,
        &Identity::new(customer_id.to_owned(), Role::Customer),
        Duration::from_secs(600),
    )
}

pub fn admin_token() -> String {
    token_for("admin", Role::Admin)
}

pub fn token_for(subject: &str, role: Role) -> String {
    issue_token(
        SECRET,
        &Identity::new(subject.to_owned(), role),
        Duration::from_secs(600),
    )
}

impl Composer {
    /// GET with an optional bearer token; the status and the JSON body.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn summary(&self, order_id: &str, token: &str) -> (StatusCode, Value) {
        self.get(&format!("/api/v1/orders/{order_id}/summary"), Some(token))
            .await
    }

    /// A summary that must be a 200.
    pub async fn summary_ok(&self, order_id: &str, token: &str) -> Value {
        let (status, body) = self.summary(order_id, token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The Prometheus text, read as a monitor (the scraper's role).
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .bearer_auth(token_for("prometheus", Role::Monitor))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The sum of a metric's samples whose labels contain every one of `labels`
    /// (`service="order"`).
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        sum_metric(&self.metrics().await, name, labels)
    }

    /// HTTP calls the composer made to `service` (all outcomes).
    pub async fn calls(&self, service: &str) -> f64 {
        self.metric(
            "shoplens_composer_downstream_calls_total",
            &[&format!("service=\"{service}\"")],
        )
        .await
    }

    pub async fn all_calls(&self) -> f64 {
        self.metric("shoplens_composer_downstream_calls_total", &[])
            .await
    }
}

pub fn sum_metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What the tests create: a customer, products, an order.
pub struct Seeded {
    pub customer_id: String,
    pub product_ids: Vec<String>,
    pub order_id: String,
}

impl Shop {
    pub fn service(&self, i: usize) -> &ServiceHandle {
        self.services[i].as_ref().expect("service running")
    }

    pub fn url(&self, name: &str) -> String {
        let i = ["customer", "product", "order", "payment", "shipping"]
            .iter()
            .position(|n| *n == name)
            .unwrap();
        self.service(i).url()
    }

    pub async fn send(&self, method: Method, url: String, body: Value) -> Value {
        let resp = self
            .http
            .request(method.clone(), &url)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {url}: {status} {value}");
        value
    }

    pub async fn post(&self, service: &str, path: &str, body: Value) -> Value {
        self.send(Method::POST, format!("{}{path}", self.url(service)), body)
            .await
    }

    pub async fn customer(&self, name: &str) -> String {
        let email = format!("{}@example.com", uuid::Uuid::now_v7());
        let c = self
            .post(
                "customer",
                "/api/v1/customers",
                json!({"name": name, "email": email, "country": "DE"}),
            )
            .await;
        c["id"].as_str().unwrap().to_owned()
    }

    pub async fn product(&self, name: &str, price: &str) -> String {
        let p = self
            .post(
                "product",
                "/api/v1/products",
                json!({"sku": format!("SKU-{}", uuid::Uuid::now_v7()), "name": name,
                    "description": format!("{name}, a fine thing"), "category": "home",
                    "image_url": format!("https://img.example/{name}.png"),
                    "price": price, "currency": "EUR"}),
            )
            .await;
        p["id"].as_str().unwrap().to_owned()
    }

    /// An order of `quantity` of each product.
    pub async fn order(&self, customer_id: &str, products: &[&str], quantity: i32) -> Value {
        let lines: Vec<Value> = products
            .iter()
            .map(|p| json!({"product_id": p, "quantity": quantity}))
            .collect();
        self.post(
            "order",
            "/api/v1/orders",
            json!({"customer_id": customer_id, "lines": lines}),
        )
        .await
    }

    pub async fn set_status(&self, order_id: &str, status: &str) -> Value {
        self.post(
            "order",
            &format!("/api/v1/orders/{order_id}/status"),
            json!({"status": status}),
        )
        .await
    }

    pub async fn pay(&self, order: &Value, card_token: &str) -> Value {
        self.post(
            "payment",
            "/api/v1/payments",
            json!({"order_id": order["id"], "amount": order["total"],
                "currency": order["currency"], "method": "card", "card_token": card_token}),
        )
        .await
    }

    pub async fn ship(&self, order_id: &str, location: &str) -> Value {
        self.post(
            "shipping",
            "/api/v1/shipments",
            json!({"order_id": order_id, "carrier": "DHL", "location": location,
                "eta": "2030-01-02T10:00:00Z"}),
        )
        .await
    }

    /// A customer with one order of two products.
    pub async fn seed(&self) -> Seeded {
        let customer_id = self.customer("Ada Lovelace").await;
        let a = self.product("Aurora Lamp", "10.00").await;
        let b = self.product("Basalt Mug", "4.50").await;
        let order = self.order(&customer_id, &[&a, &b], 2).await;
        Seeded {
            customer_id,
            product_ids: vec![a, b],
            order_id: order["id"].as_str().unwrap().to_owned(),
        }
    }

    /// Stops a real service (its double then gets connection errors).
    pub async fn stop(&mut self, i: usize) -> SocketAddr {
        let handle = self.services[i].take().expect("service running");
        let addr = handle.addr();
        handle.stop().await;
        addr
    }
}

/// What a [`Double`] does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Forward to the real service.
    Pass = 0,
    /// Answer 500 at once.
    Fail = 1,
    /// Never answer.
    Hang = 2,
}

/// A fault-injecting stand-in in front of a real service (test double, for faults only).
pub struct Double {
    pub url: String,
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicUsize>,
    _stop: tokio_util::sync::DropGuard,
}

impl Double {
    pub async fn start(upstream: String) -> Double {
        Double::start_at(upstream, "127.0.0.1:0".parse().unwrap()).await
    }

    /// A double listening on `at`: the port of one that was dropped, once it is free again
    /// (a stopped replica coming back).
    pub async fn start_at(upstream: String, at: SocketAddr) -> Double {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(at).await {
                Ok(listener) => break listener,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind {at}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let hits = Arc::new(AtomicUsize::new(0));
        let client = reqwest::Client::new();
        let (m, h) = (mode.clone(), hits.clone());
        let app = axum::Router::new().fallback(move |req: Request| {
            let (m, h, client, upstream) = (m.clone(), h.clone(), client.clone(), upstream.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                match m.load(Ordering::SeqCst) {
                    1 => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({"error": "injected failure", "code": "internal"})),
                    )
                        .into_response(),
                    2 => futures::future::pending::<Response>().await,
                    _ => forward(&client, &upstream, req).await,
                }
            }
        });
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .ok();
        });
        Double {
            url,
            addr,
            mode,
            hits,
            _stop: stop.drop_guard(),
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Requests this double received.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn forward(client: &reqwest::Client, upstream: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let method = Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    let mut out = client
        .request(method, format!("{upstream}{path}"))
        .body(body.to_vec());
    for name in ["content-type", "authorization"] {
        if let Some(value) = parts.headers.get(name) {
            out = out.header(name, value.as_bytes());
        }
    }
    match out.send().await {
        Ok(resp) => {
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let bytes = resp.bytes().await.unwrap_or_default();
            (
                status,
                [("content-type", "application/json")],
                bytes.to_vec(),
            )
                .into_response()
        }
        // The real service is down: the double is down too.
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}
