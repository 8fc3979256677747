//! The versioned envelope every event travels in, and the one checked way to decode it.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{DomainEvent, EventType, InvalidField, Service};

mod fast;

/// An event with its metadata. On the wire:
///
/// ```json
/// {"event_id":"0193…","event_type":"OrderCreated","schema_version":1,
///  "aggregate_id":"…","occurred_at":"2026-11-25T10:00:00.123Z","producer":"order",
///  "payload":{…}}
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// A UUIDv7: unique, and sortable by creation time. Readers deduplicate by it.
    pub event_id: Uuid,
    pub schema_version: u16,
    pub aggregate_id: String,
    /// When the state change committed, with millisecond precision.
    pub occurred_at: DateTime<Utc>,
    pub producer: Service,
    pub payload: DomainEvent,
}

/// Why bytes are not a valid event. `field` names the offending field (a JSON path such as
/// `payload.lines[0].quantity`) where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("field `{field}`: {reason}")]
    Field { field: String, reason: String },
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("unsupported schema version {version} of {event_type}")]
    UnsupportedVersion { event_type: String, version: u16 },
}

impl DecodeError {
    /// A short machine-readable kind, for dead-letter records and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Json(_) => "malformed_json",
            DecodeError::Field { .. } => "invalid_field",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
        }
    }
}

impl From<InvalidField> for DecodeError {
    fn from(e: InvalidField) -> Self {
        DecodeError::Field {
            field: format!("payload.{}", e.field),
            reason: e.reason,
        }
    }
}

#[derive(Serialize)]
struct WireOut<'a> {
    event_id: Uuid,
    event_type: EventType,
    schema_version: u16,
    aggregate_id: &'a str,
    occurred_at: DateTime<Utc>,
    producer: Service,
    payload: &'a DomainEvent,
}

/// An envelope's fields once read, before the checks every decoded event goes through.
struct Read {
    event_id: Uuid,
    schema_version: u16,
    aggregate_id: String,
    occurred_at: DateTime<Utc>,
    producer: Service,
    payload: DomainEvent,
}

#[cfg(test)]
impl Read {
    /// Every field, for comparing two readings.
    fn fields(&self) -> (Uuid, u16, &str, DateTime<Utc>, Service, &DomainEvent) {
        (
            self.event_id,
            self.schema_version,
            &self.aggregate_id,
            self.occurred_at,
            self.producer,
            &self.payload,
        )
    }
}

#[derive(Deserialize)]
struct WireIn {
    event_id: Uuid,
    event_type: String,
    schema_version: u16,
    aggregate_id: String,
    occurred_at: DateTime<Utc>,
    producer: Service,
    payload: serde_json::Value,
}

impl Envelope {
    /// Wraps an event produced now by its owning service.
    pub fn new(payload: impl Into<DomainEvent>) -> Envelope {
        Envelope::at(payload, Utc::now())
    }

    /// Wraps an event that occurred at `occurred_at` (truncated to milliseconds, the
    /// precision every store keeps).
    pub fn at(payload: impl Into<DomainEvent>, occurred_at: DateTime<Utc>) -> Envelope {
        let payload = payload.into();
        let event_type = payload.event_type();
        Envelope {
            event_id: Uuid::now_v7(),
            schema_version: event_type.current_version(),
            aggregate_id: payload.aggregate_id().to_owned(),
            occurred_at: occurred_at.trunc_subsecs(3),
            producer: event_type.producer(),
            payload,
        }
    }

    pub fn event_type(&self) -> EventType {
        self.payload.event_type()
    }

