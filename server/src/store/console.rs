//! What the review console reads and keeps: entity summaries (lists, filters, search, counts),
//! console sessions with their CSRF tokens, and the audit log.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

use baylink_domain::{EntityKind, Fields, summarize};

use crate::store::error::StoreError;

/// Recomputes an entity's summary row from its current fields.
pub fn refresh_summary(conn: &Connection, entity: &str) -> Result<(), StoreError> {
    let row: Option<(String, Option<String>)> = conn
        .prepare_cached("SELECT kind, village FROM entity WHERE id = ?1")?
        .query_row([entity], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((kind, village)) = row else {
        return Ok(());
    };
    let mut stmt = conn.prepare_cached("SELECT field, value, seq FROM field WHERE entity = ?1")?;
    let mut fields = Fields::new();
    let mut updated = 0i64;
    let rows = stmt.query_map([entity], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (field, value, seq) = row?;
        updated = updated.max(seq);
        fields.insert(field, serde_json::from_str(&value).unwrap_or(Value::Null));
    }
    let summary = EntityKind::parse(&kind)
        .map(|k| summarize(k, &fields))
        .unwrap_or_default();
    let created_by = fields.get("created_by").and_then(Value::as_str);
    let created_at = fields.get("created_at").and_then(Value::as_str);
    let columns = params![
        entity,
        kind,
        village,
        summary.label,
        summary.id_number,
        summary.name,
        summary.plate,
        summary.address,
        summary.phone,
        summary.review_status,
        summary.deleted,
        created_by,
        created_at,
        updated
    ];
    // Many writes (a note, an occupation) leave every listed column as it was: then only the
    // recency is written (the four indexes holding it), and the search and date indexes are not.
    let recency_only = conn
        .prepare_cached(
            "UPDATE summary SET updated_seq = ?14
             WHERE entity = ?1 AND kind = ?2 AND village IS ?3 AND label = ?4 AND id_number IS ?5
               AND name IS ?6 AND plate IS ?7 AND address IS ?8 AND phone IS ?9
               AND review_status IS ?10 AND deleted = ?11 AND created_by IS ?12
               AND created_at IS ?13",
        )?
        .execute(columns)?;
    if recency_only == 1 {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO summary (entity, kind, village, label, id_number, name, plate, address, phone,
                              review_status, deleted, created_by, created_at, updated_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (entity) DO UPDATE SET kind = excluded.kind, village = excluded.village,
             label = excluded.label, id_number = excluded.id_number, name = excluded.name,
             plate = excluded.plate, address = excluded.address, phone = excluded.phone,
             review_status = excluded.review_status, deleted = excluded.deleted,
             created_by = excluded.created_by, created_at = excluded.created_at,
             updated_seq = excluded.updated_seq",
    )?
    .execute(columns)?;
    Ok(())
}

/// One row of a console list.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    /// Entity id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Village code.
    pub village: Option<String>,
    /// Label (contains the full ID number: mask it before showing).
    pub label: String,
    /// ID number.
    pub id_number: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Review status.
    pub review_status: Option<String>,
    /// Capturing officer.
    pub created_by: Option<String>,
    /// Name (person, landlord).
    pub name: Option<String>,
    /// Plate (vehicle).
    pub plate: Option<String>,
    /// Address (house).
    pub address: Option<String>,
    /// When it was captured (local date-time).
    pub created_at: Option<String>,
}

/// A filter for console lists.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Kind.
    pub kind: Option<String>,
    /// One village (must be one of the caller's).
    pub village: Option<String>,
    /// Review status.
    pub status: Option<String>,
    /// Prefix of an ID number, name, plate, address or phone.
    pub query: Option<String>,
    /// Captured on or after this date (`YYYY-MM-DD`).
    pub from: Option<String>,
    /// Captured on or before this date (`YYYY-MM-DD`).
    pub to: Option<String>,
}

