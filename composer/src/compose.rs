//! Composing answers: the order first, then everything that depends on it at once, each
//! section through its cache, each batchable look-up as one call for all keys.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use shoplens_contract::Service;
use shoplens_kit::ApiError;
use tokio::time::Instant;

use crate::cache::{Fetched, Lookup, SectionCache, SectionSettings};
use crate::config::ComposerConfig;
use crate::downstream::{Downstream, FetchError};
use crate::metrics::ComposerMetrics;
use crate::model::*;
use shoplens_kit::identity::Identity;

/// Most ids the services accept in one batch look-up.
const MAX_BATCH: usize = 100;

/// Most orders per page of the list endpoint.
pub const MAX_PAGE: u32 = 50;

/// Everything a request handler needs: the clients and the caches.
pub struct Composer {
    pub config: ComposerConfig,
    pub downstream: Arc<Downstream>,
    pub orders: SectionCache<Order>,
    pub lists: SectionCache<OrderPage>,
    pub customers: SectionCache<Customer>,
    pub products: SectionCache<Product>,
    pub payments: SectionCache<Option<Payment>>,
    pub shipments: SectionCache<Option<Shipment>>,
    pub metrics: Arc<ComposerMetrics>,
}

impl Composer {
    pub fn new(
        config: &ComposerConfig,
        metrics: Arc<ComposerMetrics>,
    ) -> Result<Self, crate::Error> {
        let c = &config.cache;
        let settings = |ttl_ms: u64| SectionSettings {
            enabled: c.enabled,
            ttl: std::time::Duration::from_millis(ttl_ms),
            stale_for: std::time::Duration::from_millis(c.stale_for_ms),
            max_entries: c.max_entries,
        };
        let m = || metrics.clone();
        Ok(Composer {
            config: config.clone(),
            downstream: Arc::new(Downstream::new(config, metrics.clone())?),
            orders: SectionCache::new("order", &settings(c.order_ttl_ms), m()),
            lists: SectionCache::new("order_list", &settings(c.list_ttl_ms), m()),
            customers: SectionCache::new("customer", &settings(c.customer_ttl_ms), m()),
            products: SectionCache::new("product", &settings(c.product_ttl_ms), m()),
            payments: SectionCache::new("payment", &settings(c.payment_ttl_ms), m()),
            shipments: SectionCache::new("shipping", &settings(c.shipping_ttl_ms), m()),
            metrics,
        })
    }

    /// The summary of one order, for `caller`. Errors: 404 for an unknown order, 403 for
    /// another customer's order, 503 when the order itself cannot be read.
    pub async fn summary(
        &self,
        caller: &Identity,
        order_id: &str,
    ) -> Result<OrderSummary, ApiError> {
        let deadline = Instant::now() + self.config.deadline();
        let path = format!("/api/v1/orders/{order_id}");
        let lookup = self
            .orders
            .get(
                order_id,
                deadline,
                self.downstream
                    .get::<Order>(Service::Order, &path, deadline),
            )
            .await;
        let (order, order_section) = match lookup {
            Lookup::Failed(FetchError::NotFound) => {
                return Err(ApiError::not_found("order", order_id));
            }
            Lookup::Failed(e) => return Err(order_unavailable(e)),
            Lookup::Fresh(f) => (f.clone(), section(&Lookup::Fresh(f), |o| Some(o.clone()))),
            Lookup::Stale(f, reason) => (
                f.clone(),
                section(&Lookup::Stale(f, reason), |o| Some(o.clone())),
            ),
        };
        if !caller.may_read_customer(&order.value.customer_id) {
            return Err(ApiError::Forbidden(
                "this order belongs to another customer".into(),
            ));
        }
        let orders = [(order.value.clone(), order_section)];
        let mut summaries = self.compose(&orders, deadline).await;
        Ok(summaries.remove(0))
    }

