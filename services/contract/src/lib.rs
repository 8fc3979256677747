//! The ShopLens event contract: what every service publishes and every reader consumes.
//!
//! An event travels as one JSON object, the [`Envelope`], whose `payload` is one of the
//! [`DomainEvent`]s. [`Envelope::decode`] is the only way in from bytes: it checks the
//! envelope, the event type and schema version, the payload's fields and their values, so a
//! reader that got an `Envelope` may trust it. `docs/event-contract.md` documents the same
//! contract for teams that produce events with any Kafka client; a test keeps the two in step.
//!
//! Money is always [`rust_decimal::Decimal`] with at most two decimal places, written as a
//! JSON string (`"12.50"`), never a float.

mod envelope;
mod events;
pub mod sales;
pub mod tables;

pub use envelope::{DecodeError, Envelope};
pub use events::*;

/// A service that produces events. Each has its own topic on the event bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Customer,
    Product,
    Order,
    Payment,
    Shipping,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Customer,
        Service::Product,
        Service::Order,
        Service::Payment,
        Service::Shipping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Customer => "customer",
            Service::Product => "product",
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Shipping => "shipping",
        }
    }

    /// The default topic this service publishes to (`shop.orders`, ...).
    pub fn default_topic(self) -> &'static str {
        match self {
            Service::Customer => "shop.customers",
            Service::Product => "shop.products",
            Service::Order => "shop.orders",
            Service::Payment => "shop.payments",
            Service::Shipping => "shop.shipping",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|svc| svc.as_str() == s)
            .ok_or_else(|| format!("unknown service `{s}`"))
    }
}
