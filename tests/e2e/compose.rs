//! A static check of `docker-compose.yml` and the `Dockerfile` (no Docker engine needed):
//! every container the deployment needs is there with a health check, volumes where it
//! keeps state and dependencies that exist; every ShopLens container's command and
//! `SHOPLENS_*` environment are accepted by the real binary (`--check-config` after the
//! container's own arguments, with its environment); URLs between containers name a
//! container and a port it listens on; the image builds and holds every binary used.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_norway::Value;

#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
    #[serde(default)]
    volumes: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct Service {
    image: Option<String>,
    build: Option<Value>,
    entrypoint: Option<Vec<String>>,
    command: Option<Vec<String>>,
    #[serde(default)]
    environment: BTreeMap<String, Value>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    depends_on: BTreeMap<String, DependsOn>,
    healthcheck: Option<Healthcheck>,
    /// `"no"`: a one-shot job (it runs to completion at start-up; no health check).
    restart: Option<String>,
}

impl Service {
    fn is_job(&self) -> bool {
        self.restart.as_deref() == Some("no")
    }

    /// The ports a ShopLens container listens on (its `SHOPLENS_*__LISTEN` addresses).
    fn listen_ports(&self) -> BTreeSet<u16> {
        self.environment
            .iter()
            .filter(|(k, _)| k.starts_with("SHOPLENS_") && k.ends_with("__LISTEN"))
            .filter_map(|(_, v)| scalar(v).rsplit_once(':')?.1.parse().ok())
            .collect()
    }
}

#[derive(Debug, Deserialize)]
struct DependsOn {
    condition: String,
}

#[derive(Debug, Deserialize)]
struct Healthcheck {
    test: Vec<String>,
}

/// The binary the Dockerfile's `ENTRYPOINT` runs when a service sets none.
const DEFAULT_BINARY: &str = "shoplens";
/// The domain services, each with its own database.
const SERVICES: [&str; 5] = ["customer", "product", "order", "payment", "shipping"];
/// Containers that keep state, so need a volume.
const STATEFUL: [&str; 5] = ["kafka", "clickhouse", "postgres", "prometheus", "grafana"];
/// Containers only other containers call: nothing published.
const INTERNAL: [&str; 10] = [
    "postgres",
    "customer",
    "product",
    "order",
    "order-2",
    "payment",
    "shipping",
    "ingest",
    "prometheus",
    "metrics-token",
];
const REQUIRED: [&str; 15] = [
    "kafka",
    "clickhouse",
    "postgres",
    "customer",
    "product",
    "order",
    "order-2",
    "payment",
    "shipping",
    "composer",
    "ingest",
    "analytics",
    "metrics-token",
    "prometheus",
    "grafana",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A workspace binary: beside `shoplens` in the target directory (`cargo build
/// --workspace` builds them all).
pub fn binary(name: &str) -> PathBuf {
    let shoplens = PathBuf::from(env!("CARGO_BIN_EXE_shoplens"));
    let bin = shoplens.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p {name}` (the test script builds the \
         whole workspace)",
        bin.display()
    );
    bin
}

/// The secrets a deployer must set (`${VAR:?message}`: Compose refuses to start without
/// them), with the sample values the check runs the binaries with.
fn sample(var: &str) -> Option<String> {
    Some(match var {
        "SHOPLENS_AUTH_SECRET" => "8f".repeat(32),
        "SHOPLENS_ANALYTICS_USERS" => format!(
            r#"["alice analyst {}", "root admin {}"]"#,
            shoplens_analytics::users::hash("a sample password"),
            shoplens_analytics::users::hash("another sample password")
        ),
        "CLICKHOUSE_PASSWORD"
        | "CLICKHOUSE_READER_PASSWORD"
        | "GRAFANA_ADMIN_PASSWORD"
        | "SHOPLENS_GRAFANA_PASSWORD"
        | "POSTGRES_PASSWORD"
        | "SHOPLENS_CUSTOMER_DB_PASSWORD"
        | "SHOPLENS_PRODUCT_DB_PASSWORD"
        | "SHOPLENS_ORDER_DB_PASSWORD"
        | "SHOPLENS_PAYMENT_DB_PASSWORD"
        | "SHOPLENS_SHIPPING_DB_PASSWORD" => "sample-password".into(),
        _ => return None,
    })
}

/// A key that holds a secret: it must have no default.
fn is_secret(key: &str) -> bool {
    // By its last word: `GF_USERS_ALLOW_SIGN_UP` is a setting, `..._USERS` a secret.
    let last = key.rsplit('_').next().unwrap_or(key);
    ["SECRET", "PASSWORD", "USERS", "TOKEN"].contains(&last)
}

/// `value` as Compose resolves it: `${VAR:-default}` and `${VAR-default}` with `VAR` unset,
/// `${VAR:?message}` with the deployer's value (a sample). A variable with neither is an
/// error (the file must say what happens without an `.env`).
fn interpolate(value: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{value}`"))?;
        let inner = &rest[start + 2..start + end];
        if let Some((var, _)) = inner.split_once(":?") {
            out.push_str(
                &sample(var).ok_or_else(|| format!("`{var}` is required but has no sample"))?,
            );
        } else {
            match inner.split_once(":-").or_else(|| inner.split_once('-')) {
                Some((_, default)) => out.push_str(default),
                None => return Err(format!("`${{{inner}}}` has no default in `{value}`")),
            }
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => format!("{other:?}"),
    }
}

/// `http://HOST:PORT/...` or `HOST:PORT` (Kafka brokers): the host and port.
fn host_port(value: &str) -> Option<(&str, u16)> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .unwrap_or(value);
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .then_some((host, port))
}

