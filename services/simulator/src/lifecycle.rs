//! One order's life through the services: place, pay (declines, retries, refunds), ship
//! with location updates, deliver, or cancel, as its [`OrderPlan`] says.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::client::{CallError, Http, Retry};
use crate::history::ShopClock;
use crate::plan::OrderPlan;
use crate::{Catalogue, ShopUrls, SimConfig, SimReport};

/// The card token the fake payment provider declines, and one it accepts.
const DECLINED_CARD: &str = "tok_declined";
const GOOD_CARD: &str = "tok_visa";

#[derive(Deserialize)]
struct Order {
    id: String,
    status: String,
    /// Passed back to the payment service untouched (a JSON string like `"12.50"`).
    total: Value,
    currency: String,
}

#[derive(Deserialize)]
struct Payment {
    id: String,
    status: String,
}

#[derive(Deserialize)]
struct Shipment {
    id: String,
}

/// Why a lifecycle stopped before its end.
enum Stop {
    /// A call failed: the order is abandoned and counted as an error.
    Failed(CallError),
    /// The run is shutting down.
    Shutdown,
}

impl From<CallError> for Stop {
    fn from(e: CallError) -> Self {
        Stop::Failed(e)
    }
}

/// Shared by all lifecycles of one run.
pub(crate) struct Driver {
    http: Http,
    orders_url: String,
    payments_url: String,
    shipments_url: String,
    catalogue: Catalogue,
    step_delay: Duration,
    shutdown: CancellationToken,
    /// The services' clock: a shipment's ETA is days after its creation.
    clock: Arc<dyn ShopClock>,
    /// Part of every idempotency key: retries within this run are safe, and a later run with
    /// the same seed creates new orders instead of replaying this run's answers.
    run_id: String,
}

impl Driver {
    pub(crate) fn new(
        urls: &ShopUrls,
        config: &SimConfig,
        catalogue: Catalogue,
        shutdown: CancellationToken,
        clock: Arc<dyn ShopClock>,
    ) -> Result<Driver, crate::SimError> {
        let base = |url: &str| url.trim_end_matches('/').to_owned();
        Ok(Driver {
            http: Http::new(&urls.token)?,
            orders_url: format!("{}/api/v1/orders", base(&urls.order)),
            payments_url: format!("{}/api/v1/payments", base(&urls.payment)),
            shipments_url: format!("{}/api/v1/shipments", base(&urls.shipping)),
            catalogue,
            step_delay: Duration::from_millis(config.step_delay_ms),
            shutdown,
            clock,
            run_id: format!("sim-{}-{}", config.seed, uuid::Uuid::now_v7().simple()),
        })
    }

    pub(crate) fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Lives one order; the report holds its counts (and its id once placed). Never fails:
    /// a failed call is logged and counted in `errors`. `placed` hears when the order
    /// exists (it is dropped unheard when placing failed).
    pub(crate) async fn drive(
        &self,
        plan: OrderPlan,
        placed: Option<oneshot::Sender<()>>,
    ) -> SimReport {
        let mut report = SimReport::default();
        match self.lifecycle(&plan, placed, &mut report).await {
            Ok(()) | Err(Stop::Shutdown) => {}
            Err(Stop::Failed(e)) => {
                tracing::warn!(order = plan.index, error = %e, "order abandoned");
                report.errors += 1;
            }
        }
        report
    }