    /// A page of a customer's orders (newest first), each as a summary. The services are
    /// called once per section for the whole page, not once per order.
    pub async fn list(
        &self,
        caller: &Identity,
        customer_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<OrderList, ApiError> {
        if !caller.may_read_customer(customer_id) {
            return Err(ApiError::Forbidden(
                "you may only list your own orders".into(),
            ));
        }
        let deadline = Instant::now() + self.config.deadline();
        let key = format!("{customer_id}|{limit}|{}", cursor.unwrap_or(""));
        let mut path = format!("/api/v1/orders?customer_id={customer_id}&limit={limit}");
        if let Some(c) = cursor {
            path.push_str(&format!("&before={c}"));
        }
        let lookup = self
            .lists
            .get(
                &key,
                deadline,
                self.downstream
                    .get::<OrderPage>(Service::Order, &path, deadline),
            )
            .await;
        let page = match &lookup {
            Lookup::Failed(FetchError::NotFound) => {
                return Err(ApiError::not_found("cursor", cursor.unwrap_or_default()));
            }
            Lookup::Failed(e) => return Err(order_unavailable(e.clone())),
            Lookup::Fresh(f) | Lookup::Stale(f, _) => f.value.clone(),
        };
        let orders: Vec<(Arc<Order>, Section<OrderData>)> = page
            .orders
            .iter()
            .map(|o| (Arc::new(o.clone()), section(&lookup, |_| Some(o.clone()))))
            .collect();
        let summaries = self.compose(&orders, deadline).await;
        Ok(OrderList {
            customer_id: customer_id.to_owned(),
            degraded: summaries.iter().any(|s| s.degraded),
            orders: summaries,
            next_cursor: page.next_cursor.clone(),
        })
    }

    /// The sections that depend on the orders, fetched concurrently, one batch per section.
    async fn compose(
        &self,
        orders: &[(Arc<Order>, Section<OrderData>)],
        deadline: Instant,
    ) -> Vec<OrderSummary> {
        let customer_ids: Vec<String> = orders.iter().map(|(o, _)| o.customer_id.clone()).collect();
        let product_ids: Vec<String> = orders
            .iter()
            .flat_map(|(o, _)| o.lines.iter().map(|l| l.product_id.clone()))
            .collect();
        let order_ids: Vec<String> = orders.iter().map(|(o, _)| o.id.clone()).collect();
        let (customers, products, payments, shipments) = tokio::join!(
            self.customers.get_many(&customer_ids, deadline, |ids| {
                self.batch_customers(ids, deadline)
            }),
            self.products.get_many(&product_ids, deadline, |ids| self
                .batch_products(ids, deadline)),
            self.payments.get_many(&order_ids, deadline, |ids| self
                .batch_payments(ids, deadline)),
            self.shipments.get_many(&order_ids, deadline, |ids| self
                .batch_shipments(ids, deadline)),
        );
        orders
            .iter()
            .map(|(order, order_section)| {
                let customer = section_in(&customers, &order.customer_id, |c| {
                    Some(CustomerData::from(c))
                });
                let products = product_section(order, &products);
                let payment =
                    section_in(&payments, &order.id, |p| p.as_ref().map(PaymentData::from));
                let shipping = section_in(&shipments, &order.id, |s| {
                    s.as_ref().map(ShippingData::from)
                });
                let degraded = [
                    order_section.status,
                    customer.status,
                    products.status,
                    payment.status,
                    shipping.status,
                ]
                .iter()
                .any(|s| *s != SectionStatus::Ok);
                OrderSummary {
                    order_id: order.id.clone(),
                    degraded,
                    order: order_section.clone(),
                    customer,
                    products,
                    payment,
                    shipping,
                }
            })
            .collect()
    }

    /// One call for up to 100 ids (the single-item endpoint for one id), several calls
    /// at once for more.
    fn batch_customers(
        &self,
        ids: Vec<String>,
        deadline: Instant,
    ) -> impl Future<Output = Result<HashMap<String, Customer>, FetchError>> + Send + 'static + use<>
    {
        let call = self.caller();
        async move {
            if let [id] = ids.as_slice() {
                let c: Customer = call
                    .get(
                        Service::Customer,
                        &format!("/api/v1/customers/{id}"),
                        deadline,
                    )
                    .await?;
                return Ok(HashMap::from([(c.id.clone(), c)]));
            }
            #[derive(serde::Deserialize)]
            struct Batch {
                customers: Vec<Customer>,
            }
            let mut out = HashMap::new();
            for batch in chunked(
                &call,
                Service::Customer,
                "/api/v1/customers?ids=",
                &ids,
                deadline,
            )
            .await?
            {
                let batch: Batch = batch;
                out.extend(batch.customers.into_iter().map(|c| (c.id.clone(), c)));
            }
            Ok(out)
        }
    }

    fn batch_products(
        &self,
        ids: Vec<String>,
        deadline: Instant,
    ) -> impl Future<Output = Result<HashMap<String, Product>, FetchError>> + Send + 'static + use<>
    {
        let call = self.caller();
        async move {
            let mut out = HashMap::new();
            for batch in chunked(
                &call,
                Service::Product,
                "/api/v1/products?ids=",
                &ids,
                deadline,
            )
            .await?
            {
                let batch: ProductBatch = batch;
                out.extend(batch.products.into_iter().map(|p| (p.id.clone(), p)));
            }
            Ok(out)
        }
    }

    fn batch_payments(
        &self,
        ids: Vec<String>,
        deadline: Instant,
    ) -> impl Future<Output = Result<HashMap<String, Option<Payment>>, FetchError>>
    + Send
    + 'static
    + use<> {
        let call = self.caller();
        async move {
            let lists: Vec<PaymentList> = match ids.as_slice() {
                [id] => vec![
                    call.get(
                        Service::Payment,
                        &format!("/api/v1/payments?order_id={id}"),
                        deadline,
                    )
                    .await?,
                ],
                _ => {
                    chunked(
                        &call,
                        Service::Payment,
                        "/api/v1/payments?order_ids=",
                        &ids,
                        deadline,
                    )
                    .await?
                }
            };
            let mut latest = latest_payments(lists.into_iter().flat_map(|l| l.payments).collect());
            Ok(ids
                .into_iter()
                .map(|id| (id.clone(), latest.remove(&id)))
                .collect())
        }
    }

    fn batch_shipments(
        &self,
        ids: Vec<String>,
        deadline: Instant,
    ) -> impl Future<Output = Result<HashMap<String, Option<Shipment>>, FetchError>>
    + Send
    + 'static
    + use<> {
        let call = self.caller();
        async move {
            let lists: Vec<ShipmentList> = match ids.as_slice() {
                [id] => vec![
                    call.get(
                        Service::Shipping,
                        &format!("/api/v1/shipments?order_id={id}"),
                        deadline,
                    )
                    .await?,
                ],
                _ => {
                    chunked(
                        &call,
                        Service::Shipping,
                        "/api/v1/shipments?order_ids=",
                        &ids,
                        deadline,
                    )
                    .await?
                }
            };
            let mut latest =
                latest_shipments(lists.into_iter().flat_map(|l| l.shipments).collect());
            Ok(ids
                .into_iter()
                .map(|id| (id.clone(), latest.remove(&id)))
                .collect())
        }
    }

    fn caller(&self) -> Caller {
        Caller(self.downstream.clone())
    }
}

/// A handle on the downstream client that a `'static` batch future can own.
#[derive(Clone)]
struct Caller(Arc<Downstream>);

impl Caller {
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        svc: Service,
        path: &str,
        deadline: Instant,
    ) -> Result<T, FetchError> {
        self.0.get(svc, path, deadline).await
    }
}

