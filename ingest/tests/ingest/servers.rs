//! Real servers for the tests: the shared ClickHouse and Kafka broker the test script
//! starts (found through environment variables), and private ClickHouse servers a test can
//! stop and restart (the shared one must stay up for the other tests).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoplens_bus::KafkaConfig;
use shoplens_ingest::clickhouse::ClickHouseConfig;
use shoplens_ingest::local_clickhouse;

/// The shared ClickHouse server. Panics when the test script did not start one, so a run
/// without it fails instead of silently skipping.
pub fn clickhouse_url() -> String {
    std::env::var("SHOPLENS_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| {
        panic!(
            "SHOPLENS_TEST_CLICKHOUSE_URL is not set: run the tests through ./scripts/test.sh, \
             which starts ClickHouse"
        )
    })
}

/// A unique name for this test's databases, topics and groups.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

pub fn clickhouse_config(url: &str, database: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        url: url.to_owned(),
        database: database.to_owned(),
        request_timeout_ms: 5_000,
        ..Default::default()
    }
}

/// Kafka settings for tests: the shared broker, quick group joins.
pub fn kafka_config() -> KafkaConfig {
    KafkaConfig {
        brokers: shoplens_bus::test_brokers(),
        session_timeout_ms: 6_000,
        ..Default::default()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A ClickHouse server of this test's own, on its own ports and directory.
pub struct PrivateClickHouse {
    dir: PathBuf,
    pub http_port: u16,
    child: Option<Child>,
}

impl PrivateClickHouse {
    pub fn start(dir: &Path) -> PrivateClickHouse {
        let http_port = free_port();
        let tcp_port = free_port();
        let interserver = free_port();
        local_clickhouse::write_config(
            dir,
            local_clickhouse::Ports {
                http: http_port,
                tcp: tcp_port,
                interserver,
            },
        )
        .unwrap();
        let mut server = PrivateClickHouse {
            dir: dir.to_owned(),
            http_port,
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the server (again, on the same ports and data) and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let start = Instant::now();
        let ping = format!("{}/ping", self.url());
        loop {
            if http_ping::answers_200(&ping) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "private ClickHouse did not start; see {}/error.log",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (SIGKILL: no chance to finish anything) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tiny blocking HTTP GET (ClickHouse's `/ping`), without pulling in a blocking client.
mod http_ping {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub fn answers_200(url: &str) -> bool {
        get(url).unwrap_or(false)
    }

    fn get(url: &str) -> std::io::Result<bool> {
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut stream = TcpStream::connect(host)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            stream,
            "GET /{path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        Ok(out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"))
    }
}
