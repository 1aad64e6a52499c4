//! Review: approving or returning a record, and settling a concurrent edit, each with its audit entry.

use crate::store::audit::audit;
pub use crate::store::authorize::review::Verdict;
use crate::store::authorize::review::{ReviewRefused, plan_review};
use crate::store::caller::Caller;
use crate::store::conn::{Conn, Optional, params};
use crate::store::error::StoreError;
use crate::store::scope::scope_of;
use crate::store::scope::visible;
use crate::store::write::write_in;
use baylink_domain::EntityKind;
use serde_json::Value;
use uuid::Uuid;

/// Which value of a conflict stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The value that won the merge.
    Kept,
    /// The value that lost it.
    Lost,
}

/// Approves a record, or returns it to its officer with a comment; the decision reaches the
/// officer's device at its next sync. Reviewers decide on their station's villages only.
pub fn review(
    conn: &Conn<'_>,
    reviewer: &Caller,
    entity: &Uuid,
    verdict: &Verdict,
    now_ms: u64,
) -> Result<(), StoreError> {
    // The decision and its audit entry commit together, or neither does; the villages it is
    // judged by are read in the same transaction.
    let tx = conn.transaction()?;
    let scope = scope_of(&tx, &entity.hyphenated().to_string())?;
    let today = baylink_domain::Date::from_unix_ms(
        now_ms as i64,
        baylink_domain::date::CHINA_OFFSET_MINUTES,
    );
    let plan = match plan_review(reviewer.role, &reviewer.villages, &scope, verdict, today) {
        Ok(plan) => plan,
        // Another station's record is answered as one that does not exist: nothing to learn.
        Err(ReviewRefused::NotVisible) => {
            return Err(StoreError::NotFound(format!("no record {entity}")));
        }
        Err(ReviewRefused::NoComment) => {
            return Err(StoreError::Invalid(
                "comment: say why the record is returned".into(),
            ));
        }
        Err(ReviewRefused::BadComment(why)) => {
            return Err(StoreError::Invalid(format!("comment: {why}")));
        }
    };
    // Seen where she lives, decided on by her home station (whose officer the return goes to).
    if !crate::store::scope::writable(&tx, reviewer, &entity.hyphenated().to_string())? {
        return Err(crate::store::scope::not_writable());
    }
    // Only what changes is written: no empty comment over none (an approval without one), no
    // decision over the same one (approving an approved record again; the audit log keeps that
    // she did). A return's comment cleared by an approval is written.
    let held = crate::store::state::load(&tx, &entity.hyphenated().to_string())?;
    // A record merged away or deleted is no one's to decide any more (a form opened before).
    let gone = held.as_ref().is_some_and(|h| {
        let value = |field: &str| h.state.get(field).map(|s| &s.version.value);
        value("merged_into").is_some_and(|v| !v.is_null())
            || value("deleted") == Some(&Value::Bool(true))
    });
    if gone {
        return Err(StoreError::Conflict(format!(
            "{entity} is merged away or deleted: no longer reviewed"
        )));
    }
    let fields: Vec<_> = plan
        .fields
        .into_iter()
        .filter(|(field, value)| {
            let was = held
                .as_ref()
                .and_then(|h| h.state.get(*field))
                .map(|s| &s.version.value);
            was.unwrap_or(&Value::Null) != value
        })
        .collect();
    if !fields.is_empty() {
        write_in(&tx, reviewer.account, entity, &fields, now_ms)?;
    }
    audit(
        &tx,
        Some(reviewer.account),
        plan.action,
        Some(&entity.to_string()),
        plan.comment.as_deref(),
        now_ms,
    )?;
    tx.commit()?;
    Ok(())
}

/// A concurrent edit awaiting a reviewer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Conflict {
    /// Conflict id.
    pub id: i64,
    /// The record.
    pub entity: String,
    /// Its label.
    pub label: String,
    /// The field.
    pub field: String,
    /// Kind of the record.
    pub kind: String,
    /// The record's home village: its station settles the conflict (a person who moved in is
    /// seen elsewhere too).
    pub village: Option<String>,
    /// The value that stands (JSON) and who wrote it, when.
    pub kept: Side,
    /// The value that lost (JSON) and who wrote it, when.
    pub lost: Side,
}

/// One side of a conflict.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Side {
    /// Value (JSON).
    pub value: String,
    /// Author's username, when the writer is a known device (or `console`).
    pub author: String,
    /// When it was written (by its writer's clock).
    pub at_ms: u64,
}

pub(crate) fn side(conn: &Conn<'_>, value: String, stamp: &str) -> Result<Side, StoreError> {
    let parsed: Option<baylink_sync::Stamp> = stamp.parse().ok();
    let node = parsed.map(|s| s.node.to_string()).unwrap_or_default();
    let author: Option<String> = conn
        .prepare_cached(
            "SELECT a.username FROM device d JOIN account a ON a.id = d.account WHERE d.id = ?1",
        )?
        .query_row([&node], |r| r.get(0))
        .optional()?;
    Ok(Side {
        value,
        author: author.unwrap_or_else(|| "审核台".into()),
        at_ms: parsed.map_or(0, |s| s.hlc.millis()),
    })
}

