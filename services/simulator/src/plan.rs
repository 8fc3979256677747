//! The decisions for one order, drawn from `(seed, order number)` alone, without any I/O.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::SimConfig;
use crate::zipf::Popularity;

/// Independent random streams derived from the seed; each item of each stream has its own RNG.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub(crate) enum Stream {
    Customer = 1,
    Product = 2,
    Order = 3,
    HotProducts = 4,
    History = 5,
}

/// The RNG for item `k` of `stream` under `seed`: the full 64 bits of each go into the
/// ChaCha key, so no two (seed, stream, k) share a sequence.
pub(crate) fn rng_for(seed: u64, stream: Stream, k: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(stream as u64).to_le_bytes());
    key[16..24].copy_from_slice(&k.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// Share of orders cancelled right after being placed.
pub const CANCEL_AT_ONCE: f64 = 0.05;
/// Share of paying orders whose first payment attempt is declined.
pub const FIRST_PAYMENT_DECLINED: f64 = 0.08;
/// Share of declined orders that give up (and get cancelled) instead of paying again.
pub const GIVE_UP_AFTER_DECLINE: f64 = 0.25;
/// Share of paid orders that are refunded and cancelled.
pub const REFUND: f64 = 0.03;

const CARRIERS: [&str; 4] = ["DHL", "UPS", "FedEx", "PostNL"];
const WAREHOUSES: [&str; 6] = [
    "Venlo",
    "Tilburg",
    "Rotterdam",
    "Duisburg",
    "Leipzig",
    "Bad Hersfeld",
];
const CITIES: [&str; 20] = [
    "Amsterdam",
    "Utrecht",
    "Eindhoven",
    "Antwerp",
    "Brussels",
    "Lille",
    "Paris",
    "Lyon",
    "Cologne",
    "Frankfurt",
    "Hamburg",
    "Berlin",
    "Munich",
    "Vienna",
    "Zurich",
    "Milan",
    "Barcelona",
    "Madrid",
    "Copenhagen",
    "Warsaw",
];
/// Payment methods with their weights (percent).
const METHODS: [(&str, u32); 3] = [("card", 70), ("paypal", 20), ("bank_transfer", 10)];

/// One line of a planned order: indexes into the catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedLine {
    pub product: usize,
    pub quantity: u32,
}

/// How a planned order ends when nothing fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FinalStatus {
    Delivered,
    Cancelled,
}

impl FinalStatus {
    /// The order service's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Delivered => "Delivered",
            FinalStatus::Cancelled => "Cancelled",
        }
    }
}

/// Everything decided about order number `index` before it starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlan {
    pub index: u64,
    /// Index into the catalogue's customers.
    pub customer: usize,
    /// 1 to 4 lines with distinct products, quantity 1 to 3.
    pub lines: Vec<PlannedLine>,
    /// Cancelled right after being placed (no payment).
    pub cancel_at_once: bool,
    /// The first payment attempt uses a card that is declined.
    pub first_payment_declined: bool,
    /// After a declined payment, the customer gives up and the order is cancelled.
    pub give_up_after_decline: bool,
    /// `card`, `paypal` or `bank_transfer` for the successful attempt.
    pub method: String,
    /// Refunded (and cancelled) after being paid.
    pub refund: bool,
    pub carrier: String,
    /// Where the shipment starts.
    pub warehouse: String,
    /// Days from now to the first promised delivery.
    pub eta_days: u32,
    /// 2 to 4 places the parcel passes through.
    pub route: Vec<String>,
    /// Where it is delivered.
    pub destination: String,
}

impl OrderPlan {
    /// The status the order ends in if every call succeeds.
    pub fn final_status(&self) -> FinalStatus {
        if !self.gets_paid() || self.refund {
            FinalStatus::Cancelled
        } else {
            FinalStatus::Delivered
        }
    }

    /// Whether the order gets paid if every call succeeds.
    pub fn gets_paid(&self) -> bool {
        let gives_up = self.first_payment_declined && self.give_up_after_decline;
        !(self.cancel_at_once || gives_up)
    }
}

/// Draws [`OrderPlan`]s for a catalogue of a given size; order `k`'s plan depends only on
/// the config, the catalogue size and `k`.
#[derive(Clone, Debug)]
pub struct Planner {
    seed: u64,
    customers: Popularity,
    products: Popularity,
    n_products: usize,
    /// Products on sale, and the share of lines that pick one (festival only).
    hot: Option<(Vec<usize>, f64)>,
}

