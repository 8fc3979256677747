//! Deterministic synthetic event streams shaped like the shop's, for tests and benchmarks
//! of the read side (the services themselves are too slow to produce millions of events).
//!
//! Every event passes the contract's validation; the stream follows the services' rules
//! (an order is created, placed, then paid with one purchase per line and a payment, or
//! cancelled; paid orders are shipped and delivered), spread evenly over a time span.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use shoplens_bus::BusRecord;
use shoplens_contract::*;

/// A small, fast, seeded generator (SplitMix64): the same seed gives the same stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub seed: u64,
    pub customers: u32,
    pub products: u32,
    pub orders: u32,
    /// Time of the first event; later ones are spread over `span`.
    pub start: DateTime<Utc>,
    pub span: Duration,
}

impl Default for StreamSpec {
    fn default() -> Self {
        StreamSpec {
            seed: 7,
            customers: 50,
            products: 20,
            orders: 200,
            // Crosses a month and a year boundary.
            start: DateTime::from_timestamp(1_764_000_000, 0).unwrap_or_default(),
            span: Duration::days(60),
        }
    }
}

/// The events of `spec`, in publication order.
pub fn shop_events(spec: &StreamSpec) -> Vec<Envelope> {
    let mut rng = Rng(spec.seed);
    let mut out = Vec::new();
    let customers: Vec<String> = (0..spec.customers.max(1))
        .map(|i| format!("c{:05}", i))
        .collect();
    let products: Vec<(String, Decimal)> = (0..spec.products.max(1))
        .map(|i| {
            let cents = 100 + rng.below(20_000) as i64;
            (format!("p{:05}", i), Decimal::new(cents, 2))
        })
        .collect();
    let at = |k: u64, total: u64| {
        let ms = spec.span.num_milliseconds().max(1) as u64;
        spec.start + Duration::milliseconds((k * ms / total.max(1)) as i64)
    };
    for (i, c) in customers.iter().enumerate() {
        out.push(Envelope::at(
            CustomerRegistered {
                customer_id: c.clone(),
                name: format!("Customer {i}"),
                email: format!("{c}@example.com"),
                country: ["DE", "FR", "GB", "IN"][i % 4].into(),
            },
            spec.start,
        ));
    }
    for (i, (p, price)) in products.iter().enumerate() {
        out.push(Envelope::at(
            ProductCreated {
                product_id: p.clone(),
                sku: format!("SKU-{i}"),
                name: format!("Product {i}"),
                category: ["Books", "Games", "Garden"][i % 3].into(),
                price: *price,
                currency: "EUR".into(),
            },
            spec.start,
        ));
    }
    let orders = u64::from(spec.orders);
    for k in 0..orders {
        let when = at(k, orders);
        let order_id = format!("o{:08}", k);
        let customer = customers[rng.below(customers.len() as u64) as usize].clone();
        let lines: Vec<OrderLine> = (0..1 + rng.below(3))
            .map(|n| {
                let (product_id, unit_price) =
                    products[rng.below(products.len() as u64) as usize].clone();
                OrderLine {
                    line_no: n as i32 + 1,
                    product_id,
                    quantity: 1 + rng.below(4) as i32,
                    unit_price,
                }
            })
            .collect();
        let total: Decimal = lines
            .iter()
            .map(|l| l.unit_price * Decimal::from(l.quantity))
            .sum();
        out.push(Envelope::at(
            OrderCreated {
                order_id: order_id.clone(),
                customer_id: customer.clone(),
                lines: lines.clone(),
                total,
                currency: "EUR".into(),
            },
            when,
        ));
        let status = |from, to| OrderStatusChanged {
            order_id: order_id.clone(),
            customer_id: customer.clone(),
            from,
            to,
        };
        out.push(Envelope::at(status(None, OrderStatus::Placed), when));
        let later = when + Duration::seconds(30);
        if rng.below(10) == 0 {
            out.push(Envelope::at(
                status(Some(OrderStatus::Placed), OrderStatus::Cancelled),
                later,
            ));
            continue;
        }
        out.push(Envelope::at(
            status(Some(OrderStatus::Placed), OrderStatus::Paid),
            later,
        ));
        for l in &lines {
            out.push(Envelope::at(
                ProductPurchased {
                    order_id: order_id.clone(),
                    line_no: l.line_no,
                    customer_id: customer.clone(),
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    revenue: l.unit_price * Decimal::from(l.quantity),
                    currency: "EUR".into(),
                },
                later,
            ));
        }
        out.push(Envelope::at(
            PaymentCompleted {
                payment_id: format!("pay{:08}", k),
                order_id: order_id.clone(),
                amount: total,
                currency: "EUR".into(),
                method: "card".into(),
            },
            later,
        ));
        let shipped = later + Duration::hours(2);
        out.push(Envelope::at(
            ShipmentCreated {
                shipment_id: format!("s{:08}", k),
                order_id: order_id.clone(),
                carrier: "DHL".into(),
                location: "Warehouse".into(),
                eta: shipped + Duration::days(2),
            },
            shipped,
        ));
        out.push(Envelope::at(
            status(Some(OrderStatus::Paid), OrderStatus::Shipped),
            shipped,
        ));
    }
    out
}

/// The bus record of an event: its producer's default topic, keyed by aggregate id.
pub fn to_record(env: &Envelope) -> BusRecord {
    BusRecord {
        topic: env.producer.default_topic().to_owned(),
        key: env.aggregate_id.clone(),
        payload: env.to_json().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_valid_deterministic_and_span_the_period() {
        let spec = StreamSpec::default();
        let a = shop_events(&spec);
        let b = shop_events(&spec);
        assert_eq!(a.len(), b.len());
        assert!(a.len() > 1_000, "{}", a.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.payload, y.payload);
            assert_eq!(x.occurred_at, y.occurred_at);
            Envelope::decode(&x.to_json()).expect("valid");
        }
        let last = a.iter().map(|e| e.occurred_at).max().unwrap();
        assert!(last - spec.start >= Duration::days(59));
    }
}
