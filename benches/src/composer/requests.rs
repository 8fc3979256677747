//! What the load sends: the Order Summary request against a composer under test (started
//! here in one of the three modes, its counters read from `/metrics`), and the same
//! summary's downstream calls made directly.

use std::sync::Arc;

use anyhow::Context;
use shoplens_composer::{ComposerConfig, ServiceUrls};
use tokio::time::Instant;

use super::{Mode, SECRET};
use crate::load::Outcome;
use crate::metrics::sum_metric;
use crate::shop::Shop;

/// Counters read from a composer's `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counters {
    pub(super) downstream_calls: f64,
    pub(super) cache_hits: f64,
    pub(super) cache_misses: f64,
    pub(super) invalidations: f64,
    pub(super) events_seen: f64,
}

/// The composer's counters now, from its `/metrics`.
pub(super) async fn counters(client: &reqwest::Client, base: &str) -> anyhow::Result<Counters> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(Counters {
        downstream_calls: sum_metric(&text, "shoplens_composer_downstream_calls_total"),
        cache_hits: sum_metric(&text, "shoplens_composer_cache_hits_total"),
        cache_misses: sum_metric(&text, "shoplens_composer_cache_misses_total"),
        invalidations: sum_metric(&text, "shoplens_composer_cache_invalidations_total"),
        events_seen: sum_metric(&text, "shoplens_composer_events_seen_total"),
    })
}

/// A fresh composer (cold cache) over the shop's services, in `mode`; `tag` keeps its
/// invalidation consumer group apart from earlier ones.
pub(super) async fn start_composer(
    shop: &Shop,
    mode: Mode,
    tag: &str,
) -> anyhow::Result<shoplens_composer::ComposerHandle> {
    let mut config = ComposerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        services: ServiceUrls {
            customer: shop.urls.customer.as_str().into(),
            product: shop.urls.product.as_str().into(),
            order: shop.urls.order.as_str().into(),
            payment: shop.urls.payment.as_str().into(),
            shipping: shop.urls.shipping.as_str().into(),
        },
        invalidation: mode == Mode::CacheInvalidation,
        ..Default::default()
    };
    config.auth.secret = SECRET.into();
    config.cache.enabled = mode != Mode::NoCache;
    let events: Option<Box<dyn shoplens_bus::EventSource>> = if config.invalidation {
        let log = shop
            .system
            .log
            .as_ref()
            .context("the composer benchmark runs on the embedded log")?;
        Some(Box::new(log.consumer(
            &format!("composer-invalidation-{}-{tag}", mode.label()),
            &["shop.orders", "shop.payments", "shop.shipping"],
        )?))
    } else {
        None
    };
    shoplens_composer::start(&config, events)
        .await
        .context("failed to start the composer")
}

/// One summary request against the composer at `base`.
pub(super) fn summary_request(
    client: reqwest::Client,
    base: Arc<str>,
    auth: Arc<str>,
) -> impl Fn(String) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>> + Clone + Send + 'static
{
    move |id: String| {
        let request = client
            .get(format!("{base}/api/v1/orders/{id}/summary"))
            .header("authorization", &*auth);
        Box::pin(async move {
            match request.send().await {
                Ok(resp) => {
                    let ok = resp.status().is_success();
                    let body = resp.bytes().await.unwrap_or_default();
                    let degraded = ok && contains(&body, b"\"degraded\":true");
                    Outcome {
                        ok,
                        degraded,
                        parts: Vec::new(),
                    }
                }
                Err(_) => Outcome::default(),
            }
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The composer's calls for one summary, made directly: the order, then the other four at
/// once, each timed.
pub(super) fn direct_request(
    client: reqwest::Client,
    urls: Arc<shop_simulator::ShopUrls>,
) -> impl Fn(String) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>> + Clone + Send + 'static
{
    move |id: String| {
        let client = client.clone();
        let urls = urls.clone();
        Box::pin(async move {
            let timed = |url: String| {
                let client = client.clone();
                async move {
                    let start = Instant::now();
                    let body = match client.get(url).send().await {
                        Ok(r) if r.status().is_success() => r.bytes().await.ok(),
                        _ => None,
                    };
                    (body, start.elapsed())
                }
            };
            let (order, order_time) = timed(format!("{}/api/v1/orders/{id}", urls.order)).await;
            let Some(order) =
                order.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            else {
                return Outcome::default();
            };
            let customer = order["customer_id"].as_str().unwrap_or_default();
            let mut products: Vec<&str> = order["lines"]
                .as_array()
                .map(|ls| ls.iter().filter_map(|l| l["product_id"].as_str()).collect())
                .unwrap_or_default();
            products.sort_unstable();
            products.dedup();
            let second = Instant::now();
            let (c, p, pay, s) = tokio::join!(
                timed(format!("{}/api/v1/customers/{customer}", urls.customer)),
                timed(format!(
                    "{}/api/v1/products?ids={}",
                    urls.product,
                    products.join(",")
                )),
                timed(format!("{}/api/v1/payments?order_id={id}", urls.payment)),
                timed(format!("{}/api/v1/shipments?order_id={id}", urls.shipping)),
            );
            let second = second.elapsed();
            Outcome {
                ok: c.0.is_some() && p.0.is_some() && pay.0.is_some() && s.0.is_some(),
                degraded: false,
                parts: vec![
                    ("order", order_time),
                    ("customer", c.1),
                    ("products", p.1),
                    ("payments", pay.1),
                    ("shipments", s.1),
                    ("second_round", second),
                    ("two_rounds", order_time + second),
                ],
            }
        })
    }
}
