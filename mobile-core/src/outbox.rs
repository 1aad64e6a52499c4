//! The outbox: local changes the server has not yet made durable. One row per local action (its
//! field changes share one stamp); a change leaves only when the server accepted it. Changes the
//! server refused for good stay, marked, until the officer corrects the field.
//!
//! A change's value is usually not copied: while the record's field still carries the change's
//! stamp, the record holds the value, and the entry stays *lazy*. Before such a field is
//! overwritten (a later local edit, a newer remote value), `materialize` copies the value into
//! the entry. This halves what a capture writes to flash. A row whose changes are all lazy, with
//! no base and consecutive counters (a new record, typically) stores no list at all: its
//! changes are the record's fields that carry the row's stamp, in field order.

use std::collections::BTreeMap;

use baylink_sync::wire::{ChangeResult, ChangeStatus};
use baylink_sync::{Change, ChangeId, Hlc, NodeId, Stamp};
use rusqlite::{Connection, params};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::db;
use crate::error::{Error, Result};

/// A refusal the server gave a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Refusal {
    pub(crate) code: String,
    pub(crate) message: String,
}

/// One field change in an outbox row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The change counter.
    #[serde(rename = "c")]
    pub(crate) counter: u64,
    /// The field.
    #[serde(rename = "f")]
    pub(crate) field: String,
    /// The value, once copied out of the record; absent while the record holds it (lazy).
    /// Present and `null` means the change cleared the field.
    #[serde(
        rename = "v",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub(crate) value: Option<Value>,
    /// Stamp of the value the change replaced.
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    pub(crate) base: Option<Stamp>,
    /// The server's refusal, once refused.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub(crate) refusal: Option<Refusal>,
    /// The value the change replaced (the one its base stamp names), kept so that dismissing a
    /// refusal can put it back. Present and `null` means the field held `null`.
    #[serde(
        rename = "o",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub(crate) old: Option<Value>,
    /// The stamp of `old` when it is not `base`'s: a value pulled since that the change's own
    /// value outranked, which is what the server holds.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub(crate) old_stamp: Option<Stamp>,
}

/// A present member is `Some`, even when it is `null`; an absent one defaults to `None`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl Entry {
    /// A new change whose value the record holds.
    pub(crate) fn lazy(counter: u64, field: String, base: Option<Stamp>) -> Entry {
        Entry {
            counter,
            field,
            value: None,
            base,
            refusal: None,
            old: None,
            old_stamp: None,
        }
    }
}

struct Row {
    first_counter: u64,
    entity: Uuid,
    kind: String,
    hlc: u64,
    entries: Vec<Entry>,
    /// The record, when its entries were read from it (a row that stores no list).
    record: Option<db::StoredRecord>,
}

fn encode(entries: &[Entry]) -> String {
    serde_json::to_string(entries).unwrap_or_default()
}

fn decode(text: &str) -> Result<Vec<Entry>> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("outbox: {e}")))
}

/// Records the changes of one local action.
pub(crate) fn append(
    conn: &Connection,
    entity: Uuid,
    kind: &str,
    hlc: Hlc,
    entries: &[Entry],
) -> Result<()> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    let implied = entries.iter().enumerate().all(|(i, e)| {
        e.value.is_none()
            && e.base.is_none()
            && e.refusal.is_none()
            && e.old.is_none()
            && e.old_stamp.is_none()
            && e.counter == first.counter + i as u64
    });
    let changes = (!implied).then(|| encode(entries));
    conn.prepare_cached(
        "INSERT INTO outbox (first_counter, entity, kind, hlc, changes, pending)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        first.counter as i64,
        entity.hyphenated().to_string(),
        kind,
        hlc.as_u64() as i64,
        changes,
        entries.len() as i64
    ])?;
    Ok(())
}

const ROW_COLUMNS: &str = "first_counter, entity, kind, hlc, changes";

