//! `shoplens-bench`: runs the benchmark scenarios and writes their results files.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shoplens_benches::composer::{self, ComposerOptions};

#[derive(Parser)]
#[command(
    name = "shoplens-bench",
    about = "ShopLens benchmarks (write results to benches/results)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Order Summary API: no cache / cache / cache + invalidation, and the fan-out check.
    Composer(ComposerArgs),
    /// Every scenario with its defaults (for now: composer).
    All(ComposerArgs),
}

#[derive(Args, Clone)]
struct ComposerArgs {
    /// Orders seeded before measuring (also the read population).
    #[arg(long)]
    orders: Option<usize>,
    /// Measured seconds per mode and load type.
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Closed-loop workers.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Repeats; medians are reported.
    #[arg(long)]
    runs: Option<usize>,
    /// Tiny sizes, one short run: checks the harness, not for figures.
    #[arg(long)]
    smoke: bool,
    /// Directory for the results files.
    #[arg(long, env = "SHOPLENS_BENCH_OUT")]
    out: Option<PathBuf>,
}

impl ComposerArgs {
    fn options(&self) -> ComposerOptions {
        let mut o = if self.smoke {
            ComposerOptions::smoke(ComposerOptions::default().out)
        } else {
            ComposerOptions::default()
        };
        if let Some(v) = self.orders {
            o.orders = v;
        }
        if let Some(v) = self.duration_secs {
            o.duration = Duration::from_secs_f64(v);
        }
        if let Some(v) = self.concurrency {
            o.concurrency = v;
        }
        if let Some(v) = self.runs {
            o.runs = v;
        }
        if let Some(v) = &self.out {
            o.out = v.clone();
        }
        o
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The benchmark's progress, and only warnings of the system under test (unless
    // RUST_LOG says otherwise).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,shoplens_benches=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (Command::Composer(args) | Command::All(args)) = cli.command;
    let opts = args.options();
    let results = composer::run(&opts).await?;
    eprintln!("{}", shoplens_benches::results::composer_markdown(&results));
    eprintln!("wrote {}", opts.out.join("composer.json").display());
    Ok(())
}