    /// The JSON wire form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&WireOut {
            event_id: self.event_id,
            event_type: self.event_type(),
            schema_version: self.schema_version,
            aggregate_id: &self.aggregate_id,
            occurred_at: self.occurred_at,
            producer: self.producer,
            payload: &self.payload,
        })
        .expect("an envelope always serializes")
    }

    /// Decodes and validates one event. Never panics, whatever the bytes.
    ///
    /// Two readings, one result: the fast one deserializes the metadata and then the payload
    /// straight into their types; anything it cannot read (malformed, missing, mistyped,
    /// duplicated, unknown) goes to the careful one, which reads through a JSON tree to name
    /// what is wrong. The fast one accepts only what the careful one accepts, with the same
    /// values (a property test checks it), and every event then goes through the same checks.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let read = match Envelope::read_fast(bytes) {
            Some(read) => read,
            None => Envelope::read_careful(bytes)?,
        };
        read.payload.validate()?;
        if read.payload.aggregate_id() != read.aggregate_id {
            return Err(field(
                "aggregate_id",
                format!(
                    "must equal the payload's id `{}`",
                    read.payload.aggregate_id()
                ),
            ));
        }
        if read.event_id.get_version_num() != 7 {
            return Err(field("event_id", "must be a UUIDv7"));
        }
        Ok(Envelope {
            event_id: read.event_id,
            schema_version: read.schema_version,
            aggregate_id: read.aggregate_id,
            occurred_at: read.occurred_at,
            producer: read.producer,
            payload: read.payload,
        })
    }

    /// The fast reading ([`fast`]); `None` for anything the careful one must look at.
    fn read_fast(bytes: &[u8]) -> Option<Read> {
        fast::read(bytes)
    }

    /// The careful reading, naming the first thing wrong.
    fn read_careful(bytes: &[u8]) -> Result<Read, DecodeError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
        if !value.is_object() {
            return Err(DecodeError::Json("an event must be a JSON object".into()));
        }
        let wire: WireIn = serde_path_to_error_lite(value)?;
        let event_type: EventType = wire
            .event_type
            .parse()
            .map_err(|_| DecodeError::UnknownType(wire.event_type.clone()))?;
        if !event_type
            .supported_versions()
            .contains(&wire.schema_version)
        {
            return Err(DecodeError::UnsupportedVersion {
                event_type: wire.event_type,
                version: wire.schema_version,
            });
        }
        if wire.producer != event_type.producer() {
            return Err(field(
                "producer",
                format!("{event_type} is produced by `{}`", event_type.producer()),
            ));
        }
        if !wire.payload.is_object() {
            return Err(field("payload", "must be an object"));
        }
        let payload = DomainEvent::from_json(event_type, wire.payload)
            .map_err(|e| field("payload", e.to_string()))?;
        Ok(Read {
            event_id: wire.event_id,
            schema_version: wire.schema_version,
            aggregate_id: wire.aggregate_id,
            occurred_at: wire.occurred_at,
            producer: wire.producer,
            payload,
        })
    }
}