/// A page of records in `villages` matching the filter, newest first.
///
/// The SQL holds only the conditions the filter sets, so that SQLite can pick an index: one
/// village's list walks that village's index; a station's list walks the records newest first
/// (`summary_kind_recent`, `summary_recent`) and keeps those of its villages; a search unions the
/// prefix ranges of the search-key indexes. A `+` before a column keeps the planner off its index.
pub fn list(
    conn: &Connection,
    villages: &[String],
    filter: &Filter,
    limit: u32,
    offset: u32,
) -> Result<Vec<Row>, StoreError> {
    use rusqlite::types::Value as Sql;
    let mut sql = String::from(
        "SELECT entity, kind, village, label, id_number, phone, review_status, created_by,
                name, plate, address, created_at FROM summary WHERE +deleted = 0",
    );
    let mut args: Vec<Sql> = Vec::new();
    // Appends a clause whose `?` is the value's parameter number.
    fn arg(sql: &mut String, args: &mut Vec<Sql>, clause: &str, value: Sql) {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    }
    let query = filter
        .query
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty());
    let dated = filter.from.is_some() || filter.to.is_some();
    match &filter.village {
        Some(v) if villages.contains(v) => {
            let column = if query.is_some() {
                " AND +village = ?"
            } else {
                " AND village = ?"
            };
            arg(&mut sql, &mut args, column, Sql::Text(v.clone()));
        }
        Some(_) => return Ok(Vec::new()),
        None => {
            let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
            // A date range is narrow: read it per village from `summary_created`. Otherwise walk
            // the newest records and keep the station's.
            let clause = if dated && query.is_none() {
                " AND village IN (SELECT value FROM json_each(?))"
            } else {
                " AND +village IN (SELECT value FROM json_each(?))"
            };
            arg(&mut sql, &mut args, clause, Sql::Text(list));
        }
    }
    if let Some(kind) = &filter.kind {
        let column = if query.is_some() || dated {
            " AND +kind = ?"
        } else {
            " AND kind = ?"
        };
        arg(&mut sql, &mut args, column, Sql::Text(kind.clone()));
    }
    if let Some(status) = &filter.status {
        arg(
            &mut sql,
            &mut args,
            " AND +review_status = ?",
            Sql::Text(status.clone()),
        );
    }
    if let Some(from) = &filter.from {
        arg(
            &mut sql,
            &mut args,
            if dated && query.is_none() {
                " AND created_at >= ?"
            } else {
                " AND +created_at >= ?"
            },
            Sql::Text(from.clone()),
        );
    }
    if let Some(to) = &filter.to {
        arg(
            &mut sql,
            &mut args,
            if dated && query.is_none() {
                " AND created_at < ?"
            } else {
                " AND +created_at < ?"
            },
            Sql::Text(format!("{to} 99")),
        );
    }
    if let Some(q) = query {
        // Each column by its own prefix, normalised as it is stored (one rule, the phone's too).
        let mut ranges = Vec::new();
        for (column, prefix) in baylink_domain::search::prefixes(q) {
            arg(
                &mut sql,
                &mut args,
                "",
                Sql::Text(format!("{prefix}\u{10FFFF}")),
            );
            let hi = args.len();
            arg(&mut sql, &mut args, "", Sql::Text(prefix));
            let lo = args.len();
            ranges.push(format!("({column} >= ?{lo} AND {column} < ?{hi})"));
        }
        if ranges.is_empty() {
            ranges.push("0".to_owned());
        }
        sql.push_str(&format!(" AND ({})", ranges.join(" OR ")));
    }
    sql.push_str(" ORDER BY updated_seq DESC");
    arg(
        &mut sql,
        &mut args,
        " LIMIT ?",
        Sql::Integer(i64::from(limit)),
    );
    arg(
        &mut sql,
        &mut args,
        " OFFSET ?",
        Sql::Integer(i64::from(offset)),
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        Ok(Row {
            id: r.get(0)?,
            kind: r.get(1)?,
            village: r.get(2)?,
            label: r.get(3)?,
            id_number: r.get(4)?,
            phone: r.get(5)?,
            review_status: r.get(6)?,
            created_by: r.get(7)?,
            name: r.get(8)?,
            plate: r.get(9)?,
            address: r.get(10)?,
            created_at: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Record counts by village, kind and review status.
pub fn counts(
    conn: &Connection,
    villages: &[String],
) -> Result<Vec<(String, String, String, i64)>, StoreError> {
    let villages = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(
        "SELECT village, kind, COALESCE(review_status, 'pending'), COUNT(*) FROM summary
         WHERE deleted = 0 AND village IN (SELECT value FROM json_each(?1))
         GROUP BY village, kind, review_status ORDER BY village, kind",
    )?;
    let rows = stmt.query_map([villages], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Opens a console session; returns (cookie value, CSRF token).
pub fn open_session(
    conn: &Connection,
    account: i64,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<(String, String), StoreError> {
    let (cookie, csrf) = (random_token(), random_token());
    conn.execute(
        "INSERT INTO console_session (hash, account, csrf, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![hash(&cookie), account, csrf, now_ms as i64, (now_ms + ttl_ms) as i64],
    )?;
    Ok((cookie, csrf))
}

/// The account and CSRF token of a live session cookie.
pub fn session(
    conn: &Connection,
    cookie: &str,
    now_ms: u64,
) -> Result<Option<(i64, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT account, csrf FROM console_session WHERE hash = ?1 AND expires_ms > ?2",
            params![hash(cookie), now_ms as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Ends a console session.
pub fn close_session(conn: &Connection, cookie: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM console_session WHERE hash = ?1",
        [hash(cookie)],
    )?;
    Ok(())
}

/// Records an audited action.
pub fn audit(
    conn: &Connection,
    account: Option<i64>,
    action: &str,
    target: Option<&str>,
    detail: Option<&str>,
    now_ms: u64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit (at_ms, account, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![now_ms as i64, account, action, target, detail])?;
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

fn side(conn: &Connection, value: String, stamp: &str) -> Result<Side, StoreError> {
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
    conn: &Connection,
    villages: &[String],
    limit: u32,
) -> Result<Vec<Conflict>, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, c.entity, COALESCE(s.label, ''), c.field, c.kind, c.kept_value, c.kept_stamp, c.lost_value, c.lost_stamp
         FROM conflict c LEFT JOIN summary s ON s.entity = c.entity
         WHERE c.settled_ms IS NULL
           AND EXISTS (SELECT 1 FROM scope p WHERE p.entity = c.entity AND p.village IN (SELECT value FROM json_each(?1)))
         ORDER BY c.id LIMIT ?2",
    )?;
    struct Raw {
        id: i64,
        entity: String,
        label: String,
        field: String,
        kind: String,
        kept: (String, String),
        lost: (String, String),
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
            })
        })
        .collect()
}

/// How many conflicts on records of these villages are open.
pub fn open_conflicts(conn: &Connection, villages: &[String]) -> Result<i64, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM conflict c WHERE c.settled_ms IS NULL
           AND EXISTS (SELECT 1 FROM scope p WHERE p.entity = c.entity AND p.village IN (SELECT value FROM json_each(?1)))",
        [list],
        |r| r.get(0),
    )?)
}

