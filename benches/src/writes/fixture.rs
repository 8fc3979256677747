//! What every configuration shares: the customer and product services (SQLite) on an
//! embedded log in a temp dir, one customer and a few products created once, and order
//! service replicas started on a given database with the product's relay defaults.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use shoplens_kit::ServiceHandle;
use shoplens_kit::config::ServiceConfig;
use shoplens_test_support::services::{TestEnv, authorized_client};

pub(super) struct Fixture {
    pub env: TestEnv,
    /// Its requests carry a service token (as another ShopLens server's do).
    pub http: reqwest::Client,
    pub customer_id: String,
    pub product_ids: Vec<String>,
    customer: ServiceHandle,
    product: ServiceHandle,
}

/// A service's configuration on `database_url`: port 0, the product's defaults otherwise
/// (relay poll 200 ms, takeover poll 1000 ms, ten PostgreSQL connections per replica).
pub(super) fn service_config(database_url: String) -> ServiceConfig {
    ServiceConfig {
        database_url,
        ..Default::default()
    }
}

impl Fixture {
    /// Starts the customer and product services and creates the customer and `products`
    /// products the orders are placed for.
    pub async fn start(products: usize) -> anyhow::Result<Fixture> {
        let env = TestEnv::new();
        let customer =
            customer_service::start(&service_config(sqlite_url(&env, "customer")), env.bus())
                .await
                .context("start the customer service")?;
        let product =
            product_service::start(&service_config(sqlite_url(&env, "product")), env.bus())
                .await
                .context("start the product service")?;
        let http = authorized_client(&ServiceConfig::default().auth);
        let created = |url: String, body: Value| {
            let http = http.clone();
            async move {
                let resp = http.post(&url).json(&body).send().await?;
                let status = resp.status();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                if status != reqwest::StatusCode::CREATED {
                    bail!("POST {url}: {status} {body}");
                }
                body["id"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("POST {url}: no id in {body}"))
            }
        };
        let customer_id = created(
            format!("{}/api/v1/customers", customer.url()),
            json!({"name": "Bench Customer", "email": "bench@example.com", "country": "NL"}),
        )
        .await?;
        let mut product_ids = Vec::new();
        for i in 0..products.max(1) {
            product_ids.push(
                created(
                    format!("{}/api/v1/products", product.url()),
                    json!({"sku": format!("BENCH-{i}"), "name": format!("Bench product {i}"),
                           "description": "", "category": "Books",
                           "price": format!("{}.50", 5 + i), "currency": "EUR"}),
                )
                .await?,
            );
        }
        Ok(Fixture {
            env,
            http,
            customer_id,
            product_ids,
            customer,
            product,
        })
    }

    /// `sqlite://` URL of a fresh database file `name.db` in the scratch directory.
    pub fn sqlite_url(&self, name: &str) -> String {
        sqlite_url(&self.env, name)
    }

    /// An order service replica on `database_url` publishing to `topic` (empty: the
    /// contract's default), calling this fixture's customer and product services.
    pub async fn order_replica(
        &self,
        database_url: String,
        topic: &str,
    ) -> anyhow::Result<ServiceHandle> {
        let upstreams = order_service::Upstreams {
            customer_url: self.customer.url().into(),
            product_url: self.product.url().into(),
            ..Default::default()
        };
        let config = ServiceConfig {
            topic: topic.to_owned(),
            ..service_config(database_url)
        };
        order_service::start(&config, &upstreams, self.env.bus())
            .await
            .context("start an order service replica")
    }

    /// The body of an order of one line of product `k` (modulo the products).
    pub fn order_body(&self, k: usize) -> Value {
        json!({"customer_id": self.customer_id,
               "lines": [{"product_id": self.product_ids[k % self.product_ids.len()],
                          "quantity": 1 + k % 3}]})
    }

    pub async fn stop(self) {
        self.customer.stop().await;
        self.product.stop().await;
    }
}

/// `sqlite://` URL of the database file `name.db` in `env`'s scratch directory.
fn sqlite_url(env: &TestEnv, name: &str) -> String {
    format!(
        "sqlite://{}",
        env.dir.path().join(format!("{name}.db")).display()
    )
}

/// Sends one order-service request; the JSON body of a success, an error otherwise.
pub(super) async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        bail!("{status}: {body}");
    }
    Ok(resp.json().await?)
}
