//! What lists and searches show of a record: a one-line label and the normalised search keys.
//! Both the device store and the server index these columns, so they are computed here once.

use serde_json::Value;

use crate::schema::EntityKind;
use crate::validate::Fields;

/// The searchable, listable face of a record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Village code (the record's scope).
    pub village: Option<String>,
    /// One line for a list.
    pub label: String,
    /// Normalised ID number (person, or a house's landlord).
    pub id_number: Option<String>,
    /// Name (person, landlord).
    pub name: Option<String>,
    /// Normalised plate (vehicle).
    pub plate: Option<String>,
    /// Address (house).
    pub address: Option<String>,
    /// Normalised phone (person, landlord).
    pub phone: Option<String>,
    /// Review status code.
    pub review_status: Option<String>,
    /// Whether lists leave the record out: deleted (a tombstone) or merged into another.
    pub deleted: bool,
    /// The record a merged duplicate redirects to.
    pub merged_into: Option<String>,
}

/// The summary of a record of a kind from its current field values.
pub fn summarize(kind: EntityKind, fields: &Fields) -> Summary {
    summarize_with(kind, |name| fields.get(name))
}

/// The summary of a record whose field values `get` looks up (no copy of the record needed).
pub fn summarize_with<'a>(kind: EntityKind, get: impl Fn(&str) -> Option<&'a Value>) -> Summary {
    let text = |name: &str| get(name).and_then(Value::as_str).map(str::to_owned);
    let join = |names: &[&str]| {
        names
            .iter()
            .filter_map(|n| text(n))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (label, id_number, name, plate, address, phone) = match kind {
        EntityKind::Person => (
            join(&["name", "id_number"]),
            text("id_number"),
            text("name"),
            None,
            None,
            text("phone"),
        ),
        EntityKind::House => (
            join(&["address", "building", "unit", "room"]),
            text("landlord_id_number"),
            text("landlord_name"),
            None,
            text("address"),
            text("landlord_phone"),
        ),
        EntityKind::Vehicle => (
            join(&["plate", "brand", "colour"]),
            None,
            None,
            text("plate"),
            None,
            None,
        ),
        EntityKind::Residence => (
            // The relation as a reader says it (租客), not its code (tenant).
            [
                text("moved_in"),
                text("relation").map(|code| {
                    kind.field("relation")
                        .and_then(|spec| spec.choice_label(&code))
                        .map_or(code, str::to_owned)
                }),
                text("room"),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
            None,
            None,
            None,
            None,
            None,
        ),
        EntityKind::Visit => (join(&["time", "outcome"]), None, None, None, None, None),
        EntityKind::Dispute => (
            join(&["reported_on", "description"]),
            None,
            None,
            None,
            None,
            None,
        ),
    };
    Summary {
        village: text("village"),
        label: label.chars().take(120).collect(),
        id_number,
        name,
        plate,
        address,
        phone,
        review_status: text("review_status"),
        deleted: get("deleted").and_then(Value::as_bool).unwrap_or(false)
            || get("merged_into").is_some_and(|v| !v.is_null()),
        merged_into: text("merged_into"),
    }
}
