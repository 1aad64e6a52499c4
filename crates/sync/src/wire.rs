//! Versioned wire types of the sync protocol, shared by device and server so they cannot drift.
//! An answer keeps members it does not know (`extra`) and sends them on unchanged: old app
//! versions stay in the field for months. What a server reads (a push, its changes, a pull)
//! skips them instead: a server relays nothing of a request, and a member skipped costs it no
//! memory (one buffered for relaying cost it several times its size).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::change::Change;
use crate::stamp::{NodeId, Stamp};

/// The protocol version this code speaks. Changes are additive only.
pub const PROTOCOL_VERSION: u32 = 3;

/// From this version on, a push may carry whole actions ([`PushRequest::actions`]): a record's
/// id, kind and stamp once, not once per field. A server says the version it speaks in every
/// answer ([`PROTOCOL_HEADER`]); a device sends actions only to one that speaks it.
pub const ACTION_PUSH: u32 = 3;

/// The answer header that names the protocol version a server speaks.
pub const PROTOCOL_HEADER: &str = "baylink-protocol";

/// The code of a pull refused for its cursor (`400`): one the server did not issue, or one ahead
/// of everything it holds (its database was restored from a backup). The device forgets its
/// cursor and pulls from the start.
pub const BAD_CURSOR: &str = "bad_cursor";

/// The code of a push refused because the account has as many under way as the server takes
/// (`429`, `Retry-After`): the server is busy, not the caller refused. Try again shortly.
pub const BUSY: &str = "busy";

/// The code of a pull refused because its cursor lies below what the server compacted away
/// (`410`): the device was unseen for longer than the server keeps deletions for it. The
/// device drops every record it holds with nothing waiting to be pushed and pulls from the
/// start, as a new one would.
pub const CURSOR_EXPIRED: &str = "cursor_expired";

/// From this version on, a pull page carries its values grouped by record (`records`), not one
/// by one (`values`): a record's kind, id and shared stamp once, not once per field.
pub const GROUPED_PULL: u32 = 2;

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
    /// The record was deleted and its tombstone compacted away: the server keeps nothing of it
    /// to change. The device drops the record.
    pub const GONE: &str = "gone";
}

/// A batch of a device's changes, in counter order: one by one (`changes`), or from version
/// [`ACTION_PUSH`] on as whole actions (`actions`), which the server reads as the same changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    /// Protocol version of the sender.
    pub protocol: u32,
    /// The pushing device.
    pub device: NodeId,
    /// The changes, oldest first (empty when they come as actions).
    #[serde(deserialize_with = "crate::bounded::list")]
    pub changes: Vec<Change>,
    /// Whole actions of the pushing device, after `changes`, oldest first.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::bounded::list"
    )]
    pub actions: Vec<Action>,
}

impl PushRequest {
    /// A push of `device`'s own changes as whole actions (protocol [`ACTION_PUSH`]).
    pub fn of_actions(device: NodeId, changes: Vec<Change>) -> PushRequest {
        PushRequest {
            protocol: ACTION_PUSH,
            device,
            changes: Vec::new(),
            actions: Action::group(changes),
        }
    }

    /// Every change of the push, in order: `changes`, then each action's.
    pub fn into_changes(self) -> Vec<Change> {
        let device = self.device;
        let mut changes = self.changes;
        for action in self.actions {
            changes.extend(action.into_changes(device));
        }
        changes
    }

    /// How many changes the push holds.
    pub fn len(&self) -> usize {
        self.changes.len() + self.actions.iter().map(|a| a.fields.len()).sum::<usize>()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One action of the pushing device: the fields one stamp wrote on one record, each with the
/// counter of its change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Entity kind.
    pub kind: String,
    /// Entity id.
    pub entity: Uuid,
    /// When and where it was written.
    pub stamp: Stamp,
    /// The fields written.
    #[serde(deserialize_with = "crate::bounded::list")]
    pub fields: Vec<ActionField>,
}

/// One field of an [`Action`]: one change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionField {
    /// The change's counter on its device.
    pub counter: u64,
    /// Field name.
    pub field: String,
    /// The new value (`null` clears the field).
    #[serde(deserialize_with = "crate::bounded::value")]
    pub value: Value,
    /// The stamp of the value it replaced on its device, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Stamp>,
}

