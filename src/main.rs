//! `shoplens`: run the whole system (default), or drive it with the shop simulator.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shoplens::{Component, Config, RunInfo, System};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "ShopLens: live order summaries and fast sales analytics"
)]
struct Cli {
    /// A TOML config file (layered over the defaults, under SHOPLENS_* environment variables).
    #[arg(long, env = "SHOPLENS_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Parse the command line, load the configuration as the command would (defaults, file,
    /// environment) and validate it, then exit without doing anything: 0 and a summary
    /// without secrets when it is valid, non-zero and the error otherwise. For deployment
    /// checks (`tests/e2e/compose.rs` runs every docker-compose command with it).
    #[arg(long, global = true, hide = true)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system on this machine (the default).
    Run {
        /// Do not generate demo traffic.
        #[arg(long)]
        no_demo: bool,
        /// Run only these components, comma-separated (default: all, or the `only` config
        /// key); the others are reached at their configured URLs (`order_upstreams`,
        /// `composer.services`). The ingest worker and the analytics server are switched
        /// by `ingest.enabled` and `analytics.enabled`.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<Component>,
    },
    /// Drive a running system with the shop simulator and print its report as JSON.
    Simulate {
        /// The data directory of the running system (its run-info.json has the URLs).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Orders to place.
        #[arg(long, default_value_t = 100)]
        orders: u64,
        /// Orders started per second (0 = as fast as possible).
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Festival-sale burst: many times the rate, concentrated on hot products.
        #[arg(long)]
        festival: bool,
    },
    /// Rebuild the read model of the running system from its event log, beside the live one
    /// (dashboards keep answering), switching when it has caught up; shows progress. Exit
    /// code 0 once the new read model is live.
    Rebuild {
        /// The data directory of the running system (its run-info.json has the URLs).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// Export a named report or an ad-hoc query from the read model into a CSV or Parquet
    /// file (reads the configured read model directly; no server needed). Exit code 0 when
    /// the file is complete, 1 when the export failed, 2 for a bad request.
    Export(shoplens_analytics::cli::ExportArgs),
    /// Compare the read model of a running system with the services' own figures (orders,
    /// items and revenue per day, product and customer) and print the differences. Exit
    /// code 0 when they match, 1 when they differ, 2 when the check could not be made.
    Reconcile {
        /// The data directory of the running system (its run-info.json has the URLs).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// The analytics server to ask (default: the running system's, from run-info.json).
        #[arg(long)]
        analytics: Option<String>,
        /// First day (YYYY-MM-DD, inclusive); default: 30 days before `--to`.
        #[arg(long)]
        from: Option<String>,
        /// Last day (YYYY-MM-DD, inclusive); default: today (UTC).
        #[arg(long)]
        to: Option<String>,
        /// While there are differences, re-check every second for up to this long (the
        /// read model is eventually consistent); 0 checks once.
        #[arg(long, default_value_t = 0)]
        settle_secs: u64,
        /// Print the whole report as JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Print a bearer token signed with the configured key (`auth.secret`): a customer's
    /// (`--customer ID`, for the Order Summary API) or a user's of any role (`--role`).
    Token {
        /// The customer the token identifies (role `customer`).
        #[arg(long, conflicts_with_all = ["admin", "role"])]
        customer: Option<String>,
        /// An administrator's token (`--role admin`).
        #[arg(long, conflicts_with = "role")]
        admin: bool,
        /// The role: viewer, analyst, admin, service or monitor.
        #[arg(long)]
        role: Option<String>,
        /// Who the token names (with `--role`).
        #[arg(long, default_value = "operator")]
        subject: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// Write the token to this file (replaced whole, readable by all: for a scraper's
        /// `credentials_file` in a volume only it mounts) instead of printing it.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    // Query workers are this program started with `query-worker`.
    shoplens_analytics::isolation::run_if_requested();
    tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("failed to start the runtime: {e}"))?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config: Config = shoplens_kit::config::load(cli.config.as_deref())?;
    shoplens_kit::telemetry::init_tracing(config.log_json);
    // Secrets (JWT key, passwords) show as *** in the configuration's Debug.
    tracing::debug!(?config, "configuration");
    let command = cli.command.unwrap_or(Command::Run {
        no_demo: false,
        only: Vec::new(),
    });
    if let Command::Run { no_demo, only } = &command {
        if *no_demo {
            config.demo.enabled = false;
        }
        if !only.is_empty() {
            config.only = only.clone();
        }
    }
    if cli.check_config {
        let config = config.resolve();
        config.validate().context("invalid configuration")?;
        let components: Vec<String> = config
            .components()
            .iter()
            .map(|c| format!("{c:?}").to_lowercase())
            .collect();
        println!(
            "configuration ok: components {}, bus {:?}, ingest {}, analytics {}, demo {}",
            components.join(","),
            config.bus.kind,
            config.ingest.enabled,
            config.analytics.enabled,
            config.demo.enabled
        );
        return Ok(());
    }
    match command {
        Command::Run { .. } => {
            let system = System::start(config).await?;
            print_banner(&system.info);
            shoplens::shutdown_signal().await;
            tracing::info!("shutting down");
            system.stop().await;
        }
        Command::Rebuild { data_dir } => {
            let info = read_run_info(&data_dir)?;
            let mut err = std::io::stderr();
            let url = info.ingest.context(
                "the ingest worker does not run in this process; use `shoplens-ingest rebuild --url`",
            )?;
            shoplens_ingest::client::rebuild(&url, &config.auth.issue(&operator()), &mut err)
                .await?;
        }
        Command::Simulate {
            data_dir,
            seed,
            orders,
            rate,
            festival,
        } => {
            let info = read_run_info(&data_dir)?;
            let mut sim = shop_simulator::SimConfig {
                seed,
                orders: Some(orders),
                rate_per_sec: rate,
                ..Default::default()
            };
            sim.festival.enabled = festival;
            let urls = info.shop_urls(config.service_token("simulator"));
            let catalogue = shop_simulator::seed_catalogue(&urls, &sim).await?;
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                shoplens::shutdown_signal().await;
                stop.cancel();
            });
            let report = shop_simulator::run(&urls, &sim, &catalogue, shutdown).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Reconcile {
            data_dir,
            analytics,
            from,
            to,
            settle_secs,
            json,
        } => {
            use shoplens_analytics::reconcile::{ExitCode, fetch_settled};
            let result = async {
                let url = match analytics {
                    Some(url) => url,
                    None => read_run_info(&data_dir)?
                        .analytics
                        .context("the running system has no analytics server; give --analytics")?,
                };
                let settle = std::time::Duration::from_secs(settle_secs);
                let token = config.auth.issue(&operator());
                fetch_settled(&url, &token, from.as_deref(), to.as_deref(), settle)
                    .await
                    .map_err(anyhow::Error::from)
            }
            .await;
            let code = match result {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        print!("{}", report.summary(20));
                    }
                    if report.matches {
                        ExitCode::Match
                    } else {
                        ExitCode::Differences
                    }
                }
                Err(e) => {
                    eprintln!("reconcile: {e:#}");
                    ExitCode::Error
                }
            };
            std::process::exit(code as i32);
        }
        Command::Export(args) => {
            let config = config.resolve();
            let code =
                shoplens_analytics::cli::run(&config.read_model, &config.analytics.query, &args)
                    .await;
            std::process::exit(code as i32);
        }
        Command::Token {
            customer,
            admin,
            role,
            subject,
            ttl_secs,
            output,
        } => {
            use shoplens_kit::identity::{Identity, Role};
            let identity = match (customer, admin, role) {
                (Some(id), _, _) => Identity::new(id, Role::Customer),
                (None, true, _) => Identity::new(subject, Role::Admin),
                (None, false, Some(role)) => {
                    let role = Role::parse(&role).with_context(|| {
                        format!(
                            "--role must be one of {}, got `{role}`",
                            Role::ALL.map(Role::as_str).join(", ")
                        )
                    })?;
                    Identity::new(subject, role)
                }
                (None, false, None) => anyhow::bail!("say --customer ID, --admin or --role ROLE"),
            };
            config
                .auth
                .validate("auth.secret")
                .map_err(|e| anyhow::anyhow!(e))?;
            let ttl = std::time::Duration::from_secs(ttl_secs);
            let token = shoplens_kit::identity::issue(&config.auth.secret, &identity, ttl);
            match output {
                None => println!("{token}"),
                Some(path) => write_token(&path, &token)?,
            }
        }
    }
    Ok(())
}

