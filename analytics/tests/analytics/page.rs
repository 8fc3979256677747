//! The sales dashboard page in a real headless Chromium: the numbers it shows against the
//! JSON API and the events behind them, its freshness badge, a bad range, the filters, and a
//! screenshot for people.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::Value;
use shoplens_contract::{DomainEvent, Envelope};

use crate::support::{self, TestApp};

/// The range the tests look at: within the synthetic stream (2025-11-24 .. 2026-01-23).
const FROM: &str = "2025-11-24";
const TO: &str = "2026-01-22";

/// Loads `url` in headless Chromium (see [`shoplens_test_support::services::headless_chromium`]: local
/// time zone UTC, 5 s of virtual time) and returns its stdout.
async fn headless(url: &str, extra: &[String]) -> String {
    shoplens_test_support::services::headless_chromium(url, extra, Duration::from_secs(120)).await
}

/// The page's DOM after it ran, without the text of its script (which spells the tags it
/// makes).
async fn dump_dom(url: &str) -> String {
    let dom = headless(url, &["--dump-dom".to_owned()]).await;
    assert!(dom.contains("<body"), "Chromium printed no DOM: {dom}");
    let mut out = String::with_capacity(dom.len());
    let mut rest = dom.as_str();
    while let Some(start) = rest.find("<script") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("</script>")
            .expect("a closed script element");
        rest = &rest[start + end + "</script>".len()..];
    }
    out.push_str(rest);
    out
}

/// The attributes of every `<name ...>` start tag of `dom`, in document order.
fn tags(dom: &str, name: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{name}");
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find(&open) {
        rest = &rest[at + open.len()..];
        if !rest.starts_with([' ', '>', '\n', '\t', '/']) {
            continue; // a longer tag name
        }
        let mut attrs = BTreeMap::new();
        let mut s = rest.trim_start();
        loop {
            s = s.trim_start();
            if s.is_empty() || s.starts_with('>') || s.starts_with("/>") {
                break;
            }
            let key_end = s
                .find(|c: char| c == '=' || c == '>' || c.is_whitespace())
                .unwrap_or(s.len());
            let key = s[..key_end].to_owned();
            s = &s[key_end..];
            let value = if let Some(v) = s.strip_prefix("=\"") {
                let end = v.find('"').expect("a closed attribute value");
                s = &v[end + 1..];
                unescape(&v[..end])
            } else {
                String::new()
            };
            attrs.insert(key, value);
        }
        out.push(attrs);
    }
    out
}

/// The attributes of the `<name>` tags that have attribute `having`.
fn tags_with(dom: &str, name: &str, having: &str) -> Vec<BTreeMap<String, String>> {
    tags(dom, name)
        .into_iter()
        .filter(|t| t.contains_key(having))
        .collect()
}

/// The text directly inside the element with `id` (up to its first child tag).
fn text_of(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no element #{id} in the DOM: {dom}"));
    let after = &dom[at..];
    let start = after.find('>').expect("the end of the start tag") + 1;
    let end = after[start..].find('<').map_or(after.len(), |e| start + e);
    unescape(&after[start..end])
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn escape_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn attr<'a>(tag: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    tag.get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no `{name}` in {tag:?}"))
}

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("money must be a decimal string, got {v}"))
        .parse()
        .expect("a decimal")
}

fn rows(answer: &Value) -> &Vec<Value> {
    answer["rows"].as_array().expect("rows")
}

