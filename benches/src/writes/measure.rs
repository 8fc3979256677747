//! One configuration's closed loop: C clients, each creating an order and then paying it,
//! back to back, through the configuration's replicas.

use std::time::{Duration, Instant};

use serde_json::json;

use super::figures::{Configuration, Operation};
use super::fixture::{Fixture, send};
use crate::histogram::Histogram;

/// What one client measured.
#[derive(Default)]
struct ClientFigures {
    create: Histogram,
    create_errors: u64,
    pay: Histogram,
    pay_errors: u64,
}

/// `clients` clients for `warmup` + `duration` against `replicas` (base URLs); iterations
/// started after the warm-up are recorded. Iteration `i` of client `c` creates through
/// replica `(c + i) % n` and pays through the next one, so with two replicas each takes half
/// of each operation and every payment goes through the replica that did not create the
/// order.
pub(super) async fn closed_loop(
    fx: &Fixture,
    name: &str,
    database: &'static str,
    replicas: &[String],
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> Configuration {
    let begin = Instant::now();
    let (measure_from, end) = (begin + warmup, begin + warmup + duration);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients.max(1) {
        let http = fx.http.clone();
        let replicas = replicas.to_vec();
        let bodies: Vec<_> = (0..fx.product_ids.len() * 3)
            .map(|k| fx.order_body(k + c))
            .collect();
        tasks.spawn(async move {
            let mut f = ClientFigures::default();
            let n = replicas.len();
            for i in 0usize.. {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let measured = started >= measure_from;
                let body = &bodies[i % bodies.len()];
                let create = &replicas[(c + i) % n];
                let created = send(http.post(format!("{create}/api/v1/orders")).json(body)).await;
                let id = match created {
                    Ok(order) => {
                        if measured {
                            f.create.record(started.elapsed());
                        }
                        order["id"].as_str().map(str::to_owned)
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "create failed");
                        None
                    }
                };
                let Some(id) = id else {
                    f.create_errors += u64::from(measured);
                    continue;
                };
                let pay = &replicas[(c + i + 1) % n];
                let paying = Instant::now();
                let paid = send(
                    http.post(format!("{pay}/api/v1/orders/{id}/status"))
                        .json(&json!({"status": "Paid"})),
                )
                .await;
                match paid {
                    Ok(_) if measured => f.pay.record(paying.elapsed()),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "status change failed");
                        f.pay_errors += u64::from(measured);
                    }
                }
            }
            f
        });
    }
    let mut all = ClientFigures::default();
    while let Some(done) = tasks.join_next().await {
        if let Ok(f) = done {
            all.create.merge(&f.create);
            all.pay.merge(&f.pay);
            all.create_errors += f.create_errors;
            all.pay_errors += f.pay_errors;
        }
    }
    let secs = duration.as_secs_f64();
    Configuration {
        name: name.to_owned(),
        database,
        replicas: replicas.len(),
        clients: clients.max(1),
        window_secs: secs,
        operations: vec![
            Operation::of("create", &all.create, all.create_errors, secs),
            Operation::of("pay", &all.pay, all.pay_errors, secs),
        ],
    }
}