/// Open conflicts on records of these villages, oldest first.
pub fn conflicts(
    conn: &Conn<'_>,
    villages: &[String],
    limit: u32,
) -> Result<Vec<Conflict>, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT c.id, c.entity, COALESCE(s.label, ''), c.field, c.kind, c.kept_value, c.kept_stamp, c.lost_value, c.lost_stamp, se.village
         FROM conflict c LEFT JOIN entity se ON se.id = c.entity LEFT JOIN summary s ON s.pos = se.pos
         WHERE c.settled_ms IS NULL AND {}
         ORDER BY c.id LIMIT ?2",
        crate::store::scope::in_villages("c.entity", 1)
    ))?;
    struct Raw {
        id: i64,
        entity: String,
        label: String,
        field: String,
        kind: String,
        kept: (String, String),
        lost: (String, String),
        village: Option<String>,
    }
    let rows: Vec<Raw> = stmt
        .query_map(params![list, limit], |r| {
            Ok(Raw {
                id: r.get(0)?,
                entity: r.get(1)?,
                label: r.get(2)?,
                field: r.get(3)?,
                kind: r.get(4)?,
                kept: (r.get(5)?, r.get(6)?),
                lost: (r.get(7)?, r.get(8)?),
                village: r.get(9)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|raw| {
            Ok(Conflict {
                kept: side(conn, raw.kept.0, &raw.kept.1)?,
                lost: side(conn, raw.lost.0, &raw.lost.1)?,
                id: raw.id,
                entity: raw.entity,
                label: raw.label,
                field: raw.field,
                kind: raw.kind,
                village: raw.village,
            })
        })
        .collect()
}

/// Settles a conflict by writing the chosen value again (an ordinary write, so it is in the
/// history and reaches every device), and marks it settled.
pub fn settle_conflict(
    conn: &Conn<'_>,
    reviewer: &crate::store::caller::Caller,
    id: i64,
    keep: Keep,
    now_ms: u64,
) -> Result<(), StoreError> {
    // One transaction, reads included: the conflict read open is the one settled.
    let tx = conn.transaction()?;
    let row: Option<(String, String, String, String)> = tx
        .query_row(
            "SELECT entity, field, kept_value, lost_value FROM conflict WHERE id = ?1 AND settled_ms IS NULL",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let (entity, field, kept, lost) =
        row.ok_or_else(|| StoreError::NotFound(format!("no open conflict {id}")))?;
    // Another station's conflict is answered as one that does not exist: nothing to learn.
    if !visible(&tx, reviewer, &entity)? {
        return Err(StoreError::NotFound(format!("no open conflict {id}")));
    }
    if !crate::store::scope::writable(&tx, reviewer, &entity)? {
        return Err(crate::store::scope::not_writable());
    }
    let chosen: Value = serde_json::from_str(match keep {
        Keep::Lost => &lost,
        Keep::Kept => &kept,
    })
    .map_err(|e| StoreError::Backend(format!("stored conflict value: {e}")))?;
    let uuid = uuid::Uuid::parse_str(&entity)
        .map_err(|_| StoreError::Backend("stored entity id".into()))?;
    // The value, the conflict settled and its audit entry, or none of them.
    refuse_key_taken(&tx, &entity, &field, &chosen, now_ms)?;
    write_in(
        &tx,
        reviewer.account,
        &uuid,
        &[(field.as_str(), chosen)],
        now_ms,
    )?;
    let settled = tx.execute(
        "UPDATE conflict SET settled_ms = ?2 WHERE id = ?1 AND settled_ms IS NULL",
        params![id, now_ms as i64],
    )?;
    if settled != 1 {
        return Err(StoreError::NotFound(format!("no open conflict {id}")));
    }
    audit(
        &tx,
        Some(reviewer.account),
        "settle_conflict",
        Some(&entity),
        Some(&field),
        now_ms,
    )?;
    tx.commit()?;
    Ok(())
}

/// A settled value that would give the record the natural key another live record holds (the
/// losing side of a concurrent edit of an ID number, a plate or an address code): refused, as
/// the push refuses it; the two are merged as duplicates instead.
fn refuse_key_taken(
    tx: &Conn<'_>,
    entity: &str,
    field: &str,
    chosen: &Value,
    now_ms: u64,
) -> Result<(), StoreError> {
    if !baylink_domain::KEY_FIELDS.contains(&field) {
        return Ok(());
    }
    let kind: String = tx.query_row("SELECT kind FROM entity WHERE id = ?1", [entity], |r| {
        r.get(0)
    })?;
    let Some(kind) = EntityKind::parse(&kind) else {
        return Ok(());
    };
    let today = baylink_domain::Date::from_unix_ms(
        now_ms as i64,
        baylink_domain::date::CHINA_OFFSET_MINUTES,
    );
    // The key as the push judges it: derived fields left out filled in.
    let key_of = |state: &baylink_sync::EntityState| {
        let values =
            crate::store::authorize::keyed(kind, baylink_sync::merge::values(state), today);
        baylink_domain::natural_key(kind, &values)
    };
    let mut after = crate::store::values::state_of(tx, entity)?;
    if let Some(version) = after.get_mut(field) {
        version.value = chosen.clone();
    }
    let Some(key) = key_of(&after) else {
        return Ok(());
    };
    let column = match kind {
        EntityKind::Person => "id_number",
        EntityKind::Vehicle => "plate",
        EntityKind::House => "address_code",
        _ => return Ok(()),
    };
    let Some(text) = baylink_sync::merge::values(&after)
        .get(column)
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Ok(());
    };
    for other in crate::store::holders::holders(tx, kind.as_str(), column, &text)? {
        if other != entity
            && key_of(&crate::store::values::state_of(tx, &other)?) == Some(key.clone())
        {
            return Err(StoreError::Conflict(format!(
                "另一条记录（{other}）已有此值：两条记录若是同一{}，请合并 / another record ({other}) holds this key: merge the two if they are one",
                kind.label_zh()
            )));
        }
    }
    Ok(())
}
