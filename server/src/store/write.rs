//! The write path every use case shares: sequence numbers, stored values read back, one change applied (history, feed, conflict, summary, scope), and the server's own writes.

use crate::store::authorize::{self};
use crate::store::caller::Caller;
use crate::store::caller::Role;
use crate::store::conn::{Conn, Optional, params};
use crate::store::error::StoreError;
use crate::store::scope::rescope;
use crate::store::values::Sequence;
use crate::store::values::held;
use baylink_sync::{Change, Hlc, NodeId, Stamp, plan_field};
use serde_json::Value;
use std::collections::BTreeSet;
use uuid::Uuid;

/// Writes fields of a record as the server (a reviewer's decision, a settled conflict): an
/// ordinary write with the server's node id, stamped after every value it replaces, through the
/// same merge, history and scope as a device's push. The device id in the history is `console`.
pub fn server_write(
    conn: &Conn<'_>,
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
    tx: &Conn<'_>,
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
        .query_row("SELECT value FROM meta WHERE key = 'node'", (), |r| {
            r.get::<_, String>(0)
        })?
        .parse()
        .map_err(|_| StoreError::Backend("server node id".into()))?;
    let last: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'clock'", (), |r| {
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

/// Merges one accepted change into its record (held in the write's pending records): history
/// always, the field when it wins, a conflict when it was concurrent; nothing at all for the
/// very value and stamp the record holds (a phone sending again what a restored server may have
/// lost). `echo`: the device was told this change was refused (an earlier copy of the push), so
/// pulls send it back. Returns whether the field took the change.
pub(crate) fn apply(
    tx: &Conn<'_>,
    seq: &mut Sequence,
    caller: &Caller,
    change: &Change,
    echo: bool,
    now_ms: u64,
    persons: &mut BTreeSet<String>,
) -> Result<bool, StoreError> {
    // The ids as text on the stack: a push applies thousands of changes.
    let mut text = Uuid::encode_buffer();
    let entity: &str = change.entity.hyphenated().encode_lower(&mut text);
    let held = seq.pending.held(tx, entity, &change.field)?;
    let incoming = change.version();
    if held.as_ref() == Some(&incoming) {
        return Ok(false);
    }
    let plan = plan_field(held.as_ref(), &incoming, change.base);
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
    if plan.apply
        && change.kind == "residence"
        && change.field == "person"
        && let Some(old) = held.as_ref().and_then(|h| h.value.as_str())
    {
        persons.insert(old.to_owned());
    }
    seq.pending.note(
        entity,
        &change.kind,
        &change.field,
        held,
        &incoming,
        plan.apply,
        &caller.device,
        caller.account,
        now_ms,
    );
    if !plan.apply {
        return Ok(false);
    }
    // A pull leaves a device's own accepted change out of its answer by this counter.
    let mut node = Uuid::encode_buffer();
    let own = !echo
        && change.id.device == change.stamp.node
        && caller.device.as_str() == &*change.stamp.node.0.hyphenated().encode_lower(&mut node);
    let counter = if own { change.id.counter } else { 0 };
    seq.pending
        .write(tx, entity, &change.kind, &change.field, incoming, counter)?;
    Ok(true)
}
