//! The domain events and the rules their values must obey.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Service;

/// Largest quantity on one order line.
pub const MAX_QUANTITY: i32 = 10_000;

/// Why an event's values are impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct InvalidField {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> InvalidField {
    InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

type Check = Result<(), InvalidField>;

fn check_id(field: &str, value: &str) -> Check {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > 64
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(field, "must be 1-64 characters of [A-Za-z0-9_-]"));
    }
    Ok(())
}

fn check_text(field: &str, value: &str, max: usize) -> Check {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be blank"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    Ok(())
}

/// Money: non-negative, at most two decimal places, below 10^16 (so it fits Decimal(18, 2)
/// in every store).
pub fn check_money(field: &str, value: Decimal) -> Check {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(invalid(field, "must not be negative"));
    }
    if value.normalize().scale() > 2 {
        return Err(invalid(field, "must have at most two decimal places"));
    }
    if value >= Decimal::from(10_i64.pow(16)) {
        return Err(invalid(field, "is too large"));
    }
    Ok(())
}

/// A quantity on an order line: 1..=[`MAX_QUANTITY`].
pub fn check_quantity(field: &str, value: i32) -> Check {
    if !(1..=MAX_QUANTITY).contains(&value) {
        return Err(invalid(
            field,
            format!("must be between 1 and {MAX_QUANTITY}"),
        ));
    }
    Ok(())
}

/// An ISO 4217 code: three upper-case letters.
pub fn check_currency(field: &str, value: &str) -> Check {
    if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            field,
            "must be a three-letter upper-case ISO 4217 code",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerRegistered {
    pub customer_id: String,
    pub name: String,
    pub email: String,
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerUpdated {
    pub customer_id: String,
    pub name: String,
    pub email: String,
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductCreated {
    pub product_id: String,
    pub sku: String,
    pub name: String,
    pub category: String,
    pub price: Decimal,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductPriceChanged {
    pub product_id: String,
    pub old_price: Decimal,
    pub new_price: Decimal,
    pub currency: String,
}

/// One line of an order, with the unit price as it was when the order was placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub line_no: i32,
    pub product_id: String,
    pub quantity: i32,
    pub unit_price: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: String,
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
    /// Sum of `quantity * unit_price` over `lines`.
    pub total: Decimal,
    pub currency: String,
}

/// The lifecycle of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    Placed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Placed,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "Placed",
            OrderStatus::Paid => "Paid",
            OrderStatus::Shipped => "Shipped",
            OrderStatus::Delivered => "Delivered",
            OrderStatus::Cancelled => "Cancelled",
        }
    }

    /// Whether an order may move from `self` to `next`.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Placed, Paid)
                | (Placed, Cancelled)
                | (Paid, Shipped)
                | (Paid, Cancelled)
                | (Shipped, Delivered)
        )
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OrderStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown order status `{s}`"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderStatusChanged {
    pub order_id: String,
    pub customer_id: String,
    /// `None` only for the first status of a new order.
    pub from: Option<OrderStatus>,
    pub to: OrderStatus,
}