impl Action {
    /// Groups a device's own changes into actions: each run of changes of one record under one
    /// stamp, none dropped or reordered. The changes' device is the push's, so it is not kept.
    pub fn group(changes: Vec<Change>) -> Vec<Action> {
        let mut actions: Vec<Action> = Vec::new();
        for change in changes {
            let field = ActionField {
                counter: change.id.counter,
                field: change.field,
                value: change.value,
                base: change.base,
            };
            match actions.last_mut() {
                Some(last)
                    if last.entity == change.entity
                        && last.stamp == change.stamp
                        && last.kind == change.kind =>
                {
                    last.fields.push(field);
                }
                _ => actions.push(Action {
                    kind: change.kind,
                    entity: change.entity,
                    stamp: change.stamp,
                    fields: vec![field],
                }),
            }
        }
        actions
    }

    /// The action's changes, as pushed by `device`.
    pub fn into_changes(self, device: NodeId) -> impl Iterator<Item = Change> {
        let (kind, entity, stamp) = (self.kind, self.entity, self.stamp);
        self.fields.into_iter().map(move |f| Change {
            id: crate::change::ChangeId {
                device,
                counter: f.counter,
            },
            kind: kind.clone(),
            entity,
            field: f.field,
            value: f.value,
            stamp,
            base: f.base,
        })
    }
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

impl ChangeResult {
    /// The answer for a change the server accepted.
    pub fn accepted(counter: u64) -> ChangeResult {
        ChangeResult {
            counter,
            status: ChangeStatus::Accepted,
            code: None,
            message: None,
            extra: BTreeMap::new(),
        }
    }
}

/// The answer to a push: one result per change, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResponse {
    /// Server time when answering, for the device's clock correction.
    pub server_time_ms: u64,
    /// One result per pushed change.
    pub results: Vec<ChangeResult>,
    /// The most changes this server takes in one push. A phone sends at most
    /// [`FIRST_PUSH_CHANGES`] until it is told (a server of before this member says nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_changes: Option<u32>,
    /// Unknown members, relayed.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The most changes in one push every server takes (the limit before servers said theirs).
pub const FIRST_PUSH_CHANGES: usize = 5_000;

/// About what a change takes in a push's JSON: its value as written, and the rest of a change
/// object (ids, kind, field, stamps) in the older protocol's form, the larger. What a phone
/// counts a batch's bytes by.
pub fn approximate_bytes(change: &Change) -> usize {
    const ENVELOPE: usize = 320;
    let value = match &change.value {
        // Escapes (quotes, control characters) take a few more bytes than counted here:
        // covered by the envelope's margin and the budget's distance from the server's limit.
        Value::String(text) => text.len() + 2,
        other => other.to_string().len(),
    };
    ENVELOPE + change.field.len() + value
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
    /// Most pages wanted in this answer; absent, one. Above one, a server that streams answers
    /// with consecutive pages, one JSON object a line ([`PAGE_STREAM`]), each page's cursor
    /// leading to the next, ending after a page that does not [`PullResponse::continues`]; a
    /// server that does not answers one page as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<u32>,
    /// The device still holds every value it wrote with a change counter above this one (it
    /// dropped none of its records since): the server leaves those of its own values it accepted
    /// out of the answer, unless something newer replaced them. Absent, every value is sent.
    /// It narrows only what this device is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_held_after: Option<u64>,
}

/// The content type of an answer of several pull pages, one JSON object a line.
pub const PAGE_STREAM: &str = "application/x-ndjson";

/// The current value of one field (a state delta, not history). The value is parsed JSON where
/// it is read (`V` = [`Value`]); a server sends the JSON it stored unparsed (`V` =
/// `Box<serde_json::value::RawValue>`): the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldValue<V = Value> {
    /// Entity kind.
    pub kind: String,
    /// Entity id.
    pub entity: Uuid,
    /// Field name.
    pub field: String,
    /// Current value.
    pub value: V,
    /// Its stamp.
    pub stamp: Stamp,
    /// Unknown members, relayed.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Current values of some fields of one record, as pull pages carry them from protocol 2 on.
/// Unknown members are ignored, not relayed: a page is applied, never passed on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordValues<V = Value> {
    /// Entity kind.
    pub kind: String,
    /// Entity id.
    pub entity: Uuid,
    /// The stamp of every field not listed in `stamps`.
    pub stamp: Stamp,
    /// Current values by field.
    pub fields: BTreeMap<String, V>,
    /// Stamps of the fields whose stamp is not `stamp`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stamps: BTreeMap<String, Stamp>,
}