/// Settles a conflict by writing the chosen value again (an ordinary write, so it is in the
/// history and reaches every device), and marks it settled.
pub fn settle_conflict(
    conn: &mut Connection,
    reviewer: &crate::store::sync::Caller,
    id: i64,
    keep_lost: bool,
    now_ms: u64,
) -> Result<(), StoreError> {
    let row: Option<(String, String, String, String)> = conn
        .query_row(
            "SELECT entity, field, kept_value, lost_value FROM conflict WHERE id = ?1 AND settled_ms IS NULL",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let (entity, field, kept, lost) =
        row.ok_or_else(|| StoreError::NotFound(format!("no open conflict {id}")))?;
    // Another station's conflict is answered as one that does not exist: nothing to learn.
    if !visible(conn, reviewer, &entity)? {
        return Err(StoreError::NotFound(format!("no open conflict {id}")));
    }
    let chosen: Value = serde_json::from_str(if keep_lost { &lost } else { &kept })
        .map_err(|e| StoreError::Backend(format!("stored conflict value: {e}")))?;
    let uuid = uuid::Uuid::parse_str(&entity)
        .map_err(|_| StoreError::Backend("stored entity id".into()))?;
    crate::store::sync::server_write(
        conn,
        reviewer.account,
        &uuid,
        &[(field.as_str(), chosen)],
        now_ms,
    )?;
    conn.execute(
        "UPDATE conflict SET settled_ms = ?2 WHERE id = ?1",
        params![id, now_ms as i64],
    )?;
    audit(
        conn,
        Some(reviewer.account),
        "settle_conflict",
        Some(&entity),
        Some(&field),
        now_ms,
    )
}

/// Whether the console caller may see a record: administrators every record, reviewers the
/// records in their station's villages (a person also where they live).
pub fn visible(
    conn: &Connection,
    caller: &crate::store::sync::Caller,
    entity: &str,
) -> Result<bool, StoreError> {
    if caller.role == crate::store::accounts::Role::Admin {
        return Ok(true);
    }
    let list = serde_json::to_string(&caller.villages).unwrap_or_else(|_| "[]".into());
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM scope WHERE entity = ?1 AND village IN (SELECT value FROM json_each(?2)))",
        )?
        .query_row(params![entity, list], |r| r.get(0))?)
}

/// A record linked to the one shown: pointing at it (`incoming`) or pointed at by one of its
/// fields.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Linked {
    /// The field that holds the reference.
    pub field: String,
    /// Whether the other record points at this one.
    pub incoming: bool,
    /// The other record.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Its label (may contain an ID number: mask it before showing).
    pub label: String,
    /// Whether it is deleted or merged away.
    pub hidden: bool,
}

