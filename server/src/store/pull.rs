//! Pull: the current values of a device's villages after its cursor, page by page from one snapshot, and the device's bookkeeping.

use crate::store::caller::Caller;
use crate::store::error::StoreError;
use crate::store::values::corrupt;
use crate::store::values::current_seq;
use baylink_sync::wire::{Cursor, FieldValue};
use baylink_sync::{Hlc, Stamp};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

pub use baylink_sync::cursor::Position;

/// Parses a cursor this server issued (see [`baylink_sync::cursor::parse`]).
pub fn parse_cursor(cursor: Option<&Cursor>) -> Result<Position, StoreError> {
    baylink_sync::cursor::parse(cursor).map_err(|e| StoreError::Invalid(e.to_string()))
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

/// Writes a pull's bookkeeping (see [`read_page`]) in its own transaction; nothing when
/// nothing is needed.
pub fn settle(conn: &mut Connection, settle: &PullSettle) -> Result<(), StoreError> {
    if !settle.needed() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    settle_pull(&tx, settle)?;
    tx.commit()?;
    Ok(())
}

/// [`settle`] inside the caller's transaction.
fn settle_pull(conn: &Connection, settle: &PullSettle) -> Result<(), StoreError> {
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

/// Reads the columns `field, value, hlc, node` from `at` on, of a record already read.
pub(crate) fn sent_value(
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

pub(crate) fn parse_entity(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|_| corrupt("entity"))
}

/// Current values of the caller's villages written or resent after `after` and up to `upto`,
/// in `seq` order: at most `limit + 1` from each village's feed, merged, so that the first
/// `limit` hold every value up to the last of them, whichever village it came from.
pub(crate) fn feed_values(
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
                Some((seq, _)) if inside => (upto, Some(*seq)),
                _ => (upto, None),
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
            (rows, more, (upto, None))
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
    let (after, snapshot) = next;
    let next = Position {
        after,
        snapshot,
        held: Some(now.clone()),
    };
    let page = Page {
        values,
        purged: purged.into_iter().collect(),
        next: next.to_cursor(),
        more,
    };
    Ok((page, settle))
}
