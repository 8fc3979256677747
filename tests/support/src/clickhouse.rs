//! A ClickHouse server's configuration for running one as a plain process on 127.0.0.1
//! (tests and benchmarks start private servers with it; `scripts/servers.sh` writes the
//! same settings for the test suite's shared server). Works with 18.16 and current versions.

use std::path::{Path, PathBuf};

/// The ports a local server listens on.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub tcp: u16,
    pub interserver: u16,
}

/// Creates `dir`'s data directories and writes `users.xml` and `config.xml` (passwordless
/// `default` user, loopback only, UTC, logs in `dir`); returns the path of `config.xml`, for
/// `clickhouse-server --config-file=...`. Tests kill these servers under load on purpose, so
/// a table with many parts left half-written still loads (they are set aside as broken; the
/// default of 10 would stop the server from starting).
pub fn write_config(dir: &Path, ports: Ports) -> std::io::Result<PathBuf> {
    for sub in ["data", "tmp", "user_files", "format_schemas"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(
        dir.join("users.xml"),
        r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
"#,
    )?;
    let d = dir.display();
    let Ports {
        http,
        tcp,
        interserver,
    } = ports;
    let config = dir.join("config.xml");
    std::fs::write(
        &config,
        format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <interserver_http_port>{interserver}</interserver_http_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>536870912</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <merge_tree><max_suspicious_broken_parts>1000</max_suspicious_broken_parts></merge_tree>
</yandex>
"#
        ),
    )?;
    Ok(config)
}

/// A ClickHouse server run as a child process on free 127.0.0.1 ports with its data in a
/// directory of its own: a test can kill it and start it again on the same ports and data
/// (the shared server of the test suite must stay up for the other tests). Killed on drop.
pub struct LocalClickHouse {
    dir: PathBuf,
    http_port: u16,
    child: Option<std::process::Child>,
}

/// The longest wait for a (re)started server to answer `/ping`.
const START_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

impl LocalClickHouse {
    /// Writes the configuration into `dir` and starts the server, once it answers.
    pub fn start(dir: &Path) -> std::io::Result<LocalClickHouse> {
        let ports = Ports {
            http: free_port()?,
            tcp: free_port()?,
            interserver: free_port()?,
        };
        write_config(dir, ports)?;
        let mut server = LocalClickHouse {
            dir: dir.to_owned(),
            http_port: ports.http,
            child: None,
        };
        server.restart()?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`, the HTTP interface.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the server (again, on the same ports and data) and waits until it answers. A
    /// server that exits during start-up is started once more, as an operator would after a
    /// crash; the first failure stays in the test's output.
    pub fn restart(&mut self) -> std::io::Result<()> {
        if self.child.is_some() {
            return Err(std::io::Error::other("the server is already running"));
        }
        let mut child = self.spawn()?;
        let mut retried = false;
        let ping = format!("{}/ping", self.url());
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                // The directory is usually a temporary one, gone by the time anyone reads
                // the failure: the log's last lines go into the message itself.
                let failure = format!(
                    "clickhouse-server exited during start-up ({status}); the end of {}/error.log:\n{}",
                    self.dir.display(),
                    self.error_log_tail()
                );
                if retried {
                    return Err(std::io::Error::other(failure));
                }
                eprintln!("{failure}\ntrying once more");
                retried = true;
                std::thread::sleep(std::time::Duration::from_secs(1));
                child = self.spawn()?;
                continue;
            }
            if answers_200(&ping) {
                self.child = Some(child);
                return Ok(());
            }
            if start.elapsed() > START_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(std::io::Error::other(format!(
                    "clickhouse-server did not answer within {START_LIMIT:?}; see {}/error.log",
                    self.dir.display()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn spawn(&self) -> std::io::Result<std::process::Child> {
        std::process::Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
    }

    /// The last lines of the server's error log.
    fn error_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills the server (SIGKILL: no chance to finish anything) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LocalClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A blocking `GET` of a loopback URL answered 200 (readiness, without an HTTP client).
fn answers_200(url: &str) -> bool {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    if write!(
        stream,
        "GET /{path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200")
}
