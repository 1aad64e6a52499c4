//! Any bytes as a push body, decoded as the server decodes it; every change that decodes is
//! validated as the server validates it. Nothing may panic, and a decoded request re-encodes and
//! decodes to itself.
#![no_main]

use baylink_domain::{Date, EntityKind, Fields, validate_values};
use baylink_sync::wire::PushRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Within the budget of memory the server reads a body of this length with.
    let budget = baylink_sync::bounded::budget_for(data.len());
    let Ok(Ok(request)) =
        baylink_sync::bounded::within(budget, || serde_json::from_slice::<PushRequest>(data))
    else {
        return;
    };
    let today = Date::parse("2026-11-29").expect("a date");
    for change in &request.changes {
        if let Some(kind) = EntityKind::parse(&change.kind) {
            let values = Fields::from([(change.field.clone(), change.value.clone())]);
            let _ = validate_values(kind, &values, today);
        }
    }
    let text = serde_json::to_string(&request).expect("a decoded request encodes");
    let again: PushRequest = serde_json::from_str(&text).expect("and decodes again");
    assert_eq!(
        serde_json::to_value(&again).expect("encodes"),
        serde_json::to_value(&request).expect("encodes")
    );
});
