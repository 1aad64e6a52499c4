//! Push and pull: merging devices' changes into the server's state, the history, conflicts and
//! scopes; and serving each device the current values of its villages after a cursor.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use baylink_domain::date::CHINA_OFFSET_MINUTES;
use baylink_domain::{Date, Fields};
use baylink_sync::wire::{ChangeResult, ChangeStatus, Cursor, FieldValue};
use baylink_sync::{Change, EntityState, Hlc, NodeId, Stamp, Versioned, plan_field};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::store::accounts::Role;
use crate::store::authorize::{self, Decision, Facts, Held};
use crate::store::error::StoreError;

/// Who is syncing.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Account id.
    pub account: i64,
    /// Role.
    pub role: Role,
    /// Device id (node id).
    pub device: String,
    /// Villages the caller sees and writes.
    pub villages: Vec<String>,
}

/// The sequence inside one write: numbers handed out in memory, the last saved once before the
/// commit, not a statement per accepted change. The one writer connection means no other
/// transaction hands out numbers meanwhile.
struct Sequence {
    /// The last number issued before this write.
    start: i64,
    /// The last number issued.
    last: i64,
}

impl Sequence {
    fn begin(tx: &Transaction<'_>) -> Result<Sequence, StoreError> {
        let last = current_seq(tx)?;
        Ok(Sequence { start: last, last })
    }

    fn next(&mut self) -> i64 {
        self.last += 1;
        self.last
    }

    /// Must run before the transaction commits.
    fn save(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        if self.last != self.start {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'seq'")?
                .execute([self.last.to_string()])?;
        }
        Ok(())
    }
}

/// The last sequence number issued.
pub fn current_seq(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'seq'",
        [],
        |r| r.get(0),
    )?)
}

