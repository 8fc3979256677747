//! The columns of every raw table, each defined once: its name and how an envelope fills
//! it. The fill's kind fixes the column's Arrow type and nullability, so the schema
//! ([`RawTable::schema`]) and the rows ([`super::TableRows`]) are both read off this list.

use std::fmt;

use arrow_schema::{DataType, Field, TimeUnit};
use rust_decimal::Decimal;

use super::{EVENT_ID, MONEY, OCCURRED_AT, RawTable};
use crate::{DomainEvent, Envelope};

/// One column of a raw table.
#[derive(Clone, Copy)]
pub struct Column {
    name: &'static str,
    fill: Fill,
}

/// How an envelope fills a column; the variant is the column's type and nullability.
///
/// A fill is only ever handed envelopes of its own table ([`super::TableRows`] picks the
/// table with [`RawTable::for_event`]).
#[derive(Clone, Copy)]
pub(crate) enum Fill {
    /// The envelope's `event_id` as text (Utf8, not null).
    EventId,
    /// Utf8, not null.
    Str(for<'a> fn(&'a Envelope) -> &'a str),
    /// Utf8, nullable.
    OptStr(for<'a> fn(&'a Envelope) -> Option<&'a str>),
    /// Int32, not null.
    Int(fn(&Envelope) -> i32),
    /// [`MONEY`], not null; the amount has at most two decimal places (validated).
    Money(fn(&Envelope) -> Decimal),
    /// [`MONEY`], nullable.
    OptMoney(fn(&Envelope) -> Option<Decimal>),
    /// Timestamp(ms, UTC), not null: ms since the Unix epoch.
    Time(fn(&Envelope) -> i64),
    /// Timestamp(ms, UTC), nullable.
    OptTime(fn(&Envelope) -> Option<i64>),
}

/// The Arrow type of every time column.
fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

impl Column {
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn data_type(&self) -> DataType {
        match self.fill {
            Fill::EventId | Fill::Str(_) | Fill::OptStr(_) => DataType::Utf8,
            Fill::Int(_) => DataType::Int32,
            Fill::Money(_) | Fill::OptMoney(_) => MONEY,
            Fill::Time(_) | Fill::OptTime(_) => timestamp(),
        }
    }

    pub fn is_nullable(&self) -> bool {
        matches!(
            self.fill,
            Fill::OptStr(_) | Fill::OptMoney(_) | Fill::OptTime(_)
        )
    }

    /// The column as an Arrow field of the table's schema.
    pub fn field(&self) -> Field {
        Field::new(self.name, self.data_type(), self.is_nullable())
    }

    pub(crate) fn fill(&self) -> Fill {
        self.fill
    }
}

impl fmt::Debug for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Column")
            .field("name", &self.name)
            .field("data_type", &self.data_type())
            .field("nullable", &self.is_nullable())
            .finish()
    }
}