/// One per order line, published when the order is paid: the unit of revenue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductPurchased {
    pub order_id: String,
    pub line_no: i32,
    pub customer_id: String,
    pub product_id: String,
    pub quantity: i32,
    pub unit_price: Decimal,
    /// `quantity * unit_price`.
    pub revenue: Decimal,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentCompleted {
    pub payment_id: String,
    pub order_id: String,
    pub amount: Decimal,
    pub currency: String,
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub payment_id: String,
    pub order_id: String,
    pub amount: Decimal,
    pub currency: String,
    pub method: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub payment_id: String,
    pub order_id: String,
    pub amount: Decimal,
    pub currency: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentCreated {
    pub shipment_id: String,
    pub order_id: String,
    pub carrier: String,
    pub location: String,
    pub eta: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentLocationUpdated {
    pub shipment_id: String,
    pub order_id: String,
    pub location: String,
    pub eta: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentDelivered {
    pub shipment_id: String,
    pub order_id: String,
    pub location: String,
}

/// Every event type of the contract, with its wire name and current schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    CustomerRegistered,
    CustomerUpdated,
    ProductCreated,
    ProductPriceChanged,
    OrderCreated,
    OrderStatusChanged,
    ProductPurchased,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    ShipmentCreated,
    ShipmentLocationUpdated,
    ShipmentDelivered,
}

impl EventType {
    pub const ALL: [EventType; 13] = [
        EventType::CustomerRegistered,
        EventType::CustomerUpdated,
        EventType::ProductCreated,
        EventType::ProductPriceChanged,
        EventType::OrderCreated,
        EventType::OrderStatusChanged,
        EventType::ProductPurchased,
        EventType::PaymentCompleted,
        EventType::PaymentFailed,
        EventType::PaymentRefunded,
        EventType::ShipmentCreated,
        EventType::ShipmentLocationUpdated,
        EventType::ShipmentDelivered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CustomerRegistered => "CustomerRegistered",
            EventType::CustomerUpdated => "CustomerUpdated",
            EventType::ProductCreated => "ProductCreated",
            EventType::ProductPriceChanged => "ProductPriceChanged",
            EventType::OrderCreated => "OrderCreated",
            EventType::OrderStatusChanged => "OrderStatusChanged",
            EventType::ProductPurchased => "ProductPurchased",
            EventType::PaymentCompleted => "PaymentCompleted",
            EventType::PaymentFailed => "PaymentFailed",
            EventType::PaymentRefunded => "PaymentRefunded",
            EventType::ShipmentCreated => "ShipmentCreated",
            EventType::ShipmentLocationUpdated => "ShipmentLocationUpdated",
            EventType::ShipmentDelivered => "ShipmentDelivered",
        }
    }

    /// The schema versions a reader of this build understands. Version 1 is the only one so
    /// far; adding an optional field does not need a new version, changing a meaning does.
    pub fn supported_versions(self) -> &'static [u16] {
        &[1]
    }

    /// The version a producer of this build writes.
    pub fn current_version(self) -> u16 {
        1
    }

    /// The service that owns (and alone publishes) this event type.
    pub fn producer(self) -> Service {
        use EventType::*;
        match self {
            CustomerRegistered | CustomerUpdated => Service::Customer,
            ProductCreated | ProductPriceChanged => Service::Product,
            OrderCreated | OrderStatusChanged | ProductPurchased => Service::Order,
            PaymentCompleted | PaymentFailed | PaymentRefunded => Service::Payment,
            ShipmentCreated | ShipmentLocationUpdated | ShipmentDelivered => Service::Shipping,
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown event type `{s}`"))
    }
}

/// One domain event. Serialized on its own it is just the payload object; the
/// [`crate::Envelope`] carries the type name beside it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DomainEvent {
    CustomerRegistered(CustomerRegistered),
    CustomerUpdated(CustomerUpdated),
    ProductCreated(ProductCreated),
    ProductPriceChanged(ProductPriceChanged),
    OrderCreated(OrderCreated),
    OrderStatusChanged(OrderStatusChanged),
    ProductPurchased(ProductPurchased),
    PaymentCompleted(PaymentCompleted),
    PaymentFailed(PaymentFailed),
    PaymentRefunded(PaymentRefunded),
    ShipmentCreated(ShipmentCreated),
    ShipmentLocationUpdated(ShipmentLocationUpdated),
    ShipmentDelivered(ShipmentDelivered),
}

impl DomainEvent {
    pub fn event_type(&self) -> EventType {
        match self {
            DomainEvent::CustomerRegistered(_) => EventType::CustomerRegistered,
            DomainEvent::CustomerUpdated(_) => EventType::CustomerUpdated,
            DomainEvent::ProductCreated(_) => EventType::ProductCreated,
            DomainEvent::ProductPriceChanged(_) => EventType::ProductPriceChanged,
            DomainEvent::OrderCreated(_) => EventType::OrderCreated,
            DomainEvent::OrderStatusChanged(_) => EventType::OrderStatusChanged,
            DomainEvent::ProductPurchased(_) => EventType::ProductPurchased,
            DomainEvent::PaymentCompleted(_) => EventType::PaymentCompleted,
            DomainEvent::PaymentFailed(_) => EventType::PaymentFailed,
            DomainEvent::PaymentRefunded(_) => EventType::PaymentRefunded,
            DomainEvent::ShipmentCreated(_) => EventType::ShipmentCreated,
            DomainEvent::ShipmentLocationUpdated(_) => EventType::ShipmentLocationUpdated,
            DomainEvent::ShipmentDelivered(_) => EventType::ShipmentDelivered,
        }
    }

    /// The id of the aggregate the event belongs to; it is also the bus partition key, so
    /// one aggregate's events stay in order. Order events (including `ProductPurchased`)
    /// are keyed by order, payments by payment, shipments by shipment.
    pub fn aggregate_id(&self) -> &str {
        match self {
            DomainEvent::CustomerRegistered(e) => &e.customer_id,
            DomainEvent::CustomerUpdated(e) => &e.customer_id,
            DomainEvent::ProductCreated(e) => &e.product_id,
            DomainEvent::ProductPriceChanged(e) => &e.product_id,
            DomainEvent::OrderCreated(e) => &e.order_id,
            DomainEvent::OrderStatusChanged(e) => &e.order_id,
            DomainEvent::ProductPurchased(e) => &e.order_id,
            DomainEvent::PaymentCompleted(e) => &e.payment_id,
            DomainEvent::PaymentFailed(e) => &e.payment_id,
            DomainEvent::PaymentRefunded(e) => &e.payment_id,
            DomainEvent::ShipmentCreated(e) => &e.shipment_id,
            DomainEvent::ShipmentLocationUpdated(e) => &e.shipment_id,
            DomainEvent::ShipmentDelivered(e) => &e.shipment_id,
        }
    }