fn held(tx: &Connection, entity: &str, field: &str) -> Result<Option<Versioned>, StoreError> {
    let row: Option<(String, i64, String)> = tx
        .prepare_cached("SELECT value, hlc, node FROM field WHERE entity = ?1 AND field = ?2")?
        .query_row(params![entity, field], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    row.map(|(value, hlc, node)| stored_version(&value, hlc, &node))
        .transpose()
}

/// A value as `field` stores it (JSON text, packed clock, node), read back.
fn stored_version(value: &str, hlc: i64, node: &str) -> Result<Versioned, StoreError> {
    let value = serde_json::from_str(value).map_err(|_| corrupt("value"))?;
    let node: NodeId = node.parse().map_err(|_| corrupt("node"))?;
    Ok(Versioned::new(
        value,
        Stamp::new(Hlc::from_u64(hlc as u64), node),
    ))
}

fn text_of(tx: &Connection, entity: &str, field: &str) -> Result<Option<String>, StoreError> {
    Ok(held(tx, entity, field)?.and_then(|v| v.value.as_str().map(str::to_owned)))
}

fn scope_of(tx: &Connection, entity: &str) -> Result<BTreeSet<String>, StoreError> {
    let mut stmt = tx.prepare_cached("SELECT village FROM scope WHERE entity = ?1")?;
    let rows = stmt.query_map([entity], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What the server says of one change, kept for replays when it is a refusal.
fn refuse(
    tx: &Transaction<'_>,
    device: &str,
    counter: u64,
    code: &str,
    message: String,
) -> Result<ChangeResult, StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO refusal (device, counter, code, message) VALUES (?1, ?2, ?3, ?4)",
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

fn accepted(counter: u64) -> ChangeResult {
    ChangeResult {
        counter,
        status: ChangeStatus::Accepted,
        code: None,
        message: None,
        extra: BTreeMap::new(),
    }
}

/// The answer first given to an already processed change.
fn replay(tx: &Transaction<'_>, device: &str, counter: u64) -> Result<ChangeResult, StoreError> {
    let refused: Option<(String, String)> = tx
        .prepare_cached("SELECT code, message FROM refusal WHERE device = ?1 AND counter = ?2")?
        .query_row(params![device, counter as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(match refused {
        Some((code, message)) => ChangeResult {
            counter,
            status: ChangeStatus::Refused,
            code: Some(code),
            message: Some(message),
            extra: BTreeMap::new(),
        },
        None => accepted(counter),
    })
}

/// Every stored record a push names, as [`authorize`] needs it: kind and villages, and the
/// current values of those the push writes.
fn held_records(
    tx: &Connection,
    changes: &[Change],
    today: Date,
) -> Result<HashMap<Uuid, Held>, StoreError> {
    let written: HashSet<Uuid> = changes.iter().map(|c| c.entity).collect();
    let mut records = HashMap::new();
    for id in authorize::named_records(changes) {
        if let Some(held) = held_record(tx, id, written.contains(&id))? {
            records.insert(id, held);
        }
    }
    // The records an edit of a natural key would collide with, with their values (deleted?).
    // A record read only as a reference's target has no values yet: read them.
    let valued = |records: &HashMap<Uuid, Held>, id: &Uuid| {
        records.get(id).is_some_and(|h| !h.state.is_empty())
    };
    for id in authorize::key_collisions(changes, &records, today) {
        if valued(&records, &id) {
            continue;
        }
        if let Some(held) = held_record(tx, id, true)? {
            records.insert(id, held);
        }
    }
    // And every live record already holding a key an edit gives (or an undeletion brings back).
    for (kind, column, value) in authorize::edited_keys(changes, &records) {
        let holders: Vec<String> = if column == "address_code" {
            // Values are stored as JSON; deleted houses are told apart by their state.
            let json = Value::String(value).to_string();
            tx.prepare_cached(
                "SELECT entity FROM field WHERE field = 'address_code' AND value = ?1 LIMIT 8",
            )?
            .query_map([json], |r| r.get(0))?
            .collect::<Result<_, _>>()?
        } else {
            tx.prepare_cached(&format!(
                "SELECT entity FROM summary WHERE {column} = ?1 AND kind = ?2 AND deleted = 0 LIMIT 8"
            ))?
            .query_map(params![value, kind], |r| r.get(0))?
            .collect::<Result<_, _>>()?
        };
        for holder in holders {
            let Ok(id) = Uuid::parse_str(&holder) else {
                continue;
            };
            if valued(&records, &id) {
                continue;
            }
            if let Some(held) = held_record(tx, id, true)? {
                records.insert(id, held);
            }
        }
    }
    Ok(records)
}

/// One stored record as the planner sees it, its values read when `with_state`.
fn held_record(tx: &Connection, id: Uuid, with_state: bool) -> Result<Option<Held>, StoreError> {
    let text = id.hyphenated().to_string();
    let kind: Option<String> = tx
        .prepare_cached("SELECT kind FROM entity WHERE id = ?1")?
        .query_row([&text], |r| r.get(0))
        .optional()?;
    let Some(kind) = kind else {
        return Ok(None);
    };
    let state = if with_state {
        state_of(tx, &text)?
    } else {
        EntityState::new()
    };
    let villages = scope_of(tx, &text)?;
    Ok(Some(Held {
        kind,
        villages,
        state,
    }))
}

/// A record's current values with their stamps.
fn state_of(tx: &Connection, entity: &str) -> Result<EntityState, StoreError> {
    let mut stmt =
        tx.prepare_cached("SELECT field, value, hlc, node FROM field WHERE entity = ?1")?;
    let mut rows = stmt.query([entity])?;
    let mut state = EntityState::new();
    while let Some(r) = rows.next()? {
        let value = r.get_ref(1)?.as_str().map_err(|_| corrupt("value"))?;
        let node = r.get_ref(3)?.as_str().map_err(|_| corrupt("node"))?;
        state.insert(r.get(0)?, stored_version(value, r.get(2)?, node)?);
    }
    Ok(state)
}

/// The server's own node id, which stamps what the server writes.
fn server_node(tx: &Connection) -> Result<NodeId, StoreError> {
    tx.query_row("SELECT value FROM meta WHERE key = 'node'", [], |r| {
        r.get::<_, String>(0)
    })?
    .parse()
    .map_err(|_| StoreError::Backend("server node id".into()))
}

/// Merges a device's push, in one transaction: each change decided by [`authorize::plan_push`]
/// from what the server holds, then accepted (durable when this returns) or refused with a code.
/// Changes already processed are answered as the first time.
pub fn push(
    conn: &mut Connection,
    caller: &Caller,
    changes: &[Change],
    now_ms: u64,
    max_ahead_ms: u64,
) -> Result<Vec<ChangeResult>, StoreError> {
    let tx = conn.transaction()?;
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
    let records = held_records(&tx, changes, today)?;
    let facts = Facts {
        role: caller.role,
        villages: &caller.villages,
        device,
        last_counter: last_counter as u64,
        now_ms,
        max_ahead_ms,
        today,
        records: &records,
    };
    let plan = authorize::plan_push(&facts, changes);
    let fills = plan.fills;
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut persons: BTreeSet<String> = BTreeSet::new();
    // Records created by this push, with the fields it wrote to each so far.
    let mut created_here: HashMap<String, HashSet<String>> = HashMap::new();
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
                results.push(refuse(&tx, &caller.device, counter, code, message)?);
                continue;
            }
            Decision::Apply => (true, false),
            Decision::Own => (false, true),
        };
        newest = newest.max(counter);
        let entity = change.entity.hyphenated().to_string();
        if !touched.contains(&entity) {
            let created = tx
                .prepare_cached(
                    "INSERT INTO entity (id, kind, village) VALUES (?1, ?2, NULL) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![entity, change.kind])?;
            if created == 1 {
                created_here.insert(entity.clone(), HashSet::new());
            }
        }
        let sent = owned.records.entry(entity.clone()).or_default();
        sent.kind.clone_from(&change.kind);
        sent.newest = sent.newest.max(change.stamp.hlc);
        // A new record's owned value sent as the server has it (an honest phone's who and when)
        // is applied in its place among the record's values, with the record's stamp: the feed
        // keeps a record's values together, and a pull sends them as one group.
        let kept = own
            && created_here.contains_key(&entity)
            && owned_when_new(
                &change.field,
                &username,
                &capture_time(captured.get(&change.entity).copied(), now_ms),
            )
            .is_some_and(|value| value == change.value);
        if kept {
            sent.done.insert(change.field.clone());
            let absent = created_here
                .get_mut(&entity)
                .is_some_and(|written| written.insert(change.field.clone()));
            apply(&tx, &mut seq, caller, change, absent, now_ms, &mut persons)?;
        } else if own {
            sent.sent.insert(change.field.clone(), change.clone());
        } else if apply_it {
            sent.edited = true;
            // A record this push created holds only the fields this push wrote: no lookup for
            // the others (most of an ingest's changes).
            let absent = created_here
                .get_mut(&entity)
                .is_some_and(|written| written.insert(change.field.clone()));
            apply(&tx, &mut seq, caller, change, absent, now_ms, &mut persons)?;
        }
        touched.insert(entity);
        results.push(accepted(counter));
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
            crate::store::alerts::note_move_in(&tx, &person, village, caller, now_ms)?;
            moved.push((person.clone(), village.clone()));
        }
    }
    settle_device_holdings(&tx, &mut seq, &touched, &scopes, caller)?;
    seq.save(&tx)?;
    for (person, village) in &moved {
        flag_old_residences(&tx, person, village, caller, now_ms)?;
    }
    crate::store::alerts::raise(&tx, &touched, caller, now_ms)?;
    tx.execute(
        "UPDATE device SET last_counter = ?2, last_seen_ms = ?3 WHERE id = ?1",
        params![caller.device, newest as i64, now_ms as i64],
    )?;
    tx.commit()?;
    Ok(results)
}

/// A server-owned field's value for a record created now: who pushed it, when it was captured,
/// and its review state.
fn owned_when_new(field: &str, username: &str, captured_at: &str) -> Option<Value> {
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
fn capture_time(oldest_ms: Option<u64>, now_ms: u64) -> String {
    let ms = oldest_ms
        .unwrap_or(now_ms)
        .clamp(now_ms.saturating_sub(CAPTURE_WINDOW_MS), now_ms);
    baylink_domain::date::datetime_from_unix_ms(ms as i64, CHINA_OFFSET_MINUTES)
}

/// How far back a capture time may lie (30 days).
const CAPTURE_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;

/// What the server knows of the records a push creates.
struct New<'a> {
    /// Records created, with the fields written to each.
    created: &'a HashMap<String, HashSet<String>>,
    /// When each record the push wrote was captured (ms): its oldest accepted stamp, or the
    /// capture time it claims when earlier.
    captured: &'a HashMap<Uuid, u64>,
    /// Who pushed.
    username: &'a str,
}

/// What a push accepted of each record, for the server-owned fields written after it.
#[derive(Default)]
struct Owned {
    records: BTreeMap<String, OwnedRecord>,
}

#[derive(Default)]
struct OwnedRecord {
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
fn write_owned(
    tx: &Transaction<'_>,
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
        let new = new_records.created.contains_key(entity);
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
                let stored = if new { None } else { held(tx, entity, field)? };
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
                extra: BTreeMap::new(),
            };
            let absent = stored.is_none();
            let mut persons = BTreeSet::new();
            apply(tx, seq, caller, &change, absent, now_ms, &mut persons)?;
        }
    }
    Ok(())
}