fn field(field: &str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Field {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Deserializes the envelope fields, naming the first missing or mistyped one.
fn serde_path_to_error_lite(value: serde_json::Value) -> Result<WireIn, DecodeError> {
    const FIELDS: [&str; 7] = [
        "event_id",
        "event_type",
        "schema_version",
        "aggregate_id",
        "occurred_at",
        "producer",
        "payload",
    ];
    if let Some(missing) = FIELDS.iter().find(|f| value.get(**f).is_none()) {
        return Err(field(missing, "is missing"));
    }
    serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        let name = FIELDS
            .iter()
            .find(|f| msg.contains(**f))
            .copied()
            .unwrap_or("envelope");
        field(name, msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use rust_decimal::Decimal;

    fn order_created() -> Envelope {
        Envelope::new(OrderCreated {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            lines: vec![
                OrderLine {
                    line_no: 1,
                    product_id: "p-1".into(),
                    quantity: 2,
                    unit_price: Decimal::new(1250, 2),
                },
                OrderLine {
                    line_no: 2,
                    product_id: "p-2".into(),
                    quantity: 1,
                    unit_price: Decimal::new(99, 2),
                },
            ],
            total: Decimal::new(2599, 2),
            currency: "EUR".into(),
        })
    }

    #[test]
    fn round_trips_through_json() {
        let env = order_created();
        let back = Envelope::decode(&env.to_json()).unwrap();
        assert_eq!(back, env);
        assert!(
            Envelope::read_fast(&env.to_json()).is_some(),
            "a well-formed event takes the fast reading"
        );
        let json: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
        assert_eq!(json["event_type"], "OrderCreated");
        assert_eq!(
            json["payload"]["total"], "25.99",
            "money is a decimal string"
        );
    }

    fn tamper(f: impl FnOnce(&mut serde_json::Value)) -> DecodeError {
        let mut json: serde_json::Value =
            serde_json::from_slice(&order_created().to_json()).unwrap();
        f(&mut json);
        Envelope::decode(&serde_json::to_vec(&json).unwrap()).unwrap_err()
    }

    #[test]
    fn names_what_is_wrong() {
        assert_eq!(
            tamper(|j| j["event_type"] = "Nope".into()).kind(),
            "unknown_type"
        );
        assert_eq!(
            tamper(|j| j["schema_version"] = 9.into()).kind(),
            "unsupported_version"
        );
        let e = tamper(|j| j["payload"]["lines"][0]["quantity"] = (-1).into());
        assert!(e.to_string().contains("lines[0].quantity"), "{e}");
        let e = tamper(|j| j["payload"]["total"] = "1.00".into());
        assert!(e.to_string().contains("payload.total"), "{e}");
        let e = tamper(|j| {
            j.as_object_mut().unwrap().remove("occurred_at");
        });
        assert!(e.to_string().contains("occurred_at"), "{e}");
        let e = tamper(|j| j["aggregate_id"] = "other".into());
        assert!(e.to_string().contains("aggregate_id"), "{e}");
        let e = tamper(|j| j["producer"] = "payment".into());
        assert!(e.to_string().contains("producer"), "{e}");
        let e = tamper(|j| j["payload"]["lines"][0]["unit_price"] = "1.005".into());
        assert!(e.to_string().contains("decimal places"), "{e}");
        assert_eq!(
            Envelope::decode(b"{not json").unwrap_err().kind(),
            "malformed_json"
        );
        assert_eq!(
            Envelope::decode(b"[1,2]").unwrap_err().kind(),
            "malformed_json"
        );
        // An envelope or a payload as an array would deserialize into a struct: refused.
        let env = order_created();
        let json: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
        let fields = [
            "event_id",
            "event_type",
            "schema_version",
            "aggregate_id",
            "occurred_at",
            "producer",
            "payload",
        ];
        let array = serde_json::Value::Array(fields.iter().map(|f| json[*f].clone()).collect());
        assert_eq!(
            Envelope::decode(&serde_json::to_vec(&array).unwrap())
                .unwrap_err()
                .kind(),
            "malformed_json"
        );
        let e = tamper(|j| {
            let p = j["payload"].clone();
            j["payload"] = serde_json::Value::Array(
                ["order_id", "customer_id", "lines", "total", "currency"]
                    .iter()
                    .map(|f| p[*f].clone())
                    .collect(),
            );
        });
        assert!(e.to_string().contains("payload"), "{e}");
        // A duplicated key: the careful reading keeps the last, as before.
        let text = String::from_utf8(env.to_json()).unwrap();
        let doubled = text.replacen(
            "\"currency\":\"EUR\"",
            "\"currency\":\"USD\",\"currency\":\"EUR\"",
            1,
        );
        assert_ne!(doubled, text);
        assert_eq!(Envelope::decode(doubled.as_bytes()).unwrap(), env);
    }

    #[test]
    fn invalid_utf8_in_a_value_nobody_reads_is_still_malformed() {
        let mut bytes = b"{\"note\":\"\xff\",".to_vec();
        bytes.extend_from_slice(&order_created().to_json()[1..]);
        assert_eq!(
            Envelope::decode(&bytes).unwrap_err().kind(),
            "malformed_json"
        );
    }

    #[test]
    fn illegal_status_transition_is_rejected() {
        let env = Envelope::new(OrderStatusChanged {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            from: Some(OrderStatus::Delivered),
            to: OrderStatus::Placed,
        });
        let err = Envelope::decode(&env.to_json()).unwrap_err();
        assert!(
            err.to_string().contains("cannot go from Delivered"),
            "{err}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Envelope::decode(&bytes);
        }

        /// The fast reading accepts only what the careful one accepts, with the same values.
        #[test]
        fn the_fast_reading_agrees_with_the_careful_one(which in 0usize..2, pos in 0usize..400, byte in proptest::num::u8::ANY, second in 0usize..400, other in proptest::num::u8::ANY) {
            let event = match which {
                0 => order_created(),
                _ => Envelope::new(OrderStatusChanged {
                    order_id: "o-1".into(),
                    customer_id: "c-1".into(),
                    from: Some(OrderStatus::Placed),
                    to: OrderStatus::Paid,
                }),
            };
            let mut json = event.to_json();
            let (pos, second) = (pos % json.len(), second % json.len());
            json[pos] = byte;
            json[second] = other;
            if let Some(fast) = Envelope::read_fast(&json) {
                let careful = Envelope::read_careful(&json);
                proptest::prop_assert!(careful.is_ok(), "fast accepted what careful refused: {}", String::from_utf8_lossy(&json));
                let careful = careful.unwrap();
                proptest::prop_assert_eq!(fast.payload, careful.payload);
                proptest::prop_assert_eq!(fast.event_id, careful.event_id);
                proptest::prop_assert_eq!(fast.aggregate_id, careful.aggregate_id);
                proptest::prop_assert_eq!(fast.occurred_at, careful.occurred_at);
                proptest::prop_assert_eq!(fast.producer, careful.producer);
                proptest::prop_assert_eq!(fast.schema_version, careful.schema_version);
            }
        }

        /// Keys in any order, an unknown key anywhere, a key spelled with an escape: both
        /// readings take the event with the same values, whether the fast one meets the
        /// payload after its type (read in place) or before it (read afterwards). A mutated
        /// byte on top: whatever the fast reading still takes, the careful one takes alike.
        #[test]
        fn any_key_order_reads_alike(
            order in proptest::strategy::Strategy::prop_shuffle(proptest::strategy::Just((0..8).collect::<Vec<usize>>())),
            escape in 0usize..8,
            which in 0usize..3,
            mutate in proptest::bool::ANY,
            pos in 0usize..600,
            byte in proptest::num::u8::ANY,
        ) {
            let event = match which {
                0 => order_created(),
                1 => Envelope::new(ProductPurchased {
                    order_id: "o-1".into(),
                    line_no: 1,
                    customer_id: "c-1".into(),
                    product_id: "p-1".into(),
                    quantity: 3,
                    unit_price: Decimal::new(250, 2),
                    revenue: Decimal::new(750, 2),
                    currency: "EUR".into(),
                }),
                _ => Envelope::new(ShipmentCreated {
                    shipment_id: "s-1".into(),
                    order_id: "o-1".into(),
                    carrier: "DHL".into(),
                    location: "Köln \"Hbf\"".into(),
                    eta: Utc::now().trunc_subsecs(3),
                }),
            };
            let serde_json::Value::Object(fields) =
                serde_json::from_slice(&event.to_json()).unwrap()
            else {
                unreachable!("an envelope is an object")
            };
            let mut keys: Vec<String> = fields.keys().cloned().collect();
            keys.push("note".into());
            let mut parts = Vec::new();
            for i in order {
                let key = &keys[i];
                let value = fields.get(key).cloned().unwrap_or(serde_json::json!({"x": [1, "y"]}));
                let name = if i == escape { key.replacen('_', "\\u005f", 1) } else { key.clone() };
                parts.push(format!("\"{name}\":{value}"));
            }
            let mut json = format!("{{{}}}", parts.join(",")).into_bytes();
            if !mutate {
                let fast = Envelope::read_fast(&json);
                proptest::prop_assert!(fast.is_some(), "{}", String::from_utf8_lossy(&json));
                let (fast, careful) = (fast.unwrap(), Envelope::read_careful(&json).unwrap());
                proptest::prop_assert_eq!(fast.fields(), careful.fields());
                proptest::prop_assert_eq!(Envelope::decode(&json).unwrap(), event);
            } else {
                let pos = pos % json.len();
                json[pos] = byte;
                if let Some(fast) = Envelope::read_fast(&json) {
                    let careful = Envelope::read_careful(&json);
                    proptest::prop_assert!(careful.is_ok(), "fast accepted what careful refused: {}", String::from_utf8_lossy(&json));
                    let careful = careful.unwrap();
                    proptest::prop_assert_eq!(fast.fields(), careful.fields());
                }
            }
        }

        #[test]
        fn decoding_mutated_events_never_panics(pos in 0usize..400, byte in proptest::num::u8::ANY) {
            let mut json = order_created().to_json();
            let pos = pos % json.len();
            json[pos] = byte;
            if let Ok(env) = Envelope::decode(&json) {
                proptest::prop_assert!(env.payload.validate().is_ok());
            }
        }
    }
}
