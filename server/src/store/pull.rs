//! Pull: the current values of a device's villages after its cursor, page by page from one snapshot, and the device's bookkeeping.

use crate::store::caller::Caller;
use crate::store::conn::{Conn, Optional, params};
use crate::store::error::StoreError;
use crate::store::values::corrupt;
use crate::store::values::current_seq;
use baylink_sync::NodeId;
use baylink_sync::wire::{Cursor, FieldValue};
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
    /// On the last page: recent watch-list hits on persons of the caller's villages.
    pub watch_hits: Vec<baylink_sync::wire::WatchHit>,
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
pub fn settle(conn: &Conn<'_>, settle: &PullSettle) -> Result<(), StoreError> {
    if !settle.needed() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    settle_pull(&tx, settle)?;
    tx.commit()?;
    Ok(())
}

/// [`settle`] inside the caller's transaction.
fn settle_pull(conn: &Conn<'_>, settle: &PullSettle) -> Result<(), StoreError> {
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
        // Where the device stands once it applies this page: the horizon of a compaction is
        // the lowest of these among active devices.
        conn.execute(
            "UPDATE device SET villages = ?2, last_sync_ms = ?3, pulled_seq = ?4 WHERE id = ?1",
            params![settle.device, villages, *now as i64, settle.upto],
        )?;
    }
    Ok(())
}

/// The records that left some villages (`?3`) between two sequence numbers and lie in none of
/// others (`?4`, the caller's).
static DROPPED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT DISTINCT p.entity FROM purge p WHERE p.seq > ?1 AND p.seq <= ?2
         AND p.village IN (SELECT value FROM json_each(?3)) AND NOT {}",
        crate::store::scope::in_villages("p.entity", 4)
    )
});

/// The records in some villages (`?1`) and none of others (`?2`, the caller's) that a device
/// (`?4`) may hold by the position `?3`.
static IN_LOST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT DISTINCT e.id FROM scope s JOIN entity e ON e.pos = s.pos
         WHERE s.village IN (SELECT value FROM json_each(?1))
         AND NOT EXISTS (SELECT 1 FROM scope t WHERE t.pos = s.pos AND t.village IN (SELECT value FROM json_each(?2)))
         AND {}",
        may_hold("e.pos", 3, 4)
    )
});

/// [`DROPPED`] of the villages a device lost: only records it may hold (by the position `?5`,
/// the device `?6`).
static DROPPED_LOST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    // A record compacted away (perhaps twice) is filed under its last position; one with none
    // is not named.
    let pos = "COALESCE((SELECT pos FROM entity WHERE id = p.entity),
                        (SELECT MAX(pos) FROM compacted WHERE id = p.entity))";
    format!("{} AND {}", *DROPPED, may_hold(pos, 5, 6))
});

/// The condition that a device (`?{device}`) may hold the record at position `{pos}`: placed
/// at or before the last position its cursor saw (`?{bound}`), or written by the device itself.
fn may_hold(pos: &str, bound: u8, device: u8) -> String {
    format!(
        "({pos} <= ?{bound} OR EXISTS (SELECT 1 FROM history may_h
                                       WHERE may_h.pos = {pos} AND may_h.device = ?{device}))"
    )
}

/// What a device is told to drop of villages it lost (`lost`, none of the caller's `villages`):
/// their records in none of the caller's villages, and those that left them since the cursor's
/// `after` (in their scope no more, only their drop says the device holds them; every such drop
/// on this page, as the next cursor no longer names the villages). Only records the device may
/// hold: one placed after `bound` entered the villages after the device last saw them, perhaps
/// after they were taken from the officer, and its id is not the device's to learn.
fn lost_drops(
    tx: &Conn<'_>,
    caller: &Caller,
    villages: &str,
    lost: &[&String],
    after: i64,
    bound: i64,
) -> Result<Vec<Uuid>, StoreError> {
    if lost.is_empty() {
        return Ok(Vec::new());
    }
    let lost = serde_json::to_string(lost).unwrap_or_else(|_| "[]".into());
    let mut ids: Vec<String> = tx
        .prepare_cached(&IN_LOST)?
        .query_map(params![lost, villages, bound, caller.device], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let left: Vec<String> = tx
        .prepare_cached(&DROPPED_LOST)?
        .query_map(
            params![after, i64::MAX, lost, villages, bound, caller.device],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    ids.extend(left);
    Ok(ids
        .iter()
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect())
}

/// The records a device wrote that lie in none of some villages.
static WROTE_ELSEWHERE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT DISTINCT h.entity FROM history h WHERE h.device = ?1 AND NOT {}",
        crate::store::scope::in_villages("h.entity", 2)
    )
});

