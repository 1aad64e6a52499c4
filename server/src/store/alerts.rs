//! The watch list and its alerts: administrators keep rules (ID numbers, risk regions); a reviewer of a station the person belongs to acknowledges an alert.

use crate::store::audit::{Actor, audit, require_admin};
use crate::store::caller::Caller;
use crate::store::conn::{Conn, Optional, params};
use crate::store::error::StoreError;
use crate::store::scope::visible;
use crate::store::watch::MOVED_IN;
use crate::store::watch::gone;
use crate::store::watch::not_merged_away;
use crate::store::watch::person_keys;
use crate::store::watch::raise_one;
use baylink_domain::watch::Rule;

/// Which alerts a list shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertsShown {
    /// Those not yet acknowledged.
    Open,
    /// All of them.
    All,
}

/// One watch-list entry as the admin page shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StoredRule {
    /// Row id.
    pub id: i64,
    /// The rule.
    #[serde(skip)]
    pub rule: Rule,
    /// Why it is watched.
    pub note: String,
    /// Who added it.
    pub added_by: Option<String>,
    /// When.
    pub added_ms: u64,
    /// Alerts it raised that are still open.
    pub open_alerts: i64,
}

/// The watch list, newest first.
pub fn rules(conn: &Conn<'_>) -> Result<Vec<StoredRule>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT w.id, w.kind, w.value, w.note, a.username, w.added_ms,
                (SELECT COUNT(*) FROM alert l WHERE l.rule_kind = w.kind AND l.rule_value = w.value
                    AND l.acknowledged_ms IS NULL)
         FROM watch_rule w LEFT JOIN account a ON a.id = w.added_by ORDER BY w.id DESC",
    )?;
    let rows = stmt.query_map((), |r| {
        let (kind, value): (String, String) = (r.get(1)?, r.get(2)?);
        // A rule of a kind this version does not know is left out rather than misread.
        let Some(rule) = Rule::from_stored(&kind, &value) else {
            return Ok(None);
        };
        Ok(Some(StoredRule {
            id: r.get(0)?,
            rule,
            note: r.get(3)?,
            added_by: r.get(4)?,
            added_ms: r.get::<_, i64>(5)? as u64,
            open_alerts: r.get(6)?,
        }))
    })?;
    let mut out = Vec::new();
    for row in rows {
        out.extend(row?);
    }
    Ok(out)
}

/// Adds a rule and raises its alerts for the persons already stored; returns the rule's id and
/// how many alerts it raised.
pub fn add_rule(
    conn: &Conn<'_>,
    account: i64,
    rule: &Rule,
    note: &str,
    now_ms: u64,
) -> Result<(i64, usize), StoreError> {
    let tx = conn.transaction()?;
    require_admin(&tx, Actor::Account(account))?;
    let exists = tx
        .query_row(
            "SELECT 1 FROM watch_rule WHERE kind = ?1 AND value = ?2",
            params![rule.kind(), rule.value()],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if exists {
        return Err(StoreError::Conflict(format!(
            "{}：已在关注名单中 / already on the watch list",
            rule.describe()
        )));
    }
    let id: i64 = tx.query_row(
        "INSERT INTO watch_rule (kind, value, note, added_by, added_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         RETURNING id",
        params![
            rule.kind(),
            rule.value(),
            note.trim(),
            account,
            now_ms as i64
        ],
        |r| r.get(0),
    )?;
    // Persons already stored: an ID number is an exact key; a region is a range of ID numbers
    // (its prefix), checked against the origin code because other documents can look alike.
    // (Text holds no NUL on PostgreSQL: the number followed by U+0001 bounds the number alone.)
    let (lo, hi) = match rule {
        Rule::IdNumber(n) => (n.clone(), format!("{n}\u{1}")),
        Rule::Region(p) => (p.clone(), format!("{p}\u{10FFFF}")),
    };
    // The kind as an expression: read through the ID numbers' index, not every person's row.
    let candidates: Vec<String> = tx
        .prepare(
            "SELECT entity FROM summary WHERE (kind || '') = 'person' AND id_number >= ?1 AND id_number < ?2
             ORDER BY entity",
        )?
        .query_map(params![lo, hi], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut raised = 0;
    for entity in candidates {
        if gone(&tx, &entity)? {
            continue;
        }
        let (id_number, origin) = person_keys(&tx, &entity)?;
        if rule.matches(id_number.as_deref(), origin.as_deref())
            && raise_one(&tx, &entity, rule, None, None, now_ms)?
        {
            raised += 1;
        }
    }
    audit(
        &tx,
        Some(account),
        "add_watch_rule",
        Some(rule.value()),
        Some(note.trim()),
        now_ms,
    )?;
    tx.commit()?;
    Ok((id, raised))
}

/// Removes a rule; the alerts it raised stay, with the rule's text.
pub fn remove_rule(conn: &Conn<'_>, account: i64, id: i64, now_ms: u64) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    require_admin(&tx, Actor::Account(account))?;
    let value: String = tx
        .query_row(
            "DELETE FROM watch_rule WHERE id = ?1 RETURNING value",
            [id],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("no watch rule {id}")))?;
    audit(
        &tx,
        Some(account),
        "remove_watch_rule",
        Some(&value),
        None,
        now_ms,
    )?;
    tx.commit()?;
    Ok(())
}

/// One alert as the alert list shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Alert {
    /// Row id.
    pub id: i64,
    /// The person.
    pub entity: String,
    /// The person's label (contains the ID number: mask it before showing).
    pub label: String,
    /// The person's home village.
    pub village: Option<String>,
    /// The rule matched.
    #[serde(skip)]
    pub rule: Option<Rule>,
    /// For a move-in notice rather than a rule: the village the person moved into.
    pub moved_into: Option<String>,
    /// When it was raised.
    pub raised_ms: u64,
    /// The officer whose sync raised it (none when a new rule found a stored person).
    pub officer: Option<String>,
    /// When it was acknowledged, and by whom.
    pub acknowledged: Option<(u64, String)>,
    /// Whether the person was deleted since.
    pub deleted: bool,
}

