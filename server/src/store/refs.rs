//! The reference fields (a residence's person and house, a vehicle's owner, a merge's redirect:
//! every field that names another record), as the schema says, in the one SQL condition that
//! lets a query of who points at a record read the links' primary key (`link`, migration 011)
//! for each of them.

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
    fn every_reference_field_is_kept_in_the_links() {
        for field in baylink_domain::schema::reference_fields() {
            assert!(crate::store::state::linked(field), "{field}");
            assert!(among_references("field").contains(&format!("'{field}'")));
        }
    }
}
