//! The data the composer reads from the services (tolerant: unknown fields are ignored) and
//! the answers it gives (stable: see the crate documentation).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// Money as the services write it: a decimal string (`"12.50"`). A JSON number is accepted
/// too and kept as written.
fn money<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Money {
        S(String),
        N(serde_json::Number),
    }
    Ok(match Money::deserialize(d)? {
        Money::S(s) => s,
        Money::N(n) => n.to_string(),
    })
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OrderLine {
    pub line_no: i32,
    pub product_id: String,
    pub quantity: i32,
    #[serde(deserialize_with = "money")]
    pub unit_price: String,
    #[serde(deserialize_with = "money")]
    pub line_total: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Order {
    pub id: String,
    pub customer_id: String,
    pub status: String,
    pub lines: Vec<OrderLine>,
    #[serde(deserialize_with = "money")]
    pub total: String,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OrderPage {
    pub orders: Vec<Order>,
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub email: String,
    pub country: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(deserialize_with = "money")]
    pub price: String,
    pub currency: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProductBatch {
    pub products: Vec<Product>,
    #[serde(default)]
    pub missing: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Payment {
    pub id: String,
    pub order_id: String,
    /// `Pending`, `Success`, `Failed` or `Refunded`.
    pub status: String,
    pub method: String,
    #[serde(deserialize_with = "money")]
    pub amount: String,
    pub currency: String,
    #[serde(default)]
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PaymentList {
    pub payments: Vec<Payment>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Shipment {
    pub id: String,
    pub order_id: String,
    pub carrier: String,
    /// `Created`, `InTransit` or `Delivered`.
    pub status: String,
    /// Where the parcel is now.
    pub location: String,
    #[serde(default)]
    pub eta: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The last update of the shipment.
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShipmentList {
    pub shipments: Vec<Shipment>,
}

/// The latest (by `created_at`, then id) of each order's payments.
pub fn latest_payments(list: Vec<Payment>) -> BTreeMap<String, Payment> {
    let mut out: BTreeMap<String, Payment> = BTreeMap::new();
    for p in list {
        let newer = out
            .get(&p.order_id)
            .is_none_or(|cur| (p.created_at, &p.id) > (cur.created_at, &cur.id));
        if newer {
            out.insert(p.order_id.clone(), p);
        }
    }
    out
}

/// The latest (by `created_at`, then id) of each order's shipments.
pub fn latest_shipments(list: Vec<Shipment>) -> BTreeMap<String, Shipment> {
    let mut out: BTreeMap<String, Shipment> = BTreeMap::new();
    for s in list {
        let newer = out
            .get(&s.order_id)
            .is_none_or(|cur| (s.created_at, &s.id) > (cur.created_at, &cur.id));
        if newer {
            out.insert(s.order_id.clone(), s);
        }
    }
    out
}

/// How fresh a section of an answer is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum SectionStatus {
    /// Fresh: fetched now or within its TTL.
    Ok,
    /// The service failed; this is the last good answer, older than its TTL.
    Stale,
    /// The service failed and nothing recent is known.
    Unavailable,
}

/// One section of an answer: the data, how old it is, and why it is not fresh if it is not.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Section<T> {
    pub status: SectionStatus,
    /// When the data was fetched from its service (RFC 3339); null when unavailable.
    pub as_of: Option<DateTime<Utc>>,
    /// Milliseconds since `as_of`; null when unavailable.
    pub age_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub data: Option<T>,
}

/// The order section's data.
pub type OrderData = Order;

/// The customer section's data.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CustomerData {
    pub id: String,
    pub name: String,
    pub email: String,
    pub country: String,
}

/// One order line with its product's current details (null when the product section could
/// not be loaded for it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProductLine {
    pub line_no: i32,
    pub product_id: String,
    pub quantity: i32,
    /// The unit price paid (the order line's `unit_price`).
    pub paid_price: String,
    pub line_total: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub image_url: Option<String>,
    /// The product's price now.
    pub current_price: Option<String>,
    pub currency: Option<String>,
}

/// The payment section's data: the order's latest payment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PaymentData {
    pub id: String,
    pub status: String,
    pub method: String,
    pub amount: String,
    pub currency: String,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The shipping section's data: the order's latest shipment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShippingData {
    pub id: String,
    pub status: String,
    pub carrier: String,
    pub location: String,
    pub eta: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub last_update: DateTime<Utc>,
}

impl From<&Customer> for CustomerData {
    fn from(c: &Customer) -> Self {
        CustomerData {
            id: c.id.clone(),
            name: c.name.clone(),
            email: c.email.clone(),
            country: c.country.clone(),
        }
    }
}

impl From<&Payment> for PaymentData {
    fn from(p: &Payment) -> Self {
        PaymentData {
            id: p.id.clone(),
            status: p.status.clone(),
            method: p.method.clone(),
            amount: p.amount.clone(),
            currency: p.currency.clone(),
            failure_reason: p.failure_reason.clone(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

impl From<&Shipment> for ShippingData {
    fn from(s: &Shipment) -> Self {
        ShippingData {
            id: s.id.clone(),
            status: s.status.clone(),
            carrier: s.carrier.clone(),
            location: s.location.clone(),
            eta: s.eta,
            created_at: s.created_at,
            last_update: s.updated_at,
        }
    }
}

/// `GET /api/v1/orders/{order_id}/summary`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OrderSummary {
    pub order_id: String,
    /// True when any section is not `ok`.
    pub degraded: bool,
    pub order: Section<OrderData>,
    pub customer: Section<CustomerData>,
    /// One entry per order line.
    pub products: Section<Vec<ProductLine>>,
    /// `data` is null when the order has no payment yet (that is `ok`).
    pub payment: Section<PaymentData>,
    /// `data` is null when the order has no shipment yet (that is `ok`).
    pub shipping: Section<ShippingData>,
}

/// `GET /api/v1/customers/{customer_id}/orders`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OrderList {
    pub customer_id: String,
    /// True when any summary is degraded.
    pub degraded: bool,
    /// Newest first.
    pub orders: Vec<OrderSummary>,
    /// Pass as `?cursor=` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(id: &str, order: &str, at: &str) -> Payment {
        Payment {
            id: id.into(),
            order_id: order.into(),
            status: "Failed".into(),
            method: "card".into(),
            amount: "1.00".into(),
            currency: "EUR".into(),
            failure_reason: None,
            created_at: at.parse().unwrap(),
            updated_at: at.parse().unwrap(),
        }
    }

    #[test]
    fn picks_the_latest_payment_per_order() {
        let latest = latest_payments(vec![
            payment("p1", "o1", "2026-01-01T10:00:00Z"),
            payment("p3", "o1", "2026-01-01T12:00:00Z"),
            payment("p2", "o1", "2026-01-01T11:00:00Z"),
            payment("p4", "o2", "2026-01-01T09:00:00Z"),
        ]);
        assert_eq!(latest["o1"].id, "p3");
        assert_eq!(latest["o2"].id, "p4");
    }

    #[test]
    fn reads_money_as_string_or_number() {
        let line: OrderLine = serde_json::from_str(
            r#"{"line_no":1,"product_id":"p","quantity":2,"unit_price":"1.50","line_total":3.0,"extra":1}"#,
        )
        .unwrap();
        assert_eq!(line.unit_price, "1.50");
        assert_eq!(line.line_total, "3.0");
    }

    #[test]
    fn sections_serialize_in_the_documented_shape() {
        let s: Section<CustomerData> = Section {
            status: SectionStatus::Unavailable,
            as_of: None,
            age_ms: None,
            reason: Some("customer service timed out".into()),
            data: None,
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"status":"unavailable","as_of":null,"age_ms":null,
                "reason":"customer service timed out","data":null})
        );
    }
}
