//! The watch list and its alerts: administrators keep rules (ID numbers, risk regions); a person
//! that a device syncs and that matches a rule raises one alert per rule, which a reviewer of a
//! station the person belongs to acknowledges.

use std::collections::BTreeSet;

use baylink_domain::watch::Rule;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

use crate::store::console::{audit, visible};
use crate::store::error::StoreError;
use crate::store::sync::Caller;

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

fn load_rules(conn: &Connection) -> Result<Vec<Rule>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT kind, value FROM watch_rule")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut rules = Vec::new();
    for row in rows {
        let (kind, value) = row?;
        rules.extend(Rule::from_stored(&kind, &value));
    }
    Ok(rules)
}

/// The watch list, newest first.
pub fn rules(conn: &Connection) -> Result<Vec<StoredRule>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT w.id, w.kind, w.value, w.note, a.username, w.added_ms,
                (SELECT COUNT(*) FROM alert l WHERE l.rule_kind = w.kind AND l.rule_value = w.value
                    AND l.acknowledged_ms IS NULL)
         FROM watch_rule w LEFT JOIN account a ON a.id = w.added_by ORDER BY w.id DESC",
    )?;
    let rows = stmt.query_map([], |r| {
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

fn person_keys(
    conn: &Connection,
    entity: &str,
) -> Result<(Option<String>, Option<String>), StoreError> {
    let text = |field: &str| -> Result<Option<String>, StoreError> {
        let value: Option<String> = conn
            .prepare_cached("SELECT value FROM field WHERE entity = ?1 AND field = ?2")?
            .query_row(params![entity, field], |r| r.get(0))
            .optional()?;
        Ok(value
            .and_then(|v| serde_json::from_str::<Value>(&v).ok())
            .and_then(|v| v.as_str().map(str::to_owned)))
    };
    let (id_type, id_number, code) = (text("id_type")?, text("id_number")?, text("origin_code")?);
    let origin =
        baylink_domain::watch::origin(id_type.as_deref(), id_number.as_deref(), code.as_deref())
            .map(str::to_owned);
    Ok((id_number, origin))
}

/// Whether a person is deleted or merged away: no alert is raised on her (the record kept
/// carries its own), and those raised before are not listed.
fn gone(conn: &Connection, entity: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(GONE)?
        .query_row([entity], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Finds a deleted or merged-away record `?1`.
const GONE: &str = "SELECT 1 FROM field WHERE entity = ?1
     AND ((field = 'merged_into' AND value != 'null') OR (field = 'deleted' AND value = 'true'))";

/// The alerts listed: those of persons neither deleted nor merged away.
const NOT_GONE: &str = "NOT EXISTS (SELECT 1 FROM field g WHERE g.entity = l.entity
     AND ((g.field = 'merged_into' AND g.value != 'null') OR (g.field = 'deleted' AND g.value = 'true')))";

fn raise_one(
    conn: &Connection,
    entity: &str,
    rule: &Rule,
    device: Option<&str>,
    account: Option<i64>,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO alert (entity, rule_kind, rule_value, raised_ms, device, account)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (entity, rule_kind, rule_value) DO NOTHING",
        )?
        .execute(params![entity, rule.kind(), rule.value(), now_ms as i64, device, account])?;
    Ok(inserted > 0)
}

/// Raises the alerts of the persons among `touched` (entities a push just wrote), in the push's
/// transaction: an alert is as durable as the change that raised it.
pub fn raise(
    tx: &Transaction<'_>,
    touched: &BTreeSet<String>,
    caller: &Caller,
    now_ms: u64,
) -> Result<usize, StoreError> {
    let rules = load_rules(tx)?;
    if rules.is_empty() {
        return Ok(0);
    }
    let mut raised = 0;
    for entity in touched {
        let is_person = tx
            .prepare_cached("SELECT 1 FROM entity WHERE id = ?1 AND kind = 'person'")?
            .query_row([entity], |_| Ok(()))
            .optional()?
            .is_some();
        if !is_person || gone(tx, entity)? {
            continue;
        }
        let (id_number, origin) = person_keys(tx, entity)?;
        for rule in baylink_domain::watch::matching(&rules, id_number.as_deref(), origin.as_deref())
        {
            if raise_one(
                tx,
                entity,
                rule,
                Some(&caller.device),
                Some(caller.account),
                now_ms,
            )? {
                raised += 1;
            }
        }
    }
    Ok(raised)
}

/// Adds a rule and raises its alerts for the persons already stored; returns the rule's id and
/// how many alerts it raised.
pub fn add_rule(
    conn: &mut Connection,
    account: i64,
    rule: &Rule,
    note: &str,
    now_ms: u64,
) -> Result<(i64, usize), StoreError> {
    let tx = conn.transaction()?;
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
    tx.execute(
        "INSERT INTO watch_rule (kind, value, note, added_by, added_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![rule.kind(), rule.value(), note.trim(), account, now_ms as i64],
    )?;
    let id = tx.last_insert_rowid();
    // Persons already stored: an ID number is an exact key; a region is a range of ID numbers
    // (its prefix), checked against the origin code because other documents can look alike.
    let (lo, hi) = match rule {
        Rule::IdNumber(n) => (n.clone(), format!("{n}\u{0}")),
        Rule::Region(p) => (p.clone(), format!("{p}\u{10FFFF}")),
    };
    let candidates: Vec<String> = tx
        .prepare(
            "SELECT entity FROM summary WHERE kind = 'person' AND id_number >= ?1 AND id_number < ?2",
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
pub fn remove_rule(
    conn: &mut Connection,
    account: i64,
    id: i64,
    now_ms: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
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
}

/// The alert kind of a move-in notice: a person of another village came to live in one of the
/// caller's (`rule_value` is that village). The reviewers of both see it.
pub const MOVED_IN: &str = "moved_in";

/// Notes that `person` moved into `village` by a push of `caller`: an alert both villages'
/// reviewers see (the person is in both scopes now), once per person and village.
pub fn note_move_in(
    tx: &Transaction<'_>,
    person: &str,
    village: &str,
    caller: &Caller,
    now_ms: u64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO alert (entity, rule_kind, rule_value, raised_ms, device, account)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        person,
        MOVED_IN,
        village,
        now_ms as i64,
        caller.device,
        caller.account
    ])?;
    Ok(())
}

/// Alerts on persons in these villages (home or residence), open ones only unless `all`,
/// newest first.
pub fn list(
    conn: &Connection,
    villages: &[String],
    all: bool,
    limit: u32,
) -> Result<Vec<Alert>, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT l.id, l.entity, COALESCE(s.label, ''), s.village, l.rule_kind, l.rule_value, l.raised_ms,
                o.username, l.acknowledged_ms, k.username
         FROM alert l LEFT JOIN summary s ON s.entity = l.entity
              LEFT JOIN account o ON o.id = l.account LEFT JOIN account k ON k.id = l.acknowledged_by
         WHERE (?2 OR l.acknowledged_ms IS NULL)
           AND EXISTS (SELECT 1 FROM scope p WHERE p.entity = l.entity AND p.village IN (SELECT value FROM json_each(?1)))
           AND {NOT_GONE}
         ORDER BY l.id DESC LIMIT ?3"
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
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many alerts on persons in these villages are open.
pub fn open_count(conn: &Connection, villages: &[String]) -> Result<i64, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    Ok(conn.query_row(
        &format!(
            "SELECT COUNT(*) FROM alert l WHERE l.acknowledged_ms IS NULL
               AND EXISTS (SELECT 1 FROM scope p WHERE p.entity = l.entity AND p.village IN (SELECT value FROM json_each(?1)))
               AND {NOT_GONE}"
        ),
        [list],
        |r| r.get(0),
    )?)
}

/// Acknowledges an open alert on a person the reviewer may see.
pub fn acknowledge(
    conn: &mut Connection,
    caller: &Caller,
    id: i64,
    now_ms: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let entity: String = tx
        .query_row(
            "SELECT entity FROM alert WHERE id = ?1 AND acknowledged_ms IS NULL",
            [id],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("no open alert {id}")))?;
    // Another station's alert is answered as one that does not exist: nothing to learn.
    if !visible(&tx, caller, &entity)? {
        return Err(StoreError::NotFound(format!("no open alert {id}")));
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
