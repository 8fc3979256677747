//! Who may see what over HTTP: every surface that can show a customer's name or e-mail
//! address (SQL, ad-hoc exports, named reports, the dashboard) shows it to administrators
//! only; roles decide which endpoints answer at all; the dashboard's sign-in sets a session
//! cookie scripts cannot read; every query is audited under its user's role.

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoplens_kit::identity::Role;

use crate::support::{self, TestApp, client_as};

async fn app() -> (tempfile::TempDir, TestApp) {
    let events = support::events();
    let (dir, engine) = support::embedded_engine(&events).await;
    (dir, support::spawn_app(engine).await)
}

const REDACTED: &str = "(redacted)";

async fn sql_as(app: &TestApp, role: Role, sql: &str) -> (StatusCode, Value) {
    let resp = client_as(role)
        .post(format!("{}/api/v1/sql", app.url))
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap_or(Value::Null))
}

async fn text_as(
    app: &TestApp,
    role: Role,
    req: reqwest::Method,
    path: &str,
    body: &str,
) -> String {
    let resp = client_as(role)
        .request(req, format!("{}{path}", app.url))
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path} as {role}");
    resp.text().await.unwrap()
}

/// Every personal value of `rows` (objects) in `columns` is redacted, and there are some.
fn all_redacted(rows: &Value, columns: &[&str]) {
    let rows = rows.as_array().expect("rows");
    assert!(!rows.is_empty());
    for row in rows {
        for c in columns {
            assert_eq!(row[c], REDACTED, "{c} in {row}");
        }
    }
}