/// Writes `token` to `path` through a temporary file and a rename, so a reader never sees
/// half of it.
fn write_token(path: &std::path::Path, token: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, format!("{token}\n"))
        .with_context(|| format!("failed to write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(())
}

/// Where a running system answers, from its data directory.
fn read_run_info(data_dir: &std::path::Path) -> anyhow::Result<RunInfo> {
    let path = data_dir.join("run-info.json");
    let bytes = std::fs::read(&path)
        .with_context(|| format!("failed to read {}: is the system running?", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("failed to parse {}", path.display()))
}

fn print_banner(info: &RunInfo) {
    let elsewhere = "(not in this process)";
    let here = |c: Component, url: &str| {
        if info.components.contains(&c) {
            url.to_owned()
        } else {
            elsewhere.to_owned()
        }
    };
    println!(
        "ShopLens is running (Ctrl-C to stop).\n  order summary API {}\n  customer service  {}\n  product service   {}\n  order service     {}\n  payment service   {}\n  shipping service  {}\n  ingest worker API {}\n  sales dashboard   {}\n  SQL for BI tools  {}",
        here(Component::Composer, &info.composer),
        here(Component::Customer, &info.customer),
        here(Component::Product, &info.product),
        here(Component::Order, &info.order),
        here(Component::Payment, &info.payment),
        here(Component::Shipping, &info.shipping),
        info.ingest.as_deref().unwrap_or(elsewhere),
        info.analytics
            .as_deref()
            .map_or("(disabled)".to_owned(), |u| format!("{u}/dashboard")),
        info.analytics_sql.as_deref().unwrap_or("(disabled)"),
    );
}

/// Who the operator commands (`rebuild`, `reconcile`) act as: an administrator, with a
/// token signed by the configured key.
fn operator() -> shoplens_kit::identity::Identity {
    shoplens_kit::identity::Identity::new("operator", shoplens_kit::identity::Role::Admin)
}