/// `prefix` + up to 100 comma-separated ids per call, all calls at once.
async fn chunked<T: serde::de::DeserializeOwned>(
    call: &Caller,
    svc: Service,
    prefix: &str,
    ids: &[String],
    deadline: Instant,
) -> Result<Vec<T>, FetchError> {
    let calls = ids.chunks(MAX_BATCH).map(|chunk| {
        let path = format!("{prefix}{}", chunk.join(","));
        async move { call.get::<T>(svc, &path, deadline).await }
    });
    futures::future::try_join_all(calls).await
}

fn order_unavailable(e: FetchError) -> ApiError {
    ApiError::Unavailable {
        code: "order_unavailable",
        message: format!("the order cannot be read right now: {e}"),
    }
}

/// The section for `key` of a batch look-up (every key is looked up, so a missing one
/// cannot happen; it would show as unavailable rather than panic).
fn section_in<V, T>(
    map: &HashMap<String, Lookup<V>>,
    key: &str,
    data: impl FnOnce(&V) -> Option<T>,
) -> Section<T> {
    match map.get(key) {
        Some(lookup) => section(lookup, data),
        None => section(&Lookup::<V>::Failed(not_loaded()), data),
    }
}

fn not_loaded() -> FetchError {
    FetchError::Unavailable("not loaded".into())
}

