//! Keeps docs/event-contract.md honest: every JSON example on the page must decode and
//! validate, and every event type must have an example.

use std::collections::HashSet;

use shoplens_contract::{Envelope, EventType};

#[test]
fn every_example_in_the_contract_page_decodes() {
    let page = include_str!("../../../docs/event-contract.md");
    let mut seen = HashSet::new();
    let mut blocks = page.split("```json").skip(1);
    for block in blocks.by_ref() {
        let json = block.split("```").next().unwrap();
        let env = Envelope::decode(json.as_bytes())
            .unwrap_or_else(|e| panic!("example does not decode: {e}\n{json}"));
        // The wire form of what we decoded decodes to the same thing.
        assert_eq!(Envelope::decode(&env.to_json()).unwrap(), env);
        seen.insert(env.event_type());
    }
    let missing: Vec<_> = EventType::ALL
        .iter()
        .filter(|t| !seen.contains(t))
        .collect();
    // CustomerUpdated shares its example with CustomerRegistered (same payload).
    assert_eq!(
        missing,
        [&EventType::CustomerUpdated],
        "event types without an example"
    );
}