/// Everything wrong with `compose` and `dockerfile`, one line each (empty: all good).
fn problems(compose: &str, dockerfile: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let compose: Compose = match serde_norway::from_str(compose) {
        Ok(c) => c,
        Err(e) => return vec![format!("docker-compose.yml does not parse: {e}")],
    };
    let services = &compose.services;
    for name in REQUIRED {
        if !services.contains_key(name) {
            errors.push(format!("no `{name}` service"));
        }
    }
    if let Some(kafka) = services.get("kafka") {
        if !kafka
            .image
            .as_deref()
            .unwrap_or("")
            .starts_with("apache/kafka:")
        {
            errors.push("kafka: not the official apache/kafka image".into());
        }
        let roles = kafka.environment.get("KAFKA_PROCESS_ROLES").map(scalar);
        if !roles.is_some_and(|r| r.contains("controller") && r.contains("broker")) {
            errors.push("kafka: not in KRaft mode (KAFKA_PROCESS_ROLES)".into());
        }
    }
    if let Some(ch) = services.get("clickhouse")
        && !ch
            .image
            .as_deref()
            .unwrap_or("")
            .starts_with("clickhouse/clickhouse-server:")
    {
        errors.push("clickhouse: not the official clickhouse/clickhouse-server image".into());
    }

    // Where each ShopLens container listens (its `*__LISTEN` ports).
    let listens: BTreeMap<&str, BTreeSet<u16>> = services
        .iter()
        .map(|(name, svc)| (name.as_str(), svc.listen_ports()))
        .filter(|(_, ports)| !ports.is_empty())
        .collect();
    let final_stage = dockerfile
        .rsplit_once("\nFROM ")
        .map_or("", |(_, stage)| stage);

    for (name, svc) in services {
        for (key, value) in &svc.environment {
            let raw = scalar(value);
            if is_secret(key) && (!raw.contains("${") || !raw.contains(":?")) {
                errors.push(format!(
                    "{name}: {key} is a default secret; require it with `${{VAR:?...}}`"
                ));
            }
        }
        if INTERNAL.contains(&name.as_str()) && !svc.ports.is_empty() {
            errors.push(format!("{name}: is internal but publishes {:?}", svc.ports));
        }
        for volume in &svc.volumes {
            let source = volume.split(':').next().unwrap_or("");
            if source.starts_with("./") && !root().join(source).exists() {
                errors.push(format!("{name}: mounts `{source}`, which does not exist"));
            }
        }
        let env: Vec<(String, String)> = svc
            .environment
            .iter()
            .map(|(k, v)| match interpolate(&scalar(v)) {
                Ok(v) => (k.clone(), v),
                Err(e) => {
                    errors.push(format!("{name}: {k}: {e}"));
                    (k.clone(), String::new())
                }
            })
            .collect();
        match &svc.healthcheck {
            None if svc.is_job() => {}
            None => errors.push(format!("{name}: no healthcheck")),
            Some(h) => match h.test.first().map(String::as_str) {
                Some("CMD") => {
                    let program = h.test.get(1).map_or("", String::as_str);
                    if svc.build.is_some()
                        && !final_stage.contains(&format!(" {program}"))
                        && !final_stage.contains(&format!("/{program}"))
                    {
                        errors.push(format!(
                            "{name}: the health check runs `{program}`, which the image lacks"
                        ));
                    }
                    let url = h.test.iter().find_map(|a| host_port(a));
                    if let (Some((_, port)), Some(ports)) = (url, listens.get(name.as_str()))
                        && !ports.contains(&port)
                    {
                        errors.push(format!(
                            "{name}: the health check asks port {port}, it listens on {ports:?}"
                        ));
                    }
                }
                Some("CMD-SHELL") if h.test.len() == 2 => {}
                _ => errors.push(format!("{name}: healthcheck.test is not CMD or CMD-SHELL")),
            },
        }
        // State lives in a named volume (a bind-mounted script is not where data goes).
        if STATEFUL.contains(&name.as_str())
            && svc.volumes.iter().all(|v| v.starts_with(['.', '/']))
        {
            errors.push(format!("{name}: keeps state but has no volume"));
        }
        for volume in &svc.volumes {
            let source = volume.split(':').next().unwrap_or("");
            if !source.starts_with(['.', '/']) && !compose.volumes.contains_key(source) {
                errors.push(format!("{name}: volume `{source}` is not declared"));
            }
        }
        for (dep, how) in &svc.depends_on {
            match services.get(dep) {
                None => errors.push(format!("{name}: depends on `{dep}`, which does not exist")),
                Some(d) if d.is_job() => {
                    if how.condition != "service_completed_successfully" {
                        errors.push(format!(
                            "{name}: waits for the job `{dep}` to be `{}`, not completed",
                            how.condition
                        ));
                    }
                }
                Some(d) if d.healthcheck.is_none() => errors.push(format!(
                    "{name}: depends on `{dep}`, which has no healthcheck"
                )),
                Some(_) if how.condition != "service_healthy" => errors.push(format!(
                    "{name}: waits for `{dep}` to be `{}`, not healthy",
                    how.condition
                )),
                Some(_) => {}
            }
        }
        // A URL to another container names one and a port it listens on.
        for (key, value) in &env {
            if !key.starts_with("SHOPLENS_") {
                continue;
            }
            for part in value.split(',') {
                let Some((host, port)) = host_port(part) else {
                    continue;
                };
                if host == "127" || host == "0" || host == "localhost" {
                    continue;
                }
                match services.get(host) {
                    None => errors.push(format!("{name}: {key} names `{host}`, no such service")),
                    Some(_) => {
                        if let Some(ports) = listens.get(host)
                            && !ports.contains(&port)
                        {
                            errors.push(format!(
                                "{name}: {key} asks {host} on port {port}, it listens on {ports:?}"
                            ));
                        }
                        if !svc.depends_on.contains_key(host) && !depends(services, name, host) {
                            errors.push(format!(
                                "{name}: {key} calls `{host}` without depending on it"
                            ));
                        }
                    }
                }
            }
        }
        for port in &svc.ports {
            let inside = port.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            if let (Some(inside), Some(ports)) = (inside, listens.get(name.as_str()))
                && !ports.contains(&inside)
            {
                errors.push(format!(
                    "{name}: publishes port {inside}, it listens on {ports:?}"
                ));
            }
        }

        // A service's database: its own, on the postgres container, as its own user, with a
        // password the deployer sets.
        let only = svc.command.as_ref().and_then(|c| {
            (c.first().map(String::as_str) == Some("run"))
                .then(|| {
                    c.iter()
                        .position(|a| a == "--only")
                        .map(|i| c[i + 1].clone())
                })
                .flatten()
        });
        if let Some(own) = only.as_deref().filter(|o| SERVICES.contains(o)) {
            let key = format!("SHOPLENS_{}__DATABASE_URL", own.to_uppercase());
            let want = format!(
                "postgres://{own}:${{SHOPLENS_{0}_DB_PASSWORD:?set SHOPLENS_{0}_DB_PASSWORD}}@postgres:5432/{own}",
                own.to_uppercase()
            );
            match svc.environment.get(&key).map(scalar) {
                Some(url) if url == want => {}
                other => errors.push(format!("{name}: {key} is {other:?}, not {want}")),
            }
            if !svc.depends_on.contains_key("postgres") {
                errors.push(format!(
                    "{name}: keeps its data in postgres without depending on it"
                ));
            }
        }

        // The ShopLens containers: the real binary accepts the command and environment.
        if svc.build.is_none() {
            continue;
        }
        let bin = match svc.entrypoint.as_deref() {
            None => DEFAULT_BINARY,
            Some([bin]) => bin.as_str(),
            Some(other) => {
                errors.push(format!("{name}: entrypoint {other:?} is not one binary"));
                continue;
            }
        };
        if !dockerfile.contains(&format!("-p {bin}")) || !final_stage.contains(bin) {
            errors.push(format!(
                "{name}: the Dockerfile does not build and copy `{bin}`"
            ));
            continue;
        }
        let args = svc.command.clone().unwrap_or_default();
        if let Err(e) = check_config(bin, &args, &env) {
            errors.push(format!("{name}: `{bin} {}` refused: {e}", args.join(" ")));
        }
    }
    // Several replicas of the order service, each called by the composer.
    let replicas: Vec<&String> = services
        .iter()
        .filter(|(_, svc)| {
            svc.command
                .as_ref()
                .is_some_and(|c| c.windows(2).any(|w| w[0] == "--only" && w[1] == "order"))
        })
        .map(|(name, _)| name)
        .collect();
    if replicas.len() < 2 {
        errors.push(format!(
            "the order service runs as {} replica(s), not two",
            replicas.len()
        ));
    }
    let composer_orders = services
        .get("composer")
        .and_then(|c| c.environment.get("SHOPLENS_COMPOSER__SERVICES__ORDER"))
        .map(scalar)
        .unwrap_or_default();
    for replica in &replicas {
        if !composer_orders
            .split(',')
            .any(|u| host_port(u).is_some_and(|(h, _)| h == replica.as_str()))
        {
            errors.push(format!(
                "composer: SHOPLENS_COMPOSER__SERVICES__ORDER leaves out the replica `{replica}`"
            ));
        }
    }
    if let Some(pg) = services.get("postgres") {
        if !pg.image.as_deref().unwrap_or("").starts_with("postgres:") {
            errors.push("postgres: not the official postgres image".into());
        }
        for own in SERVICES {
            let var = format!("SHOPLENS_{}_DB_PASSWORD", own.to_uppercase());
            if !pg.environment.contains_key(&var) {
                errors.push(format!("postgres: {var} is not passed to its init script"));
            }
        }
    }
    if dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count()
        < 2
    {
        errors.push("the Dockerfile is not multi-stage".into());
    }
    errors
}