/// Writes fields of a record as the server (a reviewer's decision, a settled conflict): an
/// ordinary write with the server's node id, stamped after every value it replaces, through the
/// same merge, history and scope as a device's push. The device id in the history is `console`.
pub fn server_write(
    conn: &mut Connection,
    account: i64,
    entity: &Uuid,
    fields: &[(&str, Value)],
    now_ms: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    write_in(&tx, account, entity, fields, now_ms)?;
    tx.commit()?;
    Ok(())
}

/// [`server_write`] inside a caller's transaction, so that several writes land together.
pub fn write_in(
    tx: &Transaction<'_>,
    account: i64,
    entity: &Uuid,
    fields: &[(&str, Value)],
    now_ms: u64,
) -> Result<(), StoreError> {
    let id = entity.hyphenated().to_string();
    let mut seq = Sequence::begin(tx)?;
    let kind: String = tx
        .query_row("SELECT kind FROM entity WHERE id = ?1", [&id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("no record {id}")))?;
    let node: NodeId = tx
        .query_row("SELECT value FROM meta WHERE key = 'node'", [], |r| {
            r.get::<_, String>(0)
        })?
        .parse()
        .map_err(|_| StoreError::Backend("server node id".into()))?;
    let last: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'clock'", [], |r| {
            r.get(0)
        })
        .optional()?;
    let mut clock = baylink_sync::Clock::new(
        Hlc::from_u64(last.and_then(|v| v.parse().ok()).unwrap_or(0)),
        0,
    );
    // The bases, read once: the new stamp must come after each of them.
    let mut bases = Vec::with_capacity(fields.len());
    for (field, _) in fields {
        let base = held(tx, &id, field)?.map(|h| h.stamp);
        if let Some(b) = base {
            clock.observe(b.hlc);
        }
        bases.push(base);
    }
    let mut changes = Vec::with_capacity(fields.len());
    let stamp = Stamp::new(clock.tick(now_ms), node);
    for ((field, value), base) in fields.iter().zip(bases) {
        changes.push(Change {
            id: baylink_sync::ChangeId {
                device: node,
                counter: 0,
            },
            kind: kind.clone(),
            entity: *entity,
            field: (*field).to_owned(),
            value: value.clone(),
            stamp,
            base,
            extra: BTreeMap::new(),
        });
    }
    let caller = Caller {
        account,
        role: Role::Reviewer,
        device: "console".into(),
        villages: Vec::new(),
    };
    let mut persons = BTreeSet::new();
    for change in &changes {
        apply(tx, &mut seq, &caller, change, false, now_ms, &mut persons)?;
    }
    rescope(tx, &mut seq, &BTreeSet::from([id]), &persons)?;
    seq.save(tx)?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('clock', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [clock.last().as_u64().to_string()],
    )?;
    Ok(())
}

/// Approves a record, or returns it to its officer with a comment; the decision reaches the
/// officer's device at its next sync. Reviewers decide on their station's villages only.
pub fn review(
    conn: &mut Connection,
    reviewer: &Caller,
    entity: &Uuid,
    approve: bool,
    comment: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let scope = scope_of(conn, &entity.hyphenated().to_string())?;
    let allowed = reviewer.role == Role::Admin
        || (reviewer.role == Role::Reviewer && scope.iter().any(|v| reviewer.villages.contains(v)));
    // Another station's record is answered as one that does not exist: nothing to learn.
    if !allowed {
        return Err(StoreError::NotFound(format!("no record {entity}")));
    }
    let comment = comment.trim();
    if !approve && comment.is_empty() {
        return Err(StoreError::Invalid(
            "comment: say why the record is returned".into(),
        ));
    }
    let status = if approve { "approved" } else { "returned" };
    let comment = if comment.is_empty() {
        Value::Null
    } else {
        Value::String(comment.to_owned())
    };
    let fields = [
        ("review_status", Value::String(status.into())),
        ("review_comment", comment),
    ];
    server_write(conn, reviewer.account, entity, &fields, now_ms)
}

