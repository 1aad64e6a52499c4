//! Push: a device's changes decided by the planner over what the server holds, then applied in one transaction with their server-owned fields, move-ins and alerts.

use crate::store::authorize::{self, Compacted, Decision, Facts, Held};
use crate::store::caller::Caller;
use crate::store::conn::{Conn, Optional, params};
use crate::store::error::StoreError;
use crate::store::holders;
use crate::store::scope::rescope;
use crate::store::scope::residences_naming;
use crate::store::scope::settle_device_holdings;
use crate::store::state::Pending;
use crate::store::values::Sequence;
use crate::store::values::corrupt;
use crate::store::values::held;
use crate::store::values::server_node;
use crate::store::values::text_of;
use crate::store::write::apply;
use crate::store::write::write_in;
use baylink_domain::date::CHINA_OFFSET_MINUTES;
use baylink_domain::{Date, Fields};
use baylink_sync::wire::{ChangeResult, ChangeStatus};
use baylink_sync::{Change, EntityState, Hlc, NodeId, Stamp, Versioned};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use uuid::Uuid;

/// Characters of a refusal's message kept and told, at most: a replay tells it again for each
/// change a push names by its counter, as often as the push names it.
const REFUSAL_CHARS: usize = 500;

/// What the server says of one change, kept for replays when it is a refusal.
pub(crate) fn refuse(
    tx: &Conn<'_>,
    device: &str,
    counter: u64,
    code: &str,
    message: &str,
) -> Result<ChangeResult, StoreError> {
    // A message may quote what the device sent (a field's name): characters a person cannot see
    // are shown as U+FFFD, in the answer as in the kept refusal (PostgreSQL's text holds no NUL).
    let message: String = message
        .chars()
        .take(REFUSAL_CHARS + 1)
        .map(
            |c| match baylink_domain::hidden_char(c.encode_utf8(&mut [0; 4])) {
                Some(_) => '\u{FFFD}',
                None => c,
            },
        )
        .collect();
    let message = baylink_domain::cut_to(&message, REFUSAL_CHARS);
    tx.prepare_cached(
        "INSERT INTO refusal (device, counter, code, message) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (device, counter) DO UPDATE SET code = excluded.code, message = excluded.message",
    )?
    .execute(params![device, counter as i64, code, message])?;
    Ok(ChangeResult {
        counter,
        status: ChangeStatus::Refused,
        code: Some(code.to_owned()),
        message: Some(message),
        extra: BTreeMap::new(),
    })
}