/// What is wrong with the monitoring that ships with the deployment: Prometheus must scrape
/// every ShopLens server on a port it listens on, with the token file the `metrics-token`
/// job writes into a volume Prometheus mounts; Grafana's data sources must name the
/// analytics server's Postgres port and Prometheus, with the password from its environment.
fn monitoring_problems(compose: &str, prometheus: &str, datasources: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let compose: Compose = match serde_norway::from_str(compose) {
        Ok(c) => c,
        Err(e) => return vec![format!("docker-compose.yml does not parse: {e}")],
    };
    let services = &compose.services;
    let listens = |name: &str| {
        services
            .get(name)
            .map(Service::listen_ports)
            .unwrap_or_default()
    };
    let prometheus: Value = match serde_norway::from_str(prometheus) {
        Ok(v) => v,
        Err(e) => return vec![format!("prometheus.yml does not parse: {e}")],
    };
    // The token file: written by the job's `--output`, read through Prometheus's mount.
    let output = services
        .get("metrics-token")
        .and_then(|j| j.command.as_ref())
        .and_then(|c| {
            c.iter()
                .position(|a| a == "--output")
                .map(|i| c[i + 1].clone())
        });
    let job_volume = services
        .get("metrics-token")
        .and_then(|j| j.volumes.first());
    let mut scraped = BTreeSet::new();
    for job in prometheus["scrape_configs"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let job_name = scalar(&job["job_name"]);
        let file = scalar(&job["authorization"]["credentials_file"]);
        let readable = match (&output, job_volume, services.get("prometheus")) {
            (Some(out), Some(written), Some(prom)) => {
                let (volume, inside) = written.split_once(':').unwrap_or(("", ""));
                let name = out.strip_prefix(&format!("{inside}/")).unwrap_or("?");
                prom.volumes.iter().any(|m| {
                    let mut parts = m.split(':');
                    parts.next() == Some(volume)
                        && parts
                            .next()
                            .is_some_and(|at| file == format!("{at}/{name}"))
                })
            }
            _ => false,
        };
        if !readable {
            errors.push(format!(
                "prometheus.yml: job {job_name} reads its token from `{file}`, which is not \
                 the file the metrics-token job writes, mounted in prometheus"
            ));
        }
        for sc in job["static_configs"].as_sequence().into_iter().flatten() {
            for target in sc["targets"].as_sequence().into_iter().flatten() {
                let target = scalar(target);
                let Some((host, port)) = host_port(&target) else {
                    errors.push(format!(
                        "prometheus.yml: target `{target}` is not host:port"
                    ));
                    continue;
                };
                if !listens(host).contains(&port) {
                    errors.push(format!(
                        "prometheus.yml: {target}: `{host}` does not listen on {port}"
                    ));
                }
                scraped.insert(host.to_owned());
            }
        }
    }
    for (name, svc) in services {
        if svc.build.is_some() && !svc.is_job() && !scraped.contains(name.as_str()) {
            errors.push(format!(
                "prometheus.yml: the ShopLens server `{name}` is not scraped"
            ));
        }
    }

    let datasources: Value = match serde_norway::from_str(datasources) {
        Ok(v) => v,
        Err(e) => return vec![format!("the Grafana data sources do not parse: {e}")],
    };
    let sql_port = services
        .get("analytics")
        .and_then(|a| a.environment.get("SHOPLENS_ANALYTICS__SQL__LISTEN"))
        .map(scalar)
        .and_then(|l| l.rsplit_once(':')?.1.parse::<u16>().ok());
    let grafana_env = services.get("grafana").map(|g| &g.environment);
    for ds in datasources["datasources"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let url = scalar(&ds["url"]);
        match scalar(&ds["type"]).as_str() {
            "grafana-postgresql-datasource" | "postgres" => {
                if Some(url.as_str()) != sql_port.map(|p| format!("analytics:{p}")).as_deref() {
                    errors.push(format!(
                        "Grafana: the SQL data source asks `{url}`, not the analytics server's \
                         Postgres port {sql_port:?}"
                    ));
                }
                let password = scalar(&ds["secureJsonData"]["password"]);
                let var = password.trim_start_matches('$');
                if !password.starts_with('$') || !grafana_env.is_some_and(|e| e.contains_key(var)) {
                    errors.push(format!(
                        "Grafana: the SQL password `{password}` is not a variable grafana's \
                         environment sets"
                    ));
                }
            }
            "prometheus" => {
                if host_port(&url).is_none_or(|(h, _)| h != "prometheus") {
                    errors.push(format!("Grafana: Prometheus at `{url}`, not the container"));
                }
            }
            other => errors.push(format!("Grafana: an unexpected data source type `{other}`")),
        }
    }
    errors
}

