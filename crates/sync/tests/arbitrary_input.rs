//! What the push-decoder fuzz target checks, on the stable toolchain in every test run: any bytes
//! as a push body never panic the decoder, and a body that decodes re-encodes to itself.

use baylink_sync::wire::PushRequest;
use proptest::prelude::*;

/// A push body with one change whose members are drawn freely.
fn push_like() -> impl Strategy<Value = String> {
    let stamp = prop_oneof![
        (any::<u64>(), any::<u128>())
            .prop_map(|(hlc, node)| format!("{hlc:016x}@{}", uuid::Uuid::from_u128(node))),
        "\\PC{0,20}",
    ];
    (
        any::<u32>(),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        any::<u64>(),
        "\\PC{0,12}",
        "\\PC{0,12}",
        stamp,
    )
        .prop_map(|(protocol, id, counter, kind, field, stamp)| {
            format!(
                r#"{{"protocol":{protocol},"device":"{id}","changes":[{{"id":{{"device":"{id}","counter":{counter}}},"kind":{kind:?},"entity":"{id}","field":{field:?},"value":null,"stamp":{stamp:?}}}]}}"#
            )
        })
}

proptest! {
    #[test]
    fn any_bytes_as_a_push(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = serde_json::from_slice::<PushRequest>(&bytes);
    }

    #[test]
    fn push_like_bodies_decode_or_fail_cleanly_and_round_trip(body in push_like()) {
        let decoded = serde_json::from_str::<PushRequest>(&body);
        if let Ok(request) = decoded {
            let text = serde_json::to_string(&request).expect("encodes");
            let again: PushRequest = serde_json::from_str(&text).expect("decodes again");
            prop_assert_eq!(again, request);
        }
    }
}