const fn utf8(name: &'static str, fill: for<'a> fn(&'a Envelope) -> &'a str) -> Column {
    Column {
        name,
        fill: Fill::Str(fill),
    }
}

const fn opt_utf8(name: &'static str, fill: for<'a> fn(&'a Envelope) -> Option<&'a str>) -> Column {
    Column {
        name,
        fill: Fill::OptStr(fill),
    }
}

const fn int(name: &'static str, fill: fn(&Envelope) -> i32) -> Column {
    Column {
        name,
        fill: Fill::Int(fill),
    }
}

const fn money(name: &'static str, fill: fn(&Envelope) -> Decimal) -> Column {
    Column {
        name,
        fill: Fill::Money(fill),
    }
}

const fn opt_money(name: &'static str, fill: fn(&Envelope) -> Option<Decimal>) -> Column {
    Column {
        name,
        fill: Fill::OptMoney(fill),
    }
}

const fn time(name: &'static str, fill: fn(&Envelope) -> i64) -> Column {
    Column {
        name,
        fill: Fill::Time(fill),
    }
}

const fn opt_time(name: &'static str, fill: fn(&Envelope) -> Option<i64>) -> Column {
    Column {
        name,
        fill: Fill::OptTime(fill),
    }
}

/// A fill was handed an event of another table, which [`super::TableRows`] never does.
fn other_table(env: &Envelope) -> ! {
    unreachable!(
        "a {} event is not a row of this table",
        env.event_type().as_str()
    )
}

/// The value of a field that each of the listed event types has under the same name.
macro_rules! each {
    ($env:ident, [$($variant:ident),+ $(,)?], |$e:ident| $value:expr) => {
        match &$env.payload {
            $(DomainEvent::$variant($e) => $value,)+
            _ => other_table($env),
        }
    };
}

const EVENT_ID_COLUMN: Column = Column {
    name: EVENT_ID,
    fill: Fill::EventId,
};

const OCCURRED_AT_COLUMN: Column = time(OCCURRED_AT, |env| env.occurred_at.timestamp_millis());

/// Tells the event types of one table apart (a registration from an update, ...).
const EVENT_TYPE: Column = utf8("event_type", |env| env.event_type().as_str());

static CUSTOMERS: &[Column] = &[
    EVENT_ID_COLUMN,
    OCCURRED_AT_COLUMN,
    EVENT_TYPE,
    utf8("customer_id", |env| {
        each!(env, [CustomerRegistered, CustomerUpdated], |e| &e
            .customer_id)
    }),
    utf8("name", |env| {
        each!(env, [CustomerRegistered, CustomerUpdated], |e| &e.name)
    }),
    utf8("email", |env| {
        each!(env, [CustomerRegistered, CustomerUpdated], |e| &e.email)
    }),
    utf8("country", |env| {
        each!(env, [CustomerRegistered, CustomerUpdated], |e| &e.country)
    }),
];

/// For a price change, sku/name/category are null and price is the new price.
static PRODUCTS: &[Column] = &[
    EVENT_ID_COLUMN,
    OCCURRED_AT_COLUMN,
    EVENT_TYPE,
    utf8("product_id", |env| {
        each!(env, [ProductCreated, ProductPriceChanged], |e| &e
            .product_id)
    }),
    opt_utf8("sku", |env| match &env.payload {
        DomainEvent::ProductCreated(e) => Some(e.sku.as_str()),
        DomainEvent::ProductPriceChanged(_) => None,
        _ => other_table(env),
    }),
    opt_utf8("name", |env| match &env.payload {
        DomainEvent::ProductCreated(e) => Some(e.name.as_str()),
        DomainEvent::ProductPriceChanged(_) => None,
        _ => other_table(env),
    }),
    opt_utf8("category", |env| match &env.payload {
        DomainEvent::ProductCreated(e) => Some(e.category.as_str()),
        DomainEvent::ProductPriceChanged(_) => None,
        _ => other_table(env),
    }),
    money("price", |env| match &env.payload {
        DomainEvent::ProductCreated(e) => e.price,
        DomainEvent::ProductPriceChanged(e) => e.new_price,
        _ => other_table(env),
    }),
    utf8("currency", |env| {
        each!(env, [ProductCreated, ProductPriceChanged], |e| &e.currency)
    }),
];

static ORDERS: &[Column] = &[
    EVENT_ID_COLUMN,
    OCCURRED_AT_COLUMN,
    utf8("order_id", |env| {
        each!(env, [OrderCreated], |e| &e.order_id)
    }),
    utf8("customer_id", |env| {
        each!(env, [OrderCreated], |e| &e.customer_id)
    }),
    int("line_count", |env| {
        each!(env, [OrderCreated], |e| e.lines.len() as i32)
    }),
    int("item_count", |env| {
        each!(env, [OrderCreated], |e| e
            .lines
            .iter()
            .map(|l| l.quantity)
            .sum())
    }),
    money("total", |env| each!(env, [OrderCreated], |e| e.total)),
    utf8("currency", |env| {
        each!(env, [OrderCreated], |e| &e.currency)
    }),
];

static ORDER_STATUS_CHANGES: &[Column] = &[
    EVENT_ID_COLUMN,
    OCCURRED_AT_COLUMN,
    utf8("order_id", |env| {
        each!(env, [OrderStatusChanged], |e| &e.order_id)
    }),
    utf8("customer_id", |env| {
        each!(env, [OrderStatusChanged], |e| &e.customer_id)
    }),
    opt_utf8("from_status", |env| {
        each!(env, [OrderStatusChanged], |e| e.from.map(|f| f.as_str()))
    }),
    utf8("to_status", |env| {
        each!(env, [OrderStatusChanged], |e| e.to.as_str())
    }),
];

static PRODUCT_PURCHASES: &[Column] = &[
    EVENT_ID_COLUMN,
    OCCURRED_AT_COLUMN,
    utf8("order_id", |env| {
        each!(env, [ProductPurchased], |e| &e.order_id)
    }),
    int("line_no", |env| {
        each!(env, [ProductPurchased], |e| e.line_no)
    }),
    utf8("customer_id", |env| {
        each!(env, [ProductPurchased], |e| &e.customer_id)
    }),
    utf8("product_id", |env| {
        each!(env, [ProductPurchased], |e| &e.product_id)
    }),
    int("quantity", |env| {
        each!(env, [ProductPurchased], |e| e.quantity)
    }),
    money("unit_price", |env| {
        each!(env, [ProductPurchased], |e| e.unit_price)
    }),
    money("revenue", |env| {
        each!(env, [ProductPurchased], |e| e.revenue)
    }),
    utf8("currency", |env| {
        each!(env, [ProductPurchased], |e| &e.currency)
    }),
];

/// status: Completed / Failed / Refunded; reason is set for the last two.
static PAYMENTS: &[Column] = &[
    EVENT_ID_COLUMN,
    OCCURRED_AT_COLUMN,
    EVENT_TYPE,
    utf8("payment_id", |env| {
        each!(
            env,
            [PaymentCompleted, PaymentFailed, PaymentRefunded],
            |e| &e.payment_id
        )
    }),
    utf8("order_id", |env| {
        each!(
            env,
            [PaymentCompleted, PaymentFailed, PaymentRefunded],
            |e| &e.order_id
        )
    }),
    utf8("status", |env| match &env.payload {
        DomainEvent::PaymentCompleted(_) => "Completed",
        DomainEvent::PaymentFailed(_) => "Failed",
        DomainEvent::PaymentRefunded(_) => "Refunded",
        _ => other_table(env),
    }),
    opt_money("amount", |env| {
        each!(
            env,
            [PaymentCompleted, PaymentFailed, PaymentRefunded],
            |e| Some(e.amount)
        )
    }),
    utf8("currency", |env| {
        each!(
            env,
            [PaymentCompleted, PaymentFailed, PaymentRefunded],
            |e| &e.currency
        )
    }),
    opt_utf8("method", |env| match &env.payload {
        DomainEvent::PaymentCompleted(e) => Some(e.method.as_str()),
        DomainEvent::PaymentFailed(e) => Some(e.method.as_str()),
        DomainEvent::PaymentRefunded(_) => None,
        _ => other_table(env),
    }),
    opt_utf8("reason", |env| match &env.payload {
        DomainEvent::PaymentCompleted(_) => None,
        DomainEvent::PaymentFailed(e) => Some(e.reason.as_str()),
        DomainEvent::PaymentRefunded(e) => Some(e.reason.as_str()),
        _ => other_table(env),
    }),
];

/// carrier is set when the shipment is created; eta until it is delivered.
static SHIPMENTS: &[Column] = &[
    EVENT_ID_COLUMN,
    OCCURRED_AT_COLUMN,
    EVENT_TYPE,
    utf8("shipment_id", |env| {
        each!(
            env,
            [ShipmentCreated, ShipmentLocationUpdated, ShipmentDelivered],
            |e| &e.shipment_id
        )
    }),
    utf8("order_id", |env| {
        each!(
            env,
            [ShipmentCreated, ShipmentLocationUpdated, ShipmentDelivered],
            |e| &e.order_id
        )
    }),
    opt_utf8("carrier", |env| match &env.payload {
        DomainEvent::ShipmentCreated(e) => Some(e.carrier.as_str()),
        DomainEvent::ShipmentLocationUpdated(_) | DomainEvent::ShipmentDelivered(_) => None,
        _ => other_table(env),
    }),
    utf8("location", |env| {
        each!(
            env,
            [ShipmentCreated, ShipmentLocationUpdated, ShipmentDelivered],
            |e| &e.location
        )
    }),
    opt_time("eta", |env| match &env.payload {
        DomainEvent::ShipmentCreated(e) => Some(e.eta.timestamp_millis()),
        DomainEvent::ShipmentLocationUpdated(e) => Some(e.eta.timestamp_millis()),
        DomainEvent::ShipmentDelivered(_) => None,
        _ => other_table(env),
    }),
];

/// The columns of `table`, in order.
pub(super) fn of(table: RawTable) -> &'static [Column] {
    match table {
        RawTable::Customers => CUSTOMERS,
        RawTable::Products => PRODUCTS,
        RawTable::Orders => ORDERS,
        RawTable::OrderStatusChanges => ORDER_STATUS_CHANGES,
        RawTable::ProductPurchases => PRODUCT_PURCHASES,
        RawTable::Payments => PAYMENTS,
        RawTable::Shipments => SHIPMENTS,
    }
}
