//! The configuration of the whole system, layered: built-in defaults (everything on one
//! machine, embedded event log), an optional TOML file (`--config`), then
//! `SHOPLENS_SECTION__KEY` environment variables, e.g. `SHOPLENS_ORDER__LISTEN=0.0.0.0:8083`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shoplens_kit::config::ServiceConfig;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the service databases and the embedded event log live.
    pub data_dir: PathBuf,
    /// Log JSON lines instead of human-readable text.
    pub log_json: bool,
    pub bus: BusConfig,
    pub customer: ServiceConfig,
    pub product: ServiceConfig,
    pub order: ServiceConfig,
    /// Where the order service finds the customer and product services (filled in from the
    /// services started in the same process).
    pub order_upstreams: order_service::Upstreams,
    pub payment: ServiceConfig,
    pub shipping: ServiceConfig,
    /// The Order Summary API; its `services` URLs are filled in from the services started in
    /// the same process.
    pub composer: shoplens_composer::ComposerConfig,
    /// The ingest worker (bus -> read model) and its API.
    pub ingest: shoplens_ingest::startup::IngestConfig,
    /// Where the read model lives: embedded Parquet files (default, under `data_dir`) or
    /// ClickHouse.
    pub read_model: shoplens_readmodel::config::ReadModelConfig,
    /// The analytics server (dashboard, SQL endpoints, exports) over the read model.
    pub analytics: shoplens_analytics::AnalyticsConfig,
    pub demo: DemoConfig,
    /// Run only these components in this process (`customer`, `product`, `order`,
    /// `payment`, `shipping`, `composer`; a list or a comma-separated string); empty runs
    /// all of them. The ingest worker and the analytics server have their own `enabled`.
    /// A component not running here is reached at its configured URL
    /// (`order_upstreams`, `composer.services`).
    #[serde(deserialize_with = "components")]
    pub only: Vec<Component>,
    /// Scheduling priority (`nice`, 0-19) of the threads the ingest worker and the analytics
    /// server run on in this process: when the CPU is short, the shop's threads come first.
    pub read_side_nice: i32,
    /// Who may call what: the key every server of this process checks bearer tokens with
    /// (and signs its own calls to the services with), and the shop's identity provider.
    pub auth: shoplens_kit::identity::AuthConfig,
}

/// A part of the system `shoplens run` can start on its own (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Customer,
    Product,
    Order,
    Payment,
    Shipping,
    Composer,
}

impl Component {
    pub const ALL: [Component; 6] = [
        Component::Customer,
        Component::Product,
        Component::Order,
        Component::Payment,
        Component::Shipping,
        Component::Composer,
    ];

    /// Every component, in start order.
    pub fn all() -> Vec<Component> {
        Self::ALL.to_vec()
    }
}

/// `only` as a list, or as one comma-separated string (what an environment variable gives).
fn components<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Component>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<Component>),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::List(list) => Ok(list),
        Either::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| {
                <Component as clap::ValueEnum>::from_str(name, false).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "unknown component `{name}`, expected one of customer, product, \
                         order, payment, shipping, composer"
                    ))
                })
            })
            .collect(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// `embedded` (default: a durable log under `data_dir`, one process) or `kafka`.
    pub kind: BusKind,
    /// `fsync` every append to the embedded event log before acknowledging it.
    pub fsync: bool,
    /// The Kafka cluster, when `kind = "kafka"`.
    pub kafka: shoplens_bus::KafkaConfig,
}

/// Which event bus the services publish to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    #[default]
    Embedded,
    Kafka,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Embedded,
            fsync: true,
            kafka: Default::default(),
        }
    }
}

/// Demo traffic the all-in-one process generates so there is something to look at.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Seed a catalogue and keep placing orders with the shop simulator.
    pub enabled: bool,
    /// The live orders (after the history).
    pub simulator: shop_simulator::SimConfig,
    /// The shop's past, created first (needs the five services in this process).
    pub history: shop_simulator::HistoryConfig,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            enabled: true,
            // An order every 20 s: visible on the pages, and today's volume stays near the
            // history's for the first half hour or so.
            simulator: shop_simulator::SimConfig {
                orders: None,
                rate_per_sec: 0.05,
                step_delay_ms: 1_500,
                ..Default::default()
            },
            // A year of about 9,000 orders: about a minute of a release build's time.
            history: shop_simulator::HistoryConfig {
                days: 365,
                ..Default::default()
            },
        }
    }
}

