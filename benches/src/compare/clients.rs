//! The client side of the running system: each of the four paths requested as a client
//! would, the order-tracking question as SQL, and whether the read model has caught up.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::time::Instant;

use super::ReadPath;
use crate::load::Outcome;

/// The order-tracking question as SQL on the read model: the order's latest status and
/// where its shipment last was (a row each, `field` and `value`; no shipment, no row).
fn tracking_sql(order_id: &str) -> String {
    format!(
        "SELECT 'status' AS field, to_status AS value FROM \
           (SELECT to_status, occurred_at FROM order_status_changes \
            WHERE order_id = '{order_id}' ORDER BY occurred_at DESC LIMIT 1) s \
         UNION ALL \
         SELECT 'location', location FROM \
           (SELECT location, occurred_at FROM shipment_events \
            WHERE order_id = '{order_id}' ORDER BY occurred_at DESC LIMIT 1) l"
    )
}

/// The four dashboard views the page loads, as the analytics server serves them.
const DASHBOARD_VIEWS: [(&str, &str, &str); 4] = [
    ("daily", "daily", ""),
    ("top-products", "top_products", "&limit=10"),
    ("top-customers", "top_customers", "&limit=10"),
    ("trends", "trends", "&period=month"),
];

/// The client side of the running system.
#[derive(Clone)]
pub(super) struct Clients {
    pub(super) http: reqwest::Client,
    pub(super) composer: Arc<str>,
    pub(super) analytics: Arc<str>,
    pub(super) order: Arc<str>,
    pub(super) auth: Arc<str>,
    /// `from=..&to=..`: the last 30 days, through tomorrow (UTC) so a run across midnight
    /// still sees its data.
    pub(super) range: Arc<str>,
}

impl Clients {
    pub(super) async fn summary_status(&self, id: &str) -> anyhow::Result<Option<String>> {
        let resp = self
            .http
            .get(format!("{}/api/v1/orders/{id}/summary", self.composer))
            .header("authorization", &*self.auth)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "summary {}", resp.status());
        let v: Value = resp.json().await?;
        Ok(v["order"]["data"]["status"].as_str().map(str::to_owned))
    }

    pub(super) async fn cqrs_status(&self, id: &str) -> anyhow::Result<Option<String>> {
        let resp = self
            .http
            .post(format!("{}/api/v1/sql", self.analytics))
            .header("content-type", "text/plain")
            .body(tracking_sql(id))
            .send()
            .await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "sql {status}: {v}");
        Ok(v["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["field"] == "status"))
            .and_then(|r| r["value"].as_str())
            .map(str::to_owned))
    }

    async fn get_json(&self, url: String, auth: bool) -> anyhow::Result<Value> {
        let mut req = self.http.get(&url);
        if auth {
            req = req.header("authorization", &*self.auth);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "GET {url}: {status} {body}");
        Ok(body)
    }

    async fn live_dashboard(&self) -> anyhow::Result<Value> {
        self.get_json(
            format!(
                "{}/api/v1/sales/dashboard?{}&limit=10&period=month",
                self.composer, self.range
            ),
            true,
        )
        .await
    }

    /// The page's four requests, at once (as the page sends them).
    async fn cqrs_dashboard(&self) -> anyhow::Result<Vec<Value>> {
        let calls = DASHBOARD_VIEWS.map(|(path, _, extra)| {
            self.get_json(
                format!(
                    "{}/api/v1/dashboard/{path}?{}{extra}",
                    self.analytics, self.range
                ),
                false,
            )
        });
        let [a, b, c, d] = calls;
        let (a, b, c, d) = tokio::try_join!(a, b, c, d)?;
        Ok(vec![a, b, c, d])
    }

    pub(super) async fn request(&self, path: ReadPath, order_id: String) -> Outcome {
        let ok = match path {
            ReadPath::TrackingComposer => {
                matches!(self.summary_status(&order_id).await, Ok(Some(_)))
            }
            ReadPath::TrackingCqrs => matches!(self.cqrs_status(&order_id).await, Ok(Some(_))),
            ReadPath::DashboardCqrs => self.cqrs_dashboard().await.is_ok(),
            ReadPath::DashboardComposer => self.live_dashboard().await.is_ok(),
        };
        Outcome {
            ok,
            ..Outcome::default()
        }
    }

    /// How the read model's four views differ from the live composition (the rows of
    /// each), if they do.
    async fn dashboard_difference(&self) -> anyhow::Result<Option<String>> {
        let live = self.live_dashboard().await?;
        let cqrs = self.cqrs_dashboard().await?;
        Ok(dashboard_difference(&live, &cqrs))
    }
}

