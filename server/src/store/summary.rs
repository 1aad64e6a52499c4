//! Each record's summary row (what lists filter and search), recomputed after every write.

use crate::store::conn::{Conn, params};
use crate::store::error::StoreError;
use crate::store::state::{Loaded, load};
use baylink_domain::{EntityKind, Fields, summarize};
use serde_json::Value;

/// Recomputes an entity's summary row from its current fields.
pub fn refresh_summary(conn: &Conn<'_>, entity: &str) -> Result<(), StoreError> {
    match load(conn, entity)? {
        Some(record) => write_summary(conn, entity, &record),
        None => Ok(()),
    }
}

/// Writes an entity's summary row from its record as stored.
pub(crate) fn write_summary(
    conn: &Conn<'_>,
    entity: &str,
    record: &Loaded,
) -> Result<(), StoreError> {
    let (kind, village, updated) = (&record.kind, &record.village, record.seq);
    let fields: Fields = record
        .state
        .iter()
        .map(|(field, slot)| (field.clone(), slot.version.value.clone()))
        .collect();
    let summary = EntityKind::parse(kind)
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
             WHERE entity = ?1 AND kind = ?2 AND village IS NOT DISTINCT FROM ?3 AND label = ?4
               AND id_number IS NOT DISTINCT FROM ?5 AND name IS NOT DISTINCT FROM ?6
               AND plate IS NOT DISTINCT FROM ?7 AND address IS NOT DISTINCT FROM ?8
               AND phone IS NOT DISTINCT FROM ?9 AND review_status IS NOT DISTINCT FROM ?10
               AND deleted = ?11 AND created_by IS NOT DISTINCT FROM ?12
               AND created_at IS NOT DISTINCT FROM ?13",
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