/// The answer first given to an already processed change.
pub(crate) fn replay(
    tx: &Conn<'_>,
    device: &str,
    counter: u64,
) -> Result<ChangeResult, StoreError> {
    let refused: Option<(String, String)> = tx
        .prepare_cached("SELECT code, message FROM refusal WHERE device = ?1 AND counter = ?2")?
        .query_row(params![device, counter as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(match refused {
        // Kept whole by servers before 2026-12-07.
        Some((code, message)) => ChangeResult {
            counter,
            status: ChangeStatus::Refused,
            code: Some(code),
            message: Some(baylink_domain::cut_to(&message, REFUSAL_CHARS)),
            extra: BTreeMap::new(),
        },
        None => ChangeResult::accepted(counter),
    })
}

/// The counters among `changes` the server refused before.
fn told_refused(
    tx: &Conn<'_>,
    device: &str,
    changes: &[Change],
) -> Result<HashSet<u64>, StoreError> {
    let counters = changes.iter().map(|c| c.id.counter);
    let (Some(low), Some(high)) = (counters.clone().min(), counters.max()) else {
        return Ok(HashSet::new());
    };
    let found = tx
        .prepare_cached(
            "SELECT counter FROM refusal WHERE device = ?1 AND counter BETWEEN ?2 AND ?3",
        )?
        .query_map(params![device, low as i64, high as i64], |r| {
            r.get::<_, i64>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(found.into_iter().map(|c| c as u64).collect())
}

/// Every stored record a push names, as [`authorize`] needs it: kind and villages, and the
/// current values of those the push writes. Read a statement per step for all of them, and
/// remembered in `pending` for the rest of the write.
pub(crate) fn held_records(
    tx: &Conn<'_>,
    pending: &mut Pending,
    changes: &[Change],
    today: Date,
) -> Result<HashMap<Uuid, Held>, StoreError> {
    let written: HashSet<Uuid> = changes.iter().map(|c| c.entity).collect();
    let mut records = HashMap::new();
    let named: Vec<Uuid> = authorize::named_records(changes).into_iter().collect();
    read_held(tx, pending, &named, &written, &mut records)?;
    // The records an edit of a natural key would collide with, with their values (deleted?).
    // A record read only as a reference's target has no values yet: read them.
    let valued = |records: &HashMap<Uuid, Held>, id: &Uuid| {
        records.get(id).is_some_and(|h| !h.state.is_empty())
    };
    let colliding: Vec<Uuid> = authorize::key_collisions(changes, &records, today)
        .into_iter()
        .filter(|id| !valued(&records, id))
        .collect();
    let all: HashSet<Uuid> = colliding.iter().copied().collect();
    read_held(tx, pending, &colliding, &all, &mut records)?;
    // And every live record already holding a key an edit gives (or an undeletion brings back).
    let mut holding = Vec::new();
    for ((kind, column), texts) in by_column(authorize::edited_keys(changes, &records)) {
        for holder in holders::holders_of_all(tx, &kind, column, &texts)? {
            let Ok(id) = Uuid::parse_str(&holder) else {
                continue;
            };
            if !valued(&records, &id) && !holding.contains(&id) {
                holding.push(id);
            }
        }
    }
    let all: HashSet<Uuid> = holding.iter().copied().collect();
    read_held(tx, pending, &holding, &all, &mut records)?;
    Ok(records)
}

/// Key texts grouped by the kind and column they are looked up in.
fn by_column(
    keys: BTreeSet<(String, &'static str, String)>,
) -> BTreeMap<(String, &'static str), Vec<String>> {
    let mut grouped: BTreeMap<(String, &'static str), Vec<String>> = BTreeMap::new();
    for (kind, column, text) in keys {
        grouped.entry((kind, column)).or_default().push(text);
    }
    grouped
}

/// The stored records among `ids` as the planner sees them, their values read for those in
/// `with_state`, put into `records`.
fn read_held(
    tx: &Conn<'_>,
    pending: &mut Pending,
    ids: &[Uuid],
    with_state: &HashSet<Uuid>,
    records: &mut HashMap<Uuid, Held>,
) -> Result<(), StoreError> {
    let texts: Vec<String> = ids.iter().map(|id| id.hyphenated().to_string()).collect();
    pending.prefetch(tx, &texts)?;
    pending.prefetch_scopes(tx, &texts)?;
    for (id, text) in ids.iter().zip(&texts) {
        let Some(loaded) = pending.stored(tx, text)? else {
            continue;
        };
        let kind = loaded.kind.clone();
        let state = if with_state.contains(id) {
            crate::store::state::versions(&loaded.state)
        } else {
            EntityState::new()
        };
        let villages = pending.scope(tx, text)?;
        records.insert(
            *id,
            Held {
                kind,
                villages,
                state,
            },
        );
    }
    Ok(())
}

/// Of the records `changes` write that the server does not hold, those its history knows
/// (deleted and compacted away since), with the newest stamp it took for each (one read for
/// the push).
fn compacted_records(
    tx: &Conn<'_>,
    changes: &[Change],
    held: &HashMap<Uuid, Held>,
) -> Result<HashMap<Uuid, Compacted>, StoreError> {
    let unknown: BTreeSet<String> = changes
        .iter()
        .filter(|c| !held.contains_key(&c.entity))
        .map(|c| c.entity.to_string())
        .collect();
    // Nothing was ever compacted on most servers: no lookup then.
    if unknown.is_empty() || crate::store::retention::compacted_upto(tx)? == 0 {
        return Ok(HashMap::new());
    }
    let list = serde_json::to_string(&unknown).unwrap_or_else(|_| "[]".into());
    let found: Vec<(String, String, String, String)> = tx
        .prepare_cached(
            "SELECT h.entity, h.kind, h.stamp, h.changes FROM compacted c JOIN history h ON h.pos = c.pos
             WHERE c.id IN (SELECT value FROM json_each(?1)) ORDER BY h.seq",
        )?
        .query_map([list], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let mut known: HashMap<Uuid, Compacted> = HashMap::new();
    for (entity, kind, stamp, changes) in found {
        let (Ok(entity), Ok(stamp)) = (Uuid::parse_str(&entity), stamp.parse::<Stamp>()) else {
            continue;
        };
        // `{field: [old value, old stamp, value, won]}`.
        let fields: BTreeMap<String, Value> =
            serde_json::from_str(&changes).map_err(|_| corrupt("history changes"))?;
        let at = known.entry(entity).or_insert(Compacted {
            newest: stamp,
            fields: BTreeSet::new(),
            kind,
            village: None,
        });
        at.newest = at.newest.max(stamp);
        if let Some(village) = fields
            .get("village")
            .filter(|c| c[3] == Value::Bool(true))
            .and_then(|c| c[2].as_str())
        {
            at.village = Some(village.to_owned());
        }
        at.fields.extend(fields.into_keys());
    }
    Ok(known)
}

/// Merges a device's push, in one transaction: each change decided by [`authorize::plan_push`]
/// from what the server holds, then accepted (durable when this returns) or refused with a code.
/// Changes already processed are answered as the first time.
pub fn push(
    conn: &Conn<'_>,
    caller: &Caller,
    changes: &[Change],
    now_ms: u64,
    max_ahead_ms: u64,
) -> Result<Vec<ChangeResult>, StoreError> {
    let tx = conn.transaction()?;
    let results = push_in(&tx, caller, changes, now_ms, max_ahead_ms)?;
    tx.commit()?;
    Ok(results)
}

/// [`push`] inside a transaction the caller holds and commits (pushes applied together:
/// `store::group`); nothing it accepts is durable before that commit.
pub(crate) fn push_in(
    tx: &Conn<'_>,
    caller: &Caller,
    changes: &[Change],
    now_ms: u64,
    max_ahead_ms: u64,
) -> Result<Vec<ChangeResult>, StoreError> {
    let tx = *tx;
    let mut seq = Sequence::begin(&tx)?;
    let last_counter: i64 = tx.query_row(
        "SELECT last_counter FROM device WHERE id = ?1",
        [&caller.device],
        |r| r.get(0),
    )?;
    let device: NodeId = caller
        .device
        .parse()
        .map_err(|_| StoreError::Backend("a push from no device".into()))?;
    let today = Date::from_unix_ms(now_ms as i64, CHINA_OFFSET_MINUTES);
    let records = held_records(&tx, &mut seq.pending, changes, today)?;
    let compacted = compacted_records(&tx, changes, &records)?;
    let facts = Facts {
        role: caller.role,
        villages: &caller.villages,
        device,
        last_counter: last_counter as u64,
        now_ms,
        max_ahead_ms,
        today,
        records: &records,
        compacted: &compacted,
    };
    let plan = authorize::plan_push(&facts, changes);
    let fills = plan.fills;
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut persons: BTreeSet<String> = BTreeSet::new();
    // Records created by this push, with the fields it wrote to each so far.
    let mut created_here: HashSet<String> = HashSet::new();
    let mut owned = Owned::default();
    // A new record's server-owned values, known before its changes are applied: who pushed it,
    // and when it was captured (its oldest accepted stamp).
    let username: String = tx
        .prepare_cached("SELECT username FROM account WHERE id = ?1")?
        .query_row([caller.account], |r| r.get(0))?;
    let mut captured: HashMap<Uuid, u64> = HashMap::new();
    for (change, decision) in changes.iter().zip(&plan.decisions) {
        if decision.accepted() {
            // The capture time the phone recorded counts when earlier than its stamps: a
            // capture the server refused goes again with a new stamp once corrected, and was
            // still captured when the officer met the person. Held within the same window.
            let claimed = (change.field == "created_at")
                .then(|| change.value.as_str())
                .flatten()
                .and_then(|t| baylink_domain::date::unix_ms_from_datetime(t, CHINA_OFFSET_MINUTES))
                .and_then(|ms| u64::try_from(ms).ok());
            let stamped = change.stamp.hlc.millis();
            let at = captured.entry(change.entity).or_insert(stamped);
            *at = (*at).min(stamped).min(claimed.unwrap_or(u64::MAX));
        }
    }
    // Changes an earlier copy of this push was refused (the device was told so, and may have
    // taken them back): accepted now, pulls send them back to the device.
    let told_refused = told_refused(&tx, &caller.device, changes)?;
    let mut results = Vec::with_capacity(changes.len());
    // The device's counter advances only by changes the server accepted.
    let mut newest = last_counter as u64;
    for (change, decision) in changes.iter().zip(plan.decisions) {
        let counter = change.id.counter;
        let (apply_it, own) = match decision {
            Decision::Replay => {
                results.push(replay(&tx, &caller.device, counter)?);
                continue;
            }
            Decision::Refuse { code, message } => {
                results.push(refuse(&tx, &caller.device, counter, code, &message)?);
                continue;
            }
            Decision::Apply => (true, false),
            Decision::Own => (false, true),
        };
        newest = newest.max(counter);
        let entity = change.entity.hyphenated().to_string();
        // A record the server did not hold before this push (the planner read every one it
        // names) is created by it.
        if !records.contains_key(&change.entity) && !created_here.contains(&entity) {
            seq.pending.create(&entity, &change.kind);
            created_here.insert(entity.clone());
        }
        let sent = owned.records.entry(entity.clone()).or_default();
        sent.kind.clone_from(&change.kind);
        sent.newest = sent.newest.max(change.stamp.hlc);
        // A new record's owned value sent as the server has it (an honest phone's who and when)
        // is applied in its place among the record's values, with the record's stamp: the feed
        // keeps a record's values together, and a pull sends them as one group.
        let kept = own
            && created_here.contains(&entity)
            && owned_when_new(
                &change.field,
                &username,
                &capture_time(captured.get(&change.entity).copied(), now_ms),
            )
            .is_some_and(|value| value == change.value);
        if kept {
            sent.done.insert(change.field.clone());
            let echo = told_refused.contains(&counter);
            apply(&tx, &mut seq, caller, change, echo, now_ms, &mut persons)?;
        } else if own {
            sent.sent.insert(change.field.clone(), change.clone());
        } else if apply_it {
            // An edit only when the record takes it: a value sent again as the server holds it
            // (after a restore) or one that loses leaves its review as it was.
            let echo = told_refused.contains(&counter);
            sent.edited |= apply(&tx, &mut seq, caller, change, echo, now_ms, &mut persons)?;
        }
        touched.insert(entity);
        results.push(ChangeResult::accepted(counter));
    }
    for (entity, fields) in fills {
        if let Some(record) = owned.records.get_mut(&entity.hyphenated().to_string()) {
            record.fills = fields;
        }
    }
    let new = New {
        created: &created_here,
        captured: &captured,
        username: &username,
    };
    write_owned(&tx, &mut seq, caller, &owned, &new, now_ms)?;
    let scopes = rescope(&tx, &mut seq, &touched, &persons)?;
    // A person of another village who came into one of the caller's by this push: never silent.
    let mut moved: Vec<(String, String)> = Vec::new();
    for (id, was) in &records {
        let person = id.hyphenated().to_string();
        let (Some(now), true) = (scopes.get(&person), was.kind == "person") else {
            continue;
        };
        // Her scope held her home village already: what is new is a village she moved into.
        let arrived = now
            .iter()
            .filter(|v| caller.villages.contains(v) && !was.villages.contains(*v));
        for village in arrived {
            crate::store::watch::note_move_in(&tx, &person, village, caller, now_ms)?;
            moved.push((person.clone(), village.clone()));
        }
    }
    settle_device_holdings(&tx, &mut seq, &touched, &scopes, caller)?;
    seq.save(&tx)?;
    for (person, village) in &moved {
        flag_old_residences(&tx, person, village, caller, now_ms)?;
    }
    crate::store::watch::raise(&tx, &touched, caller, now_ms)?;
    tx.execute(
        "UPDATE device SET last_counter = ?2, last_seen_ms = ?3 WHERE id = ?1",
        params![caller.device, newest as i64, now_ms as i64],
    )?;
    Ok(results)
}

/// A server-owned field's value for a record created now: who pushed it, when it was captured,
/// and its review state.
pub(crate) fn owned_when_new(field: &str, username: &str, captured_at: &str) -> Option<Value> {
    match field {
        "created_by" => Some(Value::String(username.to_owned())),
        "created_at" => Some(Value::String(captured_at.to_owned())),
        "review_status" => Some(Value::String("pending".into())),
        _ => None,
    }
}

/// When a record was captured: its capture's stamp or claimed time (the device's clock
/// corrected to server time, which the push already bounds ahead), held within the last 30 days:
/// a phone is not believed further back than that.
pub(crate) fn capture_time(oldest_ms: Option<u64>, now_ms: u64) -> String {
    let ms = oldest_ms
        .unwrap_or(now_ms)
        .clamp(now_ms.saturating_sub(CAPTURE_WINDOW_MS), now_ms);
    baylink_domain::date::datetime_from_unix_ms(ms as i64, CHINA_OFFSET_MINUTES)
}

/// How far back a capture time may lie (30 days).
pub(crate) const CAPTURE_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;

/// What the server knows of the records a push creates.
pub(crate) struct New<'a> {
    /// Records created, with the fields written to each.
    created: &'a HashSet<String>,
    /// When each record the push wrote was captured (ms): its oldest accepted stamp, or the
    /// capture time it claims when earlier.
    captured: &'a HashMap<Uuid, u64>,
    /// Who pushed.
    username: &'a str,
}

/// What a push accepted of each record, for the server-owned fields written after it.
#[derive(Default)]
pub(crate) struct Owned {
    records: BTreeMap<String, OwnedRecord>,
}

#[derive(Default)]
pub(crate) struct OwnedRecord {
    kind: String,
    /// The newest stamp among the record's accepted changes: the server's values come after it.
    newest: Hlc,
    /// Server-owned fields of a new record the device sent as the server has them, applied
    /// already.
    done: BTreeSet<String>,
    /// Server-owned fields the device sent (its values replaced by the server's).
    sent: BTreeMap<String, Change>,
    /// Whether an officer's field (a deletion too) was accepted.
    edited: bool,
    /// Derived fields the record lacks, as the server derived them.
    fills: Fields,
}

/// Writes the server-owned fields of the records a push touched: who created a record and when
/// (from the account and the server's clock, at its first acceptance, never again), and its review
/// state (pending when created, and again when an officer's edit changes a reviewed record). A
/// device that sent its own value of one gets the server's, stamped after it, at its next pull.
pub(crate) fn write_owned(
    tx: &Conn<'_>,
    seq: &mut Sequence,
    caller: &Caller,
    owned: &Owned,
    new_records: &New<'_>,
    now_ms: u64,
) -> Result<(), StoreError> {
    if owned.records.is_empty() {
        return Ok(());
    }
    let node = server_node(tx)?;
    for (entity, record) in &owned.records {
        let new = new_records.created.contains(entity);
        let mut writes: Vec<(&str, Option<Versioned>, Value)> = Vec::new();
        // Server-owned fields, and fields the server keeps as it holds them (a device that sent
        // one gets the held value back, stamped after its own).
        if new || !record.sent.is_empty() || record.edited {
            let others = record
                .sent
                .keys()
                .map(String::as_str)
                .filter(|f| !authorize::SERVER_OWNED.contains(f));
            let id = Uuid::parse_str(entity).map_err(|_| corrupt("entity"))?;
            let at = capture_time(new_records.captured.get(&id).copied(), now_ms);
            for field in authorize::SERVER_OWNED.into_iter().chain(others) {
                if record.done.contains(field) {
                    continue;
                }
                let stored = if new {
                    None
                } else {
                    seq.pending.held(tx, entity, field)?
                };
                let stored_value = stored.as_ref().map(|v| &v.value);
                let reviewed = stored_value
                    .and_then(Value::as_str)
                    .is_some_and(|s| s != "pending");
                let username = new_records.username;
                let value = match new.then(|| owned_when_new(field, username, &at)).flatten() {
                    Some(value) => value,
                    None if field == "review_status" && record.edited && reviewed => {
                        Value::String("pending".into())
                    }
                    None => stored_value.cloned().unwrap_or(Value::Null),
                };
                // A field the device sent is always written back, even as "nothing" (a `deleted`
                // the server never held): the device's own value must lose to the server's.
                let sent = record.sent.get(field);
                if sent.is_none()
                    && (stored_value == Some(&value) || (stored.is_none() && value.is_null()))
                {
                    continue;
                }
                // Sent again exactly as held (a phone after a restore), and held as it stays.
                let as_held = sent.is_some_and(|c| {
                    stored
                        .as_ref()
                        .is_some_and(|s| s.value == c.value && s.stamp == c.stamp)
                });
                if as_held && stored_value == Some(&value) {
                    continue;
                }
                writes.push((field, stored, value));
            }
        }
        for (field, value) in &record.fills {
            // Absent, or the planner would not fill it.
            writes.push((field, None, value.clone()));
        }
        for (field, stored, value) in writes {
            let after = stored
                .as_ref()
                .map_or(record.newest, |s| s.stamp.hlc.max(record.newest));
            let mut clock = baylink_sync::Clock::new(after, 0);
            let change = Change {
                id: baylink_sync::ChangeId {
                    device: node,
                    counter: 0,
                },
                kind: record.kind.clone(),
                entity: Uuid::parse_str(entity).map_err(|_| corrupt("entity"))?,
                field: field.to_owned(),
                value,
                stamp: Stamp::new(clock.tick(0), node),
                base: stored.as_ref().map(|s| s.stamp),
            };
            let mut persons = BTreeSet::new();
            apply(tx, seq, caller, &change, false, now_ms, &mut persons)?;
        }
    }
    Ok(())
}

/// A person moved into `village`: each of her open residences elsewhere goes back to its
/// officer (returned, with a comment saying where she went), who confirms and closes it; she does
/// not live in two places unnoticed. Written as the server, after the push's own writes.
pub(crate) fn flag_old_residences(
    tx: &Conn<'_>,
    person: &str,
    village: &str,
    caller: &Caller,
    now_ms: u64,
) -> Result<(), StoreError> {
    let name: String = tx
        .query_row("SELECT name FROM village WHERE code = ?1", [village], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or_else(|| village.to_owned());
    for residence in residences_naming(tx, "person", person)? {
        let open = held(tx, &residence, "moved_out")?.is_none_or(|v| v.value.is_null())
            && held(tx, &residence, "deleted")?.is_none_or(|v| v.value != Value::Bool(true));
        let elsewhere = text_of(tx, &residence, "village")?.is_some_and(|v| v != village);
        let already = text_of(tx, &residence, "review_status")?.as_deref() == Some("returned");
        if !(open && elsewhere) || already {
            continue;
        }
        let Ok(id) = Uuid::parse_str(&residence) else {
            continue;
        };
        let comment = format!(
            "此人已在{name}登记新的居住信息：请核实，已搬走的请填写搬离日期 / she registered a new residence in {name}: check, and enter the move-out date if she left"
        );
        let fields = [
            ("review_status", Value::String("returned".into())),
            ("review_comment", Value::String(comment)),
        ];
        write_in(tx, caller.account, &id, &fields, now_ms)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    // Helpers here are part of the tests: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::Db;

    #[test]
    fn a_refusal_is_kept_and_told_again_within_its_length() {
        let db = Db::open_in_memory().unwrap();
        db.call_blocking(|c| {
            let long = "字".repeat(1 << 20);
            let told = refuse(c, "phone", 7, "invalid", &long)?;
            let kept = replay(c, "phone", 7)?;
            // One kept whole by an older server.
            c.execute(
                "INSERT INTO refusal (device, counter, code, message) VALUES ('phone', 8, 'invalid', ?1)",
                params![long],
            )?;
            let old = replay(c, "phone", 8)?;
            for result in [told, kept, old] {
                let message = result.message.unwrap();
                assert_eq!(message.chars().count(), REFUSAL_CHARS + 1);
                assert!(message.ends_with('…'));
            }
            // A short one is kept as it is.
            let short = refuse(c, "phone", 9, "invalid", "village：不在您的辖区")?;
            assert_eq!(short.message.as_deref(), Some("village：不在您的辖区"));
            Ok(())
        })
        .unwrap();
    }
}
