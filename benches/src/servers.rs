//! The servers the Kafka -> ClickHouse benchmark needs: the ones the environment names
//! (`SHOPLENS_TEST_CLICKHOUSE_URL`, `SHOPLENS_TEST_KAFKA_BROKERS`), or a ClickHouse server
//! and a tansu broker of the benchmark's own, on free 127.0.0.1 ports in a temp dir, stopped
//! (and their files removed) when [`Servers`] is dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shoplens_test_support::clickhouse::LocalClickHouse;

/// Running ClickHouse and Kafka-protocol servers.
pub struct Servers {
    pub clickhouse_url: String,
    pub kafka_brokers: String,
    /// `SELECT version()` of the ClickHouse server.
    pub clickhouse_version: String,
    /// The broker: `tansu --version` when started here, else "external".
    pub broker_version: String,
    /// Whether this process started the servers (and stops them).
    pub started_here: bool,
    clickhouse: Option<LocalClickHouse>,
    children: Vec<Child>,
    _dir: Option<tempfile::TempDir>,
}

/// `{prefix}_{pid}_{microseconds}`: a database, topic or group name no other run uses on a
/// shared server.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The tansu binary: `TANSU_BIN`, or the one `scripts/ensure-tansu.sh` caches.
fn tansu_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return Ok(PathBuf::from(p));
    }
    let cache = std::env::var("SHOPLENS_CACHE")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache/shoplens")))?;
    let bin = cache.join("tansu-0.6.0/bin/tansu");
    if !bin.exists() {
        bail!(
            "no tansu broker at {}: run scripts/ensure-tansu.sh (or set TANSU_BIN, or \
             SHOPLENS_TEST_KAFKA_BROKERS)",
            bin.display()
        );
    }
    Ok(bin)
}

impl Servers {
    /// The environment's servers where named, otherwise servers of this process's own.
    pub async fn from_env_or_start() -> anyhow::Result<Servers> {
        let dir = tempfile::Builder::new()
            .prefix("shoplens-bench-servers")
            .tempdir()?;
        let mut children = Vec::new();
        let mut started_here = false;
        let mut clickhouse = None;
        let clickhouse_url = match std::env::var("SHOPLENS_TEST_CLICKHOUSE_URL") {
            Ok(url) => url,
            Err(_) => {
                started_here = true;
                let server = start_clickhouse(&dir.path().join("clickhouse")).await?;
                let url = server.url();
                clickhouse = Some(server);
                url
            }
        };
        let (kafka_brokers, broker_version) = match std::env::var("SHOPLENS_TEST_KAFKA_BROKERS") {
            Ok(b) => (b, "external".to_owned()),
            Err(_) => {
                started_here = true;
                let bin = tansu_bin()?;
                let version = Command::new(&bin)
                    .arg("--version")
                    .output()
                    .ok()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "tansu (unknown version)".into());
                let (child, brokers) = start_tansu(&bin, &dir.path().join("tansu")).await?;
                children.push(child);
                (brokers, format!("{version}, sqlite storage engine"))
            }
        };
        let mut servers = Servers {
            clickhouse_url,
            kafka_brokers,
            clickhouse_version: String::new(),
            broker_version,
            started_here,
            clickhouse,
            children,
            _dir: Some(dir),
        };
        servers.clickhouse_version = clickhouse_version(&servers.clickhouse_url).await?;
        Ok(servers)
    }

    /// A ClickHouse server only (no broker): the one `SHOPLENS_TEST_CLICKHOUSE_URL` names,
    /// otherwise one of this process's own. `kafka_brokers` is empty.
    pub async fn clickhouse_from_env_or_start() -> anyhow::Result<Servers> {
        let dir = tempfile::Builder::new()
            .prefix("shoplens-bench-servers")
            .tempdir()?;
        let clickhouse = match std::env::var("SHOPLENS_TEST_CLICKHOUSE_URL") {
            Ok(_) => None,
            Err(_) => Some(start_clickhouse(&dir.path().join("clickhouse")).await?),
        };
        let clickhouse_url = match &clickhouse {
            Some(server) => server.url(),
            None => std::env::var("SHOPLENS_TEST_CLICKHOUSE_URL")?,
        };
        let mut servers = Servers {
            clickhouse_url,
            kafka_brokers: String::new(),
            clickhouse_version: String::new(),
            broker_version: "not started".into(),
            started_here: clickhouse.is_some(),
            clickhouse,
            children: Vec::new(),
            _dir: Some(dir),
        };
        servers.clickhouse_version = clickhouse_version(&servers.clickhouse_url).await?;
        Ok(servers)
    }

    /// Stops the servers this process started (SIGKILL; their data is thrown away).
    pub fn stop(&mut self) {
        if let Some(mut server) = self.clickhouse.take() {
            server.kill();
        }
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `SELECT version()` of the ClickHouse server at `url`.
async fn clickhouse_version(url: &str) -> anyhow::Result<String> {
    Ok(reqwest::Client::new()
        .post(url)
        .body("SELECT version()")
        .send()
        .await
        .context("ClickHouse does not answer")?
        .text()
        .await?
        .trim()
        .to_owned())
}

/// A ClickHouse server of this process's own in `dir` (three tries: a free port can be taken
/// between choosing it and the server binding it).
async fn start_clickhouse(dir: &Path) -> anyhow::Result<LocalClickHouse> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut last = None;
        for _attempt in 0..3 {
            let _ = std::fs::remove_dir_all(&dir);
            match LocalClickHouse::start(&dir) {
                Ok(server) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        bail!(
            "ClickHouse did not start (apt-get install clickhouse-server): {}",
            last.map(|e| e.to_string()).unwrap_or_default()
        )
    })
    .await?
}

async fn start_tansu(bin: &Path, dir: &Path) -> anyhow::Result<(Child, String)> {
    for _attempt in 0..3 {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let listener = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("tansu.log"))?;
        // Run in its own directory: tansu reads `sqlite:///abs/path` as a relative path.
        let mut child = Command::new(bin)
            .current_dir(dir)
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "sqlite://broker.db"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if child.try_wait()?.is_none() {
                    return Ok((child, format!("127.0.0.1:{port}")));
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    bail!(
        "the tansu broker did not start; see {}/tansu.log",
        dir.display()
    )
}