/// Each record's villages as a write left them.
type Scopes = HashMap<String, BTreeSet<String>>;

/// Merges one accepted change to a record already in `entity`: history always, the field when
/// it wins, a conflict when it was concurrent. `absent`: the field is known not to be stored.
fn apply(
    tx: &Transaction<'_>,
    seq: &mut Sequence,
    caller: &Caller,
    change: &Change,
    absent: bool,
    now_ms: u64,
    persons: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    let entity = change.entity.hyphenated().to_string();
    let held = if absent {
        None
    } else {
        held(tx, &entity, &change.field)?
    };
    let incoming = change.version();
    let plan = plan_field(held.as_ref(), &incoming, change.base);
    let value_text = change.value.to_string();
    tx.prepare_cached(
        "INSERT INTO history (entity, kind, field, old_value, old_stamp, value, stamp, won, device, account, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        entity,
        change.kind,
        change.field,
        held.as_ref().map(|h| h.value.to_string()),
        held.as_ref().map(|h| h.stamp.to_string()),
        value_text,
        change.stamp.to_string(),
        plan.apply,
        caller.device,
        caller.account,
        now_ms as i64
    ])?;
    // Who captured a record, when, and its review are the server's and the console's, not data
    // two officers can disagree on: no conflict for a reviewer to settle.
    let owned = authorize::SERVER_OWNED.contains(&change.field.as_str())
        || authorize::CONSOLE_ONLY.contains(&change.field.as_str());
    if let (true, false, Some(held)) = (plan.concurrent, owned, held.as_ref()) {
        let (kept, lost) = if plan.apply {
            (&incoming, held)
        } else {
            (held, &incoming)
        };
        tx.prepare_cached(
            "INSERT INTO conflict (entity, kind, field, kept_value, kept_stamp, lost_value, lost_stamp, device, account, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            entity,
            change.kind,
            change.field,
            kept.value.to_string(),
            kept.stamp.to_string(),
            lost.value.to_string(),
            lost.stamp.to_string(),
            caller.device,
            caller.account,
            now_ms as i64
        ])?;
    }
    if !plan.apply {
        return Ok(());
    }
    if change.kind == "residence" && change.field == "person" {
        if let Some(old) = held.as_ref().and_then(|h| h.value.as_str()) {
            persons.insert(old.to_owned());
        }
    }
    if held.is_some() {
        // The value it replaces leaves the feeds (the new one joins them when published).
        tx.prepare_cached(
            "DELETE FROM feed WHERE village IN (SELECT village FROM scope WHERE entity = ?1)
             AND seq = (SELECT seq FROM field WHERE entity = ?1 AND field = ?2)",
        )?
        .execute(params![entity, change.field])?;
    }
    let seq = seq.next();
    tx.prepare_cached(
        "INSERT INTO field (entity, field, value, hlc, node, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (entity, field) DO UPDATE SET value = excluded.value, hlc = excluded.hlc,
             node = excluded.node, seq = excluded.seq",
    )?
    .execute(params![
        entity,
        change.field,
        value_text,
        change.stamp.hlc.as_u64() as i64,
        change.stamp.node.to_string(),
        seq
    ])?;
    if change.field == "village" {
        tx.prepare_cached("UPDATE entity SET village = ?2 WHERE id = ?1")?
            .execute(params![entity, change.value.as_str()])?;
    }
    Ok(())
}

/// After a push, per touched record, what the caller's device may now hold: the caller's villages
/// it lies in are noted as written (see `device_village`); a record in none of them is purged for
/// the caller's villages — an accepted change whose record another officer's newer write moved
/// elsewhere (a person registered here and, later by the clock, there) would otherwise stay on the
/// device, as it never entered the caller's scope and no other purge would reach it.
fn settle_device_holdings(
    tx: &Transaction<'_>,
    seq: &mut Sequence,
    touched: &BTreeSet<String>,
    scopes: &Scopes,
    caller: &Caller,
) -> Result<(), StoreError> {
    if caller.villages.is_empty() {
        return Ok(());
    }
    let mut written = BTreeSet::new();
    for entity in touched {
        let scope = scopes.get(entity).ok_or_else(|| {
            StoreError::Backend(format!("no scope set for the written record {entity}"))
        })?;
        let mine: Vec<&String> = caller
            .villages
            .iter()
            .filter(|v| scope.contains(*v))
            .collect();
        if mine.is_empty() {
            for village in &caller.villages {
                tx.prepare_cached("INSERT INTO purge (seq, entity, village) VALUES (?1, ?2, ?3)")?
                    .execute(params![seq.next(), entity, village])?;
            }
        }
        written.extend(mine);
    }
    for village in written {
        tx.prepare_cached(
            "INSERT INTO device_village (device, village, purged_seq) VALUES (?1, ?2, NULL)
             ON CONFLICT (device, village) DO UPDATE SET purged_seq = NULL",
        )?
        .execute(params![caller.device, village])?;
    }
    Ok(())
}

