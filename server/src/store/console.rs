//! What the review console reads and keeps: entity summaries (lists, filters, search, counts),
//! console sessions with their CSRF tokens, and the audit log.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

use baylink_domain::{EntityKind, Fields, summarize};

use crate::error::AppError;

/// Recomputes an entity's summary row from its current fields.
pub fn refresh_summary(conn: &Connection, entity: &str) -> Result<(), AppError> {
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
    conn.prepare_cached(
        "INSERT INTO summary (entity, kind, village, label, id_number, name, plate, address, phone,
                              review_status, deleted, created_by, updated_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (entity) DO UPDATE SET kind = excluded.kind, village = excluded.village,
             label = excluded.label, id_number = excluded.id_number, name = excluded.name,
             plate = excluded.plate, address = excluded.address, phone = excluded.phone,
             review_status = excluded.review_status, deleted = excluded.deleted,
             created_by = excluded.created_by, updated_seq = excluded.updated_seq",
    )?
    .execute(params![
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
        updated
    ])?;
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
}

/// A page of records in `villages` matching the filter, newest first.
pub fn list(
    conn: &Connection,
    villages: &[String],
    filter: &Filter,
    limit: u32,
    offset: u32,
) -> Result<Vec<Row>, AppError> {
    let villages: Vec<&String> = match &filter.village {
        Some(v) => villages.iter().filter(|x| *x == v).collect(),
        None => villages.iter().collect(),
    };
    let villages = serde_json::to_string(&villages).unwrap_or_else(|_| "[]".into());
    let mut sql = String::from(
        "SELECT entity, kind, village, label, id_number, phone, review_status, created_by FROM summary
         WHERE deleted = 0 AND village IN (SELECT value FROM json_each(?1))
         AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR review_status = ?3)",
    );
    let query = filter
        .query
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty());
    if query.is_some() {
        sql.push_str(
            " AND ((id_number >= ?4 AND id_number < ?5) OR (name >= ?4 AND name < ?5)
              OR (plate >= ?4 AND plate < ?5) OR (address >= ?4 AND address < ?5)
              OR (phone >= ?4 AND phone < ?5))",
        );
    }
    sql.push_str(" ORDER BY updated_seq DESC LIMIT ?6 OFFSET ?7");
    let (lo, hi) = match query {
        Some(q) => {
            let q = baylink_domain::id_number::normalize(q);
            let q = if q.bytes().all(|b| b.is_ascii_digit() || b == b'X') {
                q
            } else {
                filter.query.clone().unwrap_or_default().trim().to_owned()
            };
            (Some(q.clone()), Some(format!("{q}\u{10FFFF}")))
        }
        None => (None, None),
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![villages, filter.kind, filter.status, lo, hi, limit, offset],
        |r| {
            Ok(Row {
                id: r.get(0)?,
                kind: r.get(1)?,
                village: r.get(2)?,
                label: r.get(3)?,
                id_number: r.get(4)?,
                phone: r.get(5)?,
                review_status: r.get(6)?,
                created_by: r.get(7)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Record counts by village, kind and review status.
pub fn counts(
    conn: &Connection,
    villages: &[String],
) -> Result<Vec<(String, String, String, i64)>, AppError> {
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
) -> Result<(String, String), AppError> {
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
) -> Result<Option<(i64, String)>, AppError> {
    Ok(conn
        .query_row(
            "SELECT account, csrf FROM console_session WHERE hash = ?1 AND expires_ms > ?2",
            params![hash(cookie), now_ms as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Ends a console session.
pub fn close_session(conn: &Connection, cookie: &str) -> Result<(), AppError> {
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
) -> Result<(), AppError> {
    conn.prepare_cached(
        "INSERT INTO audit (at_ms, account, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![now_ms as i64, account, action, target, detail])?;
    Ok(())
}