/// The first difference between the composer's live dashboard and the read model's four
/// answers (in [`DASHBOARD_VIEWS`] order), named by view and row; `None` when every row of
/// every view is equal.
fn dashboard_difference(live: &Value, cqrs: &[Value]) -> Option<String> {
    for ((_, key, _), answer) in DASHBOARD_VIEWS.iter().zip(cqrs) {
        let (model, composed) = (&answer["rows"], &live[*key]);
        if model == composed {
            continue;
        }
        let Some((m, c)) = model.as_array().zip(composed.as_array()) else {
            return Some(format!(
                "{key}: read model {}, composer {}",
                clip(model),
                clip(composed)
            ));
        };
        let row = (0..m.len().max(c.len()))
            .find(|&i| m.get(i) != c.get(i))
            .unwrap_or(0);
        let shown = |r: Option<&Value>| r.map_or("no row".to_owned(), clip);
        return Some(format!(
            "{key} row {row}: read model {}, composer {} ({} rows against {})",
            shown(m.get(row)),
            shown(c.get(row)),
            m.len(),
            c.len()
        ));
    }
    None
}

/// A JSON value for an error message, cut short: a whole view would drown the difference.
fn clip(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s,
    }
}

/// Events the services have published: the read model's raw row count.
pub(super) async fn events_in_read_model(c: &Clients) -> anyhow::Result<u64> {
    let resp = c
        .http
        .post(format!("{}/api/v1/sql", c.analytics))
        .header("content-type", "text/plain")
        .body(
            "SELECT (SELECT count(*) FROM customer_events) + (SELECT count(*) FROM product_events) \
             + (SELECT count(*) FROM orders) + (SELECT count(*) FROM order_status_changes) \
             + (SELECT count(*) FROM product_purchases) + (SELECT count(*) FROM payment_events) \
             + (SELECT count(*) FROM shipment_events) AS n",
        )
        .send()
        .await?;
    let v: Value = resp.json().await?;
    v["rows"][0]["n"].as_u64().context("no event count")
}

/// Waits (at most 120 s) until the read model answers the dashboard with the live figures:
/// the seconds waited, or an error naming the last difference seen.
pub(super) async fn catch_up(c: &Clients) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut last = String::from("no answer compared");
    while start.elapsed() < Duration::from_secs(120) {
        match c.dashboard_difference().await {
            Ok(None) => return Ok(start.elapsed().as_secs_f64()),
            Ok(Some(diff)) => last = diff,
            Err(e) => last = format!("asking both paths failed: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!(
        "the composer's live dashboard and the read model's still differ after 120 s: {last}"
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The composer's answer holding `top_products` rows, with the other views equal to
    /// the read model's (empty).
    fn live(top_products: Value) -> Value {
        json!({"daily": [], "top_products": top_products, "top_customers": [], "trends": []})
    }

    fn model(top_products: Value) -> Vec<Value> {
        vec![
            json!({"rows": []}),
            json!({"rows": top_products}),
            json!({"rows": []}),
            json!({"rows": []}),
        ]
    }

    #[test]
    fn equal_dashboards_have_no_difference() {
        let rows = json!([{"product_id": "p1", "revenue": 10.0}]);
        assert_eq!(
            dashboard_difference(&live(rows.clone()), &model(rows)),
            None
        );
    }

    #[test]
    fn a_difference_names_the_view_the_row_and_both_values() {
        let ours =
            json!([{"product_id": "p1", "revenue": 10.0}, {"product_id": "p2", "revenue": 5.0}]);
        let theirs =
            json!([{"product_id": "p1", "revenue": 10.0}, {"product_id": "p2", "revenue": 6.0}]);
        let diff = dashboard_difference(&live(theirs), &model(ours)).expect("a difference");
        assert!(diff.starts_with("top_products row 1:"), "{diff}");
        assert!(diff.contains("5.0") && diff.contains("6.0"), "{diff}");
        assert!(diff.ends_with("(2 rows against 2)"), "{diff}");
    }

    #[test]
    fn a_missing_row_or_view_is_a_difference() {
        let one = json!([{"product_id": "p1"}]);
        let diff = dashboard_difference(&live(json!([])), &model(one.clone())).expect("differ");
        assert!(
            diff.contains("row 0") && diff.contains("composer no row"),
            "{diff}"
        );
        let no_view = json!({"daily": [], "top_customers": [], "trends": []});
        let diff = dashboard_difference(&no_view, &model(one)).expect("differ");
        assert!(diff.starts_with("top_products: read model"), "{diff}");
        assert!(diff.ends_with("composer null"), "{diff}");
    }
}