fn rows(
    conn: &Connection,
    node: NodeId,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {ROW_COLUMNS} FROM outbox {filter}"))?;
    let raw = stmt.query_map(args, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in raw {
        let (first, entity, kind, hlc, changes) = row?;
        let entity =
            Uuid::parse_str(&entity).map_err(|_| Error::Corrupt("outbox entity".into()))?;
        let (entries, record) = match changes {
            Some(changes) => (decode(&changes)?, None),
            None => {
                let record = db::load_record(conn, entity)?
                    .ok_or_else(|| Error::Corrupt("outbox record".into()))?;
                let stamp = Stamp::new(Hlc::from_u64(hlc as u64), node);
                (implied_entries(&record, first as u64, stamp), Some(record))
            }
        };
        out.push(Row {
            first_counter: first as u64,
            entity,
            kind,
            hlc: hlc as u64,
            entries,
            record,
        });
    }
    Ok(out)
}

/// The rows of `entity`'s actions stamped `hlc`: only that record's, should another record's
/// action carry the same stamp.
fn rows_stamped(conn: &Connection, node: NodeId, entity: Uuid, hlc: Hlc) -> Result<Vec<Row>> {
    rows(
        conn,
        node,
        "WHERE hlc = ?1 AND entity = ?2",
        params![hlc.as_u64() as i64, entity.hyphenated().to_string()],
    )
}

/// The changes of a row that stores no list: the record's fields written with its stamp.
fn implied_entries(record: &db::StoredRecord, first: u64, stamp: Stamp) -> Vec<Entry> {
    record
        .state
        .iter()
        .filter(|(_, v)| v.stamp == stamp)
        .enumerate()
        .map(|(i, (field, _))| Entry::lazy(first + i as u64, field.clone(), None))
        .collect()
}

/// Copies the value of the field written by this device's action stamped `hlc` into its
/// outbox entry, if that entry is still there and lazy: the record is about to lose the value.
pub(crate) fn materialize(
    conn: &Connection,
    node: NodeId,
    entity: Uuid,
    hlc: Hlc,
    field: &str,
    value: &Value,
) -> Result<()> {
    for mut row in rows_stamped(conn, node, entity, hlc)? {
        let mut changed = false;
        for entry in row
            .entries
            .iter_mut()
            .filter(|e| e.field == field && e.value.is_none())
        {
            entry.value = Some(value.clone());
            changed = true;
        }
        if changed {
            write_row(conn, &row)?;
        }
    }
    Ok(())
}

/// A pulled value lost to the value this device's action stamped `hlc` wrote, which still
/// waits in the outbox (or was refused): the value the server holds is that pulled one, if it
/// is newer than what the change replaced. Kept as the change's `old`, so that dismissing a
/// refusal puts back what the server holds.
pub(crate) fn note_lost(
    conn: &Connection,
    node: NodeId,
    entity: Uuid,
    hlc: Hlc,
    field: &str,
    remote: &baylink_sync::Versioned,
) -> Result<()> {
    for mut row in rows_stamped(conn, node, entity, hlc)? {
        let mut changed = false;
        for entry in row.entries.iter_mut().filter(|e| e.field == field) {
            let known = entry.old_stamp.or(entry.base);
            if known.is_none_or(|k| remote.stamp > k) {
                entry.old = Some(remote.value.clone());
                entry.old_stamp = Some(remote.stamp);
                changed = true;
            }
        }
        if changed {
            write_row(conn, &row)?;
        }
    }
    Ok(())
}

fn to_change(
    node: NodeId,
    row: &Row,
    entry: &Entry,
    record: Option<&db::StoredRecord>,
) -> Result<Change> {
    let stamp = Stamp::new(Hlc::from_u64(row.hlc), node);
    let value = match &entry.value {
        Some(value) => value.clone(),
        None => {
            let held = record.and_then(|r| r.state.get(&entry.field));
            match held {
                Some(v) if v.stamp == stamp => v.value.clone(),
                _ => {
                    return Err(Error::Corrupt(format!(
                        "outbox change {} lost its value",
                        entry.counter
                    )));
                }
            }
        }
    };
    Ok(Change {
        id: ChangeId {
            device: node,
            counter: entry.counter,
        },
        kind: row.kind.clone(),
        entity: row.entity,
        field: entry.field.clone(),
        value,
        stamp,
        base: entry.base,
    })
}

/// Pending changes in counter order, whole actions only: up to `limit` changes, or one action
/// when it alone has more.
pub(crate) fn pending(
    conn: &Connection,
    node: NodeId,
    after: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut after = after as i64;
    // Where each action of the batch starts in it, with its record.
    let mut starts: Vec<(usize, Uuid)> = Vec::new();
    let mut full = false;
    'pages: loop {
        let page = rows(
            conn,
            node,
            "WHERE pending > 0 AND first_counter > ?1 ORDER BY first_counter LIMIT 64",
            [after],
        )?;
        let Some(last) = page.last() else { break };
        after = last.first_counter as i64;
        for row in &page {
            let lazy = row
                .entries
                .iter()
                .any(|e| e.value.is_none() && e.refusal.is_none());
            // Read once: a row that stores no list was read from its record already.
            let loaded;
            let record = match (&row.record, lazy) {
                (Some(record), _) => Some(record),
                (None, true) => {
                    loaded = db::load_record(conn, row.entity)?;
                    loaded.as_ref()
                }
                (None, false) => None,
            };
            // Whole actions only: the server judges a new record by the changes of its action
            // together (its village above all), so a batch never ends inside one.
            let entries: Vec<&Entry> = row.entries.iter().filter(|e| e.refusal.is_none()).collect();
            if !out.is_empty() && out.len() + entries.len() > limit {
                full = true;
                break 'pages;
            }
            let action = entries
                .into_iter()
                .map(|entry| to_change(node, row, entry, record))
                .collect::<Result<Vec<_>>>()?;
            let size: usize = action
                .iter()
                .map(baylink_sync::wire::approximate_bytes)
                .sum();
            if !out.is_empty() && bytes + size > max_bytes {
                full = true;
                break 'pages;
            }
            bytes += size;
            starts.push((out.len(), row.entity));
            out.extend(action);
        }
    }
    if full {
        let end = whole_records(conn, &starts, &out)?;
        out.truncate(end);
    }
    Ok(out)
}

