//! The versioned envelope every event travels in, and the one checked way to decode it.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{DomainEvent, EventType, InvalidField, Service};

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
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
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
        payload.validate()?;
        if payload.aggregate_id() != wire.aggregate_id {
            return Err(field(
                "aggregate_id",
                format!("must equal the payload's id `{}`", payload.aggregate_id()),
            ));
        }
        if wire.event_id.get_version_num() != 7 {
            return Err(field("event_id", "must be a UUIDv7"));
        }
        Ok(Envelope {
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
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Envelope::decode(&bytes);
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