/// The records a device wrote that lie in none of its villages now, for its pull from no cursor
/// when it wrote at or below the last compaction's horizon and may still hold values of its own
/// (none otherwise). Such a device never completed a pull the compaction waited for (or never
/// received the one it completed), so a record of its own moved elsewhere since may still be on
/// it with its drop compacted away; and a pull from no cursor is not told its cursor expired.
/// Read from the device's own actions (`history_device`): not for a phone that says it holds
/// none of its own values (one that started over), nor for one whose first write follows the
/// horizon.
fn own_records_elsewhere(
    tx: &Conn<'_>,
    caller: &Caller,
    villages: &str,
    own_held_after: Option<u64>,
) -> Result<Vec<Uuid>, StoreError> {
    // A device that wrote before its first write was kept (an older server, or a node of one
    // still running) is taken to have written from the start.
    let device: Option<(Option<i64>, i64)> = tx
        .prepare_cached(
            "SELECT CASE WHEN first_write_seq IS NULL AND last_counter > 0 THEN 0
                         ELSE first_write_seq END, last_counter
             FROM device WHERE id = ?1",
        )?
        .query_row([&caller.device], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((Some(first), last_counter)) = device else {
        return Ok(Vec::new());
    };
    let horizon = crate::store::retention::compacted_upto(tx)?;
    let holds_none = own_held_after.is_some_and(|floor| floor >= last_counter.max(0) as u64);
    if horizon == 0 || first > horizon || holds_none {
        return Ok(Vec::new());
    }
    // Read through the device's own actions (`history_device`). The history's numbers are its
    // own, not the sequence the horizon is counted in: every action of the device is read.
    let ids: Vec<String> = tx
        .prepare_cached(&WROTE_ELSEWHERE)?
        .query_map(params![caller.device, villages], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids
        .iter()
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect())
}

/// A value as a pull sends it: the stored JSON checked, not parsed into a tree and written again.
pub type SentValue = FieldValue<Box<RawValue>>;

pub(crate) fn parse_entity(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|_| corrupt("entity"))
}

/// One record of a village's feed as a page sends it: its values written or resent after the
/// cursor (all of them when `whole`), less the device's own.
pub(crate) struct FeedRecord {
    /// Where it stands in the feeds.
    pub(crate) seq: i64,
    /// The values sent.
    pub(crate) values: Vec<SentValue>,
}

/// What a device asks of one page.
#[derive(Clone, Debug)]
pub struct Ask {
    /// Where the page starts.
    pub from: Position,
    /// Most values (a record alone may have more).
    pub limit: u32,
    /// The device holds every value it wrote with a change counter above this (see
    /// [`baylink_sync::wire::PullRequest::own_held_after`]).
    pub own_held_after: Option<u64>,
}

/// Most records one page reads: after the evening's upload every record of the officer's feed
/// may be their own and send nothing, and one request must not read them all.
const MOST_READ: usize = 20_000;

/// Most records read from one village's feed in one round of a page.
const FETCH: i64 = 256;

/// Which values a page leaves out: the device's own, accepted above a counter.
#[derive(Clone, Copy)]
pub(crate) struct Own {
    node: Option<NodeId>,
    after: u64,
}

impl Own {
    pub(crate) fn of(caller: &Caller, own_held_after: Option<u64>) -> Own {
        Own {
            node: own_held_after.and(caller.device.parse().ok()),
            after: own_held_after.unwrap_or(u64::MAX),
        }
    }

    /// Whether the device holds this value already (it wrote it, and dropped nothing since).
    fn held(&self, slot: &crate::store::state::RawSlot) -> bool {
        slot.counter > self.after && Some(slot.stamp.node) == self.node
    }
}