/// Recomputes the scope of touched entities (and of the people whose residences changed);
/// an entity that enters a village is resent whole to it, one that leaves is purged there.
/// Then every value written or resent in this write goes into the feeds of its entity's villages.
/// Returns the villages it set, for the rest of the write.
fn rescope(
    tx: &Transaction<'_>,
    seq: &mut Sequence,
    touched: &BTreeSet<String>,
    persons: &BTreeSet<String>,
) -> Result<Scopes, StoreError> {
    for entity in touched {
        crate::store::console::refresh_summary(tx, entity)?;
    }
    let mut people = persons.clone();
    let mut scopes = Scopes::new();
    for entity in touched {
        let (kind, village): (String, Option<String>) = tx
            .prepare_cached("SELECT kind, village FROM entity WHERE id = ?1")?
            .query_row([entity], |r| Ok((r.get(0)?, r.get(1)?)))?;
        match kind.as_str() {
            "residence" => {
                people.extend(text_of(tx, entity, "person")?);
            }
            "person" => {
                people.insert(entity.clone());
                continue;
            }
            "house" => {
                for residence in residences_naming(tx, "house", entity)? {
                    people.extend(text_of(tx, &residence, "person")?);
                }
            }
            _ => {}
        }
        let village: BTreeSet<String> = village.into_iter().collect();
        set_scope(tx, seq, entity, &village)?;
        scopes.insert(entity.clone(), village);
    }
    // People whose scope may have grown (and their values been resent), beyond the touched.
    let mut resent = BTreeSet::new();
    for person in people {
        let Some(home) = village_of(tx, &person)? else {
            continue;
        };
        let mut villages: BTreeSet<String> = BTreeSet::new();
        villages.extend(home);
        for residence in residences_naming(tx, "person", &person)? {
            let moved_out = held(tx, &residence, "moved_out")?.is_some_and(|v| !v.value.is_null());
            let deleted =
                held(tx, &residence, "deleted")?.is_some_and(|v| v.value == Value::Bool(true));
            let Some(house) = text_of(tx, &residence, "house")?.filter(|_| !moved_out && !deleted)
            else {
                continue;
            };
            villages.extend(village_of(tx, &house)?.flatten());
        }
        if set_scope(tx, seq, &person, &villages)? && !touched.contains(&person) {
            resent.insert(person.clone());
        }
        scopes.insert(person, villages);
    }
    for entity in touched.iter().chain(&resent) {
        publish(tx, entity, seq.start)?;
    }
    Ok(scopes)
}

/// An entity's home village: `None` when there is no such entity, `Some(None)` when it has no
/// village.
fn village_of(tx: &Transaction<'_>, entity: &str) -> Result<Option<Option<String>>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT village FROM entity WHERE id = ?1")?
        .query_row([entity], |r| r.get(0))
        .optional()?)
}