async fn ok_json(app: &TestApp, path: &str) -> Value {
    let (status, body) = app.get_json(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// What the events themselves say about `from..=to` (UTC days): orders placed and revenue.
fn from_events(events: &[Envelope], from: &str, to: &str) -> (u64, Decimal) {
    let day = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("a date");
    let range = day(from)..=day(to);
    let mut orders = 0;
    let mut revenue = Decimal::ZERO;
    for e in events
        .iter()
        .filter(|e| range.contains(&e.occurred_at.date_naive()))
    {
        match &e.payload {
            DomainEvent::OrderCreated(_) => orders += 1,
            DomainEvent::ProductPurchased(p) => revenue += p.revenue,
            _ => {}
        }
    }
    (orders, revenue)
}

/// `target/screenshots/` of the workspace.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    dir.canonicalize().expect("the screenshot dir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_apis_numbers_in_a_real_browser() {
    let events = support::events();
    let (_dir, engine) = support::embedded_engine(&events).await;
    let app = support::spawn_app(engine).await;
    let range = format!("from={FROM}&to={TO}");
    let daily = ok_json(&app, &format!("/api/v1/dashboard/daily?{range}")).await;
    let products = ok_json(
        &app,
        &format!("/api/v1/dashboard/top-products?{range}&limit=10"),
    )
    .await;
    let customers = ok_json(
        &app,
        &format!("/api/v1/dashboard/top-customers?{range}&limit=10"),
    )
    .await;
    let trends = ok_json(
        &app,
        &format!("/api/v1/dashboard/trends?{range}&period=month"),
    )
    .await;

    let url = format!("{}/dashboard?{range}", app.signed_in_url);
    let dom = dump_dom(&url).await;
    assert!(
        dom.contains(r#"data-loaded="true""#),
        "all four views rendered: {dom}"
    );
    assert_eq!(text_of(&dom, "error"), "", "no error shown");
    // The inputs show the range asked for.
    let inputs = tags(&dom, "input");
    let input = |id: &str| {
        inputs
            .iter()
            .find(|t| t.get("id").map(String::as_str) == Some(id))
            .unwrap_or_else(|| panic!("no input #{id}"))
            .clone()
    };
    assert_eq!(input("from").get("type").map(String::as_str), Some("date"));
    assert_eq!(input("to").get("type").map(String::as_str), Some("date"));

    // Freshness: "data as of HH:MM:SS, N.N s behind", the newest event's time (UTC here).
    let f = &daily["freshness"];
    let as_of = chrono::DateTime::parse_from_rfc3339(f["as_of"].as_str().expect("as_of"))
        .expect("as_of is RFC 3339");
    let badge = text_of(&dom, "freshness");
    let prefix = format!("data as of {}, ", as_of.format("%H:%M:%S"));
    assert!(
        badge.starts_with(&prefix),
        "badge `{badge}`, want `{prefix}…`"
    );
    let lag: f64 = badge[prefix.len()..]
        .split(" s behind")
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no `N.N s behind` in the badge `{badge}`"));
    let api_lag = f["lag_ms"].as_f64().expect("lag_ms") / 1000.0;
    assert!(
        lag >= api_lag - 0.1 && lag <= api_lag + 600.0,
        "badge lag {lag} s, API lag {api_lag} s (measured before the page loaded)"
    );

    // Total orders: the page's sum, the API's sum and the events agree.
    let (event_orders, event_revenue) = from_events(&events, FROM, TO);
    let api_orders: u64 = rows(&daily)
        .iter()
        .map(|r| r["orders_placed"].as_u64().expect("orders_placed"))
        .sum();
    assert!(api_orders > 100, "the range holds most of the 200 orders");
    assert_eq!(api_orders, event_orders, "API against the events");
    assert_eq!(text_of(&dom, "total-orders"), api_orders.to_string());
    // One point a day on the orders line, each with that day's count.
    let points = tags_with(&dom, "circle", "data-orders");
    assert_eq!(points.len(), rows(&daily).len(), "one point per day");
    assert_eq!(points.len(), 60);
    for (p, r) in points.iter().zip(rows(&daily)) {
        assert_eq!(attr(p, "data-day"), r["day"].as_str().unwrap());
        assert_eq!(attr(p, "data-orders"), r["orders_placed"].to_string());
    }

    // Total revenue, exactly.
    let api_revenue: Decimal = rows(&daily).iter().map(|r| dec(&r["revenue"])).sum();
    assert_eq!(api_revenue, event_revenue, "API against the events");
    assert!(api_revenue > Decimal::ZERO);
    assert_eq!(text_of(&dom, "total-revenue"), format!("{api_revenue:.2}"));

    // Ten product bars, in the API's order, with its revenue.
    let bars = tags_with(&dom, "rect", "data-product-id");
    let api_products = rows(&products);
    assert_eq!(api_products.len(), 10);
    let shown: Vec<(&str, &str)> = bars
        .iter()
        .map(|b| (attr(b, "data-product-id"), attr(b, "data-revenue")))
        .collect();
    let want: Vec<(&str, &str)> = api_products
        .iter()
        .map(|r| {
            (
                r["product_id"].as_str().unwrap(),
                r["revenue"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(shown, want, "product bars");
    // Longer bars for more revenue.
    let width = |b: &BTreeMap<String, String>| attr(b, "width").parse::<f64>().unwrap();
    assert!(width(&bars[0]) > width(&bars[9]), "{bars:?}");

    // The customer table, in the API's order.
    let shown: Vec<String> = tags_with(&dom, "tr", "data-customer-id")
        .iter()
        .map(|t| attr(t, "data-customer-id").to_owned())
        .collect();
    let want: Vec<String> = rows(&customers)
        .iter()
        .map(|r| r["customer_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(want.len(), 10);
    assert_eq!(shown, want, "customer rows");

    // The monthly trend: the API's months in the chart, newest first in the table, with
    // the period-over-period change.
    let api_months: Vec<&str> = rows(&trends)
        .iter()
        .map(|r| r["period"].as_str().unwrap())
        .collect();
    assert_eq!(api_months, ["2025-11", "2025-12", "2026-01"]);
    let chart: Vec<String> = tags_with(&dom, "rect", "data-period")
        .iter()
        .map(|t| attr(t, "data-period").to_owned())
        .collect();
    assert_eq!(chart, api_months, "trend bars");
    let table: Vec<String> = tags_with(&dom, "tr", "data-period")
        .iter()
        .map(|t| attr(t, "data-period").to_owned())
        .collect();
    let newest_first: Vec<&str> = api_months.iter().rev().copied().collect();
    assert_eq!(table, newest_first, "trend table rows");
    let changes: Vec<Option<f64>> = tags_with(&dom, "td", "data-change")
        .iter()
        .map(|t| attr(t, "data-change").parse().ok())
        .collect();
    let want: Vec<Option<f64>> = rows(&trends)
        .iter()
        .rev()
        .flat_map(|r| {
            [
                r["revenue_change_pct"].as_f64(),
                r["average_order_value_change_pct"].as_f64(),
            ]
        })
        .collect();
    assert_eq!(changes, want, "revenue and AOV changes, newest month first");
    assert!(changes.iter().any(Option::is_some), "December has a change");
    let dec_row = &rows(&trends)[1];
    let pct = dec_row["revenue_change_pct"].as_f64().unwrap();
    let arrow = if pct > 0.0 { "▲" } else { "▼" };
    assert!(
        dom.contains(&format!("{arrow} {:.1}%", pct.abs())),
        "December's revenue change {pct} shown with an arrow: {dom}"
    );

    // A screenshot, for people.
    let shot = screenshot_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &url,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,900".to_owned(),
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("Chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG file");
    assert!(
        png.len() > 10 * 1024,
        "a real page, not a blank one: {} bytes",
        png.len()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_bad_ranges_and_applies_its_filters() {
    let (_dir, engine) = support::embedded_engine(&support::events()).await;
    let app = support::spawn_app(engine).await;

    // `from` after `to`: the server's message, shown; nothing claims to be loaded.
    let bad = format!("from={TO}&to={FROM}");
    let (status, body) = app
        .get_json(&format!("/api/v1/dashboard/daily?{bad}"))
        .await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"].as_str().expect("an error message");
    assert!(message.contains("must not be after"), "{message}");
    let dom = dump_dom(&format!("{}/dashboard?{bad}", app.signed_in_url)).await;
    assert_eq!(text_of(&dom, "error"), message, "{dom}");
    assert!(dom.contains(&escape_text(message)));
    assert!(dom.contains(r#"data-loaded="false""#), "{dom}");
    assert!(dom.contains(r#"data-state="error""#), "{dom}");
    assert!(
        tags_with(&dom, "rect", "data-product-id").is_empty(),
        "no bars for a bad range"
    );

    // A category and yearly trends, from the address.
    let range = format!("from={FROM}&to={TO}");
    let products = ok_json(
        &app,
        &format!("/api/v1/dashboard/top-products?{range}&limit=10&category=Books"),
    )
    .await;
    let years = ok_json(
        &app,
        &format!("/api/v1/dashboard/trends?{range}&period=year"),
    )
    .await;
    let dom = dump_dom(&format!(
        "{}/dashboard?{range}&category=Books&period=year",
        app.signed_in_url
    ))
    .await;
    assert!(dom.contains(r#"data-loaded="true""#), "{dom}");
    let bars = tags_with(&dom, "rect", "data-product-id");
    let want: Vec<&str> = rows(&products)
        .iter()
        .map(|r| {
            assert_eq!(r["category"], "Books");
            r["product_id"].as_str().unwrap()
        })
        .collect();
    assert!(!want.is_empty() && want.len() < 10, "{want:?}");
    let shown: Vec<&str> = bars.iter().map(|b| attr(b, "data-product-id")).collect();
    assert_eq!(shown, want, "only the category's products");
    let shown: Vec<String> = tags_with(&dom, "rect", "data-period")
        .iter()
        .map(|t| attr(t, "data-period").to_owned())
        .collect();
    let want: Vec<&str> = rows(&years)
        .iter()
        .map(|r| r["period"].as_str().unwrap())
        .collect();
    assert_eq!(want, ["2025", "2026"]);
    assert_eq!(shown, want, "yearly trend bars");
    let toggle = tags(&dom, "button")
        .into_iter()
        .find(|t| t.get("id").map(String::as_str) == Some("period-year"))
        .expect("the year toggle");
    assert_eq!(
        attr(&toggle, "aria-pressed"),
        "true",
        "the year toggle is on"
    );
}

#[tokio::test]
async fn the_dashboard_page_is_self_contained() {
    let (_dir, engine) = support::embedded_engine(&support::events()).await;
    let app = support::spawn_app(engine).await;
    let resp = app
        .client
        .get(format!("{}/dashboard", app.url))
        .send()
        .await
        .expect("GET /dashboard");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = resp.text().await.unwrap();
    assert!(html.contains("/api/v1/dashboard/daily"));
    assert!(html.contains("<svg"), "inline SVG charts");
    assert!(
        !html.contains("__REFRESH_MS__"),
        "the refresh interval is filled in"
    );
    assert!(
        html.contains(r#"Number("1000")"#),
        "the configured refresh interval (1000 ms in tests)"
    );
    for external in ["http://", "https://", "<link", " src=", "@import", "url("] {
        assert!(
            !html.contains(external),
            "no external resources: `{external}`"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_who_you_are_and_says_who_is_signed_in() {
    let (_dir, engine) = support::embedded_engine(&support::events()).await;
    let app = support::spawn_app(engine).await;
    // Not signed in: the sign-in form, and no data.
    let dom = dump_dom(&format!("{}/dashboard", app.url)).await;
    assert!(dom.contains("signed-out"), "{dom}");
    assert!(dom.contains(r#"id="signin-form""#), "{dom}");
    assert!(tags_with(&dom, "rect", "data-product-id").is_empty());
    // Signed in: who, and the data.
    let dom = dump_dom(&format!(
        "{}/dashboard?from={FROM}&to={TO}",
        app.signed_in_url
    ))
    .await;
    assert!(!dom.contains(r#"class="signed-out""#), "{dom}");
    assert!(dom.contains("test-admin (admin)"), "{dom}");
    assert!(
        !tags_with(&dom, "rect", "data-product-id").is_empty(),
        "{dom}"
    );
}

/// Without a range the page shows the latest year (a demo has one), and its span picker
/// asks for the latest 30 or 90 days instead; a shared link keeps the choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_latest_year_unless_asked_for_a_shorter_span() {
    let (_dir, engine) = support::embedded_engine(&support::events()).await;
    let app = support::spawn_app(engine).await;
    for (query, days, label) in [
        ("", 365, "(latest year)"),
        ("?days=30", 30, "(latest 30 days)"),
        ("?days=90", 90, "(latest 90 days)"),
        // An unknown span is the default, not an error.
        ("?days=7", 365, "(latest year)"),
    ] {
        let dom = dump_dom(&format!("{}/dashboard{query}", app.signed_in_url)).await;
        assert!(dom.contains(r#"data-loaded="true""#), "{query}: {dom}");
        assert_eq!(text_of(&dom, "error"), "", "{query}: no error shown");
        let points = tags_with(&dom, "circle", "data-orders");
        assert_eq!(points.len(), days, "{query}: one point per day");
        let status = text_of(&dom, "status");
        assert!(status.contains(label), "{query}: status `{status}`");
        let selected = tags(&dom, "option")
            .into_iter()
            .find(|o| o.contains_key("selected"))
            .map(|o| attr(&o, "value").to_owned());
        assert_eq!(
            selected.as_deref(),
            Some(days.to_string().as_str()),
            "{query}: the span picker shows the span"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_fits_common_widths_and_offers_each_panel_as_a_file() {
    let (_dir, engine) = support::embedded_engine(&support::events()).await;
    let app = support::spawn_app(engine).await;
    let url = format!("{}/dashboard?from={FROM}&to={TO}", app.signed_in_url);
    for width in [1024, 1440] {
        let dom = dump_dom_sized(&url, width).await;
        assert!(dom.contains(r#"data-loaded="true""#), "{width} px: {dom}");
        assert!(
            dom.contains(r#"data-clipped="""#),
            "{width} px: something does not fit: {}",
            tags(&dom, "body")
                .first()
                .map(|b| attr(b, "data-clipped").to_owned())
                .unwrap_or_default()
        );
        assert!(
            tags_with(&dom, "tr", "data-customer-id").len() >= 3,
            "{width} px: the top customers are listed"
        );
        // A screenshot at this width, for people.
        let shot = screenshot_dir().join(format!("dashboard-{width}.png"));
        headless(
            &url,
            &[
                format!("--screenshot={}", shot.display()),
                format!("--window-size={width},1400"),
            ],
        )
        .await;
        assert!(shot.exists(), "Chromium wrote {}", shot.display());
    }

    // An administrator gets a CSV and a Parquet link per panel, for the range on screen,
    // and each one downloads.
    let dom = dump_dom(&url).await;
    let links = tags_with(&dom, "a", "data-download");
    let names: Vec<&str> = links.iter().map(|a| attr(a, "data-download")).collect();
    for want in [
        "daily_sales.csv",
        "daily_sales.parquet",
        "top_products.csv",
        "top_customers.parquet",
        "monthly_sales.csv",
    ] {
        assert!(names.contains(&want), "no {want} link: {names:?}");
    }
    for link in &links {
        let href = attr(link, "href");
        assert!(
            href.contains(&format!("from={FROM}&to={TO}")),
            "the link follows the range on screen: {href}"
        );
        let resp = app
            .client
            .get(format!("{}{href}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{href}");
        let bytes = resp.bytes().await.unwrap();
        if href.contains(".csv") {
            assert!(
                bytes.contains(&b'\n') && bytes.len() > 20,
                "{href}: a CSV with rows"
            );
        } else {
            assert!(bytes.starts_with(b"PAR1"), "{href}: a Parquet file");
        }
    }

    // A viewer may not export: no links.
    let viewer =
        support::signed_in_proxy(app.url.clone(), shoplens_kit::identity::Role::Viewer).await;
    let dom = dump_dom(&format!("{viewer}/dashboard?from={FROM}&to={TO}")).await;
    assert!(dom.contains(r#"data-loaded="true""#), "{dom}");
    assert!(
        tags_with(&dom, "a", "data-download").is_empty(),
        "a viewer sees no downloads"
    );
}

/// As [`dump_dom`], in a window `width` pixels wide.
async fn dump_dom_sized(url: &str, width: u32) -> String {
    let dom = headless(
        url,
        &[
            "--dump-dom".to_owned(),
            format!("--window-size={width},900"),
        ],
    )
    .await;
    assert!(dom.contains("<body"), "Chromium printed no DOM: {dom}");
    dom
}
