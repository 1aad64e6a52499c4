//! Versioned wire types of the sync protocol, shared by device and server so they cannot drift.
//! Every message keeps members it does not know (`extra`) and sends them on unchanged: old app
//! versions stay in the field for months.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::change::Change;
use crate::stamp::{NodeId, Stamp};

/// The protocol version this code speaks. Changes are additive only.
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a server refuses a change for good (or, for `CLOCK_AHEAD`, until restamped).
pub mod refusal {
    /// The stamp is further in the future than the server allows: restamp and resend.
    pub const CLOCK_AHEAD: &str = "clock_ahead";
    /// The value is invalid for its field (the message names the field).
    pub const INVALID: &str = "invalid";
    /// The entity lies outside the officer's villages.
    pub const OUT_OF_SCOPE: &str = "out_of_scope";
    /// The field may not be written from a device.
    pub const READ_ONLY: &str = "read_only";
}

/// A batch of a device's changes, in counter order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    /// Protocol version of the sender.
    pub protocol: u32,
    /// The pushing device.
    pub device: NodeId,
    /// The changes, oldest first.
    pub changes: Vec<Change>,
    /// Unknown members, relayed.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// What happened to one pushed change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    /// Durable on the server (merged, possibly losing to a later write).
    Accepted,
    /// Refused; `code` says why. The device keeps it for the officer to correct.
    Refused,
    /// A status a newer server uses that this version does not know: keep the change.
    #[serde(other)]
    Unknown,
}

/// The answer for one change of a push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeResult {
    /// The change's counter (the device is the pusher).
    pub counter: u64,
    /// Accepted or refused.
    pub status: ChangeStatus,
    /// Refusal code (see [`refusal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Refusal message, naming the field, in Chinese and English.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Unknown members, relayed.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The answer to a push: one result per change, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResponse {
    /// Server time when answering, for the device's clock correction.
    pub server_time_ms: u64,
    /// One result per pushed change.
    pub results: Vec<ChangeResult>,
    /// Unknown members, relayed.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A position in the server's sequence of accepted writes; opaque to devices.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(pub String);

/// A request for everything in the caller's scope after a cursor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// Protocol version of the sender.
    pub protocol: u32,
    /// Where the last pull ended; none for a first sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    /// Most values wanted in this page.
    pub limit: u32,
    /// Unknown members, relayed.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The current value of one field (a state delta, not history).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldValue {
    /// Entity kind.
    pub kind: String,
    /// Entity id.
    pub entity: Uuid,
    /// Field name.
    pub field: String,
    /// Current value.
    pub value: Value,
    /// Its stamp.
    pub stamp: Stamp,
    /// Unknown members, relayed.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One page of a pull.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullResponse {
    /// Server time when answering.
    pub server_time_ms: u64,
    /// Current values that changed after the cursor.
    pub values: Vec<FieldValue>,
    /// Entities that left the caller's scope: remove them from the device.
    #[serde(default)]
    pub purged: Vec<Uuid>,
    /// Where the next pull starts.
    pub next_cursor: Cursor,
    /// Whether more pages follow right away.
    pub more: bool,
    /// Unknown members, relayed.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::ChangeId;
    use crate::hlc::Hlc;
    use serde_json::json;

    fn node(n: u128) -> NodeId {
        NodeId(Uuid::from_u128(n))
    }

    fn push() -> PushRequest {
        PushRequest {
            protocol: PROTOCOL_VERSION,
            device: node(1),
            changes: vec![Change {
                id: ChangeId {
                    device: node(1),
                    counter: 7,
                },
                kind: "person".into(),
                entity: Uuid::from_u128(42),
                field: "name".into(),
                value: json!("王芳"),
                stamp: Stamp::new(Hlc::new(1_700_000_000_000, 1), node(1)),
                base: None,
                extra: BTreeMap::new(),
            }],
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn push_json_is_pinned() {
        let expected = json!({
            "protocol": 1,
            "device": "00000000-0000-0000-0000-000000000001",
            "changes": [{
                "id": {"device": "00000000-0000-0000-0000-000000000001", "counter": 7},
                "kind": "person",
                "entity": "00000000-0000-0000-0000-00000000002a",
                "field": "name",
                "value": "王芳",
                "stamp": "018bcfe568000001@00000000-0000-0000-0000-000000000001"
            }]
        });
        assert_eq!(serde_json::to_value(push()).unwrap(), expected);
        assert_eq!(
            serde_json::from_value::<PushRequest>(expected).unwrap(),
            push()
        );
    }

    #[test]
    fn unknown_members_kinds_and_statuses_survive_a_round_trip() {
        let mut value = serde_json::to_value(push()).unwrap();
        value["priority"] = json!("high");
        value["changes"][0]["kind"] = json!("boat");
        value["changes"][0]["signature"] = json!({"alg": "ed25519"});
        let parsed: PushRequest = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(parsed.extra["priority"], "high");
        assert_eq!(parsed.changes[0].kind, "boat");
        assert_eq!(serde_json::to_value(&parsed).unwrap(), value);

        let answer = json!({"server_time_ms": 5, "results": [
            {"counter": 7, "status": "deferred", "retry_after": 3}
        ]});
        let parsed: PushResponse = serde_json::from_value(answer).unwrap();
        assert_eq!(parsed.results[0].status, ChangeStatus::Unknown);
        assert_eq!(parsed.results[0].extra["retry_after"], 3);
    }

    #[test]
    fn pull_json_is_pinned() {
        let page = PullResponse {
            server_time_ms: 1_700_000_000_123,
            values: vec![FieldValue {
                kind: "vehicle".into(),
                entity: Uuid::from_u128(7),
                field: "plate".into(),
                value: json!("粤L12345"),
                stamp: Stamp::new(Hlc::new(1, 0), node(2)),
                extra: BTreeMap::new(),
            }],
            purged: vec![Uuid::from_u128(8)],
            next_cursor: Cursor("c42".into()),
            more: false,
            extra: BTreeMap::new(),
        };
        let text = serde_json::to_string(&page).unwrap();
        assert_eq!(
            text,
            r#"{"server_time_ms":1700000000123,"values":[{"kind":"vehicle","entity":"00000000-0000-0000-0000-000000000007","field":"plate","value":"粤L12345","stamp":"0000000000010000@00000000-0000-0000-0000-000000000002"}],"purged":["00000000-0000-0000-0000-000000000008"],"next_cursor":"c42","more":false}"#
        );
        assert_eq!(serde_json::from_str::<PullResponse>(&text).unwrap(), page);
    }
}
