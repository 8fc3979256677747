//! The fast reading of an envelope: one pass over the bytes, each field straight into its
//! type.
//!
//! Every ShopLens producer writes `event_type` before `payload`, so the payload is
//! deserialized into its event type where it stands, without first skipping over it as raw
//! text and reading it a second time. A payload met before its type (another writer's order)
//! is kept as raw text and read once the type is known. The timestamp in the producers'
//! form (`2026-11-25T10:00:00.123Z`) is read by hand; any other form goes to chrono, the
//! same parser the careful reading uses.
//!
//! Invariant: this reading accepts only what the careful one accepts, with the same values.
//! Where it is unsure (a duplicated key, whose last value the careful reading keeps) it
//! fails, and the caller takes the careful reading.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, Visitor,
};
use serde::{Deserialize, forward_to_deserialize_any};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::Read;
use crate::{DomainEvent, EventType, Service};

/// The envelope's fields as the fast reading finds them (see [`read`]).
pub(super) fn read(bytes: &[u8]) -> Option<Read> {
    // UTF-8 checked once for the whole text, ignored values included: serde_json skips
    // an unknown key's value without checking it, and the careful reading refuses invalid
    // UTF-8 anywhere.
    let text = std::str::from_utf8(bytes).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    // `deserialize_map`, not `_struct`: only an object is an event, never an array.
    let wire = (&mut de).deserialize_map(EnvelopeVisitor).ok()?;
    de.end().ok()?;
    let event_type = wire.event_type;
    if !event_type
        .supported_versions()
        .contains(&wire.schema_version)
        || wire.producer != event_type.producer()
    {
        return None;
    }
    let payload = match wire.payload {
        Payload::Read(payload) => payload,
        Payload::Raw(raw) => {
            let mut de = serde_json::Deserializer::from_str(raw.get());
            let payload = DomainEvent::deserialize_as(event_type, ObjectOnly(&mut de)).ok()?;
            de.end().ok()?;
            payload
        }
    };
    Some(Read {
        event_id: wire.event_id,
        schema_version: wire.schema_version,
        aggregate_id: wire.aggregate_id,
        occurred_at: wire.occurred_at,
        producer: wire.producer,
        payload,
    })
}

struct Wire<'a> {
    event_id: Uuid,
    event_type: EventType,
    schema_version: u16,
    aggregate_id: String,
    occurred_at: DateTime<Utc>,
    producer: Service,
    payload: Payload<'a>,
}

enum Payload<'a> {
    /// Read in place: its type came first.
    Read(DomainEvent),
    /// Met before its type: read once the envelope is done.
    Raw(&'a RawValue),
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Key {
    EventId,
    EventType,
    SchemaVersion,
    AggregateId,
    OccurredAt,
    Producer,
    Payload,
    /// Unknown keys are ignored, as the careful reading ignores them.
    #[serde(other)]
    Other,
}

struct EnvelopeVisitor;

/// Stores `value` in `slot`, refusing a second one (the careful reading keeps the last of
/// duplicated keys; the fast one leaves such events to it).
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Wire<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire<'de>, A::Error> {
        let mut event_id = None;
        let mut event_type: Option<EventType> = None;
        let mut schema_version = None;
        let mut aggregate_id = None;
        let mut occurred_at = None;
        let mut producer = None;
        let mut payload = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::EventId => once(&mut event_id, map.next_value()?, "event_id")?,
                Key::EventType => once(
                    &mut event_type,
                    map.next_value_seed(TypeSeed)?,
                    "event_type",
                )?,
                Key::SchemaVersion => {
                    once(&mut schema_version, map.next_value()?, "schema_version")?
                }
                Key::AggregateId => once(&mut aggregate_id, map.next_value()?, "aggregate_id")?,
                Key::OccurredAt => once(
                    &mut occurred_at,
                    map.next_value_seed(TimeSeed)?,
                    "occurred_at",
                )?,
                Key::Producer => once(&mut producer, map.next_value()?, "producer")?,
                Key::Payload => {
                    let value = match event_type {
                        Some(t) => Payload::Read(map.next_value_seed(PayloadSeed(t))?),
                        None => Payload::Raw(map.next_value()?),
                    };
                    once(&mut payload, value, "payload")?
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Wire {
            event_id: event_id.ok_or_else(|| de::Error::missing_field("event_id"))?,
            event_type: event_type.ok_or_else(|| de::Error::missing_field("event_type"))?,
            schema_version: schema_version
                .ok_or_else(|| de::Error::missing_field("schema_version"))?,
            aggregate_id: aggregate_id.ok_or_else(|| de::Error::missing_field("aggregate_id"))?,
            occurred_at: occurred_at.ok_or_else(|| de::Error::missing_field("occurred_at"))?,
            producer: producer.ok_or_else(|| de::Error::missing_field("producer"))?,
            payload: payload.ok_or_else(|| de::Error::missing_field("payload"))?,
        })
    }
}

