//! Nothing starts with a default secret where others can reach it. Every server (the
//! services and the composer in `shoplens run`, the ingest worker, the analytics server)
//! refuses to listen beyond loopback with the built-in development key, or the analytics
//! server with its built-in user, and says which setting to change; a key shorter than 32
//! bytes is refused anywhere. On loopback (the embedded default) and with secrets of their
//! own they start.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::compose::binary;

const OWN_SECRET: &str = "exposure-test-key-0123456789abcdef0123456789";

fn run(bin: &str, args: &[&str], env: &[(&str, String)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(binary(bin));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().map(|(k, v)| (k, v)));
    if bin == "shoplens" {
        cmd.env("SHOPLENS_DATA_DIR", dir.path());
    }
    cmd.output().expect("run the binary")
}

fn refused(out: &Output, needle: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} started: {stderr}");
    assert!(
        stderr.contains(needle),
        "{what}: `{needle}` not in {stderr}"
    );
}

fn accepted(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server as `--check-config` runs it: what it is, its binary, its arguments, its
/// environment.
type Server = (
    &'static str,
    &'static str,
    Vec<&'static str>,
    Vec<(&'static str, String)>,
);

/// The servers, each listening on `ip`.
fn servers(ip: &str) -> Vec<Server> {
    let alone = |extra: Vec<(&'static str, String)>| {
        let mut env = vec![
            ("SHOPLENS_INGEST__ENABLED", "false".to_owned()),
            ("SHOPLENS_ANALYTICS__ENABLED", "false".to_owned()),
        ];
        env.extend(extra);
        env
    };
    vec![
        (
            "customer service",
            "shoplens",
            vec!["run", "--only", "customer", "--no-demo", "--check-config"],
            alone(vec![("SHOPLENS_CUSTOMER__LISTEN", format!("{ip}:0"))]),
        ),
        (
            "shipping service",
            "shoplens",
            vec!["run", "--only", "shipping", "--no-demo", "--check-config"],
            alone(vec![("SHOPLENS_SHIPPING__LISTEN", format!("{ip}:0"))]),
        ),
        (
            "composer",
            "shoplens",
            vec!["run", "--only", "composer", "--no-demo", "--check-config"],
            alone(vec![("SHOPLENS_COMPOSER__LISTEN", format!("{ip}:0"))]),
        ),
        (
            "ingest worker",
            "shoplens-ingest",
            vec!["--check-config"],
            vec![("SHOPLENS_INGEST__LISTEN", format!("{ip}:0"))],
        ),
        (
            "analytics server",
            "shoplens-analytics",
            vec!["serve", "--check-config"],
            vec![
                ("SHOPLENS_ANALYTICS__LISTEN", format!("{ip}:0")),
                ("SHOPLENS_ANALYTICS__SQL__LISTEN", format!("{ip}:0")),
            ],
        ),
    ]
}

#[test]
fn no_server_listens_beyond_loopback_with_a_built_in_secret() {
    let users = format!(
        r#"["ann analyst {}"]"#,
        shoplens_analytics::users::hash("ann's own password")
    );
    for (what, bin, args, env) in servers("0.0.0.0") {
        // The development key: refused, naming the setting.
        refused(&run(bin, &args, &env), "SHOPLENS_AUTH__SECRET", what);
        // A key that is too short: refused.
        let mut short = env.clone();
        short.push(("SHOPLENS_AUTH__SECRET", "short-key".to_owned()));
        refused(&run(bin, &args, &short), "32", what);
        // A key of one's own (and, for the analytics server, users of one's own): starts.
        let mut own = env.clone();
        own.push(("SHOPLENS_AUTH__SECRET", OWN_SECRET.to_owned()));
        if bin == "shoplens-analytics" {
            // Its built-in user is as much a default secret as the key.
            refused(
                &run(bin, &args, &own),
                "shoplens-analytics hash-password",
                what,
            );
            own.push(("SHOPLENS_ANALYTICS__USERS", users.clone()));
        }
        accepted(&run(bin, &args, &own), what);
    }
    // On loopback the development defaults are fine: the one-command embedded start.
    for (what, bin, args, env) in servers("127.0.0.1") {
        accepted(&run(bin, &args, &env), what);
    }
}

/// Not only `--check-config`: a server that would start exposed exits with the same error
/// before it listens.
#[test]
fn an_exposed_start_exits_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary("shoplens"))
        .args(["run", "--only", "customer", "--no-demo"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SHOPLENS_DATA_DIR", dir.path())
        .env("SHOPLENS_CUSTOMER__LISTEN", "0.0.0.0:0")
        .env("SHOPLENS_INGEST__ENABLED", "false")
        .env("SHOPLENS_ANALYTICS__ENABLED", "false")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the exposed server kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(!status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SHOPLENS_AUTH__SECRET"), "{stderr}");
    assert!(
        !dir.path().join("run-info.json").exists(),
        "it announced itself as running"
    );
}