/// A person moved into `village`: each of her open residences elsewhere goes back to its
/// officer (returned, with a comment saying where she went), who confirms and closes it; she does
/// not live in two places unnoticed. Written as the server, after the push's own writes.
fn flag_old_residences(
    tx: &Transaction<'_>,
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

/// [`residences_naming`]'s query: `?1` the field, `?2` the record named as a JSON value.
const RESIDENCES_NAMING: &str =
    "SELECT f.entity FROM field f JOIN entity e ON e.id = f.entity AND e.kind = 'residence'
     WHERE f.field IN ('person', 'house', 'owner', 'merged_into') AND f.field = ?1 AND f.value = ?2";

/// The residences whose `field` (`person` or `house`) names `target`, found through the index
/// of reference fields (`field_ref`, whose condition the query repeats so that it is used).
fn residences_naming(
    tx: &Transaction<'_>,
    field: &'static str,
    target: &str,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx.prepare_cached(RESIDENCES_NAMING)?;
    let rows = stmt.query_map(
        params![field, Value::String(target.to_owned()).to_string()],
        |r| r.get(0),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Puts an entity's values written or resent after `since` into the feeds of its villages.
fn publish(tx: &Transaction<'_>, entity: &str, since: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO feed (village, seq, entity, kind, field, value, hlc, node)
         SELECT s.village, f.seq, f.entity, e.kind, f.field, f.value, f.hlc, f.node FROM field f
         JOIN scope s ON s.entity = f.entity JOIN entity e ON e.id = f.entity
         WHERE f.entity = ?1 AND f.seq > ?2",
    )?
    .execute(params![entity, since])?;
    Ok(())
}

/// Takes an entity's current values out of one village's feed.
fn unpublish(tx: &Transaction<'_>, entity: &str, village: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "DELETE FROM feed WHERE village = ?2 AND seq IN (SELECT seq FROM field WHERE entity = ?1)",
    )?
    .execute(params![entity, village])?;
    Ok(())
}

/// Sets an entity's villages; true when its values were resent (it entered a village).
fn set_scope(
    tx: &Transaction<'_>,
    seq: &mut Sequence,
    entity: &str,
    villages: &BTreeSet<String>,
) -> Result<bool, StoreError> {
    let before = scope_of(tx, entity)?;
    if &before == villages {
        return Ok(false);
    }
    for gone in before.difference(villages) {
        tx.prepare_cached("DELETE FROM scope WHERE entity = ?1 AND village = ?2")?
            .execute(params![entity, gone])?;
        // A village's feed holds only records in the village.
        unpublish(tx, entity, gone)?;
        tx.prepare_cached("INSERT INTO purge (seq, entity, village) VALUES (?1, ?2, ?3)")?
            .execute(params![seq.next(), entity, gone])?;
    }
    let added: Vec<&String> = villages.difference(&before).collect();
    for village in &added {
        tx.prepare_cached("INSERT INTO scope (entity, village) VALUES (?1, ?2)")?
            .execute(params![entity, village])?;
    }
    if added.is_empty() {
        return Ok(false);
    }
    // Devices of the new villages are past the sequence numbers of the values written before
    // this write: those are resent, at new numbers, to every village (this write's own values
    // are published with theirs). Their rows at the old numbers go from the villages kept.
    let fields: Vec<String> = tx
        .prepare_cached("SELECT field FROM field WHERE entity = ?1 AND seq <= ?2")?
        .query_map(params![entity, seq.start], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if fields.is_empty() {
        return Ok(false);
    }
    for kept in before.intersection(villages) {
        unpublish(tx, entity, kept)?;
    }
    for field in fields {
        tx.prepare_cached("UPDATE field SET seq = ?3 WHERE entity = ?1 AND field = ?2")?
            .execute(params![entity, field, seq.next()])?;
    }
    Ok(true)
}

/// Where a pull resumes: after a sequence number, perhaps inside a snapshot of the device's
/// villages, and which villages' records the device may hold. The villages ride in the cursor
/// because the device stores the cursor in the same transaction as the page it came with: the
/// cursor it presents proves what it applied, where a note on the server could not tell a
/// delivered answer from a lost one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The device has every value and every drop up to this sequence number, once the snapshot
    /// it is inside (if any) is complete: a snapshot is taken at this number.
    pub after: i64,
    /// Inside a snapshot: the sequence number of the last value sent (values in the villages'
    /// feeds' order, up to `after`).
    pub snapshot: Option<i64>,
    /// Villages whose records the device may hold; `None` for cursors of earlier servers.
    pub held: Option<BTreeSet<String>>,
}

/// Parses a cursor this server issued: `s<seq>` (or `r<seq>`, from earlier servers), or
/// `b<seq>.<sent>` inside a snapshot taken at `seq` and sent up to `sent`; then `:` and the
/// villages the device holds, `.`-separated (`s1234:441303006001.441303006002`). Earlier
/// servers' snapshot cursors, `b<seq>.<record>.<field>`, start their snapshot again.
pub fn parse_cursor(cursor: Option<&Cursor>) -> Result<Position, StoreError> {
    let Some(Cursor(text)) = cursor else {
        return Ok(Position {
            after: 0,
            snapshot: None,
            held: Some(BTreeSet::new()),
        });
    };
    let bad = || StoreError::Invalid("cursor: not one this server issued".into());
    let (position, held) = match text.split_once(':') {
        Some((position, villages)) => {
            let held: BTreeSet<String> = villages
                .split('.')
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect();
            if held
                .iter()
                .any(|v| v.len() != 12 || !v.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(bad());
            }
            (position, Some(held))
        }
        None => (text.as_str(), None),
    };
    let (digits, snapshot) = match position.split_at_checked(1) {
        // `r` marked a restart of the feed from 0 on earlier servers: a feed position all the same.
        Some(("s" | "r", digits)) => (digits, None),
        Some(("b", rest)) => match rest.split('.').collect::<Vec<_>>()[..] {
            [digits, sent] => (digits, Some(number(sent).ok_or_else(bad)?)),
            // Inside an earlier server's snapshot, in record order: sent again from the start
            // (the device merges what it holds already as unchanged).
            [digits, entity, field]
                if Uuid::parse_str(entity).is_ok()
                    && !field.is_empty()
                    && field
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
            {
                (digits, Some(0))
            }
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    let after = number(digits).ok_or_else(bad)?;
    if snapshot.is_some_and(|sent| sent > after) {
        return Err(bad());
    }
    Ok(Position {
        after,
        snapshot,
        held,
    })
}

/// A sequence number in a cursor: digits, not negative.
fn number(digits: &str) -> Option<i64> {
    digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse::<i64>().ok())
        .flatten()
}

/// One page of a pull.
pub struct Page {
    /// Current values after the cursor, as stored JSON.
    pub values: Vec<SentValue>,
    /// Entities to remove from the device.
    pub purged: Vec<Uuid>,
    /// Where the next page starts.
    pub next: Cursor,
    /// Whether more pages follow.
    pub more: bool,
}

/// Everything in the caller's villages after `after`, at most `limit` values. A device whose
/// villages changed since its last complete pull is sent its new villages from the start and
/// told to drop what it may no longer hold.
pub fn pull(
    conn: &mut Connection,
    caller: &Caller,
    from: Position,
    limit: u32,
) -> Result<Page, StoreError> {
    let tx = conn.transaction()?;
    let (page, settle) = read_page(&tx, caller, from, limit, crate::store::now_ms())?;
    settle_pull(&tx, &settle)?;
    tx.commit()?;
    Ok(page)
}

/// What a pull leaves to write once its page is read: the device's bookkeeping.
#[derive(Clone, Debug)]
pub struct PullSettle {
    device: String,
    /// The cursor's position: notes of dropped villages up to it were applied by the device.
    after: i64,
    /// Notes of dropped villages that the device applied, to forget.
    forget: bool,
    /// Where the page ends: the lost villages' records are dropped by it.
    upto: i64,
    /// Villages the device wrote in but holds no more, whose drop this page tells.
    lost_written: bool,
    /// The caller's villages (JSON).
    villages: String,
    /// The caller's villages and the time, to record when the pull is complete and they
    /// changed or the last record is a minute old.
    complete: Option<(String, u64)>,
}

impl PullSettle {
    /// Whether anything is left to write.
    pub fn needed(&self) -> bool {
        self.forget || self.lost_written || self.complete.is_some()
    }
}

/// Writes a pull's bookkeeping (see [`read_page`]); nothing when nothing is needed.
pub fn settle_pull(conn: &Connection, settle: &PullSettle) -> Result<(), StoreError> {
    if settle.forget {
        conn.prepare_cached(
            "DELETE FROM device_village WHERE device = ?1 AND purged_seq IS NOT NULL AND purged_seq <= ?2",
        )?
        .execute(params![settle.device, settle.after])?;
    }
    if settle.lost_written {
        // The lost villages' records are dropped by this page (told again until it is applied).
        conn.prepare_cached(
            "UPDATE device_village SET purged_seq = ?2 WHERE device = ?1
             AND village NOT IN (SELECT value FROM json_each(?3))",
        )?
        .execute(params![settle.device, settle.upto, settle.villages])?;
    }
    if let Some((villages, now)) = &settle.complete {
        conn.execute(
            "UPDATE device SET villages = ?2, last_sync_ms = ?3 WHERE id = ?1",
            params![settle.device, villages, *now as i64],
        )?;
    }
    Ok(())
}

/// A value as a pull sends it: the stored JSON checked, not parsed into a tree and written again.
pub type SentValue = FieldValue<Box<RawValue>>;

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("stored {what}"))
}