impl Planner {
    pub fn new(config: &SimConfig, n_customers: usize, n_products: usize) -> Planner {
        let hot = (config.festival.enabled && config.festival.hot_products > 0).then(|| {
            let mut rng = rng_for(config.seed, Stream::HotProducts, 0);
            let amount = config.festival.hot_products.min(n_products.max(1));
            let hot = rand::seq::index::sample(&mut rng, n_products.max(1), amount).into_vec();
            (hot, config.festival.hot_share)
        });
        Planner {
            seed: config.seed,
            customers: Popularity::new(n_customers, config.zipf_exponent),
            products: Popularity::new(n_products, config.zipf_exponent),
            n_products: n_products.max(1),
            hot,
        }
    }

    /// The products on sale during the festival (empty without one).
    pub fn hot_products(&self) -> &[usize] {
        self.hot.as_ref().map_or(&[], |(hot, _)| hot)
    }

    /// The plan for order number `k`.
    pub fn plan(&self, k: u64) -> OrderPlan {
        // Every value is drawn on every path, in a fixed order, so that a change to one
        // decision's branch never shifts the others.
        let mut rng = rng_for(self.seed, Stream::Order, k);
        let customer = self.customers.sample(&mut rng);
        let n_lines = rng.random_range(1..=4usize).min(self.n_products);
        let mut lines: Vec<PlannedLine> = Vec::with_capacity(n_lines);
        while lines.len() < n_lines {
            let product = self.pick_product(&mut rng, &lines);
            let quantity = rng.random_range(1..=3);
            lines.push(PlannedLine { product, quantity });
        }
        let cancel_at_once = rng.random_bool(CANCEL_AT_ONCE);
        let first_payment_declined = rng.random_bool(FIRST_PAYMENT_DECLINED);
        let give_up_after_decline = rng.random_bool(GIVE_UP_AFTER_DECLINE);
        let method = METHODS
            .choose_weighted(&mut rng, |(_, w)| *w)
            .expect("weights are positive")
            .0;
        let refund = rng.random_bool(REFUND);
        let carrier = *CARRIERS.choose(&mut rng).expect("not empty");
        let warehouse = *WAREHOUSES.choose(&mut rng).expect("not empty");
        let eta_days = rng.random_range(2..=5);
        let hops = rng.random_range(2..=4);
        let mut places = CITIES.choose_multiple(&mut rng, hops + 1);
        let route: Vec<String> = places.by_ref().take(hops).map(|c| c.to_string()).collect();
        let destination = places.next().expect("hops + 1 cities").to_string();
        OrderPlan {
            index: k,
            customer,
            lines,
            cancel_at_once,
            first_payment_declined,
            give_up_after_decline,
            method: method.to_owned(),
            refund,
            carrier: carrier.to_owned(),
            warehouse: warehouse.to_owned(),
            eta_days,
            route,
            destination,
        }
    }