/// Groups values by record: each run of values of one entity becomes one record, under the stamp
/// most of its fields carry. [`expand`] gives the values back.
pub fn group<V>(values: Vec<FieldValue<V>>) -> Vec<RecordValues<V>> {
    let mut records: Vec<RecordValues<V>> = Vec::new();
    let mut run: Vec<FieldValue<V>> = Vec::new();
    let mut close = |run: &mut Vec<FieldValue<V>>| {
        let Some(first) = run.first() else { return };
        let mut counts: Vec<(Stamp, usize)> = Vec::new();
        for v in run.iter() {
            match counts.iter_mut().find(|(s, _)| *s == v.stamp) {
                Some((_, n)) => *n += 1,
                None => counts.push((v.stamp, 1)),
            }
        }
        // The most common stamp; the first of equals, so the choice is deterministic.
        let stamp = counts
            .iter()
            .fold(
                (first.stamp, 0),
                |best, &(s, n)| if n > best.1 { (s, n) } else { best },
            )
            .0;
        let mut record = RecordValues {
            kind: first.kind.clone(),
            entity: first.entity,
            stamp,
            fields: BTreeMap::new(),
            stamps: BTreeMap::new(),
        };
        for v in run.drain(..) {
            if v.stamp != stamp {
                record.stamps.insert(v.field.clone(), v.stamp);
            }
            record.fields.insert(v.field, v.value);
        }
        records.push(record);
    };
    for v in values {
        // A field twice in one run would collapse: start a new record then.
        let same = run
            .last()
            .is_some_and(|l| l.entity == v.entity && l.kind == v.kind)
            && !run.iter().any(|r| r.field == v.field);
        if !same {
            close(&mut run);
        }
        run.push(v);
    }
    close(&mut run);
    records
}

/// The values of grouped records, field by field.
pub fn expand<V: Clone>(records: &[RecordValues<V>]) -> impl Iterator<Item = FieldValue<V>> + '_ {
    records.iter().cloned().flat_map(RecordValues::into_values)
}

impl<V> RecordValues<V> {
    /// The stamp of one of the record's fields.
    pub fn stamp_of(&self, field: &str) -> Stamp {
        self.stamps.get(field).copied().unwrap_or(self.stamp)
    }

    /// The record's values, field by field, moved out of it.
    pub fn into_values(mut self) -> impl Iterator<Item = FieldValue<V>> {
        let fields = std::mem::take(&mut self.fields);
        fields.into_iter().map(move |(field, value)| FieldValue {
            kind: self.kind.clone(),
            entity: self.entity,
            stamp: self.stamp_of(&field),
            field,
            value,
            extra: BTreeMap::new(),
        })
    }
}

/// One page of a pull, its values parsed (`V` = [`Value`]) or, as a server sends them, the JSON
/// it stored passed through unparsed (`V` = `Box<serde_json::value::RawValue>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullResponse<V = Value> {
    /// Server time when answering.
    pub server_time_ms: u64,
    /// Current values that changed after the cursor, one by one (protocol 1).
    #[serde(default = "Vec::new")]
    pub values: Vec<FieldValue<V>>,
    /// The same, grouped by record (protocol 2 on).
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<RecordValues<V>>,
    /// Entities that left the caller's scope: remove them from the device.
    #[serde(default)]
    pub purged: Vec<Uuid>,
    /// Where the next pull starts.
    pub next_cursor: Cursor,
    /// Whether more pages follow right away.
    pub more: bool,
    /// The caller's villages as the server holds them when answering (none from servers before
    /// it; an empty list when every village was taken away): a phone keeps its session's
    /// villages current with them, so a village given or taken away since sign-in is known at
    /// the next sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub villages: Option<Vec<String>>,
    /// Watch-list hits on persons of the caller's villages raised lately, newest first, on the
    /// last page of a pull only (none from servers before them): a phone tells the officer of
    /// those it has not told before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch_hits: Vec<WatchHit>,
    /// Unknown members, relayed.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A person of the caller's villages matched the station's watch list. Which rule matched is
