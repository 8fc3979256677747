//! Shop events without end, for the scenarios that need many: chunk after chunk of
//! `shoplens_test_support::events`'s stream, generated as they are taken, so the largest backlog
//! never has to be in memory at once.

use std::collections::VecDeque;

use shoplens_contract::{Envelope, Service};
use shoplens_test_support::events::{StreamSpec, shop_events};

/// Chunks of the synthetic shop stream, one after another in time. Customers and products
/// are registered in the first chunk only: later chunks' orders refer to the same ones.
pub struct ShopEvents {
    chunk: StreamSpec,
    next: u64,
    buf: VecDeque<Envelope>,
}

impl ShopEvents {
    /// Chunks shaped like `chunk`: chunk k starts k spans after `chunk.start`, and its seed
    /// derives from `chunk.seed` and k (every event id is new).
    pub fn new(chunk: StreamSpec) -> ShopEvents {
        ShopEvents {
            chunk,
            next: 0,
            buf: VecDeque::new(),
        }
    }

    /// The next `n` events.
    pub fn take(&mut self, n: usize) -> Vec<Envelope> {
        while self.buf.len() < n {
            let k = self.next;
            let spec = StreamSpec {
                seed: self.chunk.seed.wrapping_mul(1_000_003).wrapping_add(k),
                start: self.chunk.start + self.chunk.span * k as i32,
                ..self.chunk.clone()
            };
            self.buf.extend(
                shop_events(&spec).into_iter().filter(|e| {
                    k == 0 || !matches!(e.producer, Service::Customer | Service::Product)
                }),
            );
            self.next += 1;
        }
        self.buf.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_one_another_and_register_customers_once() {
        let first = StreamSpec {
            orders: 10,
            customers: 5,
            products: 3,
            span: chrono::Duration::days(1),
            ..StreamSpec::default()
        };
        let start = first.start;
        let mut events = ShopEvents::new(first);
        let all = events.take(500);
        assert_eq!(all.len(), 500);
        let registered = |s: Service| all.iter().filter(|e| e.producer == s).count();
        assert_eq!(registered(Service::Customer), 5);
        assert_eq!(registered(Service::Product), 3);
        let last = all.iter().map(|e| e.occurred_at).max().unwrap();
        assert!(
            last - start > chrono::Duration::days(2),
            "{start} .. {last}"
        );
    }
}