fn service_on(port: u16) -> ServiceConfig {
    ServiceConfig {
        listen: ([127, 0, 0, 1], port).into(),
        ..Default::default()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            log_json: false,
            bus: BusConfig::default(),
            customer: service_on(8081),
            product: service_on(8082),
            order: service_on(8083),
            order_upstreams: Default::default(),
            payment: service_on(8084),
            shipping: service_on(8085),
            composer: shoplens_composer::ComposerConfig {
                listen: ([127, 0, 0, 1], 8080).into(),
                ..Default::default()
            },
            ingest: Default::default(),
            read_model: Default::default(),
            analytics: Default::default(),
            demo: DemoConfig::default(),
            only: Vec::new(),
            read_side_nice: 10,
            auth: Default::default(),
        }
    }
}

impl Config {
    /// Fills in what defaults to a place under `data_dir`: each service's database file and
    /// the embedded read model.
    pub fn resolve(mut self) -> Config {
        let dir = self.data_dir.clone();
        let default_read_model = shoplens_readmodel::config::ReadModelConfig::default();
        if self.read_model.embedded.dir == default_read_model.embedded.dir {
            self.read_model.embedded.dir = dir.join("readmodel");
        }
        for (name, svc) in [
            ("customer", &mut self.customer),
            ("product", &mut self.product),
            ("order", &mut self.order),
            ("payment", &mut self.payment),
            ("shipping", &mut self.shipping),
        ] {
            if svc.database_url == ServiceConfig::default().database_url {
                svc.database_url = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
            }
            // One identity scheme: every server checks the root `auth` section's tokens.
            svc.auth = self.auth.clone();
        }
        self.ingest.auth = self.auth.clone();
        self.composer.auth = self.auth.clone();
        self.analytics.auth = self.auth.clone();
        self
    }

    /// A service token of this configuration's key, naming `subject` (what the demo, the
    /// simulator command and reconciliation send).
    pub fn service_token(&self, subject: &str) -> String {
        shoplens_kit::identity::ServiceToken::new(&self.auth, subject).token()
    }

    /// Every topic the services publish to (their configured or default topics).
    pub fn topics(&self) -> Vec<String> {
        use shoplens_contract::Service;
        [
            (&self.customer, Service::Customer),
            (&self.product, Service::Product),
            (&self.order, Service::Order),
            (&self.payment, Service::Payment),
            (&self.shipping, Service::Shipping),
        ]
        .into_iter()
        .map(|(svc, service)| {
            if svc.topic.is_empty() {
                service.default_topic().to_owned()
            } else {
                svc.topic.clone()
            }
        })
        .collect()
    }

    /// The components this process runs (`only`, or all of them when it is empty).
    pub fn components(&self) -> Vec<Component> {
        if self.only.is_empty() {
            Component::all()
        } else {
            Component::ALL
                .into_iter()
                .filter(|c| self.only.contains(c))
                .collect()
        }
    }

