//! The servers the Kafka -> ClickHouse benchmark needs: the ones the environment names
//! (`SHOPLENS_TEST_CLICKHOUSE_URL`, `SHOPLENS_TEST_KAFKA_BROKERS`), or a ClickHouse server
//! and a tansu broker of the benchmark's own, on free 127.0.0.1 ports in a temp dir, stopped
//! (and their files removed) when [`Servers`] is dropped. And the services' PostgreSQL
//! server ([`Postgres`]), always the benchmark's own (fsync on, a random password).

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

/// A PostgreSQL server of the benchmark's own on a free 127.0.0.1 port, its data in a temp
/// dir, stopped (and the data removed) when dropped. Always started here, never the test
/// script's server (`SHOPLENS_TEST_POSTGRES_URL`): that one runs with fsync off, which would
/// flatter every write figure. This one keeps fsync and synchronous_commit on, as the SQLite
/// databases it is compared with run `synchronous = FULL`. One superuser, `shoplens`, with a
/// random password (scram); the services create their databases on first use.
pub struct Postgres {
    /// `postgres://shoplens:PASSWORD@127.0.0.1:PORT`: holds the password, never printed.
    server: String,
    /// `postgres --version`, e.g. `postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)`.
    pub version: String,
    /// The settings it runs with that matter for the figures.
    pub settings: String,
    bin: PathBuf,
    dir: Option<tempfile::TempDir>,
}

/// The settings the benchmark's PostgreSQL server runs with (the server's defaults, spelled
/// out so the results say so; more connections than the default 100 for two replicas' pools
/// and lock sessions).
const POSTGRES_SETTINGS: &[&str] = &[
    "fsync=on",
    "synchronous_commit=on",
    "full_page_writes=on",
    "max_connections=200",
];

impl Postgres {
    /// Starts the server (three tries: a free port can be taken between choosing it and the
    /// server binding it). Needs the PostgreSQL server programs (apt `postgresql`); run as
    /// root, they run as the `postgres` user (the server refuses to run as root).
    pub async fn start() -> anyhow::Result<Postgres> {
        tokio::task::spawn_blocking(start_postgres).await?
    }

    /// The URL of database `name` on this server (created by the first service that opens
    /// it). Holds the password: never print it.
    pub fn database_url(&self, name: &str) -> String {
        format!("{}/{name}", self.server)
    }

    /// Stops the server at once (its data is thrown away) and removes its files.
    pub fn stop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(dir.path().join("data"))
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest PostgreSQL server programs installed (`/usr/lib/postgresql/VERSION/bin`).
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    match newest {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL server programs under /usr/lib/postgresql \
             (apt-get install postgresql)"
        ),
    }
}

/// Whether this process runs as root (then the server's programs run as `postgres`).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `program` as a command run as the `postgres` user when this process is root, else as
/// this process's user.
fn as_postgres(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Hands `path` to the `postgres` user when this process is root.
fn give_to_postgres(path: &Path) -> anyhow::Result<()> {
    if running_as_root() {
        let status = Command::new("chown").arg("postgres").arg(path).status()?;
        anyhow::ensure!(status.success(), "chown postgres {} failed", path.display());
    }
    Ok(())
}

/// 32 hex digits from the kernel's random source.
fn random_password() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The last lines of a server log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn start_postgres() -> anyhow::Result<Postgres> {
    use std::os::unix::fs::PermissionsExt;
    let bin = postgres_bin()?;
    // The server's user must reach its directory: world-traversable, owned by it.
    let dir = tempfile::Builder::new()
        .prefix("shoplens-bench-postgres")
        .tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    give_to_postgres(dir.path())?;
    let password = random_password()?;
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, format!("{password}\n"))?;
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))?;
    give_to_postgres(&pwfile)?;
    let data = dir.path().join("data");
    let initdb = as_postgres(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", "shoplens", "--auth=scram-sha-256", "--encoding=UTF8"])
        // Only initdb's own final sync of the new cluster: the server keeps fsync on.
        .arg("--no-sync")
        .arg(format!("--pwfile={}", pwfile.display()))
        .output()
        .with_context(|| format!("cannot run {}", bin.join("initdb").display()))?;
    let _ = std::fs::remove_file(&pwfile);
    if !initdb.status.success() {
        bail!(
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr).trim()
        );
    }
    let version = Command::new(bin.join("postgres"))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "PostgreSQL (unknown version)".into());
    let log = dir.path().join("server.log");
    for _attempt in 0..3 {
        let port = free_port()?;
        let mut options = format!("-h 127.0.0.1 -p {port} -k {}", dir.path().display());
        for setting in POSTGRES_SETTINGS {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let started = as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        if started.success() {
            return Ok(Postgres {
                server: format!("postgres://shoplens:{password}@127.0.0.1:{port}"),
                version,
                settings: POSTGRES_SETTINGS.join(", "),
                bin,
                dir: Some(dir),
            });
        }
    }
    bail!("PostgreSQL did not start:\n{}", log_tail(&log))
}
