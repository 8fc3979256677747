//! Every server's `/openapi.json` states the rules its handlers enforce: requests generated
//! from the documents alone are accepted.
//!
//! For each service, every POST/PUT/PATCH operation with a JSON body gets requests generated
//! by a small deterministic generator from its schema only (lengths, ranges, patterns,
//! formats, enums, nullability, required fields), at the boundaries (shortest, longest,
//! smallest, largest) and in between. Ids that must name existing entities (the path's
//! `{id}`, `customer_id`, `product_id`, `order_id`) are taken from entities the test created
//! first with hand-written requests; a fresh entity for every path id, so no request meets
//! an entity a previous one moved on. None may be refused as invalid (400, 422) or fail
//! (5xx, 404); a conflict (409: a taken e-mail or SKU, an illegal status transition) is a
//! state rule, not a schema one, but every operation must accept at least one request.

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use shoplens_test_support::services::TestService;

/// Requests generated per operation.
const REQUESTS: u64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_accept_requests_generated_from_their_openapi_documents() {
    let customer = TestService::start("customer", |c, bus| async move {
        customer_service::start(&c, bus).await
    })
    .await;
    let product = TestService::start("product", |c, bus| async move {
        product_service::start(&c, bus).await
    })
    .await;
    let upstreams = order_service::Upstreams {
        customer_url: customer.url.as_str().into(),
        product_url: product.url.as_str().into(),
        ..Default::default()
    };
    let order = TestService::start("order", |c, bus| async move {
        order_service::start(&c, &upstreams, bus).await
    })
    .await;
    let payment = TestService::start("payment", |c, bus| async move {
        payment_service::start(&c, bus).await
    })
    .await;
    let shipping = TestService::start("shipping", |c, bus| async move {
        shipping_service::start(&c, bus).await
    })
    .await;
    let shop = Shop {
        customer: &customer,
        product: &product,
        order: &order,
        payment: &payment,
        shipping: &shipping,
    };
    // The pools ids in generated bodies come from: hand-written, ordinary entities (the
    // products share a currency and a small price, so any order of them is possible).
    let mut pools = Pools::default();
    for i in 0..3 {
        pools.customers.push(shop.create("customers", i).await);
        pools.products.push(shop.create("products", i).await);
    }
    for i in 0..3 {
        let id = shop.create_order(&pools, i).await;
        pools.orders.push(id);
    }

    let mut failures = Vec::new();
    let mut operations = 0;
    for (name, service) in [
        ("customer", &customer),
        ("product", &product),
        ("order", &order),
        ("payment", &payment),
        ("shipping", &shipping),
    ] {
        let (status, doc) = service.get("/openapi.json").await;
        assert_eq!(status, StatusCode::OK, "{name}: /openapi.json: {doc}");
        for op in operations_with_bodies(&doc) {
            operations += 1;
            let mut accepted = 0;
            for seed in 0..REQUESTS {
                let mut path = op.path.clone();
                if let Some(collection) = id_collection(&op.path) {
                    let id = shop.fresh(collection, &pools, seed).await;
                    path = path.replace("{id}", &id);
                }
                let salt = format!("{name} {} {}", op.method, op.path);
                let body = Generator::new(&doc, &pools, seed, &salt).value(&op.schema, "");
                let (status, answer) = service
                    .send_json(op.method.clone(), &path, &body.to_string(), None)
                    .await;
                let what = format!("{name}: {} {} with {body}", op.method, op.path);
                if status.is_success() {
                    accepted += 1;
                } else if status != StatusCode::CONFLICT {
                    failures.push(format!("{what}: {status} {answer}"));
                }
            }
            if accepted == 0 {
                failures.push(format!(
                    "{name}: {} {}: no generated request was accepted",
                    op.method, op.path
                ));
            }
        }
    }
    assert!(
        operations >= 11,
        "only {operations} operations with bodies found"
    );
    assert!(
        failures.is_empty(),
        "{} generated requests refused:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The composer's, the ingest API's and the analytics server's documents in the whole
/// running system: every operation's query parameters generated from the document
/// alone, with an admin's token, are never refused as invalid (400, 422) and never fail
/// (5xx); path ids are random UUIDs (an unknown one is a 404, not a refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composer_and_read_side_accept_parameters_generated_from_their_documents() {
    let dir = tempfile::tempdir().unwrap();
    let mut shop = crate::process::Shoplens::spawn(dir.path(), &["run", "--no-demo"], &[]);
    let info = shop.wait_ready();
    let admin = crate::process::token(shoplens_kit::identity::Role::Admin);
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let mut servers = vec![
        ("composer", info.composer.clone()),
        (
            "ingest",
            info.ingest.clone().expect("the worker runs in process"),
        ),
    ];
    if let Some(analytics) = info.analytics.clone() {
        servers.push(("analytics", analytics));
    }
    let pools = Pools::default();
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut parameters = 0;
    for (name, base) in servers {
        let resp = http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{name}: /openapi.json");
        let doc: Value = resp.json().await.unwrap();
        let paths = doc["paths"].as_object().expect("a document has paths");
        assert!(!paths.is_empty(), "{name}: the document lists no routes");
        for (path, item) in paths {
            let Some(op) = item["get"].as_object() else {
                continue;
            };
            let params = op.get("parameters").and_then(Value::as_array);
            parameters += params.map_or(0, Vec::len);
            for seed in 0..REQUESTS {
                let salt = format!("{name} GET {path}");
                let mut g = Generator::new(&doc, &pools, seed, &salt);
                let mut url = format!("{base}{path}");
                let mut query = Vec::new();
                for p in params.into_iter().flatten() {
                    let pname = p["name"].as_str().expect("a parameter has a name");
                    let required = p["required"].as_bool().unwrap_or(false);
                    if p["in"] == "query" && !required && (seed / 3 + query.len() as u64) % 4 == 3 {
                        continue;
                    }
                    let v = match g.value(&p["schema"], pname) {
                        Value::String(s) => s,
                        Value::Null => continue,
                        other => other.to_string(),
                    };
                    match p["in"].as_str() {
                        Some("path") => url = url.replace(&format!("{{{pname}}}"), &v),
                        Some("query") => query.push((pname.to_owned(), v)),
                        _ => {}
                    }
                }
                // A date range must run forwards, and has `from` or `days`, not both (both
                // documented): the generator knows no cross-parameter rule.
                sort_range(&mut query);
                if query.iter().any(|(k, _)| k == "from") {
                    query.retain(|(k, _)| k != "days");
                }
                let resp = http
                    .get(&url)
                    .query(&query)
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                checked += 1;
                if status.is_client_error() && status != StatusCode::NOT_FOUND
                    || status.is_server_error()
                {
                    let body = resp.text().await.unwrap_or_default();
                    failures.push(format!("{name}: GET {path} {query:?}: {status} {body}"));
                }
            }
        }
    }
    shop.terminate();
    assert!(checked > 0);
    // The composer's ids, pages and sales ranges, the ingest API's dead-letter limit, the
    // analytics views' ranges, limits, categories and periods.
    eprintln!("{checked} generated requests, {parameters} documented parameters");
    assert!(parameters >= 20, "only {parameters} parameters documented");
    assert!(
        failures.is_empty(),
        "{} generated requests refused:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Puts `from` and `to` in order when both are given (documented: `from` not after `to`).
fn sort_range(query: &mut [(String, String)]) {
    let from = query.iter().position(|(k, _)| k == "from");
    let to = query.iter().position(|(k, _)| k == "to");
    if let (Some(f), Some(t)) = (from, to)
        && query[f].1 > query[t].1
    {
        let (a, b) = (query[f].1.clone(), query[t].1.clone());
        query[f].1 = b;
        query[t].1 = a;
    }
}

/// One operation with a JSON request body.
struct Operation {
    method: Method,
    path: String,
    schema: Value,
}

fn operations_with_bodies(doc: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    let paths = doc["paths"].as_object().expect("a document has paths");
    for (path, item) in paths {
        for method in ["post", "put", "patch"] {
            let schema = &item[method]["requestBody"]["content"]["application/json"]["schema"];
            if schema.is_null() {
                continue;
            }
            ops.push(Operation {
                method: method.to_uppercase().parse().expect("an HTTP method"),
                path: path.clone(),
                schema: schema.clone(),
            });
        }
    }
    ops
}

/// The collection a path's `{id}` names: `/api/v1/orders/{id}/status` -> `orders`.
fn id_collection(path: &str) -> Option<&str> {
    let (before, _) = path.split_once("/{id}")?;
    before.rsplit('/').next()
}

#[derive(Default)]
struct Pools {
    customers: Vec<String>,
    products: Vec<String>,
    orders: Vec<String>,
}

impl Pools {
    /// Existing entities a property of this name must refer to.
    fn for_property(&self, name: &str) -> Option<&[String]> {
        let pool = match name {
            "customer_id" => &self.customers,
            "product_id" => &self.products,
            "order_id" => &self.orders,
            _ => return None,
        };
        Some(pool.as_slice()).filter(|p| !p.is_empty())
    }
}

struct Shop<'a> {
    customer: &'a TestService,
    product: &'a TestService,
    order: &'a TestService,
    payment: &'a TestService,
    shipping: &'a TestService,
}

impl Shop<'_> {
    /// Creates an ordinary entity of `collection` (hand-written request) and returns its id.
    async fn create(&self, collection: &str, n: u64) -> String {
        let (service, body) = match collection {
            "customers" => (
                self.customer,
                json!({"name": "Pool Customer", "email": format!("pool-{n}-{}@example.com",
                       uuid::Uuid::new_v4()), "country": "GB"}),
            ),
            "products" => (
                self.product,
                json!({"sku": format!("POOL-{}", uuid::Uuid::new_v4()), "name": "Pool product",
                       "description": "", "category": "pool", "price": "2.50",
                       "currency": "EUR"}),
            ),
            other => panic!("no hand-written create for {other}"),
        };
        let path = format!("/api/v1/{collection}");
        let (status, answer) = service.post(&path, &body.to_string(), None).await;
        assert_eq!(status, StatusCode::CREATED, "create {collection}: {answer}");
        answer["id"].as_str().expect("an id").to_owned()
    }

    async fn create_order(&self, pools: &Pools, n: u64) -> String {
        let body = json!({
            "customer_id": pools.customers[n as usize % pools.customers.len()],
            "lines": [{"product_id": pools.products[n as usize % pools.products.len()],
                       "quantity": 1}],
        });
        let (status, answer) = self
            .order
            .post("/api/v1/orders", &body.to_string(), None)
            .await;
        assert_eq!(status, StatusCode::CREATED, "create an order: {answer}");
        answer["id"].as_str().expect("an id").to_owned()
    }

    /// A new entity of `collection` in its first state, for one generated request.
    async fn fresh(&self, collection: &str, pools: &Pools, n: u64) -> String {
        let order = || pools.orders[n as usize % pools.orders.len()].clone();
        let (service, body) = match collection {
            "customers" | "products" => return self.create(collection, 100 + n).await,
            "orders" => return self.create_order(pools, n).await,
            "payments" => (
                self.payment,
                json!({"order_id": order(), "amount": "2.50", "currency": "EUR",
                       "method": "card"}),
            ),
            "shipments" => (
                self.shipping,
                json!({"order_id": order(), "carrier": "DHL", "location": "Leeds",
                       "eta": "2030-01-01T00:00:00Z"}),
            ),
            other => panic!("no hand-written create for {other}"),
        };
        let path = format!("/api/v1/{collection}");
        let (status, answer) = service.post(&path, &body.to_string(), None).await;
        assert_eq!(status, StatusCode::CREATED, "create {collection}: {answer}");
        answer["id"].as_str().expect("an id").to_owned()
    }
}

/// Which end of a range a request takes: seed 0, 3, 6… the smallest, 1, 4, 7… the
/// largest, the others a value in between.
#[derive(Clone, Copy, PartialEq)]
enum Bound {
    Min,
    Max,
    Between,
}

/// A deterministic value generator over one OpenAPI document's schemas.
struct Generator<'a> {
    doc: &'a Value,
    pools: &'a Pools,
    seed: u64,
    state: u64,
    bound: Bound,
}