/// Where a full batch ends so that no record in it has actions left for the next: the server
/// judges a record it does not hold by what one push brings of it (a record refused, corrected
/// and sent again is two actions). The whole batch when that would leave nothing: one record
/// with more waiting than a push carries.
fn whole_records(conn: &Connection, starts: &[(usize, Uuid)], out: &[Change]) -> Result<usize> {
    let len = out.len();
    let Some(last) = out.last().map(|c| c.id.counter) else {
        return Ok(len);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE entity = ?1 AND pending > 0 AND first_counter > ?2)",
    )?;
    let mut split = std::collections::HashSet::new();
    for (_, entity) in starts {
        if !split.contains(entity)
            && stmt.query_row(params![entity.hyphenated().to_string(), last as i64], |r| {
                r.get::<_, bool>(0)
            })?
        {
            split.insert(*entity);
        }
    }
    // Ending before a record's first action may leave another record's actions on both sides:
    // end before that one's too, until none is.
    let mut end = len;
    loop {
        let before: std::collections::HashSet<Uuid> = starts
            .iter()
            .filter(|(at, _)| *at < end)
            .map(|(_, e)| *e)
            .collect();
        for (_, entity) in starts.iter().filter(|(at, _)| *at >= end) {
            if before.contains(entity) {
                split.insert(*entity);
            }
        }
        match starts.iter().find(|(at, e)| *at < end && split.contains(e)) {
            None => return Ok(end),
            Some((0, _)) => return Ok(len),
            Some((at, _)) => end = *at,
        }
    }
}

/// Whether an action still in the outbox has this clock reading.
pub(crate) fn stamp_waiting(conn: &Connection, hlc: Hlc) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox WHERE hlc = ?1)")?
        .query_row([hlc.as_u64() as i64], |r| r.get(0))?)
}

/// The stamps (clock readings) of every action still in the outbox.
pub(crate) fn pending_stamps(conn: &Connection) -> Result<std::collections::HashSet<u64>> {
    let mut stmt = conn.prepare_cached("SELECT hlc FROM outbox")?;
    let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
    rows.map(|r| Ok(r? as u64)).collect()
}

/// How many changes wait to be pushed (refused ones not counted).
pub(crate) fn pending_count(conn: &Connection) -> Result<u64> {
    let n: i64 = conn.query_row("SELECT COALESCE(SUM(pending), 0) FROM outbox", [], |r| {
        r.get(0)
    })?;
    Ok(n as u64)
}

/// Every outbox row of a record.
fn rows_of(conn: &Connection, node: NodeId, entity: Uuid) -> Result<Vec<Row>> {
    rows(
        conn,
        node,
        "WHERE entity = ?1",
        [entity.hyphenated().to_string()],
    )
}

/// How many records have changes waiting to be pushed.
pub(crate) fn pending_records(conn: &Connection) -> Result<u64> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(DISTINCT entity) FROM outbox WHERE pending > 0",
        [],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

