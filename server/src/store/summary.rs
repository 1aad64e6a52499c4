//! Each record's summary row (what lists filter and search), recomputed after every write.

use crate::store::conn::{Conn, Value as SqlValue};
use crate::store::error::StoreError;
use crate::store::state::{Loaded, load};
use baylink_domain::{EntityKind, summarize_with};
use serde_json::Value;

/// Recomputes an entity's summary row from its current fields.
pub fn refresh_summary(conn: &Conn<'_>, entity: &str) -> Result<(), StoreError> {
    match load(conn, entity)? {
        Some(record) => write_summary(conn, entity, &record),
        None => Ok(()),
    }
}

/// The summary's columns for a record as stored, in the order of `summary`'s insert.
pub(crate) fn summary_row(entity: &str, record: &Loaded) -> [SqlValue; 15] {
    // Read in place: the record's values are not copied.
    let value = |field: &str| record.state.get(field).map(|slot| &slot.version.value);
    let summary = EntityKind::parse(&record.kind)
        .map(|k| summarize_with(k, value))
        .unwrap_or_default();
    let text = |v: Option<&str>| v.map_or(SqlValue::Null, SqlValue::from);
    let owned = |v: Option<String>| v.map_or(SqlValue::Null, SqlValue::Text);
    [
        SqlValue::Integer(record.pos),
        SqlValue::from(entity),
        SqlValue::from(record.kind.as_str()),
        text(record.village.as_deref()),
        SqlValue::Text(summary.label),
        owned(summary.id_number),
        owned(summary.name),
        owned(summary.plate),
        owned(summary.address),
        owned(summary.phone),
        owned(summary.review_status),
        SqlValue::Integer(i64::from(summary.deleted)),
        text(value("created_by").and_then(Value::as_str)),
        text(value("created_at").and_then(Value::as_str)),
        SqlValue::Integer(record.seq),
    ]
}

/// Writes the summary rows of records with none yet ([`summary_row`]s, flattened), in
/// multi-row statements.
pub(crate) fn insert_summaries(conn: &Conn<'_>, rows: &[SqlValue]) -> Result<(), StoreError> {
    conn.execute_rows(
        "INSERT INTO summary (pos, entity, kind, village, label, id_number, name, plate, address,
                              phone, review_status, deleted, created_by, created_at, updated_seq)",
        UPSERT,
        15,
        rows,
    )?;
    Ok(())
}

/// What an insert of a summary row does when the record has one.
const UPSERT: &str =
    "ON CONFLICT (pos) DO UPDATE SET entity = excluded.entity, kind = excluded.kind, village = excluded.village,
             label = excluded.label, id_number = excluded.id_number, name = excluded.name,
             plate = excluded.plate, address = excluded.address, phone = excluded.phone,
             review_status = excluded.review_status, deleted = excluded.deleted,
             created_by = excluded.created_by, created_at = excluded.created_at,
             updated_seq = excluded.updated_seq";

/// Writes an entity's summary row from its record as stored.
pub(crate) fn write_summary(
    conn: &Conn<'_>,
    entity: &str,
    record: &Loaded,
) -> Result<(), StoreError> {
    let columns = summary_row(entity, record);
    // Many writes (a note, an occupation) leave every listed column as it was: then only the
    // recency is written (the four indexes holding it), and the search and date indexes are not.
    let recency_only = conn
        .prepare_cached(
            "UPDATE summary SET updated_seq = ?15
             WHERE pos = ?1 AND entity = ?2 AND kind = ?3 AND village IS NOT DISTINCT FROM ?4
               AND label = ?5 AND id_number IS NOT DISTINCT FROM ?6 AND name IS NOT DISTINCT FROM ?7
               AND plate IS NOT DISTINCT FROM ?8 AND address IS NOT DISTINCT FROM ?9
               AND phone IS NOT DISTINCT FROM ?10 AND review_status IS NOT DISTINCT FROM ?11
               AND deleted = ?12 AND created_by IS NOT DISTINCT FROM ?13
               AND created_at IS NOT DISTINCT FROM ?14",
        )?
        .execute(&columns[..])?;
    if recency_only == 1 {
        return Ok(());
    }
    insert_summaries(conn, &columns)
}
