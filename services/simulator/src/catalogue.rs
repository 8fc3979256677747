//! The seeded catalogue: customers and products, each drawn from `(seed, item number)`, and
//! their idempotent creation.

use futures::{StreamExt, TryStreamExt};
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_distr::{Distribution, LogNormal};
use serde::{Deserialize, Serialize};

use crate::client::{Http, Retry};
use crate::plan::{Stream, rng_for};
use crate::{Catalogue, ShopUrls, SimConfig, SimError};

/// Creates in flight at once while seeding.
const SEED_CONCURRENCY: usize = 8;

const FIRST_NAMES: [&str; 24] = [
    "Ada", "Alan", "Anna", "Bram", "Chloe", "David", "Emma", "Fatima", "Finn", "Grace", "Hugo",
    "Ines", "Jan", "Julia", "Kenji", "Lars", "Lea", "Liam", "Maria", "Noah", "Olivia", "Priya",
    "Sofia", "Tom",
];
const LAST_NAMES: [&str; 20] = [
    "Jansen",
    "de Vries",
    "Müller",
    "Schmidt",
    "Dubois",
    "Martin",
    "Rossi",
    "García",
    "Smith",
    "Jones",
    "Nowak",
    "Novák",
    "Andersson",
    "Nielsen",
    "Bakker",
    "Visser",
    "Moreau",
    "Costa",
    "Kowalski",
    "Brown",
];
/// Countries with their weights.
const COUNTRIES: [(&str, u32); 10] = [
    ("NL", 25),
    ("DE", 20),
    ("FR", 12),
    ("GB", 10),
    ("BE", 8),
    ("ES", 7),
    ("IT", 7),
    ("SE", 4),
    ("PL", 4),
    ("US", 3),
];

/// A category, the median price of its products (EUR) and words for their names.
struct Category {
    name: &'static str,
    median_price: f64,
    adjectives: &'static [&'static str],
    nouns: &'static [&'static str],
}

const CATEGORIES: [Category; 8] = [
    Category {
        name: "Electronics",
        median_price: 150.0,
        adjectives: &["Wireless", "Smart", "Portable", "4K", "Noise-Cancelling"],
        nouns: &[
            "Headphones",
            "Speaker",
            "Monitor",
            "Camera",
            "Tablet",
            "Charger",
        ],
    },
    Category {
        name: "Books",
        median_price: 15.0,
        adjectives: &[
            "Illustrated",
            "Collected",
            "Complete",
            "Pocket",
            "Annotated",
        ],
        nouns: &["Novel", "Cookbook", "Atlas", "Poems", "Biography", "Guide"],
    },
    Category {
        name: "Fashion",
        median_price: 40.0,
        adjectives: &["Linen", "Wool", "Denim", "Classic", "Oversized"],
        nouns: &["Shirt", "Jacket", "Scarf", "Sneakers", "Dress", "Jeans"],
    },
    Category {
        name: "Home",
        median_price: 50.0,
        adjectives: &["Ceramic", "Oak", "Minimal", "Cosy", "Stackable"],
        nouns: &["Lamp", "Vase", "Chair", "Rug", "Mug Set", "Shelf"],
    },
    Category {
        name: "Toys",
        median_price: 25.0,
        adjectives: &["Wooden", "Magnetic", "Giant", "Puzzle", "Remote-Control"],
        nouns: &["Train", "Blocks", "Robot", "Doll", "Car", "Kite"],
    },
    Category {
        name: "Sports",
        median_price: 45.0,
        adjectives: &["Lightweight", "Pro", "Trail", "Waterproof", "Adjustable"],
        nouns: &[
            "Running Shoes",
            "Yoga Mat",
            "Racket",
            "Bottle",
            "Backpack",
            "Helmet",
        ],
    },
    Category {
        name: "Beauty",
        median_price: 20.0,
        adjectives: &["Organic", "Hydrating", "Gentle", "Vitamin C", "Matte"],
        nouns: &[
            "Serum",
            "Lipstick",
            "Shampoo",
            "Face Cream",
            "Perfume",
            "Soap",
        ],
    },
    Category {
        name: "Grocery",
        median_price: 5.0,
        adjectives: &["Fair-Trade", "Organic", "Roasted", "Spicy", "Artisan"],
        nouns: &["Coffee", "Tea", "Chocolate", "Olive Oil", "Pasta", "Honey"],
    },
];

/// The body of `POST /api/v1/customers` for customer `i` of `seed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCustomer {
    pub name: String,
    pub email: String,
    pub country: String,
}

/// The body of `POST /api/v1/products` for product `i` of `seed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub image_url: Option<String>,
    /// Two decimals, 1.00 to 2000.00.
    pub price: String,
    pub currency: String,
}

/// Customer `i` of `seed`; the email is unique per (seed, i).
pub fn customer_for(seed: u64, i: usize) -> NewCustomer {
    let mut rng = rng_for(seed, Stream::Customer, i as u64);
    let first = FIRST_NAMES.choose(&mut rng).expect("not empty");
    let last = LAST_NAMES.choose(&mut rng).expect("not empty");
    let country = COUNTRIES
        .choose_weighted(&mut rng, |(_, w)| *w)
        .expect("weights are positive")
        .0;
    NewCustomer {
        name: format!("{first} {last}"),
        email: format!("customer-{i}-{seed}@example.com"),
        country: country.to_owned(),
    }
}