#[tokio::test]
async fn personal_data_is_for_administrators_on_every_http_surface() {
    let (_dir, app) = app().await;

    // SQL: the view and the raw table behind it, and a filter that would probe a value.
    let sql = "SELECT customer_id, name, email FROM customers ORDER BY customer_id LIMIT 5";
    let (status, admin) = sql_as(&app, Role::Admin, sql).await;
    assert_eq!(status, 200, "{admin}");
    let first = &admin["rows"][0];
    assert!(first["email"].as_str().unwrap().contains('@'), "{first}");
    let (status, analyst) = sql_as(&app, Role::Analyst, sql).await;
    assert_eq!(status, 200, "{analyst}");
    all_redacted(&analyst["rows"], &["name", "email"]);
    assert_eq!(analyst["rows"][0]["customer_id"], first["customer_id"]);
    let probe = format!(
        "SELECT count(*) AS n FROM customer_events WHERE email = '{}'",
        first["email"].as_str().unwrap()
    );
    let (_, admin_n) = sql_as(&app, Role::Admin, &probe).await;
    assert!(admin_n["rows"][0]["n"].as_u64().unwrap() > 0, "{admin_n}");
    let (_, analyst_n) = sql_as(&app, Role::Analyst, &probe).await;
    assert_eq!(
        analyst_n["rows"][0]["n"], 0,
        "a filter saw the real address"
    );
    let (_, grouped) = sql_as(
        &app,
        Role::Analyst,
        "SELECT DISTINCT email FROM customer_events",
    )
    .await;
    all_redacted(&grouped["rows"], &["email"]);

    // An ad-hoc export and the named report that lists customers.
    let export = text_as(
        &app,
        Role::Analyst,
        reqwest::Method::POST,
        "/api/v1/export?format=csv",
        "SELECT name, email FROM customers",
    )
    .await;
    assert!(
        !export.contains('@') && export.contains(REDACTED),
        "{export}"
    );
    let report_path = "/api/v1/reports/top_customers.csv?from=2025-11-01&to=2026-02-01";
    let report = text_as(&app, Role::Analyst, reqwest::Method::GET, report_path, "").await;
    assert!(report.lines().count() > 1, "{report}");
    assert!(
        !report.contains('@') && report.contains(REDACTED),
        "{report}"
    );
    let report = text_as(&app, Role::Admin, reqwest::Method::GET, report_path, "").await;
    assert!(report.contains('@'), "{report}");

    // The dashboard's top customers: names for administrators only.
    let path = "/api/v1/dashboard/top-customers?from=2025-11-01&to=2026-02-01&limit=5";
    let viewer: Value = client_as(Role::Viewer)
        .get(format!("{}{path}", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all_redacted(&viewer["rows"], &["name"]);
    let (status, admin) = app.get_json(path).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = admin["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| *n != REDACTED && !n.is_empty()),
        "{names:?}"
    );
    // Same ranking, same figures: masking hides values, never rows.
    for (v, a) in viewer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .zip(admin["rows"].as_array().unwrap())
    {
        assert_eq!(v["customer_id"], a["customer_id"]);
        assert_eq!(v["revenue"], a["revenue"]);
    }
}

#[tokio::test]
async fn each_role_reaches_its_endpoints_only() {
    let (_dir, app) = app().await;
    let anonymous = reqwest::Client::new();
    let get = |client: reqwest::Client, path: &str| {
        let url = format!("{}{path}", app.url);
        async move { client.get(url).send().await.unwrap().status() }
    };
    let daily = "/api/v1/dashboard/daily?from=2025-12-01&to=2025-12-31";
    assert_eq!(get(anonymous.clone(), daily).await, 401);
    assert_eq!(get(client_as(Role::Viewer), daily).await, 200);
    // Customers and the services' own identity are not business users.
    assert_eq!(get(client_as(Role::Customer), daily).await, 403);
    assert_eq!(get(client_as(Role::Service), daily).await, 403);
    // SQL and exports: analysts and admins.
    assert_eq!(sql_as(&app, Role::Viewer, "SELECT 1").await.0, 403);
    assert_eq!(sql_as(&app, Role::Analyst, "SELECT 1").await.0, 200);
    assert_eq!(
        get(client_as(Role::Viewer), "/api/v1/reports/daily_sales.csv").await,
        403
    );
    // Reconciliation (it reads the live services): admins.
    assert_eq!(
        get(client_as(Role::Analyst), "/api/v1/reconcile").await,
        403
    );
    // Metrics: the monitor (and admins), nobody else.
    assert_eq!(get(anonymous.clone(), "/metrics").await, 401);
    assert_eq!(get(client_as(Role::Analyst), "/metrics").await, 403);
    assert_eq!(get(client_as(Role::Monitor), "/metrics").await, 200);
    // Liveness and the sign-in page are public.
    assert_eq!(get(anonymous.clone(), "/health").await, 200);
    assert_eq!(get(anonymous.clone(), "/dashboard").await, 200);
    // A token that is not one, or signed with another key, is nobody's.
    let forged = shoplens_kit::identity::issue(
        "another-key-another-key-another-key-0123",
        &shoplens_kit::identity::Identity::new("mallory", Role::Admin),
        std::time::Duration::from_secs(60),
    );
    for token in ["garbage", forged.as_str()] {
        let status = anonymous
            .get(format!("{}{daily}", app.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "{token}");
    }
}

/// The session cookie of a sign-in response.
fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("shoplens_session="))
        .map(str::to_owned)
}

#[tokio::test]
async fn signing_in_sets_a_strict_http_only_session_and_signing_out_ends_it() {
    let (_dir, app) = app().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |user: &str, password: &str| {
        http.post(format!("{}/login", app.url))
            .form(&[("user", user), ("password", password)])
            .send()
    };

    let failed = sign_in(support::ANALYST, "wrong").await.unwrap();
    assert_eq!(failed.status(), StatusCode::SEE_OTHER);
    assert_eq!(failed.headers()["location"], "/dashboard?signin=failed");
    assert_eq!(session_cookie(&failed), None);
    let unknown = sign_in("nobody", support::PG_PASSWORD).await.unwrap();
    assert_eq!(session_cookie(&unknown), None);

    let ok = sign_in(support::ANALYST, support::PG_PASSWORD)
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let cookie = session_cookie(&ok).expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_owned();
    let me: Value = http
        .get(format!("{}/api/v1/me", app.url))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], support::ANALYST);
    assert_eq!(me["role"], "analyst");
    assert_eq!(me["sees_personal_data"], false);
    // The cookie carries the analyst's rights, no more.
    let status = http
        .get(format!("{}/api/v1/reconcile", app.url))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);

    let out = http
        .post(format!("{}/logout", app.url))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    let cleared = session_cookie(&out).expect("the cookie cleared");
    assert!(cleared.starts_with("shoplens_session=;") && cleared.contains("Max-Age=0"));
}

#[tokio::test]
async fn every_query_is_audited_under_its_role_and_outcome() {
    let (_dir, app) = app().await;
    let audited = |text: &str, role: &str, outcome: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("shoplens_analytics_audited_queries"))
            .filter(|l| {
                l.contains(&format!("role=\"{role}\""))
                    && l.contains(&format!("outcome=\"{outcome}\""))
                    && l.contains("surface=\"http\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let metrics = || async {
        client_as(Role::Monitor)
            .get(format!("{}/metrics", app.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = metrics().await;
    assert_eq!(sql_as(&app, Role::Analyst, "SELECT 1 AS x").await.0, 200);
    assert_eq!(sql_as(&app, Role::Analyst, "SELECT 2 AS x").await.0, 200);
    assert_eq!(sql_as(&app, Role::Analyst, "SELEKT").await.0, 400);
    let after = metrics().await;
    assert_eq!(
        audited(&after, "analyst", "ok") - audited(&before, "analyst", "ok"),
        2.0,
        "{after}"
    );
    assert!(
        audited(&after, "analyst", "42601") - audited(&before, "analyst", "42601") >= 1.0,
        "a syntax error is audited with its SQLSTATE: {after}"
    );
    assert!(
        after.contains("shoplens_analytics_audited_bytes"),
        "{after}"
    );
}