    /// The order this event concerns, if any (used to invalidate cached order summaries).
    pub fn order_id(&self) -> Option<&str> {
        match self {
            DomainEvent::OrderCreated(e) => Some(&e.order_id),
            DomainEvent::OrderStatusChanged(e) => Some(&e.order_id),
            DomainEvent::ProductPurchased(e) => Some(&e.order_id),
            DomainEvent::PaymentCompleted(e) => Some(&e.order_id),
            DomainEvent::PaymentFailed(e) => Some(&e.order_id),
            DomainEvent::PaymentRefunded(e) => Some(&e.order_id),
            DomainEvent::ShipmentCreated(e) => Some(&e.order_id),
            DomainEvent::ShipmentLocationUpdated(e) => Some(&e.order_id),
            DomainEvent::ShipmentDelivered(e) => Some(&e.order_id),
            _ => None,
        }
    }

    /// Decodes a payload of the given type from JSON. Unknown extra fields are ignored
    /// (additive changes keep the version); missing or mistyped fields are errors.
    pub fn from_json(
        event_type: EventType,
        payload: serde_json::Value,
    ) -> Result<DomainEvent, serde_json::Error> {
        DomainEvent::deserialize_as(event_type, payload)
    }

    /// The payload of `event_type`, from any serde source.
    pub(crate) fn deserialize_as<'de, D: serde::Deserializer<'de>>(
        event_type: EventType,
        d: D,
    ) -> Result<DomainEvent, D::Error> {
        Ok(match event_type {
            EventType::CustomerRegistered => {
                DomainEvent::CustomerRegistered(Deserialize::deserialize(d)?)
            }
            EventType::CustomerUpdated => {
                DomainEvent::CustomerUpdated(Deserialize::deserialize(d)?)
            }
            EventType::ProductCreated => DomainEvent::ProductCreated(Deserialize::deserialize(d)?),
            EventType::ProductPriceChanged => {
                DomainEvent::ProductPriceChanged(Deserialize::deserialize(d)?)
            }
            EventType::OrderCreated => DomainEvent::OrderCreated(Deserialize::deserialize(d)?),
            EventType::OrderStatusChanged => {
                DomainEvent::OrderStatusChanged(Deserialize::deserialize(d)?)
            }
            EventType::ProductPurchased => {
                DomainEvent::ProductPurchased(Deserialize::deserialize(d)?)
            }
            EventType::PaymentCompleted => {
                DomainEvent::PaymentCompleted(Deserialize::deserialize(d)?)
            }
            EventType::PaymentFailed => DomainEvent::PaymentFailed(Deserialize::deserialize(d)?),
            EventType::PaymentRefunded => {
                DomainEvent::PaymentRefunded(Deserialize::deserialize(d)?)
            }
            EventType::ShipmentCreated => {
                DomainEvent::ShipmentCreated(Deserialize::deserialize(d)?)
            }
            EventType::ShipmentLocationUpdated => {
                DomainEvent::ShipmentLocationUpdated(Deserialize::deserialize(d)?)
            }
            EventType::ShipmentDelivered => {
                DomainEvent::ShipmentDelivered(Deserialize::deserialize(d)?)
            }
        })
    }