/// Product `i` of `seed`; the SKU is unique per (seed, i), the price log-normal around its
/// category's median, between 1.00 and 2000.00.
pub fn product_for(seed: u64, i: usize) -> NewProduct {
    let mut rng = rng_for(seed, Stream::Product, i as u64);
    let category = CATEGORIES.choose(&mut rng).expect("not empty");
    let adjective = category.adjectives.choose(&mut rng).expect("not empty");
    let noun = category.nouns.choose(&mut rng).expect("not empty");
    let price = LogNormal::new(category.median_price.ln(), 0.8)
        .expect("a positive sigma")
        .sample(&mut rng);
    let cents = (price * 100.0).round().clamp(100.0, 200_000.0) as u64;
    let with_image = rng.random_bool(0.9);
    let sku = format!("SKU-{seed}-{i}");
    NewProduct {
        name: format!("{adjective} {noun}"),
        description: format!(
            "{adjective} {} from our {} range.",
            noun.to_lowercase(),
            category.name.to_lowercase()
        ),
        category: category.name.to_owned(),
        image_url: with_image.then(|| format!("https://img.example.com/products/{sku}.jpg")),
        price: format!("{}.{:02}", cents / 100, cents % 100),
        currency: "EUR".to_owned(),
        sku,
    }
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

/// Creates the customers and products (idempotently: uses Idempotency-Key headers derived
/// from the seed so re-running with the same seed against the same services creates nothing
/// new and returns the same ids).
pub async fn seed_catalogue(urls: &ShopUrls, config: &SimConfig) -> Result<Catalogue, SimError> {
    let http = Http::new(&urls.token)?;
    let seed = config.seed;
    let customers_url = format!("{}/api/v1/customers", urls.customer.trim_end_matches('/'));
    let products_url = format!("{}/api/v1/products", urls.product.trim_end_matches('/'));
    let customers = futures::stream::iter(0..config.customers)
        .map(|i| {
            let (http, url) = (&http, &customers_url);
            async move {
                let key = format!("sim-{seed}-customer-{i}");
                let created: Created = http
                    .post(url, Some(&key), &customer_for(seed, i), Retry::Safe)
                    .await
                    .map_err(|source| SimError::Seed {
                        what: format!("customer {i}"),
                        source,
                    })?;
                Ok::<_, SimError>(created.id)
            }
        })
        .buffered(SEED_CONCURRENCY)
        .try_collect::<Vec<String>>()
        .await?;
    let products = futures::stream::iter(0..config.products)
        .map(|i| {
            let (http, url) = (&http, &products_url);
            async move {
                let key = format!("sim-{seed}-product-{i}");
                let created: Created = http
                    .post(url, Some(&key), &product_for(seed, i), Retry::Safe)
                    .await
                    .map_err(|source| SimError::Seed {
                        what: format!("product {i}"),
                        source,
                    })?;
                Ok::<_, SimError>(created.id)
            }
        })
        .buffered(SEED_CONCURRENCY)
        .try_collect::<Vec<String>>()
        .await?;
    tracing::info!(
        seed,
        customers = customers.len(),
        products = products.len(),
        "catalogue seeded"
    );
    Ok(Catalogue {
        customers,
        products,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn catalogue_items_depend_on_seed_and_number_only() {
        assert_eq!(customer_for(5, 3), customer_for(5, 3));
        assert_eq!(product_for(5, 3), product_for(5, 3));
        assert_eq!(customer_for(5, 3).email, "customer-3-5@example.com");
        assert_eq!(product_for(5, 3).sku, "SKU-5-3");
        let names = |seed| {
            (0..50)
                .map(|i| customer_for(seed, i).name)
                .collect::<Vec<_>>()
        };
        assert_ne!(names(5), names(6));
        let emails: HashSet<String> = (0..1000).map(|i| customer_for(5, i).email).collect();
        assert_eq!(emails.len(), 1000);
    }

    #[test]
    fn prices_have_two_decimals_within_bounds_and_vary_by_category() {
        let products: Vec<NewProduct> = (0..2000).map(|i| product_for(11, i)).collect();
        let mut by_category: std::collections::HashMap<&str, Vec<f64>> = Default::default();
        for p in &products {
            let (euros, cents) = p.price.split_once('.').expect("a decimal point");
            assert_eq!(cents.len(), 2, "{}", p.price);
            assert!(!euros.is_empty() && euros.bytes().all(|b| b.is_ascii_digit()));
            let value: f64 = p.price.parse().unwrap();
            assert!((1.0..=2000.0).contains(&value), "{}", p.price);
            assert_eq!(p.currency, "EUR");
            assert!(CATEGORIES.iter().any(|c| c.name == p.category));
            by_category.entry(&p.category).or_default().push(value);
        }
        assert_eq!(by_category.len(), 8, "every category appears");
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let electronics = median(by_category["Electronics"].clone());
        let grocery = median(by_category["Grocery"].clone());
        assert!(electronics > 10.0 * grocery, "{electronics} vs {grocery}");
    }
}