    async fn lifecycle(
        &self,
        plan: &OrderPlan,
        placed: Option<oneshot::Sender<()>>,
        report: &mut SimReport,
    ) -> Result<(), Stop> {
        let k = plan.index;
        let lines: Vec<Value> = plan
            .lines
            .iter()
            .map(|l| json!({"product_id": self.catalogue.products[l.product], "quantity": l.quantity}))
            .collect();
        let body = json!({"customer_id": self.catalogue.customers[plan.customer], "lines": lines});
        let key = format!("{}-order-{k}", self.run_id);
        let order: Order = self
            .http
            .post(&self.orders_url, Some(&key), &body, Retry::Safe)
            .await?;
        report.orders_placed += 1;
        report.order_ids.push(order.id.clone());
        if let Some(placed) = placed {
            let _ = placed.send(());
        }
        tracing::debug!(order = k, id = %order.id, "order placed");

        if plan.cancel_at_once {
            self.pause().await?;
            return self.cancel(&order, report).await;
        }

        // Pay: a declined card first if planned, then the real method unless the customer
        // gives up.
        let mut attempts: Vec<(&str, Option<&str>)> = Vec::new();
        if plan.first_payment_declined {
            attempts.push(("card", Some(DECLINED_CARD)));
        }
        if !(plan.first_payment_declined && plan.give_up_after_decline) {
            let token = (plan.method == "card").then_some(GOOD_CARD);
            attempts.push((plan.method.as_str(), token));
        }
        let mut paid: Option<Payment> = None;
        for (attempt, (method, token)) in attempts.into_iter().enumerate() {
            self.pause().await?;
            let mut body = json!({
                "order_id": order.id,
                "amount": order.total,
                "currency": order.currency,
                "method": method,
            });
            if let Some(token) = token {
                body["card_token"] = json!(token);
            }
            let key = format!("{}-payment-{k}-{attempt}", self.run_id);
            let mut payment: Payment = self
                .http
                .post(&self.payments_url, Some(&key), &body, Retry::Safe)
                .await?;
            if payment.status == "Pending" {
                let url = format!("{}/{}/capture", self.payments_url, payment.id);
                payment = self.http.post(&url, None, &json!({}), Retry::Once).await?;
            }
            match payment.status.as_str() {
                "Success" => {
                    paid = Some(payment);
                    break;
                }
                "Failed" => report.payments_failed += 1,
                other => {
                    tracing::warn!(order = k, status = other, "unexpected payment status");
                    report.payments_failed += 1;
                }
            }
        }
        let Some(payment) = paid else {
            self.pause().await?;
            return self.cancel(&order, report).await;
        };
        self.pause().await?;
        self.set_status(&order, "Paid").await?;
        report.orders_paid += 1;

        if plan.refund {
            self.pause().await?;
            let url = format!("{}/{}/refund", self.payments_url, payment.id);
            let _: Payment = self
                .http
                .post(
                    &url,
                    None,
                    &json!({"reason": "customer changed their mind"}),
                    Retry::Once,
                )
                .await?;
            report.refunds += 1;
            return self.cancel(&order, report).await;
        }

        self.pause().await?;
        let eta = self.clock.now() + chrono::Duration::days(i64::from(plan.eta_days));
        let key = format!("{}-shipment-{k}", self.run_id);
        let shipment: Shipment = self
            .http
            .post(
                &self.shipments_url,
                Some(&key),
                &json!({
                    "order_id": order.id,
                    "carrier": plan.carrier,
                    "location": plan.warehouse,
                    "eta": eta,
                }),
                Retry::Safe,
            )
            .await?;
        report.shipments += 1;
        self.set_status(&order, "Shipped").await?;

        let shipment_url = format!("{}/{}", self.shipments_url, shipment.id);
        for place in &plan.route {
            self.pause().await?;
            let _: Value = self
                .http
                .post(
                    &format!("{shipment_url}/locations"),
                    None,
                    &json!({"location": place}),
                    Retry::Once,
                )
                .await?;
            report.location_updates += 1;
        }
        self.pause().await?;
        let _: Value = self
            .http
            .post(
                &format!("{shipment_url}/deliver"),
                None,
                &json!({"location": plan.destination}),
                Retry::Once,
            )
            .await?;
        self.set_status(&order, "Delivered").await?;
        report.orders_delivered += 1;
        Ok(())
    }

    async fn cancel(&self, order: &Order, report: &mut SimReport) -> Result<(), Stop> {
        self.set_status(order, "Cancelled").await?;
        report.orders_cancelled += 1;
        Ok(())
    }

    /// Moves the order (a repeat of the same move is a no-op, so retrying is safe).
    async fn set_status(&self, order: &Order, status: &str) -> Result<(), Stop> {
        let url = format!("{}/{}/status", self.orders_url, order.id);
        let moved: Order = self
            .http
            .post(&url, None, &json!({"status": status}), Retry::Safe)
            .await?;
        if moved.status != status {
            return Err(Stop::Failed(CallError::Unexpected {
                what: format!(
                    "order {} is {} after asking for {status}",
                    moved.id, moved.status
                ),
            }));
        }
        Ok(())
    }

    /// The pause between two steps; stops the lifecycle when the run shuts down.
    async fn pause(&self) -> Result<(), Stop> {
        if self.shutdown.is_cancelled() {
            return Err(Stop::Shutdown);
        }
        if !self.step_delay.is_zero() {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
                _ = tokio::time::sleep(self.step_delay) => {}
            }
        }
        Ok(())
    }
}
