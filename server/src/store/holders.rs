//! Who holds a key's text: the live records (not deleted, not merged away) of a kind whose ID
//! number, plate or address code is a given text, found through indexes. The callers compare
//! the whole natural key (with its ID type or plate kind) on the records' values.

use crate::store::conn::{Conn, Dialect, params};

use crate::store::error::StoreError;

/// The most holders read for one text: more live records than this with one text (across ID
/// types or plate kinds) cannot exist without two holding one key already.
const MOST: i64 = 64;

/// Ids of the live records of `kind` whose `column` (`id_number`, `plate` or `address_code`)
/// holds `text`.
pub(crate) fn holders(
    conn: &Conn<'_>,
    kind: &str,
    column: &str,
    text: &str,
) -> Result<Vec<String>, StoreError> {
    // A push names keys before its changes are validated. No stored key holds a hidden
    // character (validation refuses them), and PostgreSQL cannot even compare a text with NUL:
    // such a key has no holder, and its change is refused as invalid in its turn.
    if baylink_domain::hidden_char(text).is_some() {
        return Ok(Vec::new());
    }
    let ids = match column {
        // Address codes are not a summary column: the links hold them, live ones told by the
        // summary.
        "address_code" => conn
            .prepare_cached(
                "SELECT l.entity FROM link l JOIN entity se ON se.id = l.entity JOIN summary s ON s.pos = se.pos
                 WHERE l.field = 'address_code' AND l.target = ?1 AND s.deleted = 0 LIMIT ?2",
            )?
            .query_map(params![text, MOST], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
        "id_number" | "plate" => conn
            .prepare_cached(&key_lookup(column))?
            .query_map(params![text, kind, MOST], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
        other => return Err(StoreError::Backend(format!("no key column {other}"))),
    };
    Ok(ids)
}

/// [`holders`]' statement for an ID number or a plate: read through the key's index only. The
/// kind is compared as an expression, as in [`holders_of_all`]: with plans made before the values
/// are bound, SQLite otherwise took the kind's index and read every person.
fn key_lookup(column: &str) -> String {
    format!(
        "SELECT entity FROM summary WHERE {column} = ?1 AND (kind || '') = ?2 AND deleted = 0 LIMIT ?3"
    )
}

/// [`holders`] of several texts at once, in one statement: the ids of the live records of
/// `kind` whose `column` holds any of `texts`.
pub(crate) fn holders_of_all(
    conn: &Conn<'_>,
    kind: &str,
    column: &str,
    texts: &[String],
) -> Result<Vec<String>, StoreError> {
    // As in `holders`: a text with a hidden character has no holder.
    let texts: Vec<&String> = texts
        .iter()
        .filter(|t| baylink_domain::hidden_char(t).is_none())
        .collect();
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    // SQLite reads a partial index (`… WHERE id_number IS NOT NULL`) for `column = ?` only, not
    // for a list, and a statement is no round trip there: one lookup per text.
    if conn.dialect() == Dialect::Sqlite {
        let mut ids = Vec::new();
        for text in texts {
            ids.extend(holders(conn, kind, column, text)?);
        }
        return Ok(ids);
    }
    let list = serde_json::to_string(&texts).unwrap_or_else(|_| "[]".into());
    // Each text looked up by itself, at most MOST holders each, as `holders` does; the kind is
    // compared as an expression, so that its index is never the one read (under a first import
    // the statistics said a kind held two rows, and every vehicle was read per plate).
    let ids = match column {
        "address_code" => conn
            .prepare_cached(
                "SELECT h.entity FROM json_array_elements_text(CAST(?1 AS json)) t
                 CROSS JOIN LATERAL (
                     SELECT l.entity FROM link l JOIN entity se ON se.id = l.entity JOIN summary s ON s.pos = se.pos
                     WHERE l.field = 'address_code' AND l.target = t.value AND s.deleted = 0
                     LIMIT ?2) h",
            )?
            .query_map(params![list, MOST], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
        "id_number" | "plate" => conn
            .prepare_cached(&format!(
                "SELECT h.entity FROM json_array_elements_text(CAST(?1 AS json)) t
                 CROSS JOIN LATERAL (
                     SELECT entity FROM summary
                     WHERE {column} = t.value AND (kind || '') = ?2 AND deleted = 0 LIMIT ?3) h"
            ))?
            .query_map(params![list, kind, MOST], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
        other => return Err(StoreError::Backend(format!("no key column {other}"))),
    };
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;
    use rusqlite::StatementStatus;

    #[test]
    fn a_key_lookup_is_compiled_once_and_reads_its_partial_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("baylink.db")).unwrap();
        let (reprepared, plan) = db
            .call_blocking(|c| {
                for text in [
                    "110101199003070017",
                    "440305198807120027",
                    "44030519880712002X",
                ] {
                    holders(c, "person", "id_number", text)?;
                }
                let sql = key_lookup("id_number");
                let raw = c.sqlite().expect("sqlite");
                let stmt = raw.prepare_cached(&sql)?;
                let reprepared = stmt.get_status(StatementStatus::RePrepare);
                drop(stmt);
                let plan: Vec<String> = c
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?
                    .query_map(params!["x", "person", MOST], |r| r.get(3))?
                    .collect::<Result<_, _>>()?;
                Ok((reprepared, plan.join("; ")))
            })
            .unwrap();
        assert_eq!(reprepared, 0, "compiled again at a new binding");
        assert!(plan.contains("summary_id_number"), "{plan}");
    }
}