    /// Rejects a configuration that cannot work, without starting anything (what
    /// `--check-config` reports): the composer's limits and URLs, the order service's
    /// upstream URLs when those services run elsewhere, the bus and topic names.
    pub fn validate(&self) -> anyhow::Result<()> {
        let runs = self.components();
        if runs.contains(&Component::Composer) {
            // Its limits and its `services` URLs.
            self.composer
                .validate()
                .map_err(|e| anyhow::anyhow!("invalid [composer] configuration: {e}"))?;
        }
        // Nothing with the development key (or users) where others can reach it.
        for (c, name, svc) in [
            (Component::Customer, "customer", &self.customer),
            (Component::Product, "product", &self.product),
            (Component::Order, "order", &self.order),
            (Component::Payment, "payment", &self.payment),
            (Component::Shipping, "shipping", &self.shipping),
        ] {
            if runs.contains(&c) {
                svc.auth
                    .check_exposure(svc.listen)
                    .map_err(|e| anyhow::anyhow!("invalid [{name}] configuration: {e}"))?;
                anyhow::ensure!(
                    shoplens_kit::db::Backend::of_url(&svc.database_url).is_some(),
                    "{name}.database_url must start with sqlite: or postgres://, got `{}`",
                    shoplens_kit::db::redact(&svc.database_url)
                );
            }
        }
        if self.ingest.enabled {
            self.auth
                .check_exposure(self.ingest.listen)
                .map_err(|e| anyhow::anyhow!("invalid [ingest] configuration: {e}"))?;
        }
        if self.analytics.enabled {
            self.analytics
                .check_exposure()
                .map_err(|e| anyhow::anyhow!("invalid [analytics] configuration: {e}"))?;
        }
        // The order service's upstreams that run elsewhere: one URL or several replicas'.
        let upstreams = &self.order_upstreams;
        for (c, key, urls) in [
            (Component::Customer, "customer_url", &upstreams.customer_url),
            (Component::Product, "product_url", &upstreams.product_url),
        ] {
            if runs.contains(&Component::Order) && !runs.contains(&c) {
                urls.check(&format!("order_upstreams.{key}"))
                    .map_err(anyhow::Error::msg)?;
            }
        }
        if self.bus.kind == BusKind::Kafka {
            anyhow::ensure!(
                !self.bus.kafka.brokers.trim().is_empty(),
                "bus.kafka.brokers must name at least one broker"
            );
        }
        for topic in self.topics() {
            shoplens_bus::validate_topic(&topic)?;
        }
        Ok(())
    }

    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("eventlog")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secrets come from the config layers, and the configuration's `Debug` (what
    /// `shoplens` logs at startup) never shows them.
    #[test]
    fn secrets_come_from_the_config_and_are_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shoplens.toml");
        std::fs::write(
            &file,
            r#"
[auth]
secret = "jwt-s3cret-1-0123456789abcdef0123456789"
[[analytics.users]]
name = "alice"
role = "analyst"
password_hash = "pg-s3cret-2"
[read_model.clickhouse]
password = "ch-s3cret-3"
"#,
        )
        .unwrap();
        let config: Config = shoplens_kit::config::load(Some(&file)).unwrap();
        assert_eq!(
            config.auth.secret,
            "jwt-s3cret-1-0123456789abcdef0123456789"
        );
        assert_eq!(config.analytics.users[0].password_hash, "pg-s3cret-2");
        assert_eq!(config.read_model.clickhouse.password, "ch-s3cret-3");
        // Every server of the process checks the root key.
        let resolved = config.clone().resolve();
        assert_eq!(resolved.customer.auth, config.auth);
        for shown in [format!("{config:?}"), format!("{config:#?}")] {
            for secret in ["jwt-s3cret-1", "pg-s3cret-2", "ch-s3cret-3"] {
                assert!(!shown.contains(secret), "{secret} shown in {shown}");
            }
        }
    }

    /// `order_upstreams.*` and `composer.services.*`: one URL, a list of replicas' or a
    /// comma-separated string (what an environment variable gives); an empty list is an
    /// error naming the key.
    #[test]
    fn upstreams_are_one_url_or_several_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shoplens.toml");
        let load = |toml: &str| -> Config {
            std::fs::write(&file, toml).unwrap();
            shoplens_kit::config::load(Some(&file)).unwrap()
        };
        let config = load(
            r#"
only = "order,composer"
[order_upstreams]
customer_url = "http://customer:8081"
product_url = ["http://product-1:8082", "http://product-2:8082"]
[composer.services]
customer = "http://customer:8081"
product = "http://product-1:8082,http://product-2:8082"
"#,
        );
        config.validate().unwrap();
        let two = ["http://product-1:8082", "http://product-2:8082"];
        assert_eq!(
            config.order_upstreams.customer_url.as_slice(),
            ["http://customer:8081"]
        );
        assert_eq!(config.order_upstreams.product_url.as_slice(), two);
        assert_eq!(config.composer.services.product.as_slice(), two);

        let config = load("only = \"order\"\n[order_upstreams]\ncustomer_url = []\n");
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("order_upstreams.customer_url must name at least one URL"),
            "{err}"
        );
        let config = load("[composer.services]\npayment = []\n");
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("services.payment must name at least one URL"),
            "{err}"
        );
        // The customer service runs here: its configured URLs are not used.
        let config = load("only = \"customer,order\"\n[order_upstreams]\ncustomer_url = []\n");
        config.validate().unwrap();
    }
}