/// Whether `from` depends on `to`, directly or through other services.
fn depends(services: &BTreeMap<String, Service>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from];
    while let Some(s) = todo.pop() {
        if !seen.insert(s) {
            continue;
        }
        if let Some(svc) = services.get(s) {
            for dep in svc.depends_on.keys() {
                if dep == to {
                    return true;
                }
                todo.push(dep);
            }
        }
    }
    false
}

/// Runs `bin ARGS --check-config` with exactly `env` (and no other `SHOPLENS_*`).
fn check_config(bin: &str, args: &[String], env: &[(String, String)]) -> Result<(), String> {
    let out = Command::new(binary(bin))
        .args(args)
        .arg("--check-config")
        .env_clear()
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|e| format!("failed to run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!("{}: {}", out.status, stderr.trim()))
    }
}

fn read(file: &str) -> String {
    std::fs::read_to_string(root().join(file)).unwrap()
}

#[test]
fn docker_compose_matches_the_binaries_and_the_dockerfile() {
    let errors = problems(&read("docker-compose.yml"), &read("Dockerfile"));
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The check fails on each kind of mistake it is there for.
#[test]
fn prometheus_scrapes_every_server_and_grafana_reads_the_sql_endpoint() {
    let compose = read("docker-compose.yml");
    let prometheus = read("deploy/prometheus/prometheus.yml");
    let datasources = read("deploy/grafana/provisioning/datasources/shoplens.yml");
    let errors = monitoring_problems(&compose, &prometheus, &datasources);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // The check can fail: a wrong port, a server left out, a token file nobody writes.
    let broken = prometheus
        .replace("\"composer:8080\"", "\"composer:9999\"")
        .replace("\"ingest:8090\"", "")
        .replacen("tokens/prometheus", "tokens/other", 1);
    let errors = monitoring_problems(&compose, &broken, &datasources);
    for want in ["composer:9999", "`ingest` is not scraped", "tokens/other"] {
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "missed {want}: {errors:?}"
        );
    }
    let broken = datasources.replace("analytics:5433", "analytics:5432");
    assert!(
        !monitoring_problems(&compose, &prometheus, &broken).is_empty(),
        "a wrong Postgres port"
    );
}