impl<'a> Generator<'a> {
    /// `salt` makes different operations draw different values from the same seed.
    fn new(doc: &'a Value, pools: &'a Pools, seed: u64, salt: &str) -> Self {
        let salt = salt.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
        });
        let bound = match seed % 3 {
            0 => Bound::Min,
            1 => Bound::Max,
            _ => Bound::Between,
        };
        Generator {
            doc,
            pools,
            seed,
            state: (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt) | 1,
            bound,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..=hi` at this request's bound.
    fn pick(&mut self, lo: u64, hi: u64) -> u64 {
        match self.bound {
            Bound::Min => lo,
            Bound::Max => hi,
            Bound::Between => lo + self.next() % (hi - lo + 1),
        }
    }

    fn resolve(&self, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r.rsplit('/').next().expect("a reference names a schema");
                self.resolve(&self.doc["components"]["schemas"][name])
            }
            None => schema,
        }
    }

    /// A value `schema` allows; `name` is the property's name (for ids of entities).
    fn value(&mut self, schema: &Value, name: &str) -> Value {
        let schema = self.resolve(schema);
        let null_chosen = (self.seed / 3) % 3 == 2;
        if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
            let not_null: Vec<&Value> = options
                .iter()
                .filter(|o| o["type"] != json!("null"))
                .collect();
            if null_chosen && not_null.len() < options.len() {
                return Value::Null;
            }
            let pick = not_null[(self.seed as usize) % not_null.len()];
            return self.value(pick, name);
        }
        if let Some(all) = schema["allOf"].as_array() {
            let mut merged = Map::new();
            for part in all {
                if let Value::Object(o) = self.resolve(part) {
                    merged.extend(o.clone());
                }
            }
            return self.value(&Value::Object(merged), name);
        }
        if let Some(values) = schema["enum"].as_array() {
            return values[(self.next() % values.len() as u64) as usize].clone();
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec!["object"],
        };
        if types.contains(&"null") && null_chosen {
            return Value::Null;
        }
        match types.iter().find(|t| **t != "null").copied() {
            Some("object") => self.object(schema),
            Some("array") => self.array(schema, name),
            Some("string") => Value::String(self.string(schema, name)),
            Some("integer") => json!(self.integer(schema)),
            Some("number") => json!(self.integer(schema)),
            Some("boolean") => json!(self.seed.is_multiple_of(2)),
            other => panic!("no generator for type {other:?} in {schema}"),
        }
    }

    fn object(&mut self, schema: &Value) -> Value {
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut out = Map::new();
        let empty = Map::new();
        let properties = schema["properties"].as_object().unwrap_or(&empty);
        for (i, (prop, sub)) in properties.iter().enumerate() {
            // Optional properties: absent in a third of the requests, each its own third.
            let absent = (self.seed / 3 + i as u64).is_multiple_of(3);
            if !required.contains(&prop.as_str()) && absent {
                continue;
            }
            let v = self.value(sub, prop);
            out.insert(prop.clone(), v);
        }
        Value::Object(out)
    }

    fn array(&mut self, schema: &Value, name: &str) -> Value {
        let min = schema["minItems"].as_u64().unwrap_or(0);
        let max = schema["maxItems"].as_u64().unwrap_or(min + 3);
        // At most as many items as there are entities to name, so references stay distinct.
        let max = max.min(min.max(3));
        let n = self.pick(min, max);
        let items = &schema["items"];
        let offset = self.seed as usize;
        (0..n as usize)
            .map(|i| {
                let mut item = self.value(items, name);
                // Items naming entities name different ones.
                if let Value::Object(o) = &mut item {
                    for (prop, v) in o.iter_mut() {
                        if let Some(pool) = self.pools.for_property(prop) {
                            *v = json!(pool[(offset + i) % pool.len()]);
                        }
                    }
                }
                item
            })
            .collect()
    }

    fn integer(&mut self, schema: &Value) -> i64 {
        let lo = schema["minimum"].as_i64().unwrap_or(0);
        let hi = schema["maximum"].as_i64().unwrap_or(lo + 1000);
        lo + self.pick(0, (hi - lo) as u64) as i64
    }

    fn string(&mut self, schema: &Value, name: &str) -> String {
        match schema["format"].as_str() {
            Some("uuid") => {
                return match self.pools.for_property(name) {
                    Some(pool) => pool[(self.seed as usize) % pool.len()].clone(),
                    None => uuid::Uuid::from_u64_pair(self.next(), self.next()).to_string(),
                };
            }
            Some("date-time") => {
                let (day, hour) = (1 + self.next() % 28, self.next() % 24);
                return format!("2031-02-{day:02}T{hour:02}:30:00Z");
            }
            // In the past: a range's `to` defaults to today and `from` may not come after it.
            Some("date") => {
                let (month, day) = (1 + self.next() % 12, 1 + self.next() % 28);
                return format!("2025-{month:02}-{day:02}");
            }
            Some("email") => {
                let n = 1 + self.next() % 20;
                let local = self.text(n, ALNUM);
                return format!("{local}.{}@example.com", self.seed);
            }
            _ => {}
        }
        let min = schema["minLength"].as_u64().unwrap_or(0);
        let max = schema["maxLength"].as_u64().unwrap_or(min + 40);
        let Some(pattern) = schema["pattern"].as_str() else {
            let n = self.pick(min, max);
            return self.text(n, ANY);
        };
        let core = Pattern::new(pattern).generate(self);
        if pattern.starts_with('^') && pattern.ends_with('$') {
            return core;
        }
        // Unanchored: the pattern need only occur in the string; pad it to a length in range.
        let len = core.chars().count() as u64;
        let n = self.pick(min.max(len), max.max(len)) - len;
        let before = self.next() % (n + 1);
        let (head, tail) = (self.text(before, ANY), self.text(n - before, ANY));
        format!("{head}{core}{tail}")
    }

    fn text(&mut self, n: u64, alphabet: &[char]) -> String {
        (0..n)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
            .collect()
    }
}

const ALNUM: &[char] = &[
    'a', 'b', 'c', 'd', 'e', 'k', 'q', 'x', 'z', 'A', 'M', 'Z', '0', '5', '9',
];
/// Letters, digits, spaces, punctuation and characters of more than one byte, so a length
/// counted in bytes rather than characters shows.
const ANY: &[char] = &[
    'a', 'b', 'q', 'Z', '0', '7', ' ', '-', '_', '.', 'é', 'ß', 'Ж', '中', '€',
];

/// A regular expression of the small ECMA-262 subset the documents use: literals, escapes
/// (`\S`, `\d`, `\w`, `\.`), classes of ranges, groups, alternation, quantifiers (`?`, `*`,
/// `+`, `{n}`, `{n,m}`) and anchors. Anything else fails the test, so a document using
/// more says so.
struct Pattern {
    chars: Vec<char>,
}

enum Node {
    Chars(Vec<char>),
    Group(Vec<Vec<(Node, u64, u64)>>),
}

impl Pattern {
    fn new(p: &str) -> Self {
        Pattern {
            chars: p.chars().collect(),
        }
    }

    fn generate(&self, g: &mut Generator) -> String {
        let mut at = 0;
        let alternatives = self.alternation(&mut at);
        assert_eq!(at, self.chars.len(), "unsupported pattern {:?}", self.chars);
        let mut out = String::new();
        emit(&Node::Group(alternatives), g, &mut out);
        out
    }

    fn alternation(&self, at: &mut usize) -> Vec<Vec<(Node, u64, u64)>> {
        let mut alternatives = vec![self.sequence(at)];
        while self.chars.get(*at) == Some(&'|') {
            *at += 1;
            alternatives.push(self.sequence(at));
        }
        alternatives
    }

    fn sequence(&self, at: &mut usize) -> Vec<(Node, u64, u64)> {
        let mut seq = Vec::new();
        while let Some(&c) = self.chars.get(*at) {
            *at += 1;
            let node = match c {
                '|' | ')' => {
                    *at -= 1;
                    break;
                }
                '^' | '$' => continue,
                '(' => {
                    let alternatives = self.alternation(at);
                    assert_eq!(self.chars.get(*at), Some(&')'), "unclosed group");
                    *at += 1;
                    Node::Group(alternatives)
                }
                '[' => self.class(at),
                '\\' => {
                    let e = self.chars[*at];
                    *at += 1;
                    escape(e)
                }
                '.' => Node::Chars(ALNUM.to_vec()),
                c => Node::Chars(vec![c]),
            };
            let (lo, hi) = self.quantifier(at);
            seq.push((node, lo, hi));
        }
        seq
    }

    fn class(&self, at: &mut usize) -> Node {
        let mut set = Vec::new();
        assert_ne!(self.chars[*at], '^', "negated classes are not supported");
        while self.chars[*at] != ']' {
            let c = self.chars[*at];
            if c == '\\' {
                if let Node::Chars(cs) = escape(self.chars[*at + 1]) {
                    set.extend(cs);
                }
                *at += 2;
            } else if self.chars.get(*at + 1) == Some(&'-') && self.chars[*at + 2] != ']' {
                set.extend(c..=self.chars[*at + 2]);
                *at += 3;
            } else {
                set.push(c);
                *at += 1;
            }
        }
        *at += 1;
        Node::Chars(set)
    }

    fn quantifier(&self, at: &mut usize) -> (u64, u64) {
        match self.chars.get(*at) {
            Some('?') => {
                *at += 1;
                (0, 1)
            }
            Some('*') => {
                *at += 1;
                (0, 8)
            }
            Some('+') => {
                *at += 1;
                (1, 8)
            }
            Some('{') => {
                let end = *at + self.chars[*at..].iter().position(|&c| c == '}').unwrap();
                let inner: String = self.chars[*at + 1..end].iter().collect();
                *at = end + 1;
                let n = |s: &str| s.trim().parse::<u64>().expect("a repetition count");
                match inner.split_once(',') {
                    None => (n(&inner), n(&inner)),
                    Some((lo, "")) => (n(lo), n(lo) + 8),
                    Some((lo, hi)) => (n(lo), n(hi)),
                }
            }
            _ => (1, 1),
        }
    }
}

fn escape(e: char) -> Node {
    match e {
        'S' | 'w' => Node::Chars(ALNUM.to_vec()),
        'd' => Node::Chars(('0'..='9').collect()),
        c if c.is_ascii_punctuation() => Node::Chars(vec![c]),
        c => panic!("unsupported escape \\{c}"),
    }
}

fn emit(node: &Node, g: &mut Generator, out: &mut String) {
    match node {
        Node::Chars(set) => out.push(set[(g.next() % set.len() as u64) as usize]),
        Node::Group(alternatives) => {
            let i = match g.bound {
                Bound::Min => 0,
                Bound::Max => alternatives.len() - 1,
                Bound::Between => (g.next() % alternatives.len() as u64) as usize,
            };
            for (node, lo, hi) in &alternatives[i] {
                for _ in 0..g.pick(*lo, *hi) {
                    emit(node, g, out);
                }
            }
        }
    }
}