/// The rows that hold counters `lo..=hi`: from the last row starting at or before `lo` up to
/// the rows starting at `hi`.
fn rows_holding(conn: &Connection, node: NodeId, lo: u64, hi: u64) -> Result<Vec<Row>> {
    rows(
        conn,
        node,
        &format!("WHERE {HOLDING} ORDER BY first_counter"),
        params![lo as i64, hi as i64],
    )
}

/// The rows that may hold counters `?1` to `?2`: from the one holding `?1` (the last starting at
/// or before it) to the last starting at or before `?2`.
const HOLDING: &str = "first_counter <= ?2 AND first_counter >= (
    SELECT COALESCE(MAX(first_counter), 0) FROM outbox WHERE first_counter <= ?1)";

/// Deletes the rows holding no list (a capture's: their changes are the record's fields with
/// the row's stamp, numbered from its first counter, `pending` of them) whose every change the
/// answer accepted, without loading their records. Returns how many changes they held.
fn whole_captures_accepted(
    conn: &Connection,
    answers: &BTreeMap<u64, &ChangeResult>,
    lo: u64,
    hi: u64,
) -> Result<usize> {
    let rows: Vec<(i64, i64)> = conn
        .prepare_cached(&format!(
            "SELECT first_counter, pending FROM outbox WHERE changes IS NULL AND {HOLDING}"
        ))?
        .query_map(params![lo as i64, hi as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut accepted = 0;
    for (first, pending) in rows {
        let counters = first as u64..(first + pending) as u64;
        let all = pending > 0
            && counters.clone().all(|c| {
                answers
                    .get(&c)
                    .is_some_and(|r| r.status == ChangeStatus::Accepted)
            });
        if all {
            conn.prepare_cached("DELETE FROM outbox WHERE first_counter = ?1")?
                .execute([first])?;
            accepted += counters.count();
        }
    }
    Ok(accepted)
}

/// Applies the server's answers: accepted changes leave the outbox, refused ones stay marked,
/// unknown answers leave the change pending. Returns (accepted, refused).
pub(crate) fn settle(
    conn: &Connection,
    node: NodeId,
    results: &[ChangeResult],
) -> Result<(usize, usize)> {
    let by_counter: BTreeMap<u64, &ChangeResult> = results.iter().map(|r| (r.counter, r)).collect();
    let (Some(&lo), Some(&hi)) = (by_counter.keys().next(), by_counter.keys().next_back()) else {
        return Ok((0, 0));
    };
    let (mut accepted, mut refused) = (whole_captures_accepted(conn, &by_counter, lo, hi)?, 0);
    let candidates = rows_holding(conn, node, lo, hi)?;
    // What each newly refused change replaced: a later change of ours over its value replaces,
    // as far as the server knows, that instead (the refused one never happened there).
    let mut undone: Vec<(Uuid, Stamp, Entry)> = Vec::new();
    for mut row in candidates {
        let before = row.entries.clone();
        let stamp = Stamp::new(Hlc::from_u64(row.hlc), node);
        row.entries
            .retain_mut(|entry| match by_counter.get(&entry.counter) {
                Some(r) if r.status == ChangeStatus::Accepted => {
                    accepted += 1;
                    false
                }
                Some(r) if r.status == ChangeStatus::Refused && entry.refusal.is_none() => {
                    refused += 1;
                    entry.refusal = Some(Refusal {
                        code: r.code.clone().unwrap_or_default(),
                        message: r.message.clone().unwrap_or_default(),
                    });
                    undone.push((row.entity, stamp, entry.clone()));
                    true
                }
                _ => true,
            });
        if row.entries != before {
            write_row(conn, &row)?;
        }
    }
    // In order: a change refused after one it replaced passes on what that one replaced. Each
    // record's rows are read once and written once.
    let mut passed: BTreeMap<(Uuid, String, Stamp), Entry> = BTreeMap::new();
    let mut loaded: BTreeMap<Uuid, Vec<(Row, bool)>> = BTreeMap::new();
    for (entity, stamp, refused) in undone {
        let source = passed
            .get(&(entity, refused.field.clone(), stamp))
            .cloned()
            .unwrap_or(refused);
        let rows = match loaded.entry(entity) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(
                rows_of(conn, node, entity)?
                    .into_iter()
                    .map(|r| (r, false))
                    .collect(),
            ),
        };
        let later = rows
            .iter_mut()
            .filter(|(row, _)| row.hlc > stamp.hlc.as_u64());
        for (row, changed) in later {
            let row_stamp = Stamp::new(Hlc::from_u64(row.hlc), node);
            for entry in row
                .entries
                .iter_mut()
                .filter(|e| e.field == source.field && e.base == Some(stamp))
            {
                entry.base = source.base;
                entry.old.clone_from(&source.old);
                entry.old_stamp = source.old_stamp;
                passed.insert((entity, entry.field.clone(), row_stamp), entry.clone());
                *changed = true;
            }
        }
    }
    for (row, changed) in loaded.into_values().flatten() {
        if changed {
            write_row(conn, &row)?;
        }
    }
    Ok((accepted, refused))
}

/// A change taken out of the outbox to be made again (restamped).
pub(crate) struct Taken {
    pub(crate) entity: Uuid,
    pub(crate) kind: String,
    pub(crate) field: String,
    pub(crate) value: Value,
    pub(crate) stamp: Stamp,
    pub(crate) base: Option<Stamp>,
    pub(crate) old: Option<Value>,
    pub(crate) old_stamp: Option<Stamp>,
}

/// Removes these changes from the outbox and returns them with their values.
pub(crate) fn take(conn: &Connection, node: NodeId, counters: &[u64]) -> Result<Vec<Taken>> {
    let (Some(&lo), Some(&hi)) = (counters.iter().min(), counters.iter().max()) else {
        return Ok(Vec::new());
    };
    let candidates = rows_holding(conn, node, lo, hi)?;
    let mut taken = Vec::new();
    for mut row in candidates {
        let (out, keep): (Vec<Entry>, Vec<Entry>) = row
            .entries
            .drain(..)
            .partition(|e| counters.contains(&e.counter));
        if out.is_empty() {
            row.entries = keep;
            continue;
        }
        let record = db::load_record(conn, row.entity)?;
        for entry in &out {
            let change = to_change(node, &row, entry, record.as_ref())?;
            taken.push(Taken {
                entity: row.entity,
                kind: row.kind.clone(),
                field: change.field,
                value: change.value,
                stamp: change.stamp,
                base: change.base,
                old: entry.old.clone(),
                old_stamp: entry.old_stamp,
            });
        }
        row.entries = keep;
        write_row(conn, &row)?;
    }
    Ok(taken)
}

fn write_row(conn: &Connection, row: &Row) -> Result<()> {
    if row.entries.is_empty() {
        conn.prepare_cached("DELETE FROM outbox WHERE first_counter = ?1")?
            .execute([row.first_counter as i64])?;
    } else {
        let pending = row.entries.iter().filter(|e| e.refusal.is_none()).count();
        let refused = row.entries.len() - pending;
        conn.prepare_cached(
            "UPDATE outbox SET changes = ?2, pending = ?3, refused = ?4 WHERE first_counter = ?1",
        )?
        .execute(params![
            row.first_counter as i64,
            encode(&row.entries),
            pending as i64,
            refused as i64
        ])?;
    }
    Ok(())
}

/// Drops refused changes of an entity, of these fields or (`None`) of all: a new local write
/// supersedes them, or the officer dismissed them.
pub(crate) fn drop_refused(
    conn: &Connection,
    node: NodeId,
    entity: Uuid,
    fields: Option<&[&str]>,
) -> Result<()> {
    let found = rows(
        conn,
        node,
        "WHERE entity = ?1 AND refused > 0",
        [entity.hyphenated().to_string()],
    )?;
    for mut row in found {
        let n = row.entries.len();
        row.entries.retain(|e| {
            e.refusal.is_none() || fields.is_some_and(|f| !f.contains(&e.field.as_str()))
        });
        if row.entries.len() != n {
            write_row(conn, &row)?;
        }
    }
    Ok(())
}

/// The refused changes of an entity, oldest first, each with the stamp its action wrote.
pub(crate) fn refused_of(
    conn: &Connection,
    node: NodeId,
    entity: Uuid,
) -> Result<Vec<(Stamp, Entry)>> {
    let found = rows(
        conn,
        node,
        "WHERE entity = ?1 AND refused > 0 ORDER BY first_counter",
        [entity.hyphenated().to_string()],
    )?;
    Ok(found
        .into_iter()
        .flat_map(|row| {
            let stamp = Stamp::new(Hlc::from_u64(row.hlc), node);
            row.entries
                .into_iter()
                .filter(|e| e.refusal.is_some())
                .map(move |e| (stamp, e))
        })
        .collect())
}

/// Whether the server has yet to take the record's creation: its capture's `created_by` (written
/// with no base) still waits in the outbox, or was refused.
pub(crate) fn creation_waits(conn: &Connection, node: NodeId, entity: Uuid) -> Result<bool> {
    Ok(rows_of(conn, node, entity)?.iter().any(|row| {
        row.entries
            .iter()
            .any(|e| e.field == "created_by" && e.base.is_none())
    }))
}

/// Whether a record's creation waits in the outbox, was never handed out to be sent, and
/// nothing says the server holds the record (no pulled value of its creation fields lost to
/// this phone's).
pub(crate) fn creation_unseen(conn: &Connection, node: NodeId, entity: Uuid) -> Result<bool> {
    let offered: i64 = conn
        .prepare_cached("SELECT offered_counter FROM device WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    Ok(rows_of(conn, node, entity)?.iter().any(|row| {
        row.entries.iter().any(|e| {
            e.field == "created_by"
                && e.base.is_none()
                && e.old_stamp.is_none()
                && e.counter > offered as u64
        })
    }))
}