/// Alerts on persons in these villages (home or residence), open ones only unless `all`,
/// newest first.
pub fn list(
    conn: &Conn<'_>,
    villages: &[String],
    shown: AlertsShown,
    limit: u32,
) -> Result<Vec<Alert>, StoreError> {
    let all = shown == AlertsShown::All;
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT l.id, l.entity, COALESCE(s.label, ''), s.village, l.rule_kind, l.rule_value, l.raised_ms,
                o.username, l.acknowledged_ms, k.username, COALESCE(s.deleted, 0)
         FROM alert l LEFT JOIN entity se ON se.id = l.entity LEFT JOIN summary s ON s.pos = se.pos
              LEFT JOIN account o ON o.id = l.account LEFT JOIN account k ON k.id = l.acknowledged_by
         WHERE (?2 OR l.acknowledged_ms IS NULL)
           AND {}
           AND {}
         ORDER BY l.id DESC LIMIT ?3",
        crate::store::scope::in_villages("l.entity", 1),
        not_merged_away(conn.dialect())
    ))?;
    let rows = stmt.query_map(params![list, all, limit], |r| {
        let kind: String = r.get(4)?;
        let value: String = r.get(5)?;
        let acknowledged: Option<i64> = r.get(8)?;
        let by: Option<String> = r.get(9)?;
        Ok(Alert {
            id: r.get(0)?,
            entity: r.get(1)?,
            label: r.get(2)?,
            village: r.get(3)?,
            rule: Rule::from_stored(&kind, &value),
            moved_into: (kind == MOVED_IN).then(|| value.clone()),
            raised_ms: r.get::<_, i64>(6)? as u64,
            officer: r.get(7)?,
            acknowledged: acknowledged.map(|at| (at as u64, by.unwrap_or_default())),
            deleted: r.get::<_, i64>(10)? != 0,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Acknowledges an open alert on a person the reviewer may see.
pub fn acknowledge(
    conn: &Conn<'_>,
    caller: &Caller,
    id: i64,
    now_ms: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let (entity, rule_kind, rule_value): (String, String, String) = tx
        .query_row(
            "SELECT entity, rule_kind, rule_value FROM alert WHERE id = ?1 AND acknowledged_ms IS NULL",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("no open alert {id}")))?;
    // Another station's alert is answered as one that does not exist: nothing to learn.
    if !visible(&tx, caller, &entity)? {
        return Err(StoreError::NotFound(format!("no open alert {id}")));
    }
    // A watch-list hit is closed for every station: by her home station. A move-in notice is
    // the receiving station's to close (its village is the rule's value), not her home one's.
    let closes = if rule_kind == crate::store::watch::MOVED_IN {
        caller.role == crate::store::caller::Role::Admin || caller.villages.contains(&rule_value)
    } else {
        crate::store::scope::writable(&tx, caller, &entity)?
    };
    if !closes {
        return Err(crate::store::scope::not_writable());
    }
    tx.execute(
        "UPDATE alert SET acknowledged_ms = ?2, acknowledged_by = ?3 WHERE id = ?1",
        params![id, now_ms as i64, caller.account],
    )?;
    audit(
        &tx,
        Some(caller.account),
        "acknowledge_alert",
        Some(&entity),
        Some(&id.to_string()),
        now_ms,
    )?;
    tx.commit()?;
    Ok(())
}