/// The records linked to `id`: what its reference fields name, and what names it (residences,
/// vehicles, visits, duplicates merged into it).
pub fn linked(
    conn: &Connection,
    id: &str,
    fields: &std::collections::BTreeMap<String, String>,
    kind: Option<EntityKind>,
) -> Result<Vec<Linked>, StoreError> {
    let mut summary =
        conn.prepare_cached("SELECT kind, label, deleted FROM summary WHERE entity = ?1")?;
    let mut out = Vec::new();
    for (field, value) in fields {
        let is_ref = kind.and_then(|k| k.field(field)).is_some_and(|s| {
            matches!(
                s.ty,
                baylink_domain::FieldType::Ref(_) | baylink_domain::FieldType::Redirect
            )
        });
        let Some(target) = is_ref
            .then(|| serde_json::from_str::<Value>(value).ok())
            .flatten()
            .and_then(|v| v.as_str().map(str::to_owned))
        else {
            continue;
        };
        let found: Option<(String, String, bool)> = summary
            .query_row([&target], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        if let Some((kind, label, hidden)) = found {
            out.push(Linked {
                field: field.clone(),
                incoming: false,
                id: target,
                kind,
                label,
                hidden,
            });
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT f.field, f.entity, s.kind, s.label, s.deleted FROM field f JOIN summary s ON s.entity = f.entity
         WHERE f.field IN ('person', 'house', 'owner', 'merged_into') AND f.value = ?1
         ORDER BY s.kind, s.updated_seq DESC LIMIT 500",
    )?;
    let rows = stmt.query_map([Value::String(id.to_owned()).to_string()], |r| {
        Ok(Linked {
            field: r.get(0)?,
            incoming: true,
            id: r.get(1)?,
            kind: r.get(2)?,
            label: r.get(3)?,
            hidden: r.get(4)?,
        })
    })?;
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}

/// Captures per day (local dates `YYYY-MM-DD`) in these villages since `since`.
pub fn captures_per_day(
    conn: &Connection,
    villages: &[String],
    since: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(
        "SELECT substr(created_at, 1, 10) AS day, COUNT(*) FROM summary
         WHERE village IN (SELECT value FROM json_each(?1)) AND created_at >= ?2 AND deleted = 0
         GROUP BY day ORDER BY day",
    )?;
    let rows = stmt.query_map(params![list, since], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One officer's work: records captured by review status.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Progress {
    /// Username.
    pub officer: String,
    /// Pending review.
    pub pending: i64,
    /// Approved.
    pub approved: i64,
    /// Returned.
    pub returned: i64,
}

/// Records per capturing officer in these villages, most first.
pub fn progress(conn: &Connection, villages: &[String]) -> Result<Vec<Progress>, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(
        "SELECT created_by,
                SUM(COALESCE(review_status, 'pending') = 'pending'),
                SUM(review_status = 'approved'), SUM(review_status = 'returned')
         FROM summary WHERE village IN (SELECT value FROM json_each(?1)) AND deleted = 0 AND created_by IS NOT NULL
         GROUP BY created_by ORDER BY COUNT(*) DESC, created_by",
    )?;
    let rows = stmt.query_map([list], |r| {
        Ok(Progress {
            officer: r.get(0)?,
            pending: r.get(1)?,
            approved: r.get(2)?,
            returned: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// When an officer's device last synced.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceSync {
    /// The officer.
    pub officer: String,
    /// The device's name.
    pub device: String,
    /// Last complete sync.
    pub last_sync_ms: Option<u64>,
    /// Revoked devices are shown as such.
    pub revoked: bool,
}

/// Devices of the officers of these villages, most recently synced first.
pub fn device_syncs(conn: &Connection, villages: &[String]) -> Result<Vec<DeviceSync>, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(
        "SELECT a.username, d.name, d.last_sync_ms, d.revoked FROM device d JOIN account a ON a.id = d.account
         WHERE a.role = 'officer' AND EXISTS (SELECT 1 FROM account_village v WHERE v.account = a.id
             AND v.village IN (SELECT value FROM json_each(?1)))
         ORDER BY d.last_sync_ms IS NULL, d.last_sync_ms DESC",
    )?;
    let rows = stmt.query_map([list], |r| {
        Ok(DeviceSync {
            officer: r.get(0)?,
            device: r.get(1)?,
            last_sync_ms: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
            revoked: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One audited action, for the audit log page.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AuditEntry {
    /// When.
    pub at_ms: u64,
    /// Who (username), if known.
    pub username: Option<String>,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// Details.
    pub detail: Option<String>,
}

/// The newest audited actions.
pub fn audit_log(conn: &Connection, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT l.at_ms, a.username, l.action, l.target, l.detail FROM audit l
         LEFT JOIN account a ON a.id = l.account ORDER BY l.id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(AuditEntry {
            at_ms: r.get::<_, i64>(0)? as u64,
            username: r.get(1)?,
            action: r.get(2)?,
            target: r.get(3)?,
            detail: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
