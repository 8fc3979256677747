//! Fault injection on the distributed set-up: `shoplens run` with the services on Kafka and
//! the read model in ClickHouse, the ingest worker as its own `shoplens-ingest` process, and
//! the shop simulator placing orders. The worker is killed at random points, the broker and
//! ClickHouse are stopped and restarted, and afterwards `shoplens reconcile` must find the
//! read model equal to the services' own figures: nothing lost, nothing counted twice.
//!
//! Each test has its own tansu broker (and, where it stops it, its own ClickHouse) so the
//! shared servers stay up for the tests running beside it. Random choices come from a seed
//! that is printed; `SHOPLENS_TEST_FAULT_SEED=N` repeats a run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use shop_simulator::{Catalogue, ShopUrls, SimConfig, SimReport};
use shoplens::RunInfo;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::process::{Shoplens, open_db};
use crate::reconcile::reconcile_json;
use crate::servers::{IngestWorker, LogsOnFailure, PrivateKafka, free_port};
use shoplens_test_support::clickhouse::LocalClickHouse;

/// The run's seed: `SHOPLENS_TEST_FAULT_SEED`, or the clock; printed so a failure can be repeated.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("SHOPLENS_TEST_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: seed {seed} (SHOPLENS_TEST_FAULT_SEED={seed} repeats this run)");
    seed
}

/// SplitMix64: enough randomness for kill points, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// The system under test.
struct Rig {
    _dir: tempfile::TempDir,
    data: PathBuf,
    kafka: PrivateKafka,
    clickhouse: Option<LocalClickHouse>,
    clickhouse_url: String,
    database: String,
    _shop: Shoplens,
    info: RunInfo,
    /// The members of the one `shoplens-ingest` consumer group.
    workers: Vec<IngestWorker>,
}