/// An event type by its name, exactly as `EventType::from_str` reads it.
struct TypeSeed;

impl<'de> DeserializeSeed<'de> for TypeSeed {
    type Value = EventType;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<EventType, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for TypeSeed {
    type Value = EventType;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event type")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<EventType, E> {
        v.parse().map_err(E::custom)
    }
}

/// The payload of a known event type, which must be a JSON object.
struct PayloadSeed(EventType);

impl<'de> DeserializeSeed<'de> for PayloadSeed {
    type Value = DomainEvent;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DomainEvent, D::Error> {
        DomainEvent::deserialize_as(self.0, ObjectOnly(d))
    }
}

/// A deserializer that reads a struct only from a JSON object: serde_json would also take
/// an array, which the careful reading refuses for a payload. Only the outermost struct is
/// held to it; the careful reading is no stricter inside.
struct ObjectOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(v)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// `occurred_at`: the producers' form by hand, anything else through chrono.
struct TimeSeed;

impl<'de> DeserializeSeed<'de> for TimeSeed {
    type Value = DateTime<Utc>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for TimeSeed {
    type Value = DateTime<Utc>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an RFC 3339 timestamp")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<DateTime<Utc>, E> {
        match producers_time(v) {
            Some(t) => Ok(t),
            // chrono's own reading of a `DateTime<Utc>`, as the careful reading does it.
            None => DateTime::<Utc>::deserialize(v.into_deserializer()),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form `Envelope::to_json` writes; `None` for any other
/// form and for a value chrono would read differently (a leap second), so that chrono reads
/// those.
fn producers_time(v: &str) -> Option<DateTime<Utc>> {
    let b = v.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second, milli) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    if second > 59 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    Some(
        date.and_hms_milli_opt(hour, minute, second, milli)?
            .and_utc(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrono_reads(v: &str) -> Option<DateTime<Utc>> {
        DateTime::<Utc>::deserialize(serde::de::value::StrDeserializer::<de::value::Error>::new(
            v,
        ))
        .ok()
    }

    #[test]
    fn the_producers_time_form_reads_as_chrono_reads_it() {
        let cases = [
            "2026-11-25T10:00:00.123Z",
            "2024-02-29T23:59:59.999Z",
            "0000-01-01T00:00:00.000Z",
            "9999-12-31T23:59:59.999Z",
            "1970-01-01T00:00:00.000Z",
        ];
        for v in cases {
            assert_eq!(producers_time(v), chrono_reads(v), "{v}");
            assert!(producers_time(v).is_some(), "{v}");
        }
        // Impossible dates and times: refused here, and chrono refuses them too.
        for v in [
            "2025-02-29T10:00:00.000Z",
            "2026-13-01T10:00:00.000Z",
            "2026-00-10T10:00:00.000Z",
            "2026-04-31T10:00:00.000Z",
            "2026-11-25T24:00:00.000Z",
            "2026-11-25T10:60:00.000Z",
        ] {
            assert_eq!(producers_time(v), None, "{v}");
            assert_eq!(chrono_reads(v), None, "{v}");
        }
        // Other forms are left to chrono, which may read them.
        for v in [
            "2026-11-25T10:00:00Z",
            "2026-11-25t10:00:00.123z",
            "2026-11-25T10:00:00.123+01:00",
            "2026-11-25T10:00:00.123456Z",
            "2016-12-31T23:59:60.000Z",
            "+2026-11-25T10:00:00.12Z",
        ] {
            assert_eq!(producers_time(v), None, "{v}");
        }
    }

    proptest::proptest! {
        /// Any 24 characters of digits and the form's separators: the hand reading gives
        /// chrono's answer wherever it gives one.
        #[test]
        fn the_hand_reading_never_differs_from_chrono(digits in proptest::collection::vec(0u8..10, 17), pick in 0usize..4) {
            let d: Vec<char> = digits.iter().map(|n| char::from(b'0' + n)).collect();
            // Bias months, days, hours and minutes towards the valid range now and then.
            let mut d = d;
            if pick > 0 { d[4] = '0'; d[6] = if pick == 1 { '2' } else { '1' }; d[8] = '1'; d[10] = '2'; }
            let v = format!(
                "{}{}{}{}-{}{}-{}{}T{}{}:{}{}:{}{}.{}{}{}Z",
                d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[11],
                d[12], d[13], d[14], d[15], d[16]
            );
            if let Some(t) = producers_time(&v) {
                proptest::prop_assert_eq!(Some(t), chrono_reads(&v), "{}", v);
            }
        }
    }
}
