//! Stored values read back, and the sequence numbers that order every write: what the write path and scope keeping share.

use crate::store::error::StoreError;
use baylink_sync::{EntityState, Hlc, NodeId, Stamp, Versioned};
use rusqlite::Transaction;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;
use std::collections::HashMap;

/// The sequence inside one write: numbers handed out in memory, the last saved once before the
/// commit, not a statement per accepted change. The one writer connection means no other
/// transaction hands out numbers meanwhile.
pub(crate) struct Sequence {
    /// The last number issued before this write.
    pub(crate) start: i64,
    /// The last number issued.
    pub(crate) last: i64,
}

thread_local! {
    /// Numbers a write of the deliberately broken backend took before the writer
    /// (`Db::numbering_before_the_lock`); never set otherwise.
    static EARLY: std::cell::Cell<Option<i64>> = const { std::cell::Cell::new(None) };
}

/// Sets (or clears) the numbers the next sequence on this thread starts after.
pub(crate) fn number_after(base: Option<i64>) {
    EARLY.with(|early| early.set(base));
}

impl Sequence {
    pub(crate) fn begin(tx: &Transaction<'_>) -> Result<Sequence, StoreError> {
        let last = match EARLY.with(std::cell::Cell::take) {
            Some(base) => base,
            None => current_seq(tx)?,
        };
        Ok(Sequence { start: last, last })
    }

    pub(crate) fn next(&mut self) -> i64 {
        self.last += 1;
        self.last
    }

    /// Must run before the transaction commits.
    pub(crate) fn save(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        // Never backwards (only the broken backend's writes could take it there).
        if self.last != self.start {
            tx.prepare_cached(
                "UPDATE meta SET value = CAST(MAX(CAST(value AS INTEGER), ?1) AS TEXT)
                 WHERE key = 'seq'",
            )?
            .execute([self.last])?;
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

pub(crate) fn held(
    tx: &Connection,
    entity: &str,
    field: &str,
) -> Result<Option<Versioned>, StoreError> {
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
pub(crate) fn stored_version(value: &str, hlc: i64, node: &str) -> Result<Versioned, StoreError> {
    let value = serde_json::from_str(value).map_err(|_| corrupt("value"))?;
    let node: NodeId = node.parse().map_err(|_| corrupt("node"))?;
    Ok(Versioned::new(
        value,
        Stamp::new(Hlc::from_u64(hlc as u64), node),
    ))
}

pub(crate) fn text_of(
    tx: &Connection,
    entity: &str,
    field: &str,
) -> Result<Option<String>, StoreError> {
    Ok(held(tx, entity, field)?.and_then(|v| v.value.as_str().map(str::to_owned)))
}

/// A record's current values with their stamps.
pub(crate) fn state_of(tx: &Connection, entity: &str) -> Result<EntityState, StoreError> {
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
pub(crate) fn server_node(tx: &Connection) -> Result<NodeId, StoreError> {
    tx.query_row("SELECT value FROM meta WHERE key = 'node'", [], |r| {
        r.get::<_, String>(0)
    })?
    .parse()
    .map_err(|_| StoreError::Backend("server node id".into()))
}

/// Each record's villages as a write left them.
pub(crate) type Scopes = HashMap<String, BTreeSet<String>>;

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("stored {what}"))
}