/// Starts a private broker, (optionally) a private ClickHouse, the system and `workers`
/// ingest workers in one consumer group, over topics of 6 partitions.
async fn rig(private_clickhouse: bool, workers: usize) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let kafka = PrivateKafka::start(&dir.path().join("tansu"));
    let clickhouse = private_clickhouse.then(|| {
        LocalClickHouse::start(&dir.path().join("clickhouse")).expect("a private ClickHouse")
    });
    let clickhouse_url = match &clickhouse {
        Some(c) => c.url(),
        None => std::env::var("SHOPLENS_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| {
            panic!(
                "SHOPLENS_TEST_CLICKHOUSE_URL is not set: run the tests through ./scripts/test.sh"
            )
        }),
    };
    let database = format!("faults_{}", uuid::Uuid::now_v7().simple());
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let env = [
        ("SHOPLENS_BUS__KIND", "kafka".to_owned()),
        ("SHOPLENS_BUS__KAFKA__BROKERS", kafka.brokers()),
        ("SHOPLENS_BUS__KAFKA__SESSION_TIMEOUT_MS", "6000".to_owned()),
        ("SHOPLENS_BUS__KAFKA__PARTITIONS", "6".to_owned()),
        ("SHOPLENS_INGEST__ENABLED", "false".to_owned()),
        ("SHOPLENS_READ_MODEL__KIND", "clickhouse".to_owned()),
        (
            "SHOPLENS_READ_MODEL__CLICKHOUSE__URL",
            clickhouse_url.clone(),
        ),
        (
            "SHOPLENS_READ_MODEL__CLICKHOUSE__DATABASE",
            database.clone(),
        ),
        ("SHOPLENS_ANALYTICS__SQL__ENABLED", "false".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut shop = Shoplens::spawn(&data, &["run", "--no-demo"], &env);
    let info = shop.wait_ready();
    let workers = (0..workers)
        .map(|i| {
            let mut worker =
                IngestWorker::member(dir.path(), i, &kafka.brokers(), &clickhouse_url, &database);
            worker.start();
            worker
        })
        .collect();
    Rig {
        _dir: dir,
        data,
        kafka,
        clickhouse,
        clickhouse_url,
        database,
        _shop: shop,
        info,
        workers,
    }
}

impl Rig {
    /// The broker's and every worker's log, printed if the test fails.
    fn logs_on_failure(&self) -> LogsOnFailure {
        let mut logs = vec![self.kafka.log_path()];
        logs.extend(self.workers.iter().map(IngestWorker::log_path));
        LogsOnFailure(logs)
    }
}

fn sim(seed: u64, orders: u64, rate: f64) -> SimConfig {
    SimConfig {
        seed,
        customers: 20,
        products: 12,
        orders: Some(orders),
        rate_per_sec: rate,
        step_delay_ms: 0,
        ..Default::default()
    }
}

async fn catalogue(urls: &ShopUrls, seed: u64) -> Catalogue {
    shop_simulator::seed_catalogue(urls, &sim(seed, 0, 0.0))
        .await
        .expect("seed the catalogue")
}

/// The simulator placing `orders` orders at `rate` per second in the background.
fn load(urls: &ShopUrls, catalogue: &Catalogue, config: SimConfig) -> JoinHandle<SimReport> {
    let (urls, catalogue) = (urls.clone(), catalogue.clone());
    tokio::spawn(async move {
        shop_simulator::run(&urls, &config, &catalogue, CancellationToken::new())
            .await
            .expect("the simulator ran")
    })
}

/// Every order was placed and went through its lifecycle without a failed call.
fn assert_load_ok(report: &SimReport, orders: u64) {
    assert_eq!(report.orders_placed, orders, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
}

/// Events the worker has stored positions for (next offsets summed); 0 while it is down.
async fn applied(worker: &IngestWorker) -> u64 {
    let Some(s) = worker.status().await else {
        return 0;
    };
    s["live"]["positions"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["next_offset"].as_u64()).sum())
        .unwrap_or(0)
}

/// Events this worker process has read from the bus (0 while it is down).
async fn consumed(worker: &IngestWorker) -> u64 {
    let Some(s) = worker.status().await else {
        return 0;
    };
    s["live"]["events_consumed"].as_u64().unwrap_or(0)
}

/// Events still waiting in the order service's outbox.
async fn order_outbox_pending(rig: &Rig) -> i64 {
    let db = open_db(&rig.data, "order").await;
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    n
}

/// Reconciles until the read model matches (or 120 s pass) and asserts it does, exactly.
fn assert_reconciled(rig: &Rig, orders: u64, context: &str) {
    let (code, report) = reconcile_json(&rig.data, 120);
    assert_eq!(code, 0, "{context}: {report:#}");
    assert_eq!(report["matches"], true, "{context}: {report:#}");
    assert_eq!(report["back_end"], "clickhouse");
    assert_eq!(
        report["source_of_truth"]["orders_scanned"], orders,
        "{context}: {report:#}"
    );
    assert!(
        report["checked"]["products"].as_u64().unwrap() > 1,
        "{report:#}"
    );
    assert!(
        report["checked"]["customers"].as_u64().unwrap() > 1,
        "{report:#}"
    );
}

/// Runs a ClickHouse statement over HTTP; the response text.
async fn clickhouse(url: &str, sql: &str) -> String {
    let resp = reqwest::Client::new()
        .post(url)
        .body(sql.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{sql}: {status} {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_ingest_worker_under_load_loses_and_double_counts_nothing() {
    let seed = seed("worker kills");
    let mut rng = Rng(seed);
    let mut rig = rig(false, 1).await;
    let _logs = rig.logs_on_failure();
    let urls = rig.info.shop_urls(crate::process::service_token());
    let catalogue = catalogue(&urls, seed).await;
    let orders = 240;
    // 10 orders/s: the load lasts ~24 s, long enough for several kill-restart cycles (each
    // waits for the restarted worker to rejoin its group) even on a busy machine.
    let load = load(&urls, &catalogue, sim(seed, orders, 10.0));

    // Kill -9 the worker at a random moment after it made progress, restart it, repeat.
    let mut kills = Vec::new();
    let mut last = 0;
    while kills.len() < 4 && !load.is_finished() {
        let start = Instant::now();
        loop {
            let now = applied(&rig.workers[0]).await;
            if now > last || load.is_finished() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "seed {seed}: the worker made no progress after kills {kills:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // The kill lands at the worker's next event read after a random delay: while it
        // holds partitions and reads. A kill while it waits for its partitions tests only
        // the broker's group protocol, and tansu 0.6 can then leave the group's partitions
        // unassigned for good (as in issue 17), so nothing would be applied again.
        let delay = rng.below(1_200);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let (before, start) = (consumed(&rig.workers[0]).await, Instant::now());
        while consumed(&rig.workers[0]).await <= before && !load.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "seed {seed}: the worker read nothing after kills {kills:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if load.is_finished() {
            break;
        }
        let at = applied(&rig.workers[0]).await;
        rig.workers[0].kill();
        eprintln!(
            "worker kills: kill {} after +{delay} ms, at {at} events applied",
            kills.len() + 1
        );
        kills.push((delay, at));
        last = at;
        rig.workers[0].start();
    }
    let report = load.await.unwrap();
    assert_load_ok(&report, orders);
    assert!(
        kills.len() >= 2,
        "seed {seed}: the worker was killed under load only {} times",
        kills.len()
    );
    assert!(rig.workers[0].alive());
    assert_reconciled(&rig, orders, &format!("seed {seed}, kills {kills:?}"));

    // The same check catches a wrong read model: an extra aggregate row for a customer who
    // never bought anything is named, with the field and both figures.
    let generation = clickhouse(
        &rig.clickhouse_url,
        &format!(
            "SELECT name FROM system.databases WHERE name LIKE '{}\\_g%'",
            rig.database
        ),
    )
    .await;
    let generation = generation.trim();
    assert!(
        !generation.is_empty() && !generation.contains('\n'),
        "{generation}"
    );
    let ghost = "01900000-0000-7000-8000-00000000beef";
    clickhouse(
        &rig.clickhouse_url,
        &format!(
            "INSERT INTO {generation}.customer_spend_daily \
             (day, customer_id, orders_paid, revenue, contributions) \
             VALUES (today(), '{ghost}', 1, 9.99, 1)"
        ),
    )
    .await;
    let (code, report) = reconcile_json(&rig.data, 0);
    assert_eq!(code, 1, "{report:#}");
    let diffs = report["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 2, "{report:#}");
    for d in diffs {
        assert_eq!(d["scope"], "customer", "{report:#}");
        assert_eq!(d["key"], ghost, "{report:#}");
    }
    let revenue = diffs.iter().find(|d| d["field"] == "revenue").unwrap();
    assert_eq!(revenue["source_of_truth"], "0");
    assert_eq!(revenue["read_model"], "9.99");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_and_clickhouse_stopped_under_load_lose_nothing() {
    let seed = seed("server outages");
    let mut rng = Rng(seed);
    let mut rig = rig(true, 1).await;
    let _logs = rig.logs_on_failure();
    let urls = rig.info.shop_urls(crate::process::service_token());
    let catalogue = catalogue(&urls, seed).await;
    let per_phase = 120;

    // 1. The broker down for a few seconds under load: the services keep taking orders (the
    //    outboxes hold the events), the worker keeps running.
    let load1 = load(&urls, &catalogue, sim(seed, per_phase, 20.0));
    tokio::time::sleep(Duration::from_millis(500 + rng.below(1_000))).await;
    rig.kafka.kill();
    let outage = Duration::from_millis(3_000 + rng.below(2_000));
    eprintln!("server outages: broker down for {outage:?}");
    tokio::time::sleep(outage).await;
    let pending = order_outbox_pending(&rig).await;
    assert!(
        pending > 0,
        "the outbox holds the events while the broker is down"
    );
    assert!(
        rig.workers[0].alive(),
        "the worker survives the broker's outage"
    );
    rig.kafka.restart();
    let report = load1.await.unwrap();
    assert_load_ok(&report, per_phase);

    // 2. ClickHouse down for a few seconds under load: the worker backs off (it reports
    //    the store down) and does not crash.
    let load2 = load(&urls, &catalogue, sim(seed ^ 1, per_phase, 20.0));
    tokio::time::sleep(Duration::from_millis(500 + rng.below(1_000))).await;
    let clickhouse = rig.clickhouse.as_mut().unwrap();
    clickhouse.kill();
    let outage = Duration::from_millis(3_000 + rng.below(2_000));
    eprintln!("server outages: ClickHouse down for {outage:?}");
    // Down for at least `outage`, and until the worker has found the store down (an apply
    // failed); a worker that never tries within 30 s is not consuming.
    let start = Instant::now();
    let mut saw_sink_down = false;
    while start.elapsed() < outage || !saw_sink_down {
        let status = rig.workers[0].status().await;
        if let Some(s) = &status {
            saw_sink_down |= s["live"]["sink_up"] == false;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "seed {seed}: the worker never found the store down; its status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rig.workers[0].alive(),
        "the worker survives ClickHouse's outage"
    );
    clickhouse.restart().expect("ClickHouse restarts");
    let report = load2.await.unwrap();
    assert_load_ok(&report, per_phase);

    // 3. Everything catches up, exactly.
    assert_reconciled(&rig, 2 * per_phase, &format!("seed {seed}"));
    assert!(rig.workers[0].alive(), "the same worker process caught up");
    assert_eq!(order_outbox_pending(&rig).await, 0);
}

/// Events applied by the whole group: every member's stored positions (a partition's
/// position may be reported by its old and its new owner; the larger counts).
async fn applied_by_group(workers: &[IngestWorker]) -> u64 {
    let mut positions: std::collections::BTreeMap<(String, u64), u64> = Default::default();
    for worker in workers {
        let Some(s) = worker.status().await else {
            continue;
        };
        for p in s["live"]["positions"].as_array().into_iter().flatten() {
            let key = (
                p["topic"].as_str().unwrap_or_default().to_owned(),
                p["partition"].as_u64().unwrap_or_default(),
            );
            let next = p["next_offset"].as_u64().unwrap_or(0);
            let e = positions.entry(key).or_default();
            *e = (*e).max(next);
        }
    }
    positions.values().sum()
}

/// Waits until the group applied more than `than` events (or 60 s pass: a failure).
async fn wait_for_progress(workers: &[IngestWorker], than: u64, context: &str) -> u64 {
    let start = Instant::now();
    loop {
        let now = applied_by_group(workers).await;
        if now > than {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{context}: the group made no progress past {than} events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three `shoplens-ingest` processes in one consumer group over topics of 6 partitions,
/// writing one ClickHouse generation, under load: one is SIGKILLed and restarted, one is
/// SIGSTOPped past the session timeout (its partitions go to the others) and then resumed
/// (a zombie holding a batch), one is stopped (it leaves the group) and joins again. Nothing is lost and nothing is
/// counted twice, and more than one member wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ingest_workers_with_kills_zombies_and_rebalances_count_every_event_once() {
    let seed = seed("worker group");
    let mut rng = Rng(seed);
    let mut rig = rig(false, 3).await;
    let _logs = rig.logs_on_failure();
    let urls = rig.info.shop_urls(crate::process::service_token());
    let catalogue = catalogue(&urls, seed).await;
    let orders = 300;
    // 10 orders/s: ~30 s of load, across every step below.
    let load = load(&urls, &catalogue, sim(seed, orders, 10.0));
    let context = format!("seed {seed}");

    let at = wait_for_progress(&rig.workers, 0, &context).await;
    // 1. A member killed mid-work and started again.
    tokio::time::sleep(Duration::from_millis(rng.below(1_000))).await;
    rig.workers[0].kill();
    eprintln!("worker group: member 0 killed at {at} events");
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.workers[0].start();
    let at = wait_for_progress(&rig.workers, at, &context).await;

    // 2. A member paused past the session timeout (6 s): the group moves its partitions
    //    to the others, then it wakes up with what it held.
    rig.workers[1].pause();
    eprintln!("worker group: member 1 paused at {at} events");
    tokio::time::sleep(Duration::from_millis(8_000 + rng.below(2_000))).await;
    let during = applied_by_group(&rig.workers).await;
    rig.workers[1].resume();
    eprintln!("worker group: member 1 resumed; the group applied {during} events meanwhile");
    let at = wait_for_progress(&rig.workers, during, &context).await;

    // 3. A member leaves (stopped: it leaves the group) and joins again. (A member killed
    //    here, while the group is still settling after step 2, can keep its partitions in
    //    tansu's group long past the session timeout; step 1 kills one.)
    rig.workers[2].stop();
    tokio::time::sleep(Duration::from_millis(1_000 + rng.below(1_000))).await;
    rig.workers[2].start();
    eprintln!("worker group: member 2 left and joined again at {at} events");

    let report = load.await.unwrap();
    assert_load_ok(&report, orders);
    for (i, w) in rig.workers.iter_mut().enumerate() {
        assert!(w.alive(), "{context}: member {i} died");
    }
    assert_reconciled(&rig, orders, &context);

    // Several members claimed partitions and wrote: claims by more than one writer, and
    // every partition of the order topic has a stored position.
    let generation = clickhouse(
        &rig.clickhouse_url,
        &format!(
            "SELECT name FROM system.databases WHERE name LIKE '{}\\_g%'",
            rig.database
        ),
    )
    .await;
    let generation = generation.trim();
    let tokens = clickhouse(
        &rig.clickhouse_url,
        &format!("SELECT uniqExact(token) FROM {generation}.owners"),
    )
    .await;
    let tokens: u64 = tokens.trim().parse().unwrap();
    assert!(tokens >= 4, "{context}: only {tokens} claims were made");
    let partitions = clickhouse(
        &rig.clickhouse_url,
        &format!("SELECT uniqExact(topic, partition) FROM {generation}.positions"),
    )
    .await;
    let partitions: u64 = partitions.trim().parse().unwrap();
    assert!(
        partitions >= 6,
        "{context}: positions of {partitions} partitions"
    );
}

/// Two replicas of the order service (`shoplens run --only order`, their own processes) on
/// one PostgreSQL database, beside a process with the other services and the composer, on
/// Kafka with the read model in ClickHouse. The simulator places orders through the second
/// replica; the first started first, so its relay publishes the shared outbox. It is
/// SIGKILLed under load: the second replica's relay takes over, and `shoplens reconcile` finds
/// the read model equal to the services' figures (nothing lost, nothing counted twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_order_replica_that_publishes_under_load_loses_nothing() {
    use shoplens_test_support::services::{ServicesDb, postgres_database, services_database};
    let ServicesDb::Postgres(server) = services_database() else {
        eprintln!(
            "replicas share a database on PostgreSQL only: run with SHOPLENS_TEST_SERVICES_DB=postgres"
        );
        return;
    };
    let seed = seed("order replicas");
    let dir = tempfile::tempdir().unwrap();
    let kafka = PrivateKafka::start(&dir.path().join("tansu"));
    let clickhouse_url = std::env::var("SHOPLENS_TEST_CLICKHOUSE_URL")
        .expect("SHOPLENS_TEST_CLICKHOUSE_URL is not set: run the tests through ./scripts/test.sh");
    let database = format!("replicas_{}", uuid::Uuid::now_v7().simple());
    let order_db = postgres_database(&server, dir.path(), "order");
    let replica_ports = [free_port(), free_port()];
    let replica_urls = replica_ports.map(|p| format!("http://127.0.0.1:{p}"));
    let bus = [
        ("SHOPLENS_BUS__KIND", "kafka".to_owned()),
        ("SHOPLENS_BUS__KAFKA__BROKERS", kafka.brokers()),
        ("SHOPLENS_BUS__KAFKA__PARTITIONS", "6".to_owned()),
    ];

    // The other services, the composer (calling both replicas) and the analytics server.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut env = bus.to_vec();
    env.extend([
        ("SHOPLENS_INGEST__ENABLED", "false".to_owned()),
        ("SHOPLENS_READ_MODEL__KIND", "clickhouse".to_owned()),
        (
            "SHOPLENS_READ_MODEL__CLICKHOUSE__URL",
            clickhouse_url.clone(),
        ),
        (
            "SHOPLENS_READ_MODEL__CLICKHOUSE__DATABASE",
            database.clone(),
        ),
        ("SHOPLENS_ANALYTICS__SQL__ENABLED", "false".to_owned()),
        ("SHOPLENS_COMPOSER__SERVICES__ORDER", replica_urls.join(",")),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut shop = Shoplens::spawn(
        &data,
        &[
            "run",
            "--no-demo",
            "--only",
            "customer,product,payment,shipping,composer",
        ],
        &env,
    );
    let info = shop.wait_ready();

    // The replicas, the first one first (it takes the outbox's lock).
    let mut replicas = Vec::new();
    for (i, port) in replica_ports.iter().enumerate() {
        let data = dir.path().join(format!("order-{i}"));
        std::fs::create_dir_all(&data).unwrap();
        let mut env = bus.to_vec();
        env.extend([
            ("SHOPLENS_INGEST__ENABLED", "false".to_owned()),
            ("SHOPLENS_ANALYTICS__ENABLED", "false".to_owned()),
            ("SHOPLENS_ORDER__LISTEN", format!("127.0.0.1:{port}")),
            ("SHOPLENS_ORDER__DATABASE_URL", order_db.clone()),
            ("SHOPLENS_ORDER__RELAY__TAKEOVER_POLL_MS", "200".to_owned()),
            (
                "SHOPLENS_ORDER_UPSTREAMS__CUSTOMER_URL",
                info.customer.clone(),
            ),
            (
                "SHOPLENS_ORDER_UPSTREAMS__PRODUCT_URL",
                info.product.clone(),
            ),
        ]);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut replica = Shoplens::spawn(&data, &["run", "--no-demo", "--only", "order"], &env);
        replica.wait_ready();
        replicas.push(replica);
        if i == 0 {
            wait_until_publisher(&replica_urls[0], true).await;
        }
    }
    let mut worker =
        IngestWorker::member(dir.path(), 0, &kafka.brokers(), &clickhouse_url, &database);
    worker.start();

    let mut urls = info.shop_urls(crate::process::service_token());
    urls.order = replica_urls[1].clone();
    let catalogue = catalogue(&urls, seed).await;
    let orders = 150;
    // 15 orders/s: ~10 s of load; the publisher dies a few seconds in.
    let load = load(&urls, &catalogue, sim(seed, orders, 15.0));
    let mut rng = Rng(seed);
    tokio::time::sleep(Duration::from_millis(2_000 + rng.below(3_000))).await;
    assert!(
        is_publisher(&replica_urls[1]).await == Some(false),
        "the second replica stood by"
    );
    replicas[0].child.kill().unwrap();
    let killed = Instant::now();
    eprintln!("order replicas: the publishing replica killed");
    wait_until_publisher(&replica_urls[1], true).await;
    eprintln!(
        "order replicas: the second replica publishes {:?} after the kill",
        killed.elapsed()
    );

    let report = load.await.unwrap();
    assert_load_ok(&report, orders);
    let (code, report) = reconcile_json(&data, 120);
    let context = format!("seed {seed}");
    assert_eq!(code, 0, "{context}: {report:#}");
    assert_eq!(report["matches"], true, "{context}: {report:#}");
    assert_eq!(
        report["source_of_truth"]["orders_scanned"], orders,
        "{context}: {report:#}"
    );
    drop(shop);
}

/// The replica's `shoplens_outbox_relay_leader` gauge: `Some(true)` while it publishes its outbox.
async fn is_publisher(url: &str) -> Option<bool> {
    let token = crate::process::token(shoplens_kit::identity::Role::Monitor);
    let text = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with("shoplens_outbox_relay_leader "))
        .map(|l| l.ends_with(" 1"))
}

async fn wait_until_publisher(url: &str, publishes: bool) {
    let start = Instant::now();
    while is_publisher(url).await != Some(publishes) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{url}: outbox_relay_leader is not {publishes} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