/// told by its kind only: the list itself (and an administrator's note on it) stays on the
/// server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchHit {
    /// The alert's number on the server: a phone tells each once.
    pub id: i64,
    /// The person.
    pub entity: Uuid,
    /// What matched: `id_number` (the person's number is on the list) or `region` (the
    /// person's place of origin is).
    pub rule: String,
    /// When the server raised it.
    pub raised_ms: u64,
}

impl<V> PullResponse<V> {
    /// Whether the page after this one may be fetched before this one is applied: there is
    /// more, and this page drops no records (its cursor is the device's proof to the server
    /// that it dropped them, so it must not be presented before the page is applied).
    pub fn continues(&self) -> bool {
        self.more && self.purged.is_empty()
    }

    /// Every value of the page, whichever way it came, moved out of it.
    pub fn into_values(self) -> impl Iterator<Item = FieldValue<V>> {
        self.values
            .into_iter()
            .chain(self.records.into_iter().flat_map(RecordValues::into_values))
    }

    /// How many values the page holds.
    pub fn value_count(&self) -> usize {
        self.values.len() + self.records.iter().map(|r| r.fields.len()).sum::<usize>()
    }
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
            protocol: GROUPED_PULL,
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
            }],
            actions: Vec::new(),
        }
    }

    #[test]
    fn a_push_of_actions_reads_as_the_same_changes_and_is_pinned() {
        let changes = push().changes;
        let request = PushRequest::of_actions(node(1), changes.clone());
        let expected = json!({
            "protocol": 3,
            "device": "00000000-0000-0000-0000-000000000001",
            "changes": [],
            "actions": [{
                "kind": "person",
                "entity": "00000000-0000-0000-0000-00000000002a",
                "stamp": "018bcfe568000001@00000000-0000-0000-0000-000000000001",
                "fields": [{"counter": 7, "field": "name", "value": "王芳"}]
            }]
        });
        assert_eq!(serde_json::to_value(&request).unwrap(), expected);
        let parsed: PushRequest = serde_json::from_value(expected).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed.into_changes(), changes);
        // A push of an earlier version, without `actions`, reads as before.
        let old: PushRequest =
            serde_json::from_value(serde_json::to_value(push()).unwrap()).unwrap();
        assert_eq!(old.into_changes(), changes);
    }

    #[test]
    fn push_json_is_pinned() {
        let expected = json!({
            "protocol": 2,
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
    fn unknown_kinds_and_statuses_survive_a_round_trip_and_answers_keep_unknown_members() {
        let mut value = serde_json::to_value(push()).unwrap();
        value["priority"] = json!("high");
        value["changes"][0]["kind"] = json!("boat");
        value["changes"][0]["signature"] = json!({"alg": "ed25519"});
        let parsed: PushRequest = serde_json::from_value(value.clone()).unwrap();
        // A request's unknown members are skipped; its unknown kinds are kept.
        assert_eq!(parsed.changes[0].kind, "boat");
        value.as_object_mut().unwrap().remove("priority");
        value["changes"][0]
            .as_object_mut()
            .unwrap()
            .remove("signature");
        assert_eq!(serde_json::to_value(&parsed).unwrap(), value);

        let answer = json!({"server_time_ms": 5, "results": [
            {"counter": 7, "status": "deferred", "retry_after": 3}
        ]});
        let parsed: PushResponse = serde_json::from_value(answer).unwrap();
        assert_eq!(parsed.results[0].status, ChangeStatus::Unknown);
        assert_eq!(parsed.results[0].extra["retry_after"], 3);
        // A server of before the limit was told says none; one that tells it says how many.
        assert_eq!(parsed.max_changes, None);
        let told = PushResponse {
            max_changes: Some(20_000),
            ..parsed
        };
        let text = serde_json::to_string(&told).unwrap();
        assert!(text.contains(r#""max_changes":20000"#), "{text}");
        let back: PushResponse = serde_json::from_str(&text).unwrap();
        assert_eq!(back, told);
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
            records: Vec::new(),
            purged: vec![Uuid::from_u128(8)],
            next_cursor: Cursor("c42".into()),
            more: false,
            villages: None,
            watch_hits: Vec::new(),
            extra: BTreeMap::new(),
        };
        let text = serde_json::to_string(&page).unwrap();
        assert_eq!(
            text,
            r#"{"server_time_ms":1700000000123,"values":[{"kind":"vehicle","entity":"00000000-0000-0000-0000-000000000007","field":"plate","value":"粤L12345","stamp":"0000000000010000@00000000-0000-0000-0000-000000000002"}],"purged":["00000000-0000-0000-0000-000000000008"],"next_cursor":"c42","more":false}"#
        );
        assert_eq!(serde_json::from_str::<PullResponse>(&text).unwrap(), page);
        // A page that drops records ends a run of pages fetched ahead, as does the last one.
        let mut next = page.clone();
        next.more = true;
        assert!(!page.continues() && !next.continues());
        next.purged.clear();
        assert!(next.continues());
    }

    #[test]
    fn a_pull_asking_for_pages_names_them_and_one_that_does_not_is_as_before() {
        let mut ask = PullRequest {
            protocol: GROUPED_PULL,
            cursor: Some(Cursor("s1:441303006001".into())),
            limit: 5_000,
            pages: None,
            own_held_after: None,
        };
        let one = serde_json::to_string(&ask).unwrap();
        assert_eq!(
            one,
            r#"{"protocol":2,"cursor":"s1:441303006001","limit":5000}"#
        );
        ask.pages = Some(16);
        let text = serde_json::to_string(&ask).unwrap();
        assert_eq!(
            text,
            r#"{"protocol":2,"cursor":"s1:441303006001","limit":5000,"pages":16}"#
        );
        assert_eq!(serde_json::from_str::<PullRequest>(&text).unwrap(), ask);
    }

    #[test]
    fn grouped_pull_json_is_pinned() {
        let a = Stamp::new(Hlc::new(1, 0), node(2));
        let b = Stamp::new(Hlc::new(2, 0), node(3));
        let value = |field: &str, v: Value, stamp| FieldValue {
            kind: "vehicle".into(),
            entity: Uuid::from_u128(7),
            field: field.into(),
            value: v,
            stamp,
            extra: BTreeMap::new(),
        };
        let values = vec![
            value("plate", json!("粤L12345"), a),
            value("colour", json!("白"), b),
            value("village", json!("441303006001"), a),
        ];
        let records = group(values.clone());
        let text = serde_json::to_string(&records).unwrap();
        assert_eq!(
            text,
            r#"[{"kind":"vehicle","entity":"00000000-0000-0000-0000-000000000007","stamp":"0000000000010000@00000000-0000-0000-0000-000000000002","fields":{"colour":"白","plate":"粤L12345","village":"441303006001"},"stamps":{"colour":"0000000000020000@00000000-0000-0000-0000-000000000003"}}]"#
        );
        let mut back: Vec<FieldValue> = expand(&records).collect();
        back.sort_by(|x, y| x.field.cmp(&y.field));
        let mut sorted = values;
        sorted.sort_by(|x, y| x.field.cmp(&y.field));
        assert_eq!(back, sorted);
    }

    proptest::proptest! {
        /// A device's changes grouped into actions and read back are the same changes in the
        /// same order, whatever the run of records, fields, stamps and bases.
        #[test]
        fn actions_read_back_as_the_changes_they_were_made_of(
            rows in proptest::collection::vec((0u128..3, 0usize..4, 0u64..3, 0u8..50, proptest::bool::ANY), 0..60)
        ) {
            let fields = ["name", "phone", "village", "notes"];
            let changes: Vec<Change> = rows
                .iter()
                .enumerate()
                .map(|(i, &(entity, field, stamp, v, based))| Change {
                    id: ChangeId { device: node(1), counter: i as u64 + 1 },
                    kind: if entity % 2 == 0 { "person" } else { "house" }.into(),
                    entity: Uuid::from_u128(entity),
                    field: fields[field].into(),
                    value: json!(v),
                    stamp: Stamp::new(Hlc::new(stamp, 0), node(1)),
                    base: based.then(|| Stamp::new(Hlc::new(9, 0), node(2))),
                })
                .collect();
            let request = PushRequest::of_actions(node(1), changes.clone());
            let json = serde_json::to_string(&request).unwrap();
            let parsed: PushRequest = serde_json::from_str(&json).unwrap();
            proptest::prop_assert_eq!(parsed.len(), changes.len());
            proptest::prop_assert_eq!(parsed.into_changes(), changes);
        }

        /// Grouping loses, adds and alters no value, whatever the run of entities, fields and
        /// stamps (a field written twice in a row included).
        #[test]
        fn grouping_then_expanding_gives_the_values_back(
            rows in proptest::collection::vec((0u128..4, 0usize..4, 0u64..3, 0u8..50), 0..60)
        ) {
            let fields = ["name", "phone", "village", "notes"];
            let values: Vec<FieldValue> = rows
                .iter()
                .map(|&(entity, field, stamp, v)| FieldValue {
                    kind: if entity % 2 == 0 { "person" } else { "house" }.into(),
                    entity: Uuid::from_u128(entity),
                    field: fields[field].into(),
                    value: json!(v),
                    stamp: Stamp::new(Hlc::new(stamp, 0), node(1 + u128::from(stamp))),
                    extra: BTreeMap::new(),
                })
                .collect();
            let records = group(values.clone());
            let json = serde_json::to_string(&records).unwrap();
            let parsed: Vec<RecordValues> = serde_json::from_str(&json).unwrap();
            let back: Vec<FieldValue> = expand(&parsed).collect();
            let page = PullResponse {
                server_time_ms: 0,
                values: Vec::new(),
                records: parsed,
                purged: Vec::new(),
                next_cursor: Cursor("s0:".into()),
                more: false,
                villages: None,
                watch_hits: Vec::new(),
                extra: BTreeMap::new(),
            };
            proptest::prop_assert_eq!(page.value_count(), back.len());
            let key = |v: &FieldValue| (v.entity, v.field.clone(), v.stamp, v.value.to_string());
            let mut want: Vec<_> = values.iter().map(key).collect();
            let mut got: Vec<_> = back.iter().map(key).collect();
            want.sort();
            got.sort();
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert!(records.len() <= values.len());
        }

        /// A page built from stored JSON text, passed through unparsed as a server sends it, is
        /// byte for byte the page of the parsed values, and reads back as it.
        #[test]
        fn a_page_of_stored_json_is_the_page_of_the_parsed_values(
            rows in proptest::collection::vec((0u128..3, 0usize..3, 0u64..2, ".{0,6}", -3i64..3, 0u8..4), 0..40)
        ) {
            let fields = ["name", "phone", "notes"];
            let typed: Vec<FieldValue> = rows
                .iter()
                .map(|(entity, field, stamp, text, n, shape)| FieldValue {
                    kind: "person".into(),
                    entity: Uuid::from_u128(*entity),
                    field: fields[*field].into(),
                    value: match shape {
                        0 => json!(text),
                        1 => json!(n),
                        2 => json!({"text": text, "n": n}),
                        _ => Value::Null,
                    },
                    stamp: Stamp::new(Hlc::new(*stamp, 0), node(1)),
                    extra: BTreeMap::new(),
                })
                .collect();
            // As a server stores a value: its compact JSON text.
            let raw: Vec<FieldValue<Box<serde_json::value::RawValue>>> = typed
                .iter()
                .map(|v| FieldValue {
                    kind: v.kind.clone(),
                    entity: v.entity,
                    field: v.field.clone(),
                    value: serde_json::value::RawValue::from_string(v.value.to_string()).unwrap(),
                    stamp: v.stamp,
                    extra: BTreeMap::new(),
                })
                .collect();
            fn page<V>(records: Vec<RecordValues<V>>) -> PullResponse<V> {
                PullResponse {
                    server_time_ms: 1,
                    values: Vec::new(),
                    records,
                    purged: vec![Uuid::from_u128(9)],
                    next_cursor: Cursor("s1:x".into()),
                    more: true,
                    villages: None,
                    watch_hits: Vec::new(),
                    extra: BTreeMap::new(),
                }
            }
            let typed_page = page(group(typed));
            let sent = serde_json::to_string(&page(group(raw))).unwrap();
            proptest::prop_assert_eq!(&sent, &serde_json::to_string(&typed_page).unwrap());
            let read: PullResponse = serde_json::from_str(&sent).unwrap();
            proptest::prop_assert_eq!(read, typed_page);
        }
    }
}