/// Reads the columns `field, value, hlc, node` from `at` on, of a record already read.
fn sent_value(
    row: &rusqlite::Row<'_>,
    at: usize,
    kind: &str,
    entity: Uuid,
) -> Result<SentValue, StoreError> {
    let node = row.get_ref(at + 3)?.as_str().map_err(|_| corrupt("node"))?;
    Ok(FieldValue {
        kind: kind.to_owned(),
        entity,
        field: row.get(at)?,
        value: RawValue::from_string(row.get(at + 1)?).map_err(|_| corrupt("value"))?,
        stamp: Stamp::new(
            Hlc::from_u64(row.get::<_, i64>(at + 2)? as u64),
            node.parse().map_err(|_| corrupt("node"))?,
        ),
        extra: BTreeMap::new(),
    })
}

fn parse_entity(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|_| corrupt("entity"))
}

/// Current values of the caller's villages written or resent after `after` and up to `upto`,
/// in `seq` order: at most `limit + 1` from each village's feed, merged, so that the first
/// `limit` hold every value up to the last of them, whichever village it came from.
fn feed_values(
    tx: &Connection,
    villages: &[String],
    after: i64,
    upto: i64,
    limit: u32,
) -> Result<Vec<(i64, SentValue)>, StoreError> {
    let mut rows: Vec<(i64, SentValue)> = Vec::new();
    for village in villages {
        let mut stmt = tx.prepare_cached(
            "SELECT seq, entity, kind, field, value, hlc, node FROM feed
             WHERE village = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4",
        )?;
        let mut found = stmt.query(params![village, after, upto, i64::from(limit) + 1])?;
        while let Some(r) = found.next()? {
            let kind = r.get_ref(2)?.as_str().map_err(|_| corrupt("kind"))?;
            let entity = parse_entity(r.get_ref(1)?.as_str().map_err(|_| corrupt("entity"))?)?;
            rows.push((r.get(0)?, sent_value(r, 3, kind, entity)?));
        }
    }
    // A value of an entity in two of the caller's villages is in both feeds at one seq.
    rows.sort_unstable_by_key(|row| row.0);
    rows.dedup_by_key(|row| row.0);
    Ok(rows)
}

