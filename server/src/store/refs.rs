//! The reference fields (a residence's person and house, a vehicle's owner, a merge's redirect:
//! every field that names another record), as the schema says, in the one SQL condition that
//! lets a query use the index of who points at a record (`field_ref`, migration 003).

use std::sync::LazyLock;

/// `IN (...)` over the reference fields, quoted for SQL.
static LIST: LazyLock<String> = LazyLock::new(|| {
    let quoted: Vec<String> = baylink_domain::schema::reference_fields()
        .iter()
        .map(|name| format!("'{name}'"))
        .collect();
    format!("IN ({})", quoted.join(", "))
});

/// `{column} IN ('person', 'house', ...)`: the condition the index's own repeats, so a query
/// naming it reads through the index.
pub(crate) fn among_references(column: &str) -> String {
    format!("{column} {}", LIST.as_str())
}

#[cfg(test)]
mod tests {
    // A failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_index_of_references_covers_exactly_the_schemas_reference_fields() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::Db::open(&dir.path().join("baylink.db")).unwrap();
        let sql: String = db
            .read_blocking(|c| {
                Ok(c.query_row(
                    "SELECT sql FROM sqlite_master WHERE name = 'field_ref'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        // A reference field added to the schema needs a migration that adds it to the index.
        assert!(
            sql.replace(['\n', ' '], "")
                .contains(&among_references("field").replace(' ', "")),
            "{sql} vs {}",
            among_references("field")
        );
    }
}