/// Whether a change of one of `fields` of an entity waits in the outbox, to push or refused.
pub(crate) fn changes_any(
    conn: &Connection,
    node: NodeId,
    entity: Uuid,
    fields: &[&str],
) -> Result<bool> {
    Ok(rows_of(conn, node, entity)?.iter().any(|row| {
        row.entries
            .iter()
            .any(|e| fields.contains(&e.field.as_str()))
    }))
}

/// Notes that changes up to `counter` were handed out to be sent.
pub(crate) fn offered(conn: &Connection, counter: u64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE device SET offered_counter = MAX(offered_counter, ?1) WHERE id = 1",
    )?
    .execute([counter as i64])?;
    Ok(())
}

/// Makes the changes of an entity that name a restamped action (as their base, or as the stamp
/// of the value they keep) name its new stamp.
pub(crate) fn rename_stamps(
    conn: &Connection,
    node: NodeId,
    entity: Uuid,
    renamed: &std::collections::HashMap<Stamp, Stamp>,
) -> Result<()> {
    for mut row in rows_of(conn, node, entity)? {
        let mut changed = false;
        for entry in &mut row.entries {
            for stamp in [&mut entry.base, &mut entry.old_stamp]
                .into_iter()
                .flatten()
            {
                if let Some(new) = renamed.get(stamp) {
                    *stamp = *new;
                    changed = true;
                }
            }
        }
        if changed {
            write_row(conn, &row)?;
        }
    }
    Ok(())
}