/// Reads one page of a pull from a snapshot (a reader connection will do) and says what is left
/// to write. A device new to some of its villages (a fresh one: all of them) is sent a snapshot
/// of its villages' records first (their feeds up to the number it is taken at), and then what
/// was written since; otherwise everything in its villages after its cursor; at most `limit` values a page.
/// A device whose villages changed is also told to drop what it may no longer hold.
pub fn read_page(
    tx: &Connection,
    caller: &Caller,
    from: Position,
    limit: u32,
    now_ms: u64,
) -> Result<(Page, PullSettle), StoreError> {
    let villages = serde_json::to_string(&caller.villages).unwrap_or_else(|_| "[]".into());
    let held: BTreeSet<String> = match from.held {
        Some(held) => held,
        // A cursor from before villages rode in it: what the server last recorded.
        None => tx
            .query_row(
                "SELECT villages FROM device WHERE id = ?1",
                [&caller.device],
                |r| r.get::<_, Option<String>>(0),
            )?
            .as_deref()
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_else(|| caller.villages.iter().cloned().collect()),
    };
    let now: BTreeSet<String> = caller.villages.iter().cloned().collect();
    let mut purged: BTreeSet<Uuid> = BTreeSet::new();
    let after = from.after;
    // Where this page's drops end: a snapshot is taken at the sequence number it starts at.
    let mut upto = after;
    let mut snapshot = from.snapshot;
    if now.difference(&held).next().is_some() {
        // New villages: everything in them is news to this device, even mid-snapshot: the
        // villages' feeds from the start, up to the number the snapshot is taken at.
        upto = current_seq(tx)?;
        snapshot = Some(0);
    }
    // Villages the device wrote records in may hold records no pull brought: drop those too,
    // until the device's cursor shows it applied a page that said so (then the note goes).
    let notes: Vec<(String, Option<i64>)> = tx
        .prepare_cached("SELECT village, purged_seq FROM device_village WHERE device = ?1")?
        .query_map([&caller.device], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let applied = |seq: &Option<i64>| seq.is_some_and(|s| s <= from.after);
    let forget = notes.iter().any(|(_, seq)| applied(seq));
    let written: Vec<&String> = notes
        .iter()
        .filter(|(_, seq)| !applied(seq))
        .map(|(v, _)| v)
        .collect();
    let lost_written = written.iter().any(|v| !caller.villages.contains(v));
    let mut held = held;
    held.extend(written.into_iter().cloned());
    let lost: Vec<&String> = held.difference(&now).collect();
    if !lost.is_empty() {
        let lost = serde_json::to_string(&lost).unwrap_or_else(|_| "[]".into());
        let mut stmt = tx.prepare(
            "SELECT DISTINCT s.entity FROM scope s WHERE s.village IN (SELECT value FROM json_each(?1))
             AND NOT EXISTS (SELECT 1 FROM scope t WHERE t.entity = s.entity AND t.village IN (SELECT value FROM json_each(?2)))",
        )?;
        let ids: Vec<String> = stmt
            .query_map(params![lost, villages], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        purged.extend(ids.iter().filter_map(|id| Uuid::parse_str(id).ok()));
    }
    let (values, more, next) = match snapshot {
        Some(sent) => {
            let mut rows = feed_values(tx, &caller.villages, sent, upto, limit)?;
            let inside = rows.len() > limit as usize;
            rows.truncate(limit as usize);
            // The feed after the snapshot's number follows its last value, on the next page.
            let next = match rows.last() {
                Some((seq, _)) if inside => format!("b{upto}.{seq}"),
                _ => format!("s{upto}"),
            };
            (rows.into_iter().map(|(_, row)| row).collect(), true, next)
        }
        None => {
            let mut rows = feed_values(tx, &caller.villages, after, i64::MAX, limit)?;
            let more = rows.len() > limit as usize;
            rows.truncate(limit as usize);
            upto = match rows.last() {
                Some((seq, _)) if more => *seq,
                _ => current_seq(tx)?,
            };
            let rows = rows.into_iter().map(|(_, row)| row).collect();
            (rows, more, format!("s{upto}"))
        }
    };
    if upto > after {
        let mut stmt = tx.prepare_cached(
            "SELECT DISTINCT p.entity FROM purge p WHERE p.seq > ?1 AND p.seq <= ?2
             AND p.village IN (SELECT value FROM json_each(?3))
             AND NOT EXISTS (SELECT 1 FROM scope s WHERE s.entity = p.entity AND s.village IN (SELECT value FROM json_each(?3)))",
        )?;
        let gone: Vec<String> = stmt
            .query_map(params![after, upto, villages], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        purged.extend(gone.iter().filter_map(|id| Uuid::parse_str(id).ok()));
    }
    // A complete pull records the device's villages and when it synced: each time they change,
    // else at most once a minute (a write per pull would queue every pull behind the writer).
    let complete = if more {
        None
    } else {
        let (stored, synced): (Option<String>, Option<i64>) = tx
            .prepare_cached("SELECT villages, last_sync_ms FROM device WHERE id = ?1")?
            .query_row([&caller.device], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or((None, None));
        let stale = synced.is_none_or(|t| now_ms.saturating_sub(t as u64) >= 60_000);
        (stored.as_deref() != Some(villages.as_str()) || stale).then(|| (villages.clone(), now_ms))
    };
    let settle = PullSettle {
        device: caller.device.clone(),
        after: from.after,
        forget,
        upto,
        lost_written,
        villages,
        complete,
    };
    // The page drops what the lost villages held and brings the new ones' records: once it is
    // applied, the device holds exactly the caller's villages (the new ones perhaps in part).
    let held: Vec<&str> = now.iter().map(String::as_str).collect();
    let page = Page {
        values,
        purged: purged.into_iter().collect(),
        next: Cursor(format!("{next}:{}", held.join("."))),
        more,
    };
    Ok((page, settle))
}

/// One history entry of a record.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HistoryEntry {
    /// Field.
    pub field: String,
    /// Value before (JSON), if any.
    pub old_value: Option<String>,
    /// Value written (JSON).
    pub value: String,
    /// Stamp of the write.
    pub stamp: String,
    /// Whether it won the merge.
    pub won: bool,
    /// Pushing device.
    pub device: Option<String>,
    /// Username of the author.
    pub username: Option<String>,
    /// When the server accepted it.
    pub at_ms: u64,
}

/// A record as the server holds it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RecordView {
    /// Kind.
    pub kind: String,
    /// Current fields, values as JSON.
    pub fields: BTreeMap<String, String>,
    /// Every accepted change, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// A record's current fields (JSON values) and its full history, oldest first.
pub fn record(conn: &Connection, id: &str) -> Result<Option<RecordView>, StoreError> {
    let kind: Option<String> = conn
        .query_row("SELECT kind FROM entity WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    let Some(kind) = kind else { return Ok(None) };
    let mut stmt =
        conn.prepare("SELECT field, value FROM field WHERE entity = ?1 ORDER BY field")?;
    let fields = stmt
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT h.field, h.old_value, h.value, h.stamp, h.won, h.device, a.username, h.at_ms
         FROM history h LEFT JOIN account a ON a.id = h.account WHERE h.entity = ?1 ORDER BY h.seq",
    )?;
    let history = stmt
        .query_map([id], |r| {
            Ok(HistoryEntry {
                field: r.get(0)?,
                old_value: r.get(1)?,
                value: r.get(2)?,
                stamp: r.get(3)?,
                won: r.get(4)?,
                device: r.get(5)?,
                username: r.get(6)?,
                at_ms: r.get::<_, i64>(7)? as u64,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(RecordView {
        kind,
        fields,
        history,
    }))
}

#[cfg(test)]
mod tests {
    // A failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn who_lives_where_is_read_through_the_index_of_reference_fields() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::Db::open(&dir.path().join("baylink.db")).unwrap();
        let plan: Vec<String> = db
            .read_blocking(|c| {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {RESIDENCES_NAMING}"))?;
                let rows = stmt.query_map(params!["house", "\"h\""], |r| r.get(3))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("INDEX field_ref (field=? AND value=?)")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN")),
            "{plan:?}"
        );
    }
}
