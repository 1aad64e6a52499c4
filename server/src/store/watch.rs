//! Raising watch-list alerts in the push that syncs a person, and noting move-ins.

use crate::store::caller::Caller;
use crate::store::conn::{Conn, Dialect, Optional, params};
use crate::store::error::StoreError;
use baylink_domain::watch::Rule;
use std::collections::BTreeSet;

pub(crate) fn load_rules(conn: &Conn<'_>) -> Result<Vec<Rule>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT kind, value FROM watch_rule")?;
    let rows = stmt.query_map((), |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut rules = Vec::new();
    for row in rows {
        let (kind, value) = row?;
        rules.extend(Rule::from_stored(&kind, &value));
    }
    Ok(rules)
}

pub(crate) fn person_keys(
    conn: &Conn<'_>,
    entity: &str,
) -> Result<(Option<String>, Option<String>), StoreError> {
    let state = crate::store::state::load(conn, entity)?
        .map(|l| l.state)
        .unwrap_or_default();
    let text = |field: &str| {
        state
            .get(field)
            .and_then(|s| s.version.value.as_str())
            .map(str::to_owned)
    };
    let (id_type, id_number, code) = (text("id_type"), text("id_number"), text("origin_code"));
    let origin =
        baylink_domain::watch::origin(id_type.as_deref(), id_number.as_deref(), code.as_deref())
            .map(str::to_owned);
    Ok((id_number, origin))
}

/// Whether a person is deleted or merged away: no alert is raised on her (the record kept
/// carries its own), and those raised before are not listed.
pub(crate) fn gone(conn: &Conn<'_>, entity: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(&gone_sql(conn.dialect()))?
        .query_row([entity], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Whether the record `g` is deleted or merged away, read from its state, in the backend's SQL.
pub(crate) fn gone_condition(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "(g.state -> '$.f.merged_into[0]' != 'null' OR g.state -> '$.f.deleted[0]' = 'true')"
        }
        Dialect::Postgres => {
            "(CAST(g.state AS jsonb) #>> '{f,merged_into,0}' IS NOT NULL
              OR CAST(g.state AS jsonb) #>> '{f,deleted,0}' = 'true')"
        }
    }
}

/// Finds a deleted or merged-away record `?1`.
fn gone_sql(dialect: Dialect) -> String {
    format!(
        "SELECT 1 FROM entity g WHERE g.id = ?1 AND {}",
        gone_condition(dialect)
    )
}

/// The alerts reviewers list: all but those of persons merged away (the record kept carries
/// them). A deleted person's stay listed: an officer who registered a number to see whether it
/// is watched, then deleted the person, leaves the alert for the station to see (the alert is
/// `l`).
pub(crate) fn not_merged_away(dialect: Dialect) -> String {
    let merged = match dialect {
        Dialect::Sqlite => "g.state -> '$.f.merged_into[0]' != 'null'",
        Dialect::Postgres => "CAST(g.state AS jsonb) #>> '{f,merged_into,0}' IS NOT NULL",
    };
    format!("NOT EXISTS (SELECT 1 FROM entity g WHERE g.id = l.entity AND {merged})")
}

/// The alerts a phone is told of: those of persons neither deleted nor merged away (the alert
/// is `l`).
pub(crate) fn not_gone(dialect: Dialect) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM entity g WHERE g.id = l.entity AND {})",
        gone_condition(dialect)
    )
}

pub(crate) fn raise_one(
    conn: &Conn<'_>,
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
    tx: &Conn<'_>,
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

/// The alert kind of a move-in notice: a person of another village came to live in one of the
/// caller's (`rule_value` is that village). The reviewers of both see it.
pub const MOVED_IN: &str = "moved_in";

/// Notes that `person` moved into `village` by a push of `caller`: an alert both villages'
/// reviewers see (the person is in both scopes now), once per person and village.
pub fn note_move_in(
    tx: &Conn<'_>,
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

/// How long after it was raised a watch-list hit still rides on a phone's pull: a phone offline
/// for longer learns of it from the station.
pub const HITS_TOLD_FOR_MS: u64 = 30 * 24 * 3_600_000;

/// Most watch-list hits one pull carries.
pub const HITS_TOLD: u32 = 100;

/// The watch-list hits (not move-in notices) on persons in `villages` raised after `since_ms`,
/// newest first, at most [`HITS_TOLD`]; persons deleted or merged away left out. Read from
/// what the server holds: the caller names nothing here but who it is.
pub fn recent_hits(
    conn: &Conn<'_>,
    villages: &[String],
    since_ms: u64,
) -> Result<Vec<baylink_sync::wire::WatchHit>, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT l.id, l.entity, l.rule_kind, l.raised_ms FROM alert l
         WHERE l.raised_ms > ?2 AND l.rule_kind <> '{MOVED_IN}'
           AND {}
           AND {}
         ORDER BY l.id DESC LIMIT ?3",
        crate::store::scope::in_villages("l.entity", 1),
        not_gone(conn.dialect())
    ))?;
    let rows = stmt.query_map(params![list, since_ms as i64, HITS_TOLD], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut hits = Vec::new();
    for row in rows {
        let (id, entity, rule, raised_ms) = row?;
        hits.push(baylink_sync::wire::WatchHit {
            id,
            entity: crate::store::pull::parse_entity(&entity)?,
            rule,
            raised_ms: raised_ms as u64,
        });
    }
    Ok(hits)
}