fn age_ms<V>(f: &Fetched<V>) -> u64 {
    u64::try_from(f.age().as_millis()).unwrap_or(u64::MAX)
}

/// A section from a look-up, with `data` made from the value.
pub fn section<V, T>(lookup: &Lookup<V>, data: impl FnOnce(&V) -> Option<T>) -> Section<T> {
    match lookup {
        Lookup::Fresh(f) => Section {
            status: SectionStatus::Ok,
            as_of: Some(f.as_of),
            age_ms: Some(age_ms(f)),
            reason: None,
            data: data(&f.value),
        },
        Lookup::Stale(f, reason) => Section {
            status: SectionStatus::Stale,
            as_of: Some(f.as_of),
            age_ms: Some(age_ms(f)),
            reason: Some(reason.clone()),
            data: data(&f.value),
        },
        Lookup::Failed(e) => Section {
            status: SectionStatus::Unavailable,
            as_of: None,
            age_ms: None,
            reason: Some(e.to_string()),
            data: None,
        },
    }
}

/// The products section of one order: one entry per line; its status is the worst of its
/// lines', its age the oldest.
fn product_section(
    order: &Order,
    products: &HashMap<String, Lookup<Product>>,
) -> Section<Vec<ProductLine>> {
    let mut status = SectionStatus::Ok;
    let mut reason = None;
    let mut oldest: Option<&Fetched<Product>> = None;
    let mut lines = Vec::with_capacity(order.lines.len());
    for line in &order.lines {
        let (line_status, product) = match products.get(&line.product_id) {
            None => {
                reason.get_or_insert_with(|| not_loaded().to_string());
                (SectionStatus::Unavailable, None)
            }
            Some(Lookup::Fresh(f)) => (SectionStatus::Ok, Some(f)),
            Some(Lookup::Stale(f, r)) => {
                reason.get_or_insert_with(|| r.clone());
                (SectionStatus::Stale, Some(f))
            }
            Some(Lookup::Failed(FetchError::NotFound)) => {
                reason.get_or_insert_with(|| format!("product {} not found", line.product_id));
                (SectionStatus::Unavailable, None)
            }
            Some(Lookup::Failed(e)) => {
                reason.get_or_insert_with(|| e.to_string());
                (SectionStatus::Unavailable, None)
            }
        };
        status = status.max(line_status);
        if let Some(f) = product
            && oldest.is_none_or(|o| f.at < o.at)
        {
            oldest = Some(f);
        }
        let p = product.map(|f| &f.value);
        lines.push(ProductLine {
            line_no: line.line_no,
            product_id: line.product_id.clone(),
            quantity: line.quantity,
            paid_price: line.unit_price.clone(),
            line_total: line.line_total.clone(),
            name: p.map(|p| p.name.clone()),
            description: p.map(|p| p.description.clone()),
            image_url: p.and_then(|p| p.image_url.clone()),
            current_price: p.map(|p| p.price.clone()),
            currency: p.map(|p| p.currency.clone()),
        });
    }
    Section {
        status,
        as_of: oldest.map(|f| f.as_of),
        age_ms: oldest.map(age_ms),
        reason,
        data: Some(lines),
    }
}