    /// Checks that the values are possible: ids well formed, money exact and non-negative,
    /// quantities positive, totals adding up, status transitions legal.
    pub fn validate(&self) -> Result<(), InvalidField> {
        match self {
            DomainEvent::CustomerRegistered(CustomerRegistered {
                customer_id,
                name,
                email,
                country,
            })
            | DomainEvent::CustomerUpdated(CustomerUpdated {
                customer_id,
                name,
                email,
                country,
            }) => {
                check_id("customer_id", customer_id)?;
                check_text("name", name, 200)?;
                check_text("email", email, 320)?;
                if !email.contains('@') {
                    return Err(invalid("email", "must contain `@`"));
                }
                check_text("country", country, 64)
            }
            DomainEvent::ProductCreated(e) => {
                check_id("product_id", &e.product_id)?;
                check_text("sku", &e.sku, 64)?;
                check_text("name", &e.name, 200)?;
                check_text("category", &e.category, 100)?;
                check_money("price", e.price)?;
                check_currency("currency", &e.currency)
            }
            DomainEvent::ProductPriceChanged(e) => {
                check_id("product_id", &e.product_id)?;
                check_money("old_price", e.old_price)?;
                check_money("new_price", e.new_price)?;
                check_currency("currency", &e.currency)
            }
            DomainEvent::OrderCreated(e) => {
                check_id("order_id", &e.order_id)?;
                check_id("customer_id", &e.customer_id)?;
                check_currency("currency", &e.currency)?;
                if e.lines.is_empty() {
                    return Err(invalid("lines", "must not be empty"));
                }
                let mut sum = Decimal::ZERO;
                for (i, line) in e.lines.iter().enumerate() {
                    // The line's field names are spelled out only for a fault (no
                    // allocation per valid line).
                    let in_line =
                        |e: InvalidField| invalid(format!("lines[{i}].{}", e.field), e.reason);
                    check_id("product_id", &line.product_id).map_err(in_line)?;
                    check_quantity("quantity", line.quantity).map_err(in_line)?;
                    check_money("unit_price", line.unit_price).map_err(in_line)?;
                    if line.line_no != i as i32 + 1 {
                        return Err(invalid(format!("lines[{i}].line_no"), "must count from 1"));
                    }
                    sum += line.unit_price * Decimal::from(line.quantity);
                }
                check_money("total", e.total)?;
                if sum != e.total {
                    return Err(invalid(
                        "total",
                        format!("is {} but the lines add up to {sum}", e.total),
                    ));
                }
                Ok(())
            }
            DomainEvent::OrderStatusChanged(e) => {
                check_id("order_id", &e.order_id)?;
                check_id("customer_id", &e.customer_id)?;
                match e.from {
                    None if e.to != OrderStatus::Placed => {
                        Err(invalid("from", "may be null only when `to` is Placed"))
                    }
                    Some(from) if !from.can_become(e.to) => Err(invalid(
                        "to",
                        format!("an order cannot go from {from} to {}", e.to),
                    )),
                    _ => Ok(()),
                }
            }
            DomainEvent::ProductPurchased(e) => {
                check_id("order_id", &e.order_id)?;
                check_id("customer_id", &e.customer_id)?;
                check_id("product_id", &e.product_id)?;
                if e.line_no < 1 {
                    return Err(invalid("line_no", "must be at least 1"));
                }
                check_quantity("quantity", e.quantity)?;
                check_money("unit_price", e.unit_price)?;
                check_money("revenue", e.revenue)?;
                check_currency("currency", &e.currency)?;
                if e.unit_price * Decimal::from(e.quantity) != e.revenue {
                    return Err(invalid("revenue", "must equal quantity * unit_price"));
                }
                Ok(())
            }
            DomainEvent::PaymentCompleted(PaymentCompleted {
                payment_id,
                order_id,
                amount,
                currency,
                method,
            })
            | DomainEvent::PaymentFailed(PaymentFailed {
                payment_id,
                order_id,
                amount,
                currency,
                method,
                ..
            }) => {
                check_id("payment_id", payment_id)?;
                check_id("order_id", order_id)?;
                check_money("amount", *amount)?;
                check_currency("currency", currency)?;
                check_text("method", method, 32)
            }
            DomainEvent::PaymentRefunded(e) => {
                check_id("payment_id", &e.payment_id)?;
                check_id("order_id", &e.order_id)?;
                check_money("amount", e.amount)?;
                check_currency("currency", &e.currency)
            }
            DomainEvent::ShipmentCreated(ShipmentCreated {
                shipment_id,
                order_id,
                location,
                ..
            })
            | DomainEvent::ShipmentLocationUpdated(ShipmentLocationUpdated {
                shipment_id,
                order_id,
                location,
                ..
            })
            | DomainEvent::ShipmentDelivered(ShipmentDelivered {
                shipment_id,
                order_id,
                location,
            }) => {
                check_id("shipment_id", shipment_id)?;
                check_id("order_id", order_id)?;
                check_text("location", location, 200)?;
                if let DomainEvent::ShipmentCreated(e) = self {
                    check_text("carrier", &e.carrier, 64)?;
                }
                Ok(())
            }
        }
    }
}

macro_rules! impl_from_event {
    ($($name:ident),*) => {
        $(impl From<$name> for DomainEvent {
            fn from(e: $name) -> Self {
                DomainEvent::$name(e)
            }
        })*
    };
}

impl_from_event!(
    CustomerRegistered,
    CustomerUpdated,
    ProductCreated,
    ProductPriceChanged,
    OrderCreated,
    OrderStatusChanged,
    ProductPurchased,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    ShipmentCreated,
    ShipmentLocationUpdated,
    ShipmentDelivered
);