#[test]
fn the_token_command_writes_a_file_a_scraper_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prometheus");
    let out = Command::new(env!("CARGO_BIN_EXE_shoplens"))
        .args([
            "token",
            "--role",
            "monitor",
            "--subject",
            "prometheus",
            "--output",
        ])
        .arg(&file)
        .env_clear()
        .env("SHOPLENS_AUTH__SECRET", "8f".repeat(32))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "the token goes to the file, not stdout"
    );
    let token = std::fs::read_to_string(&file).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

#[test]
fn the_compose_check_catches_mistakes() {
    let compose = read("docker-compose.yml");
    let dockerfile = read("Dockerfile");
    let cases = [
        (
            "SHOPLENS_ORDER__LISTEN: 0.0.0.0:8083",
            "SHOPLENS_ORDER__LISTN: 0.0.0.0:8083",
            "order: `shoplens run --only order --no-demo` refused",
        ),
        (
            r#"command: ["run", "--only", "payment", "--no-demo"]"#,
            r#"command: ["run", "--only", "payment", "--no-dmo"]"#,
            "payment: `shoplens run --only payment --no-dmo` refused",
        ),
        (
            "SHOPLENS_INGEST__ENABLED: \"false\"",
            "SHOPLENS_INGEST__ENABLED: \"nope\"",
            "refused",
        ),
        (
            "SHOPLENS_COMPOSER__SERVICES__ORDER: http://order:8083,http://order-2:8083",
            "SHOPLENS_COMPOSER__SERVICES__ORDER: http://order:8093,http://order-2:8083",
            "composer: SHOPLENS_COMPOSER__SERVICES__ORDER asks order on port 8093",
        ),
        (
            "SHOPLENS_COMPOSER__SERVICES__ORDER: http://order:8083,http://order-2:8083",
            "SHOPLENS_COMPOSER__SERVICES__ORDER: http://order:8083",
            "leaves out the replica `order-2`",
        ),
        (
            "postgres://payment:${SHOPLENS_PAYMENT_DB_PASSWORD:?set SHOPLENS_PAYMENT_DB_PASSWORD}@postgres:5432/payment",
            "postgres://payment:payment@postgres:5432/payment",
            "SHOPLENS_PAYMENT__DATABASE_URL is",
        ),
        (
            "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}",
            "POSTGRES_PASSWORD: postgres",
            "is a default secret",
        ),
        (
            "SHOPLENS_ORDER_UPSTREAMS__PRODUCT_URL: http://product:8082",
            "SHOPLENS_ORDER_UPSTREAMS__PRODUCT_URL: http://prodcut:8082",
            "names `prodcut`, no such service",
        ),
        (
            "      shipping:\n        condition: service_healthy\n    healthcheck:\n      test: [\"CMD\", \"curl\", \"-sf\", \"http://127.0.0.1:8080/health\"]",
            "      shiping:\n        condition: service_healthy\n    healthcheck:\n      test: [\"CMD\", \"curl\", \"-sf\", \"http://127.0.0.1:8080/health\"]",
            "composer: depends on `shiping`, which does not exist",
        ),
        (
            "      - postgres-data:/var/lib/postgresql/data\n",
            "",
            "postgres: keeps state but has no volume",
        ),
        (
            "${SHOPLENS_DEMO:-true}",
            "${SHOPLENS_DEMO}",
            "has no default",
        ),
        (
            "SHOPLENS_AUTH__SECRET: ${SHOPLENS_AUTH_SECRET:?set SHOPLENS_AUTH_SECRET}",
            "SHOPLENS_AUTH__SECRET: ${SHOPLENS_AUTH_SECRET:-change-me}",
            "is a default secret",
        ),
        (
            "      SHOPLENS_CUSTOMER__LISTEN: 0.0.0.0:8081\n      RUST_LOG: info,librdkafka=warn\n",
            "      SHOPLENS_CUSTOMER__LISTEN: 0.0.0.0:8081\n      RUST_LOG: info,librdkafka=warn\n    ports:\n      - \"8081:8081\"\n",
            "customer: is internal but publishes",
        ),
        (
            "./deploy/clickhouse/create-reader.sh",
            "./deploy/clickhouse/create-readers.sh",
            "does not exist",
        ),
        // Without its users the analytics server would have the built-in one on 0.0.0.0:
        // the real binary refuses to start.
        (
            "      SHOPLENS_ANALYTICS__USERS: ${SHOPLENS_ANALYTICS_USERS:?set SHOPLENS_ANALYTICS_USERS}\n",
            "",
            "analytics: `shoplens-analytics serve` refused",
        ),
    ];
    for (good, bad, expected) in cases {
        assert!(compose.contains(good), "the case no longer applies: {good}");
        let errors = problems(&compose.replacen(good, bad, 1), &dockerfile);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "`{bad}` not caught as `{expected}`: {errors:#?}"
        );
    }
    let single_stage = dockerfile.replacen("FROM rust", "# FROM rust", 1);
    assert!(
        problems(&compose, &single_stage)
            .iter()
            .any(|e| e.contains("not multi-stage"))
    );
    let no_analytics = dockerfile.replace("-p shoplens-analytics", "");
    assert!(
        problems(&compose, &no_analytics)
            .iter()
            .any(|e| e.contains("does not build and copy `shoplens-analytics`"))
    );
    assert!(problems("services: [", &dockerfile)[0].contains("does not parse"));
}

#[test]
fn interpolation_takes_the_default_or_the_sample() {
    assert_eq!(interpolate("a${X:-b}c${Y-d}").unwrap(), "abcd");
    assert!(interpolate("${X}").is_err());
    assert_eq!(
        interpolate("${CLICKHOUSE_PASSWORD:?set it}").unwrap(),
        "sample-password"
    );
    assert!(interpolate("${NOBODY:?set it}").is_err());
}