/// Copies into their entries the values of a record's changes that the record still holds
/// (lazy ones), so that they outlive the record: it is about to leave this phone. An entry
/// whose value the record no longer holds (never so, by `materialize`) goes, as it could not
/// be sent: a purge must not stop every later pull.
pub(crate) fn detach(conn: &Connection, node: NodeId, entity: Uuid) -> Result<()> {
    let found = rows_of(conn, node, entity)?;
    if found.is_empty() {
        return Ok(());
    }
    let record = db::load_record(conn, entity)?;
    for mut row in found {
        let stamp = Stamp::new(Hlc::from_u64(row.hlc), node);
        let mut changed = row.record.is_some();
        row.entries.retain_mut(|entry| {
            if entry.value.is_some() {
                return true;
            }
            changed = true;
            let held = record.as_ref().and_then(|r| r.state.get(&entry.field));
            match held {
                Some(v) if v.stamp == stamp => {
                    entry.value = Some(v.value.clone());
                    true
                }
                _ => false,
            }
        });
        if changed {
            write_row(conn, &row)?;
        }
    }
    Ok(())
}

/// Whether any change waits refused.
pub(crate) fn any_refused(conn: &Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox WHERE refused > 0)")?
        .query_row([], |r| r.get(0))?)
}

/// A value of this device's own that a pull brought: the server holds the change that wrote
/// it, so a refusal of that change (answered to a copy of the push, before a later copy was
/// accepted) no longer stands, and is dropped. Dismissed, it would take back what the server
/// holds.
pub(crate) fn accepted_after_all(
    conn: &Connection,
    node: NodeId,
    entity: Uuid,
    hlc: Hlc,
    field: &str,
) -> Result<()> {
    let found = rows(
        conn,
        node,
        "WHERE entity = ?1 AND refused > 0 AND hlc = ?2",
        params![entity.hyphenated().to_string(), hlc.as_u64() as i64],
    )?;
    for mut row in found {
        let n = row.entries.len();
        row.entries
            .retain(|e| e.refusal.is_none() || e.field != field);
        if row.entries.len() != n {
            write_row(conn, &row)?;
        }
    }
    Ok(())
}