    /// A product not yet on the order: by popularity, or a hot one during the festival.
    fn pick_product(&self, rng: &mut ChaCha8Rng, lines: &[PlannedLine]) -> usize {
        let taken = |p: usize| lines.iter().any(|l| l.product == p);
        for _ in 0..32 {
            let p = match &self.hot {
                Some((hot, share)) if rng.random_bool(*share) => {
                    *hot.choose(rng).expect("hot set is not empty")
                }
                _ => self.products.sample(rng),
            };
            if !taken(p) {
                return p;
            }
        }
        // Very skewed popularity keeps picking the same few: take the next free one.
        let start = self.products.sample(rng);
        (0..self.n_products)
            .map(|i| (start + i) % self.n_products)
            .find(|p| !taken(*p))
            .expect("fewer lines than products")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::FestivalConfig;

    fn planner(seed: u64) -> Planner {
        Planner::new(
            &SimConfig {
                seed,
                ..SimConfig::default()
            },
            200,
            100,
        )
    }

    #[test]
    fn the_same_seed_and_number_give_the_same_plan_in_any_order() {
        let a = planner(42);
        let b = planner(42);
        let forward: Vec<OrderPlan> = (0..300).map(|k| a.plan(k)).collect();
        let mut backward: Vec<OrderPlan> = (0..300).rev().map(|k| b.plan(k)).collect();
        backward.reverse();
        assert_eq!(forward, backward);
        assert_eq!(a.plan(17), a.plan(17));
        let other: Vec<OrderPlan> = (0..300).map(|k| planner(43).plan(k)).collect();
        assert_ne!(forward, other, "another seed decides otherwise");
        assert_ne!(a.plan(0), a.plan(1));
    }

    #[test]
    fn plans_respect_the_shapes_and_rough_shares() {
        let p = planner(1);
        let plans: Vec<OrderPlan> = (0..10_000).map(|k| p.plan(k)).collect();
        for plan in &plans {
            assert!((1..=4).contains(&plan.lines.len()), "{plan:?}");
            let distinct: HashSet<usize> = plan.lines.iter().map(|l| l.product).collect();
            assert_eq!(distinct.len(), plan.lines.len(), "distinct products");
            assert!(plan.lines.iter().all(|l| (1..=3).contains(&l.quantity)));
            assert!(plan.lines.iter().all(|l| l.product < 100));
            assert!(plan.customer < 200);
            assert!((2..=4).contains(&plan.route.len()));
            assert!(!plan.route.contains(&plan.destination));
            assert!(CARRIERS.contains(&plan.carrier.as_str()));
            assert!((2..=5).contains(&plan.eta_days));
        }
        let share = |f: &dyn Fn(&OrderPlan) -> bool| {
            plans.iter().filter(|p| f(p)).count() as f64 / plans.len() as f64
        };
        let near = |got: f64, want: f64| (got - want).abs() < want * 0.25 + 0.005;
        assert!(near(share(&|p| p.cancel_at_once), CANCEL_AT_ONCE));
        assert!(near(
            share(&|p| p.first_payment_declined),
            FIRST_PAYMENT_DECLINED
        ));
        assert!(near(share(&|p| p.refund), REFUND));
        assert!(near(share(&|p| p.method == "card"), 0.70));
        let delivered = share(&|p| p.final_status() == FinalStatus::Delivered);
        assert!((0.85..0.92).contains(&delivered), "{delivered}");
        let popular = share(&|p| p.customer < 20);
        assert!(popular > 0.5, "top 10% of customers place {popular}");
    }

    #[test]
    fn during_the_festival_most_lines_are_hot_products() {
        let config = SimConfig {
            seed: 9,
            festival: FestivalConfig {
                enabled: true,
                ..FestivalConfig::default()
            },
            ..SimConfig::default()
        };
        let p = Planner::new(&config, 200, 100);
        let hot: HashSet<usize> = p.hot_products().iter().copied().collect();
        assert_eq!(hot.len(), 10);
        assert_eq!(
            Planner::new(&config, 200, 100).hot_products(),
            p.hot_products()
        );
        let lines: Vec<PlannedLine> = (0..2_000).flat_map(|k| p.plan(k).lines).collect();
        let hot_lines = lines.iter().filter(|l| hot.contains(&l.product)).count();
        let share = hot_lines as f64 / lines.len() as f64;
        assert!(share > 0.7, "hot share {share}");
        assert!(planner(9).hot_products().is_empty());
    }

    #[test]
    fn a_tiny_or_extremely_skewed_catalogue_still_gets_distinct_lines() {
        let config = SimConfig {
            zipf_exponent: 50.0,
            ..SimConfig::default()
        };
        let one = Planner::new(&config, 1, 1);
        let skewed = Planner::new(&config, 10, 4);
        for k in 0..500 {
            let plan = one.plan(k);
            assert_eq!(plan.lines.len(), 1);
            assert_eq!((plan.customer, plan.lines[0].product), (0, 0));
            let plan = skewed.plan(k);
            let distinct: HashSet<usize> = plan.lines.iter().map(|l| l.product).collect();
            assert_eq!(distinct.len(), plan.lines.len());
        }
    }

    #[test]
    fn streams_and_items_get_different_rngs() {
        let draw = |seed, stream, k| rng_for(seed, stream, k).random::<u64>();
        assert_eq!(draw(1, Stream::Order, 5), draw(1, Stream::Order, 5));
        assert_ne!(draw(1, Stream::Order, 5), draw(1, Stream::Order, 6));
        assert_ne!(draw(1, Stream::Order, 5), draw(1, Stream::Customer, 5));
        assert_ne!(draw(1, Stream::Order, 5), draw(2, Stream::Order, 5));
    }
}
