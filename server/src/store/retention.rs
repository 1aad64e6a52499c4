//! Retention: what every active device has applied is compacted away. Purge notes and the
//! tombstones of deleted and merged-away records go once they lie below the lowest position any
//! active device holds (the horizon); a device unseen for longer than the idle time does not
//! hold the horizon back, and a cursor below it is told to bootstrap again
//! ([`crate::store::pull::read_page`]). A tombstone another record still names (a deleted
//! house a residence points at) stays until that record goes, and so does a deleted person
//! with a watch-list alert (the station sees who registered and deleted a watched number). The
//! history is the records' audit trail and is kept.

use crate::store::audit::{Actor, audit};
use crate::store::conn::{Conn, Optional, params};
use crate::store::error::StoreError;

/// The `meta` key of the horizon of the last compaction: a pull cursor below it may miss drops
/// and deletions compacted away.
pub const COMPACTED_UPTO: &str = "compacted_upto";

/// Tombstones removed per transaction: a compaction holds the writer lock a moment at a time.
const BATCH: usize = 500;

/// What a compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    /// The horizon: every active device holds the records up to this sequence number.
    pub horizon: i64,
    /// Devices counted as active (seen within the idle time, not revoked).
    pub active_devices: u64,
    /// Purge notes removed.
    pub purge_notes: u64,
    /// Deleted or merged-away records removed, with their feed entries, scopes, summaries,
    /// links and conflicts.
    pub tombstones: u64,
}

/// The horizon of the last compaction (0 when none ran).
pub fn compacted_upto(conn: &Conn<'_>) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT CAST(value AS BIGINT) FROM meta WHERE key = ?1")?
        .query_row([COMPACTED_UPTO], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Compacts below the horizon: the lowest position any device seen within `idle_ms` of
/// `now_ms` (and not revoked) last completed a pull at, or the last sequence number when no
/// device is active. The horizon is recorded first, in its own transaction, so that a pull
/// reading any state the compaction leaves knows its cursor is below it; then purge notes and
/// tombstones go, in batches. Audited as `actor`'s.
pub fn compact(
    conn: &Conn<'_>,
    actor: Actor,
    idle_ms: u64,
    now_ms: u64,
) -> Result<Compacted, StoreError> {
    let tx = conn.transaction()?;
    let since = now_ms.saturating_sub(idle_ms) as i64;
    let (active, lowest): (i64, Option<i64>) = tx.query_row(
        "SELECT COUNT(*), MIN(COALESCE(pulled_seq, 0)) FROM device
         WHERE revoked = 0 AND last_sync_ms IS NOT NULL AND last_sync_ms >= ?1",
        [since],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let last = crate::store::values::current_seq(&tx)?;
    let horizon = lowest.unwrap_or(last).min(last).max(compacted_upto(&tx)?);
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![COMPACTED_UPTO, horizon.to_string()],
    )?;
    tx.commit()?;

    let tx = conn.transaction()?;
    let purge_notes = tx.execute("DELETE FROM purge WHERE seq <= ?1", [horizon])? as u64;
    tx.commit()?;

    let mut tombstones = 0;
    loop {
        let tx = conn.transaction()?;
        let found: Vec<(String, i64, i64)> = tx
            .prepare(&format!(
                "SELECT g.id, g.seq, g.pos FROM entity g WHERE g.seq <= ?1 AND {}
                 AND NOT EXISTS (SELECT 1 FROM link l WHERE {} AND l.target = g.id)
                 AND NOT EXISTS (SELECT 1 FROM alert a WHERE a.entity = g.id)
                 LIMIT {BATCH}",
                crate::store::watch::gone_condition(tx.dialect()),
                crate::store::refs::among_references("l.field")
            ))?
            .query_map([horizon], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        if found.is_empty() {
            break;
        }
        for (id, seq, pos) in &found {
            tx.prepare_cached(
                "DELETE FROM feed WHERE seq = ?2
                 AND village IN (SELECT village FROM scope WHERE pos = ?1)",
            )?
            .execute(params![pos, seq])?;
            for table in ["scope", "summary"] {
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE pos = ?1"))?
                    .execute([pos])?;
            }
            tx.prepare_cached("DELETE FROM conflict WHERE entity = ?1")?
                .execute([id])?;
            // Its history stays, found from its id here.
            tx.prepare_cached("INSERT INTO compacted (pos, id) VALUES (?1, ?2)")?
                .execute(params![pos, id])?;
        }
        let ids = serde_json::to_string(&found.iter().map(|(id, ..)| id).collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".into());
        tx.execute(
            "DELETE FROM link WHERE entity IN (SELECT value FROM json_each(?1))",
            [&ids],
        )?;
        tx.execute(
            "DELETE FROM duplicate_dismissal WHERE a IN (SELECT value FROM json_each(?1))
             OR b IN (SELECT value FROM json_each(?1))",
            [&ids],
        )?;
        tx.execute(
            "DELETE FROM entity WHERE id IN (SELECT value FROM json_each(?1))",
            [&ids],
        )?;
        tombstones += found.len() as u64;
        tx.commit()?;
    }

    let done = Compacted {
        horizon,
        active_devices: active as u64,
        purge_notes,
        tombstones,
    };
    let detail = serde_json::to_string(&done).ok();
    let tx = conn.transaction()?;
    audit(
        &tx,
        actor.account(),
        "compact",
        None,
        detail.as_deref(),
        now_ms,
    )?;
    tx.commit()?;
    Ok(done)
}
