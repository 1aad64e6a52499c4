//! The outbox: local changes the server has not yet made durable. One row per local action (its
//! field changes share one stamp); a change leaves only when the server accepted it. Changes the
//! server refused for good stay, marked, until the officer corrects the field.

use std::collections::BTreeMap;

use baylink_sync::wire::{ChangeResult, ChangeStatus};
use baylink_sync::{Change, ChangeId, Hlc, NodeId, Stamp};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};

/// A refusal the server gave a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Refusal {
    pub(crate) code: String,
    pub(crate) message: String,
}

/// One field change in an outbox row: counter, field, value, base stamp, refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry(
    pub(crate) u64,
    pub(crate) String,
    pub(crate) Value,
    pub(crate) Option<Stamp>,
    pub(crate) Option<Refusal>,
);

struct Row {
    first_counter: u64,
    entity: String,
    kind: String,
    hlc: u64,
    entries: Vec<Entry>,
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
    conn.prepare_cached(
        "INSERT INTO outbox (first_counter, entity, kind, hlc, changes, pending) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        first.0 as i64,
        entity.hyphenated().to_string(),
        kind,
        hlc.as_u64() as i64,
        encode(entries),
        entries.len() as i64
    ])?;
    Ok(())
}

fn rows(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let raw = stmt.query_map(args, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in raw {
        let (first, entity, kind, hlc, changes) = row?;
        out.push(Row {
            first_counter: first as u64,
            entity,
            kind,
            hlc: hlc as u64,
            entries: decode(&changes)?,
        });
    }
    Ok(out)
}

fn to_change(node: NodeId, row: &Row, entry: &Entry) -> Result<Change> {
    Ok(Change {
        id: ChangeId {
            device: node,
            counter: entry.0,
        },
        kind: row.kind.clone(),
        entity: Uuid::parse_str(&row.entity).map_err(|_| Error::Corrupt("outbox entity".into()))?,
        field: entry.1.clone(),
        value: entry.2.clone(),
        stamp: Stamp::new(Hlc::from_u64(row.hlc), node),
        base: entry.3,
        extra: BTreeMap::new(),
    })
}

/// Up to `limit` changes waiting to be pushed, oldest first (whole actions where they fit).
pub(crate) fn pending(conn: &Connection, node: NodeId, limit: usize) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut after = 0i64;
    'pages: loop {
        let page = rows(
            conn,
            "SELECT first_counter, entity, kind, hlc, changes FROM outbox
             WHERE pending > 0 AND first_counter > ?1 ORDER BY first_counter LIMIT 64",
            [after],
        )?;
        let Some(last) = page.last() else { break };
        after = last.first_counter as i64;
        for row in &page {
            for entry in row.entries.iter().filter(|e| e.4.is_none()) {
                if out.len() == limit {
                    break 'pages;
                }
                out.push(to_change(node, row, entry)?);
            }
        }
    }
    Ok(out)
}

/// How many changes wait to be pushed (refused ones not counted).
pub(crate) fn pending_count(conn: &Connection) -> Result<u64> {
    let n: i64 = conn.query_row("SELECT COALESCE(SUM(pending), 0) FROM outbox", [], |r| {
        r.get(0)
    })?;
    Ok(n as u64)
}

/// Applies the server's answers: accepted changes leave the outbox, refused ones stay marked,
/// unknown answers leave the change pending. Returns (accepted, refused).
pub(crate) fn settle(conn: &Connection, results: &[ChangeResult]) -> Result<(usize, usize)> {
    let by_counter: BTreeMap<u64, &ChangeResult> = results.iter().map(|r| (r.counter, r)).collect();
    let (Some(&lo), Some(&hi)) = (by_counter.keys().next(), by_counter.keys().next_back()) else {
        return Ok((0, 0));
    };
    // Rows overlapping [lo, hi]: a row starts at or before hi and its first counter is the least.
    let candidates = rows(
        conn,
        "SELECT first_counter, entity, kind, hlc, changes FROM outbox
         WHERE first_counter <= ?2 AND first_counter >= (
             SELECT COALESCE(MAX(first_counter), 0) FROM outbox WHERE first_counter <= ?1)
         ORDER BY first_counter",
        params![lo as i64, hi as i64],
    )?;
    let (mut accepted, mut refused) = (0, 0);
    for mut row in candidates {
        let before = row.entries.clone();
        row.entries
            .retain_mut(|entry| match by_counter.get(&entry.0) {
                Some(r) if r.status == ChangeStatus::Accepted => {
                    accepted += 1;
                    false
                }
                Some(r) if r.status == ChangeStatus::Refused && entry.4.is_none() => {
                    refused += 1;
                    entry.4 = Some(Refusal {
                        code: r.code.clone().unwrap_or_default(),
                        message: r.message.clone().unwrap_or_default(),
                    });
                    true
                }
                _ => true,
            });
        if row.entries == before {
            continue;
        }
        write_row(conn, &row)?;
    }
    Ok((accepted, refused))
}

fn write_row(conn: &Connection, row: &Row) -> Result<()> {
    if row.entries.is_empty() {
        conn.prepare_cached("DELETE FROM outbox WHERE first_counter = ?1")?
            .execute([row.first_counter as i64])?;
    } else {
        let pending = row.entries.iter().filter(|e| e.4.is_none()).count();
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

/// Drops refused changes of these fields of an entity: a new local write supersedes them.
pub(crate) fn drop_refused(conn: &Connection, entity: Uuid, fields: &[&str]) -> Result<()> {
    let found = rows(
        conn,
        "SELECT first_counter, entity, kind, hlc, changes FROM outbox WHERE entity = ?1 AND refused > 0",
        [entity.hyphenated().to_string()],
    )?;
    for mut row in found {
        let n = row.entries.len();
        row.entries
            .retain(|e| e.4.is_none() || !fields.contains(&e.1.as_str()));
        if row.entries.len() != n {
            write_row(conn, &row)?;
        }
    }
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

/// Every refused change, oldest first.
pub(crate) fn refused(conn: &Connection) -> Result<Vec<RefusedChange>> {
    let found = rows(
        conn,
        "SELECT first_counter, entity, kind, hlc, changes FROM outbox WHERE refused > 0 ORDER BY first_counter",
        [],
    )?;
    Ok(found
        .iter()
        .flat_map(|row| {
            row.entries.iter().filter_map(move |e| {
                e.4.as_ref().map(|r| RefusedChange {
                    entity: row.entity.clone(),
                    kind: row.kind.clone(),
                    field: e.1.clone(),
                    code: r.code.clone(),
                    message: r.message.clone(),
                })
            })
        })
        .collect())
}
