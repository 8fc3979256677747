//! Starting and stopping the real `shoplens` binary on free ports in a scratch directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use shoplens::RunInfo;
use shoplens_test_support::services::{ServicesDb, postgres_database, services_database};

/// A service token for a system started with the default `auth` key (the simulator's and
/// the tests' calls to the services carry one).
pub fn service_token() -> String {
    shoplens_kit::identity::ServiceToken::new(
        &shoplens_kit::identity::AuthConfig::default(),
        "test",
    )
    .token()
}

/// A token of `role` for a system started with the default `auth` key, as
/// `shoplens token --role ROLE` prints it.
pub fn token(role: shoplens_kit::identity::Role) -> String {
    shoplens_kit::identity::issue(
        shoplens_kit::identity::DEV_SECRET,
        &shoplens_kit::identity::Identity::new(format!("test-{role}"), role),
        Duration::from_secs(3600),
    )
}

/// A `shoplens run` process; killed on drop if still running.
pub struct Shoplens {
    pub child: Child,
    pub data_dir: PathBuf,
}

/// Environment that puts every service on port 0 and the data in `data_dir`.
pub fn base_env(data_dir: &Path) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "SHOPLENS_DATA_DIR".to_owned(),
            data_dir.display().to_string(),
        ),
        ("SHOPLENS_BUS__FSYNC".to_owned(), "false".to_owned()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
        // A year of demo history is a minute of a release build: the tests that want a
        // past ask for a short one.
        ("SHOPLENS_DEMO__HISTORY__DAYS".to_owned(), "0".to_owned()),
        // Tests run several systems at once on few cores: in SCHED_IDLE (the default) a
        // query worker would wait on the neighbouring tests' work; nice 10 still lets it run.
        (
            "SHOPLENS_ANALYTICS__QUERY__WORKERS__IDLE_CLASS".to_owned(),
            "false".to_owned(),
        ),
        // Nor on one CPU of their own, where every test's workers would queue.
        (
            "SHOPLENS_ANALYTICS__QUERY__WORKERS__SHARE_CPUS".to_owned(),
            "true".to_owned(),
        ),
    ];
    if let ServicesDb::Postgres(server) = services_database() {
        for svc in ["customer", "product", "order", "payment", "shipping"] {
            env.push((
                format!("SHOPLENS_{}__DATABASE_URL", svc.to_uppercase()),
                postgres_database(&server, data_dir, svc),
            ));
        }
    }
    for svc in [
        "CUSTOMER", "PRODUCT", "ORDER", "PAYMENT", "SHIPPING", "COMPOSER", "INGEST",
    ] {
        env.push((format!("SHOPLENS_{svc}__LISTEN"), "127.0.0.1:0".to_owned()));
    }
    // The analytics server's HTTP and Postgres endpoints.
    for key in ["ANALYTICS__LISTEN", "ANALYTICS__SQL__LISTEN"] {
        env.push((format!("SHOPLENS_{key}"), "127.0.0.1:0".to_owned()));
    }
    env
}

impl Shoplens {
    pub fn spawn(data_dir: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Shoplens {
        let _ = std::fs::remove_file(data_dir.join("run-info.json"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoplens"));
        cmd.args(args)
            .envs(base_env(data_dir))
            .envs(extra_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Shoplens {
            child: cmd.spawn().expect("start shoplens"),
            data_dir: data_dir.to_owned(),
        }
    }

    /// Waits until the process has written its run-info.json.
    pub fn wait_ready(&mut self) -> RunInfo {
        let path = self.data_dir.join("run-info.json");
        let start = Instant::now();
        loop {
            if let Ok(bytes) = std::fs::read(&path)
                && let Ok(info) = serde_json::from_slice::<RunInfo>(&bytes)
                && info.pid == self.child.id()
            {
                return info;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("shoplens exited before it was ready: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "shoplens not ready in 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "shoplens did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks for a graceful stop (SIGTERM) and waits for it.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_exit(Duration::from_secs(30))
    }
}

impl Drop for Shoplens {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a service's database (read-only on SQLite), whichever the tests run on.
pub async fn open_db(data_dir: &Path, service: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let url = match services_database() {
        ServicesDb::Sqlite => format!(
            "sqlite://{}?mode=ro",
            data_dir.join(format!("{service}.db")).display()
        ),
        ServicesDb::Postgres(server) => postgres_database(&server, data_dir, service),
    };
    sqlx::AnyPool::connect(&url).await.unwrap()
}

/// Waits until `orders` orders of the order service reached a final state (delivered or
/// cancelled).
pub async fn wait_orders_finished(data: &std::path::Path, orders: i64) {
    let db = open_db(data, "order").await;
    let start = Instant::now();
    loop {
        let finished: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM orders WHERE status IN ('Delivered', 'Cancelled')",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        if finished >= orders {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "demo orders did not finish: {finished}/{orders}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.close().await;
}