/// Drops every change of an entity, waiting or refused (a record the server never took).
pub(crate) fn drop_entity(conn: &Connection, entity: Uuid) -> Result<()> {
    conn.execute(
        "DELETE FROM outbox WHERE entity = ?1",
        [entity.hyphenated().to_string()],
    )?;
    Ok(())
}

/// A change the server refused, as the officer sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct RefusedChange {
    /// The record.
    pub entity: String,
    /// Its kind.
    pub kind: String,
    /// The refused field.
    pub field: String,
    /// Refusal code.
    pub code: String,
    /// The server's message.
    pub message: String,
}

/// Which rows hold refusals, oldest first. Read through the refusals' own index and sorted
/// after (the `+`): ordered by the primary key, SQLite would scan the whole outbox for them, and
/// every push's answer asks (a backlog of 100,000 waiting actions, scanned once a push).
const REFUSED_ROWS: &str = "WHERE refused > 0 ORDER BY +first_counter";

/// Every refused change, oldest first.
pub(crate) fn refused(conn: &Connection, node: NodeId) -> Result<Vec<RefusedChange>> {
    let found = rows(conn, node, REFUSED_ROWS, [])?;
    Ok(found
        .iter()
        .flat_map(|row| {
            row.entries.iter().filter_map(move |e| {
                e.refusal.as_ref().map(|r| RefusedChange {
                    entity: row.entity.hyphenated().to_string(),
                    kind: row.kind.clone(),
                    field: e.field.clone(),
                    code: r.code.clone(),
                    message: r.message.clone(),
                })
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_overwritten_value_is_copied_into_its_own_records_change_only() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        let node = NodeId(Uuid::from_u128(9));
        let hlc = Hlc::new(1_800_000_000_000, 0);
        let (mine, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let base = Some(Stamp::new(Hlc::new(1_700_000_000_000, 0), node));
        // Two records' actions with one stamp, each changing the name, its value still in its
        // record (a list: each has a base).
        append(
            &conn,
            mine,
            "person",
            hlc,
            &[Entry::lazy(1, "name".into(), base)],
        )
        .unwrap();
        append(
            &conn,
            other,
            "person",
            hlc,
            &[Entry::lazy(2, "name".into(), base)],
        )
        .unwrap();
        let remote = baylink_sync::Versioned::new(
            json!("李娜"),
            Stamp::new(Hlc::new(1_800_000_000_001, 0), NodeId(Uuid::from_u128(5))),
        );
        materialize(&conn, node, mine, hlc, "name", &json!("王芳")).unwrap();
        note_lost(&conn, node, mine, hlc, "name", &remote).unwrap();
        let entry = |entity| rows_stamped(&conn, node, entity, hlc).unwrap()[0].entries[0].clone();
        let (copied, untouched) = (entry(mine), entry(other));
        assert_eq!(copied.value, Some(json!("王芳")));
        assert_eq!(copied.old, Some(json!("李娜")));
        assert_eq!(untouched, Entry::lazy(2, "name".into(), base));
    }

    #[test]
    fn refusals_are_found_through_their_index_not_by_reading_the_outbox() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT {ROW_COLUMNS} FROM outbox {REFUSED_ROWS}"
            ))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("outbox_refused")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|step| step == "SCAN outbox"), "{plan:?}");
    }

    #[test]
    fn a_cleared_value_is_not_a_lazy_one() {
        let cleared = Entry {
            counter: 1,
            field: "phone".into(),
            value: Some(Value::Null),
            base: None,
            refusal: None,
            old: None,
            old_stamp: None,
        };
        let lazy = Entry::lazy(2, "name".into(), None);
        let text = encode(&[cleared.clone(), lazy.clone()]);
        assert_eq!(text, r#"[{"c":1,"f":"phone","v":null},{"c":2,"f":"name"}]"#);
        assert_eq!(decode(&text).unwrap(), [cleared, lazy]);
        let full = Entry {
            value: Some(json!("王芳")),
            ..Entry::lazy(3, "name".into(), None)
        };
        assert_eq!(
            decode(&encode(std::slice::from_ref(&full))).unwrap(),
            [full]
        );
    }
}
