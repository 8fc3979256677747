//! The raw event tables the read side stores, as Arrow schemas.
//!
//! Every row is one event: `event_id` (the dedup key) and `occurred_at` come first, then the
//! payload's fields flattened. Money is `Decimal128(18, 2)`, time is UTC milliseconds.
//! Both sinks (ClickHouse and the embedded store) hold exactly these columns.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::EventType;

/// Precision and scale of every money column.
pub const MONEY: DataType = DataType::Decimal128(18, 2);

/// A raw event table of the read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RawTable {
    Customers,
    Products,
    Orders,
    OrderStatusChanges,
    ProductPurchases,
    Payments,
    Shipments,
}

impl RawTable {
    pub const ALL: [RawTable; 7] = [
        RawTable::Customers,
        RawTable::Products,
        RawTable::Orders,
        RawTable::OrderStatusChanges,
        RawTable::ProductPurchases,
        RawTable::Payments,
        RawTable::Shipments,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RawTable::Customers => "customer_events",
            RawTable::Products => "product_events",
            RawTable::Orders => "orders",
            RawTable::OrderStatusChanges => "order_status_changes",
            RawTable::ProductPurchases => "product_purchases",
            RawTable::Payments => "payment_events",
            RawTable::Shipments => "shipment_events",
        }
    }

    /// The table an event type is stored in.
    pub fn for_event(event_type: EventType) -> RawTable {
        use EventType::*;
        match event_type {
            CustomerRegistered | CustomerUpdated => RawTable::Customers,
            ProductCreated | ProductPriceChanged => RawTable::Products,
            OrderCreated => RawTable::Orders,
            OrderStatusChanged => RawTable::OrderStatusChanges,
            ProductPurchased => RawTable::ProductPurchases,
            PaymentCompleted | PaymentFailed | PaymentRefunded => RawTable::Payments,
            ShipmentCreated | ShipmentLocationUpdated | ShipmentDelivered => RawTable::Shipments,
        }
    }

    pub fn schema(self) -> SchemaRef {
        let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
        let opt_utf8 = |name: &str| Field::new(name, DataType::Utf8, true);
        let money = |name: &str| Field::new(name, MONEY, false);
        let opt_money = |name: &str| Field::new(name, MONEY, true);
        let int = |name: &str| Field::new(name, DataType::Int32, false);
        let time = |name: &str| {
            Field::new(
                name,
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            )
        };
        let mut fields = vec![utf8("event_id"), time("occurred_at")];
        fields.extend(match self {
            // event_type tells a registration from an update.
            RawTable::Customers => vec![
                utf8("event_type"),
                utf8("customer_id"),
                utf8("name"),
                utf8("email"),
                utf8("country"),
            ],
            // For a price change, sku/name/category are null and price is the new price.
            RawTable::Products => vec![
                utf8("event_type"),
                utf8("product_id"),
                opt_utf8("sku"),
                opt_utf8("name"),
                opt_utf8("category"),
                money("price"),
                utf8("currency"),
            ],
            RawTable::Orders => vec![
                utf8("order_id"),
                utf8("customer_id"),
                int("line_count"),
                int("item_count"),
                money("total"),
                utf8("currency"),
            ],
            RawTable::OrderStatusChanges => vec![
                utf8("order_id"),
                utf8("customer_id"),
                opt_utf8("from_status"),
                utf8("to_status"),
            ],
            RawTable::ProductPurchases => vec![
                utf8("order_id"),
                int("line_no"),
                utf8("customer_id"),
                utf8("product_id"),
                int("quantity"),
                money("unit_price"),
                money("revenue"),
                utf8("currency"),
            ],
            // status: Completed / Failed / Refunded; reason is set for the last two.
            RawTable::Payments => vec![
                utf8("event_type"),
                utf8("payment_id"),
                utf8("order_id"),
                utf8("status"),
                opt_money("amount"),
                utf8("currency"),
                opt_utf8("method"),
                opt_utf8("reason"),
            ],
            RawTable::Shipments => vec![
                utf8("event_type"),
                utf8("shipment_id"),
                utf8("order_id"),
                opt_utf8("carrier"),
                utf8("location"),
                Field::new(
                    "eta",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    true,
                ),
            ],
        });
        Arc::new(Schema::new(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_a_table_that_starts_with_the_dedup_key() {
        for t in EventType::ALL {
            let schema = RawTable::for_event(t).schema();
            assert_eq!(schema.field(0).name(), "event_id");
            assert_eq!(schema.field(1).name(), "occurred_at");
        }
        let names: std::collections::HashSet<_> = RawTable::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), RawTable::ALL.len());
    }
}
