//! What must hold for any input: decoding never panics and either gives a typed error with a
//! message or a value that round-trips. A violated property panics (libFuzzer saves the
//! input as a crash; the corpus test fails).

use shoplens_analytics::engine::parse_read_only;
use shoplens_contract::Envelope;

/// `Envelope::decode` on arbitrary bytes: a typed error with a kind and a message, or an
/// envelope that encodes and decodes back to itself.
pub fn envelope_decode(data: &[u8]) -> bool {
    match Envelope::decode(data) {
        Ok(envelope) => {
            let again = Envelope::decode(&envelope.to_json())
                .unwrap_or_else(|e| panic!("a decoded envelope does not decode again: {e}"));
            assert_eq!(again, envelope, "an envelope does not round-trip");
            true
        }
        Err(e) => {
            assert!(!e.kind().is_empty());
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

/// The analytics SQL gate on arbitrary text: one read-only query, or an error with a
/// message; never a panic or a stack overflow.
pub fn analytics_sql_check(data: &[u8]) -> bool {
    let Ok(sql) = std::str::from_utf8(data) else {
        return false;
    };
    match parse_read_only(sql) {
        Ok(statement) => {
            // Formatting walks the whole tree: bounded nesting keeps it on the stack.
            assert!(!statement.to_string().is_empty());
            true
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            false
        }
    }
}
