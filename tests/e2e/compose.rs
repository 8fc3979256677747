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
/// Containers that keep state, so need a volume.
const STATEFUL: [&str; 7] = [
    "kafka",
    "clickhouse",
    "customer",
    "product",
    "order",
    "payment",
    "shipping",
];
/// Containers only other containers call: nothing published.
const INTERNAL: [&str; 6] = [
    "customer", "product", "order", "payment", "shipping", "ingest",
];
const REQUIRED: [&str; 10] = [
    "kafka",
    "clickhouse",
    "customer",
    "product",
    "order",
    "payment",
    "shipping",
    "composer",
    "ingest",
    "analytics",
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
        "CLICKHOUSE_PASSWORD" | "CLICKHOUSE_READER_PASSWORD" => "sample-password".into(),
        _ => return None,
    })
}

/// A key that holds a secret: it must have no default.
fn is_secret(key: &str) -> bool {
    ["SECRET", "PASSWORD", "USERS", "TOKEN"]
        .iter()
        .any(|s| key.contains(s))
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
    let mut listens: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
    for (name, svc) in services {
        for (key, value) in &svc.environment {
            if key.starts_with("SHOPLENS_") && key.ends_with("__LISTEN") {
                let port = scalar(value)
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok());
                listens.entry(name).or_default().extend(port);
            }
        }
    }
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
        if STATEFUL.contains(&name.as_str()) && svc.volumes.is_empty() {
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
            "SHOPLENS_COMPOSER__SERVICES__ORDER: http://order:8083",
            "SHOPLENS_COMPOSER__SERVICES__ORDER: http://order:8093",
            "composer: SHOPLENS_COMPOSER__SERVICES__ORDER asks order on port 8093",
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
            "      - order-data:/data\n",
            "",
            "order: keeps state but has no volume",
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
            "      - customer-data:/data\n",
            "      - customer-data:/data\n    ports:\n      - \"8081:8081\"\n",
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
