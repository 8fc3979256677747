//! Servers a fault test may stop: a private tansu broker on free 127.0.0.1 ports in the
//! test's temp dir, killed and restarted on the same port and data (the shared servers of
//! `scripts/test.sh` must stay up for the other tests; a private ClickHouse is
//! `shoplens_test_support::clickhouse::LocalClickHouse`). Also the standalone
//! `shoplens-ingest` worker as a child process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, child: &mut Child, ready: impl Fn() -> bool) {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited during start-up: {status}");
        }
        if ready() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} not ready in 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A process killed (SIGKILL) on drop.
struct Killed(Option<Child>);

impl Killed {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The tansu binary: `TANSU_BIN`, or the one `scripts/ensure-tansu.sh` caches.
fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return PathBuf::from(bin);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cache = std::env::var("SHOPLENS_CACHE").unwrap_or(format!("{home}/.cache/shoplens"));
    let bin = PathBuf::from(cache).join("tansu-0.6.0/bin/tansu");
    assert!(
        bin.exists(),
        "no tansu broker at {}: run scripts/ensure-tansu.sh or set TANSU_BIN",
        bin.display()
    );
    bin
}

/// A Kafka-protocol broker (tansu, SQLite storage) of this test's own.
pub struct PrivateKafka {
    dir: PathBuf,
    pub port: u16,
    child: Killed,
}

impl PrivateKafka {
    pub fn start(dir: &Path) -> PrivateKafka {
        std::fs::create_dir_all(dir).unwrap();
        let mut k = PrivateKafka {
            dir: dir.to_owned(),
            port: free_port(),
            child: Killed(None),
        };
        k.restart();
        k
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again, on the same port and data) and waits until it listens.
    pub fn restart(&mut self) {
        assert!(self.child.0.is_none(), "already running");
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let log = append_to(&self.log_path());
        // In its own directory: tansu reads `sqlite:///abs/path` as a relative path.
        let mut child = Command::new(tansu_bin())
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "sqlite://broker.db"])
            // The group coordinator's joins, assignments and missed heartbeats.
            .env("RUST_LOG", "warn,tansu_broker::coordinator=info")
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let port = self.port;
        wait_until("tansu", &mut child, || port_open(port));
        self.child = Killed(Some(child));
    }

    /// SIGKILL: the broker gets no chance to finish anything.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Where the broker logs (its group coordinator's decisions among them).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("tansu.log")
    }
}

/// A log file a restarted process writes on after its earlier runs.
fn append_to(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Prints the last lines of each log when dropped while its test panics, so that a fault
/// test failing in CI (which keeps nothing else) shows what the broker and workers did.
pub struct LogsOnFailure(pub Vec<PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for path in &self.0 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let last = &lines[lines.len().saturating_sub(300)..];
            eprintln!("---- last {} lines of {} ----", last.len(), path.display());
            for line in last {
                eprintln!("{line}");
            }
        }
    }
}

/// The standalone `shoplens-ingest` binary: beside `shoplens` in the target directory
/// (`cargo build --workspace` and `cargo nextest run --workspace` build it).
fn ingest_bin() -> PathBuf {
    let shoplens = PathBuf::from(env!("CARGO_BIN_EXE_shoplens"));
    let bin = shoplens.with_file_name(format!("shoplens-ingest{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p shoplens-ingest` (the test script \
         builds the whole workspace)",
        bin.display()
    );
    bin
}

/// A `shoplens-ingest` worker process (Kafka in, ClickHouse out) on a fixed API port, so
/// a restarted one answers at the same URL.
pub struct IngestWorker {
    config: PathBuf,
    pub url: String,
    child: Option<Child>,
}

impl IngestWorker {
    /// Member `index` of the worker group (its own config file and API port; the same
    /// consumer group, broker and database as every other member). Writes its config file
    /// into `dir`; does not start it.
    pub fn member(
        dir: &Path,
        index: usize,
        brokers: &str,
        clickhouse_url: &str,
        database: &str,
    ) -> IngestWorker {
        let port = free_port();
        let config = dir.join(format!("ingest-{index}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
[ingest]
listen = "127.0.0.1:{port}"
group = "fault-test"
[ingest.worker]
batch_max_events = 200
batch_max_delay_ms = 50
[kafka]
brokers = "{brokers}"
partitions = 6
session_timeout_ms = 6000
[read_model]
kind = "clickhouse"
[read_model.clickhouse]
url = "{clickhouse_url}"
database = "{database}"
request_timeout_ms = 3000
"#
            ),
        )
        .unwrap();
        IngestWorker {
            config,
            url: format!("http://127.0.0.1:{port}"),
            child: None,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        // Every claim and seek goes to the member's log file (appended across restarts),
        // which a failing fault test prints (`LogsOnFailure`); `SHOPLENS_TEST_WORKER_LOG=info`
        // shows it live instead.
        let (level, stdout, stderr) = match std::env::var("SHOPLENS_TEST_WORKER_LOG") {
            Ok(level) => (level, Stdio::inherit(), Stdio::inherit()),
            Err(_) => {
                let log = append_to(&self.log_path());
                (
                    "info".to_owned(),
                    Stdio::from(log.try_clone().unwrap()),
                    Stdio::from(log),
                )
            }
        };
        let child = Command::new(ingest_bin())
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", level)
            .env("NO_COLOR", "1")
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start shoplens-ingest");
        self.child = Some(child);
    }

    /// Where this member logs (every run of it, appended).
    pub fn log_path(&self) -> PathBuf {
        self.config.with_extension("log")
    }

    /// SIGKILL: mid-batch, mid-commit, wherever it is.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for the process to exit: it applies what it holds and leaves its
    /// consumer group (a scale-down).
    pub fn stop(&mut self) {
        if self.child.is_some() {
            self.signal("-TERM");
            if let Some(mut child) = self.child.take() {
                let _ = child.wait();
            }
        }
    }

    /// SIGSTOP: the process stays a group member in its own view but sends no heartbeat;
    /// past the session timeout the group gives its partitions to others (a "zombie").
    pub fn pause(&mut self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`IngestWorker::pause`]: it wakes up with whatever it held.
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&mut self, signal: &str) {
        let child = self.child.as_ref().expect("the worker is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Whether the process is still running (it has not crashed).
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// The worker's `/api/v1/status` (`None` while it does not answer within 2 s).
    pub async fn status(&self) -> Option<serde_json::Value> {
        // A paused worker accepts connections (the kernel does) but never answers.
        let resp = reqwest::Client::new()
            .get(format!("{}/api/v1/status", self.url))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }
}

impl Drop for IngestWorker {
    fn drop(&mut self) {
        self.kill();
    }
}