/// The records of the caller's villages written or resent after `after` and up to `upto`, in
/// `seq` order, with the values each sends (written or resent after `fields_after`, all when
/// `whole`; the device's own left out): as many records as
/// hold at most `limit` values (a record alone may hold more), and whether more follow. Each
/// village's feed is read `limit + 1` records at a time, merged up to the lowest last record of
/// the villages with more, so that those taken hold every record up to the last of them,
/// whichever village it came from; read on while records send nothing, until [`MOST_READ`]
/// records are read (checked after each batch).
pub(crate) fn feed_records(
    tx: &Conn<'_>,
    villages: &[String],
    (after, fields_after): (i64, i64),
    upto: i64,
    limit: u32,
    whole: bool,
    own: Own,
) -> Result<(Vec<FeedRecord>, bool), StoreError> {
    // Records read per village and round: a record sends several values, so a page of `limit`
    // values is full after far fewer records than `limit`; reading `limit` of them made every
    // page read (and, on PostgreSQL, carry) several times the records it sent. The rounds go on
    // until the page is full, whatever this is.
    let fetch = i64::from(limit).min(FETCH) + 1;
    let mut out: Vec<FeedRecord> = Vec::new();
    let mut count = 0usize;
    let mut read = 0usize;
    let mut from = after;
    loop {
        let mut rows: Vec<(i64, String, String, String)> = Vec::new();
        // Past this number some village's feed was not read.
        let mut bound = upto;
        for village in villages {
            let mut stmt = tx.prepare_cached(
                "SELECT f.seq, e.id, e.kind, e.state FROM feed f JOIN entity e ON e.pos = f.pos
                 WHERE f.village = ?1 AND f.seq > ?2 AND f.seq <= ?3 ORDER BY f.seq LIMIT ?4",
            )?;
            let found = stmt.query_map(params![village, from, upto, fetch], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            let before = rows.len();
            for row in found {
                rows.push(row?);
            }
            if rows.len() - before == fetch as usize {
                bound = bound.min(rows.last().map_or(upto, |r| r.0));
            }
        }
        // A record in two of the caller's villages is in both feeds at one seq.
        rows.sort_unstable_by_key(|row| row.0);
        rows.dedup_by_key(|row| row.0);
        rows.retain(|row| row.0 <= bound);
        read += rows.len();
        for (seq, id, kind, state) in rows {
            let entity = parse_entity(&id)?;
            let values: Vec<SentValue> = crate::store::state::decode_raw(&state)?
                .into_iter()
                .filter(|slot| (whole || slot.seq > fields_after) && !own.held(slot))
                .map(|slot| FieldValue {
                    kind: kind.clone(),
                    entity,
                    field: slot.field,
                    value: slot.value,
                    stamp: slot.stamp,
                    extra: BTreeMap::new(),
                })
                .collect();
            if count > 0 && count + values.len() > limit as usize {
                return Ok((out, true));
            }
            count += values.len();
            out.push(FeedRecord { seq, values });
        }
        if bound == upto {
            return Ok((out, false));
        }
        if count >= limit as usize || read >= MOST_READ {
            return Ok((out, true));
        }
        from = bound;
    }
}

/// Reads one page of a pull from a snapshot (a reader connection will do) and says what is left
/// to write. A device new to some of its villages (a fresh one: all of them) is sent a snapshot
/// of its villages' records first (their feeds up to the number it is taken at), and then what
/// was written since; otherwise everything in its villages after its cursor; at most `limit` values a page.
/// A device whose villages changed is also told to drop what it may no longer hold.
pub fn read_page(
    tx: &Conn<'_>,
    caller: &Caller,
    ask: Ask,
    now_ms: u64,
) -> Result<(Page, PullSettle), StoreError> {
    let Ask {
        from,
        limit,
        own_held_after,
    } = ask;
    // A cursor below the horizon of the last compaction may miss the drops and deletions
    // compacted away: the device starts again as a new one would. Read in the page's snapshot,
    // which the horizon, recorded before anything is removed, always precedes.
    let fresh = from.after == 0 && from.snapshot.is_none() && from.fields_after.is_none();
    if !fresh && from.after < crate::store::retention::compacted_upto(tx)? {
        return Err(StoreError::Expired(
            "cursor: older than what this server keeps for unseen devices: drop what nothing \
             waits to push and pull from the start"
                .into(),
        ));
    }
    let own = Own::of(caller, own_held_after);
    let villages = serde_json::to_string(&caller.villages).unwrap_or_else(|_| "[]".into());
    // What the device may hold: the villages and the last position its cursor names.
    let placed = from.placed;
    let held: BTreeSet<String> = match from.held {
        Some(held) => held,
        // A cursor from before villages rode in it (or unsigned): what the server last recorded.
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
    // Read in the page's snapshot: every record the page sends is placed at or before it.
    let placed_now = crate::store::state::last_position(tx)?;
    let now: BTreeSet<String> = caller.villages.iter().cloned().collect();
    let mut purged: BTreeSet<Uuid> = BTreeSet::new();
    if fresh {
        purged.extend(own_records_elsewhere(
            tx,
            caller,
            &villages,
            own_held_after,
        )?);
    }
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
    // Villages the cursor names that the caller no longer holds: the device may hold what they
    // held when the cursor was issued. Villages only the notes name: its own records alone (a
    // cursor naming none of them comes from before the village was the caller's, or from a
    // page that told its drops already).
    let lost_held: Vec<&String> = held.difference(&now).collect();
    let lost_noted: Vec<&String> = written
        .into_iter()
        .filter(|v| !now.contains(*v) && !held.contains(*v))
        .collect();
    // A cursor naming no position (unsigned, signed with a key since retired, or an earlier
    // server's) cannot say which records the device holds: it starts over, as below a
    // compaction's horizon, and drops what the pull from the start does not bring.
    let bound = match placed {
        Some(bound) => bound,
        // Nothing lost: nothing is bounded.
        None if lost_held.is_empty() && lost_noted.is_empty() => 0,
        None => {
            return Err(StoreError::Expired(
                "cursor: a village was taken from this officer and the cursor does not say \
                 which of its records the device holds: drop what nothing waits to push and \
                 pull from the start"
                    .into(),
            ));
        }
    };
    for (lost, bound) in [(lost_held, bound), (lost_noted, 0)] {
        purged.extend(lost_drops(tx, caller, &villages, &lost, from.after, bound)?);
    }
    let (values, more, next) = match snapshot {
        Some(sent) => {
            // The device holds none of these records: each is sent whole. The snapshot reads on
            // past the number it was taken at: a record written meanwhile has left its place
            // before that number for a later one, and is sent whole there.
            let (records, inside) =
                feed_records(tx, &caller.villages, (sent, 0), i64::MAX, limit, true, own)?;
            let next = match records.last() {
                Some(last) if inside => (upto, Some(last.seq), None),
                // Done: what follows is news, and the records dropped since the snapshot was
                // taken are dropped by this page.
                _ => {
                    upto = current_seq(tx)?;
                    (upto, None, None)
                }
            };
            (
                records.into_iter().flat_map(|r| r.values).collect(),
                true,
                next,
            )
        }
        None => {
            // Inside a pull of several pages, the values after where it started: a record
            // written since it started has moved past the pages read, its older values with it.
            let fields_after = from.fields_after.unwrap_or(after);
            let range = (after, fields_after);
            let (records, more) =
                feed_records(tx, &caller.villages, range, i64::MAX, limit, false, own)?;
            let next = match records.last() {
                Some(last) if more => {
                    upto = last.seq;
                    (upto, None, Some(fields_after))
                }
                _ => {
                    upto = current_seq(tx)?;
                    (upto, None, None)
                }
            };
            let values = records.into_iter().flat_map(|r| r.values).collect();
            (values, more, next)
        }
    };
    if upto > after {
        let gone: Vec<String> = tx
            .prepare_cached(&DROPPED)?
            .query_map(params![after, upto, villages, villages], |r| r.get(0))?
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
    let (after, snapshot, fields_after) = next;
    let next = Position {
        after,
        snapshot,
        fields_after,
        held: Some(now.clone()),
        placed: Some(placed_now),
    };
    let watch_hits = if more {
        Vec::new()
    } else {
        let since = now_ms.saturating_sub(crate::store::watch::HITS_TOLD_FOR_MS);
        crate::store::watch::recent_hits(tx, &caller.villages, since)?
    };
    let page = Page {
        values,
        purged: purged.into_iter().collect(),
        next: next.to_cursor(),
        more,
        watch_hits,
    };
    Ok((page, settle))
}

#[cfg(test)]
mod tests {
    // A failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::caller::Role;

    const NODE: &str = "00000000-0000-4000-8000-0000000000d1";
    const VILLAGE: &str = "441303006001";

    /// `count` records of one village, each one value its device `NODE` wrote (change counter 5),
    /// at sequence numbers 1 to `count`.
    fn feed_of_own_records(count: u32) -> crate::store::Db {
        let db = crate::store::Db::open_in_memory().unwrap();
        db.call_blocking(move |c| {
            c.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO entity (id, kind, village, seq, state)
                 SELECT printf('00000000-0000-4000-8000-%012d', i), 'person', ?2, i,
                        json_object('n', json_array(?3),
                                    'f', json_object('name', json_array('x', 1, 0, i, 5)))
                 FROM n",
                params![count, VILLAGE, NODE],
            )?;
            c.execute(
                "INSERT INTO feed (village, seq, pos) SELECT village, seq, pos FROM entity",
                (),
            )?;
            Ok(())
        })
        .unwrap();
        db
    }

    #[test]
    fn a_page_of_only_the_devices_own_records_stops_at_its_reading_bound_and_goes_on_after() {
        let db = feed_of_own_records(25_000);
        let caller = Caller {
            account: 1,
            role: Role::Officer,
            device: NODE.to_owned(),
            villages: vec![VILLAGE.to_owned()],
        };
        let villages = caller.villages.clone();
        let own = Own::of(&caller, Some(0));
        let (first, more) = db
            .read_blocking(|c| feed_records(c, &villages, (0, 0), i64::MAX, 100, false, own))
            .unwrap();
        // Nothing to send in any of them, and the page stops reading at the bound with more to come.
        assert!(more);
        // The bound is checked after each batch of `limit + 1` records.
        assert!(
            (MOST_READ..MOST_READ + 101).contains(&first.len()),
            "{}",
            first.len()
        );
        assert!(first.iter().all(|r| r.values.is_empty()));
        let last = first.last().unwrap().seq;
        let (rest, more) = db
            .read_blocking(|c| feed_records(c, &villages, (last, 0), i64::MAX, 100, false, own))
            .unwrap();
        assert!(!more);
        assert_eq!(rest.len(), 25_000 - first.len());
        // A device that says nothing of what it holds is sent its values, a page at a time.
        let all = Own::of(&caller, None);
        let (page, more) = db
            .read_blocking(|c| feed_records(c, &villages, (0, 0), i64::MAX, 100, false, all))
            .unwrap();
        assert!(more);
        assert_eq!(page.iter().map(|r| r.values.len()).sum::<usize>(), 100);
    }

    #[test]
    fn a_fresh_pull_is_told_only_its_own_records_that_lie_elsewhere() {
        let db = crate::store::Db::open_in_memory().unwrap();
        const ELSEWHERE: &str = "441303006002";
        // Records 1 to 4 this device wrote (its first write at 3, the horizon at 10): 1 stayed,
        // 2 and 4 moved away, 3 went altogether. Record 5 another device wrote, record 6 this
        // device wrote and another moved into a village of its own. The history's numbers
        // are its own (here far above the horizon), as an action is not a sequence number.
        // Many other devices' actions around them.
        let (found, plan) = db
            .call_blocking(|c| {
                c.execute_batch(&format!(
                    "INSERT INTO account (id, username, display_name, role, password_hash, created_ms)
                         VALUES (1, 'o1', 'o1', 'officer', 'x', 0);
                     INSERT INTO device (id, account, name, registered_ms, last_counter, first_write_seq)
                         VALUES ('{NODE}', 1, 'phone', 0, 40, 3);
                     INSERT INTO meta (key, value) VALUES ('compacted_upto', '10');
                     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
                     INSERT INTO history (seq, pos, entity, kind, stamp, device, account, at_ms, changes)
                     SELECT i + 100, i + 1000, printf('00000000-0000-4000-8000-1%011d', i), 'person',
                            's', printf('other-%d', i % 50), 1, 0, '{{}}' FROM n;
                     INSERT INTO entity (pos, id, kind) VALUES
                         (1, '00000000-0000-4000-8000-000000000001', 'person'),
                         (2, '00000000-0000-4000-8000-000000000002', 'person'),
                         (4, '00000000-0000-4000-8000-000000000004', 'person'),
                         (5, '00000000-0000-4000-8000-000000000005', 'person'),
                         (6, '00000000-0000-4000-8000-000000000006', 'person');
                     INSERT INTO history (seq, pos, entity, kind, stamp, device, account, at_ms, changes) VALUES
                         (5003, 1, '00000000-0000-4000-8000-000000000001', 'person', 's', '{NODE}', 1, 0, '{{}}'),
                         (5004, 2, '00000000-0000-4000-8000-000000000002', 'person', 's', '{NODE}', 1, 0, '{{}}'),
                         (5005, 3, '00000000-0000-4000-8000-000000000003', 'person', 's', '{NODE}', 1, 0, '{{}}'),
                         (5006, 5, '00000000-0000-4000-8000-000000000005', 'person', 's', 'other', 1, 0, '{{}}'),
                         (5007, 6, '00000000-0000-4000-8000-000000000006', 'person', 's', '{NODE}', 1, 0, '{{}}'),
                         (5011, 4, '00000000-0000-4000-8000-000000000004', 'person', 's', '{NODE}', 1, 0, '{{}}'),
                         (5012, 2, '00000000-0000-4000-8000-000000000002', 'person', 's', '{NODE}', 1, 0, '{{}}');
                     INSERT INTO scope (pos, village) VALUES
                         (1, '{VILLAGE}'), (2, '{ELSEWHERE}'), (4, '{ELSEWHERE}'), (5, '{ELSEWHERE}'),
                         (6, '{ELSEWHERE}'), (6, '{VILLAGE}');"
                ))?;
                let caller = Caller {
                    account: 1,
                    role: Role::Officer,
                    device: NODE.to_owned(),
                    villages: vec![VILLAGE.to_owned()],
                };
                let villages = serde_json::to_string(&caller.villages).unwrap();
                let mut found = own_records_elsewhere(c, &caller, &villages, Some(0))?;
                found.sort();
                let plan: Vec<String> = c
                    .prepare(&format!("EXPLAIN QUERY PLAN {}", *WROTE_ELSEWHERE))?
                    .query_map(params![NODE, villages], |r| r.get(3))?
                    .collect::<Result<_, _>>()?;
                Ok((found, plan.join("; ")))
            })
            .unwrap();
        let ids: Vec<String> = found.iter().map(|u| u.to_string()).collect();
        // 3 is in no village at all (its record compacted away), 2 and 4 in another.
        assert_eq!(
            ids,
            [
                "00000000-0000-4000-8000-000000000002",
                "00000000-0000-4000-8000-000000000003",
                "00000000-0000-4000-8000-000000000004"
            ]
        );
        // Read through the device's own entries, not the whole history.
        assert!(plan.contains("history_device"), "{plan}");
    }

    /// A lost village's drops read by index: the village's scope rows, then each record by its
    /// position; its history (the device's own writes) by position, never the whole table.
    #[test]
    fn a_lost_villages_drops_are_read_by_index() {
        let db = crate::store::Db::open_in_memory().unwrap();
        let plans = db
            .call_blocking(|c| {
                let plan = |sql: &str, n: usize| -> Result<String, StoreError> {
                    let args: Vec<crate::store::conn::Value> = (0..n)
                        .map(|_| crate::store::conn::Value::Integer(1))
                        .collect();
                    let rows: Vec<String> = c
                        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?
                        .query_map(args, |r| r.get(3))?
                        .collect::<Result<_, _>>()?;
                    Ok(rows.join("; "))
                };
                Ok([plan(&IN_LOST, 4)?, plan(&DROPPED_LOST, 6)?])
            })
            .unwrap();
        // A plan names tables by their aliases: no step but the id lists' scans a table.
        for plan in &plans {
            let scans = plan
                .split("; ")
                .filter(|step| step.starts_with("SCAN ") && !step.starts_with("SCAN json_each"));
            assert_eq!(scans.count(), 0, "{plan}");
        }
        assert!(plans[0].contains("scope_village"), "{}", plans[0]);
        assert!(plans.iter().all(|p| p.contains("history_pos")), "{plans:?}");
    }
}
