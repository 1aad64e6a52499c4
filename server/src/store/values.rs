//! Stored values read back, and the sequence numbers that order every write: what the write path and scope keeping share.

use crate::store::conn::Conn;
use crate::store::error::StoreError;
use crate::store::state::{self, Pending};
use baylink_sync::{EntityState, NodeId, Versioned};
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
    /// The records this write changed, stored at [`Sequence::flush`].
    pub(crate) pending: Pending,
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
    pub(crate) fn begin(tx: &Conn<'_>) -> Result<Sequence, StoreError> {
        let last = match EARLY.with(std::cell::Cell::take) {
            Some(base) => base,
            None => current_seq(tx)?,
        };
        Ok(Sequence {
            start: last,
            last,
            pending: Pending::default(),
        })
    }

    /// Stores the records written so far (each at a new number): reads of the tables see them.
    pub(crate) fn flush(&mut self, tx: &Conn<'_>) -> Result<(), StoreError> {
        let mut pending = std::mem::take(&mut self.pending);
        let result = pending.flush(tx, || self.next());
        self.pending = pending;
        result
    }

    pub(crate) fn next(&mut self) -> i64 {
        self.last += 1;
        self.last
    }

    /// Must run before the transaction commits; stores what is pending first.
    pub(crate) fn save(&mut self, tx: &Conn<'_>) -> Result<(), StoreError> {
        self.flush(tx)?;
        // Never backwards (only the broken backend's writes could take it there).
        if self.last != self.start {
            tx.prepare_cached(tx.pick(
                "UPDATE meta SET value = CAST(MAX(CAST(value AS INTEGER), ?1) AS TEXT)
                 WHERE key = 'seq'",
                "UPDATE meta SET value = CAST(GREATEST(CAST(value AS BIGINT), ?1) AS TEXT)
                 WHERE key = 'seq'",
            ))?
            .execute([self.last])?;
        }
        Ok(())
    }
}

/// The last sequence number issued.
pub fn current_seq(conn: &Conn<'_>) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT CAST(value AS BIGINT) FROM meta WHERE key = 'seq'",
        (),
        |r| r.get(0),
    )?)
}

/// A field's stored value with its stamp.
pub(crate) fn held(
    tx: &Conn<'_>,
    entity: &str,
    field: &str,
) -> Result<Option<Versioned>, StoreError> {
    Ok(state::load(tx, entity)?.and_then(|l| l.state.get(field).map(|s| s.version.clone())))
}

pub(crate) fn text_of(
    tx: &Conn<'_>,
    entity: &str,
    field: &str,
) -> Result<Option<String>, StoreError> {
    Ok(held(tx, entity, field)?.and_then(|v| v.value.as_str().map(str::to_owned)))
}

/// A record's current values with their stamps.
pub(crate) fn state_of(tx: &Conn<'_>, entity: &str) -> Result<EntityState, StoreError> {
    Ok(state::load(tx, entity)?
        .map(|l| state::versions(&l.state))
        .unwrap_or_default())
}

/// The server's own node id, which stamps what the server writes.
pub(crate) fn server_node(tx: &Conn<'_>) -> Result<NodeId, StoreError> {
    tx.query_row("SELECT value FROM meta WHERE key = 'node'", (), |r| {
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
