//! What a form needs to know of a field beyond its label: the kind of input it takes, its
//! limits, what fills it when it is derived, and a hint to show under it. Apps build their
//! forms from this, so a form and validation cannot disagree on a limit.

use crate::schema::{EntityKind, FieldSpec, FieldType, Writer};

/// The input a field takes, as a form draws it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A line of text.
    Text,
    /// Several lines of text.
    Prose,
    /// One of a fixed set of codes.
    Choice,
    /// A calendar date.
    Date,
    /// A date and a time of day.
    DateTime,
    /// A whole number.
    Int,
    /// An identity document's number, checked by the document type chosen.
    IdNumber,
    /// A resident ID number, always.
    ResidentId,
    /// A vehicle plate.
    Plate,
    /// A telephone number.
    Phone,
    /// Another record, picked ([`FieldForm::target`] says of which kind).
    Reference,
    /// A GPS position.
    Geo,
    /// A village code.
    Village,
    /// A standard address code.
    AddressCode,
    /// Several names, separated.
    TextList,
    /// Yes or no.
    Bool,
}

impl InputKind {
    /// Its name on the FFI and in docs (`date_time`, `id_number`, ...).
    pub fn name(self) -> &'static str {
        match self {
            InputKind::Text => "text",
            InputKind::Prose => "prose",
            InputKind::Choice => "choice",
            InputKind::Date => "date",
            InputKind::DateTime => "date_time",
            InputKind::Int => "int",
            InputKind::IdNumber => "id_number",
            InputKind::ResidentId => "resident_id",
            InputKind::Plate => "plate",
            InputKind::Phone => "phone",
            InputKind::Reference => "reference",
            InputKind::Geo => "geo",
            InputKind::Village => "village",
            InputKind::AddressCode => "address_code",
            InputKind::TextList => "text_list",
            InputKind::Bool => "bool",
        }
    }
}

/// A field as a form needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldForm {
    /// The input it takes.
    pub input: InputKind,
    /// The kind of record a reference names.
    pub target: Option<EntityKind>,
    /// The most characters it takes, after normalisation.
    pub max_chars: Option<usize>,
    /// The least and most a number may be.
    pub range: Option<(i64, i64)>,
    /// The fields it is derived from, when the store fills it (empty otherwise).
    pub derived_from: &'static [&'static str],
    /// Whether a form writes it: an officer's field, or a derived one an officer may enter
    /// (where nothing derives it, or to choose otherwise); never one the system keeps.
    pub editable: bool,
    /// For a derived field a form shows as an input only sometimes: when it is derived
    /// (`id_type=resident_id`: from a resident ID number; entered by hand for other documents).
    pub derived_when: Option<&'static str>,
    /// A hint to show under the field, in Chinese and in English.
    pub hint: (&'static str, &'static str),
}

/// What a form needs of `spec`, a field of `kind`.
pub fn form_of(kind: EntityKind, spec: &FieldSpec) -> FieldForm {
    let (input, target, max_chars, range, hint) = match spec.ty {
        FieldType::Text(max) => (InputKind::Text, None, Some(max), None, ("", "")),
        FieldType::Prose(max) => (InputKind::Prose, None, Some(max), None, ("", "")),
        FieldType::Choice(_) => (InputKind::Choice, None, None, None, ("", "")),
        FieldType::Date => (
            InputKind::Date,
            None,
            Some(10),
            None,
            (
                "如 2024-05-01，不晚于今天",
                "like 2024-05-01, not after today",
            ),
        ),
        FieldType::DateTime => (
            InputKind::DateTime,
            None,
            Some(19),
            None,
            (
                "如 2024-05-01 14:30，不晚于今天",
                "like 2024-05-01 14:30, not after today",
            ),
        ),
        FieldType::Int(min, max) => (
            InputKind::Int,
            None,
            None,
            Some((min, max)),
            ("整数", "a whole number"),
        ),
        FieldType::IdNumber => (
            InputKind::IdNumber,
            None,
            Some(30),
            None,
            (
                "居民身份证为18位，末位可为X；其他证件5到30位字母或数字",
                "a resident ID is 18 characters, the last may be X; other documents 5 to 30 letters or digits",
            ),
        ),
        FieldType::ResidentId => (
            InputKind::ResidentId,
            None,
            Some(18),
            None,
            ("18位，末位可为X", "18 characters, the last may be X"),
        ),
        FieldType::Plate => (
            InputKind::Plate,
            None,
            Some(8),
            None,
            (
                "如 粤L12345，新能源车8位",
                "like 粤L12345; 8 characters for new-energy vehicles",
            ),
        ),
        FieldType::Phone => (
            InputKind::Phone,
            None,
            None,
            None,
            (
                "手机11位，或区号加座机号；港澳台及境外号码前加“+”和地区代码，如 +852 9123 4567",
                "an 11-digit mobile, or an area code and number; outside the mainland + and the country code, like +852 9123 4567",
            ),
        ),
        FieldType::Ref(target) => (InputKind::Reference, Some(target), None, None, ("", "")),
        FieldType::Redirect => (InputKind::Reference, Some(kind), None, None, ("", "")),
        FieldType::Geo => (
            InputKind::Geo,
            None,
            None,
            None,
            ("纬度,经度，如 22.75,114.53", "lat,lon like 22.75,114.53"),
        ),
        FieldType::Village => (
            InputKind::Village,
            None,
            Some(12),
            None,
            ("12位村（社区）代码", "a 12-digit village code"),
        ),
        FieldType::AddressCode => (
            InputKind::AddressCode,
            None,
            Some(40),
            None,
            (
                "标准地址编码：字母和数字",
                "standard address code: letters and digits",
            ),
        ),
        FieldType::TextList => (
            InputKind::TextList,
            None,
            Some(crate::validate::TEXT_LIST_CHARS),
            None,
            ("多个用；或、分隔", "several, separated by ; or 、"),
        ),
        FieldType::Bool => (InputKind::Bool, None, None, None, ("", "")),
    };
    // Derived fields differ in whether an officer may enter them: a plate's kind and a
    // person's category are filled when left empty and may be chosen otherwise; gender and
    // birth date are derived from a resident ID number (an entry must agree) and entered by hand
    // for other documents; the origin is only ever derived.
    let (derived_from, editable, derived_when, hint) = match (spec.writer, spec.name) {
        (Writer::Derived, "plate_kind") => (
            &["plate", "vehicle_type"][..],
            true,
            None,
            (
                "留空则按号牌和车辆类型自动填写",
                "filled from the plate and vehicle type when left empty",
            ),
        ),
        (Writer::Derived, "category") => (
            &["id_type"][..],
            true,
            None,
            (
                "留空则按证件类型自动填写",
                "filled from the document type when left empty",
            ),
        ),
        (Writer::Derived, "gender" | "birth_date") => (
            &["id_type", "id_number"][..],
            true,
            Some("id_type=resident_id"),
            (
                "由居民身份证号码自动填写；其他证件时手工填写",
                "filled from a resident ID number; entered by hand for other documents",
            ),
        ),
        (Writer::Derived, _) => (
            &["id_type", "id_number"][..],
            false,
            None,
            (
                "由居民身份证号码自动填写",
                "filled from a resident ID number",
            ),
        ),
        (writer, _) => (&[][..], writer == Writer::Officer, None, hint),
    };
    FieldForm {
        input,
        target,
        max_chars,
        range,
        derived_from,
        editable,
        derived_when,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::date::Date;
    use crate::validate::validate_capture;

    fn today() -> Date {
        Date::new(2026, 12, 5).unwrap_or_else(|| panic!("a real date"))
    }

    /// Each field's stated limit is the one validation applies: a value one character over
    /// the most is refused, one at the most is not refused for its length.
    #[test]
    fn the_length_a_form_states_is_the_one_validation_applies() {
        for kind in EntityKind::ALL {
            // A form never writes what the system keeps.
            for spec in kind.fields().filter(|s| s.writer != Writer::System) {
                let form = form_of(kind, spec);
                let (Some(max), InputKind::Text | InputKind::Prose) = (form.max_chars, form.input)
                else {
                    continue;
                };
                for (n, refused) in [(max, false), (max + 1, true)] {
                    let mut input = crate::validate::Input::new();
                    input.insert(spec.name.to_owned(), "字".repeat(n));
                    let too_long = match validate_capture(kind, &input, today()) {
                        Err(e) => e
                            .field_errors()
                            .iter()
                            .any(|f| f.field == spec.name && f.code == "too_long"),
                        Ok(_) => false,
                    };
                    assert_eq!(too_long, refused, "{}.{} at {n}", kind.as_str(), spec.name);
                }
            }
        }
    }

    #[test]
    fn references_name_their_target_and_derived_fields_their_sources() {
        let owner = EntityKind::Vehicle
            .field("owner")
            .map(|s| form_of(EntityKind::Vehicle, s));
        assert_eq!(
            owner.map(|f| (f.input, f.target)),
            Some((InputKind::Reference, Some(EntityKind::Person)))
        );
        let gender = EntityKind::Person
            .field("gender")
            .map(|s| form_of(EntityKind::Person, s));
        assert_eq!(
            gender.map(|f| (f.derived_from, f.editable, f.derived_when)),
            Some((
                &["id_type", "id_number"][..],
                true,
                Some("id_type=resident_id")
            ))
        );
        let form = |kind: EntityKind, name: &str| kind.field(name).map(|s| form_of(kind, s));
        assert!(form(EntityKind::Person, "origin_name").is_some_and(|f| !f.editable));
        assert!(form(EntityKind::Person, "review_status").is_some_and(|f| !f.editable));
        assert!(form(EntityKind::Vehicle, "plate_kind").is_some_and(|f| f.editable));
        let rooms = EntityKind::House
            .field("room_count")
            .map(|s| form_of(EntityKind::House, s));
        assert_eq!(rooms.and_then(|f| f.range), Some((0, 10_000)));
        let name = EntityKind::Person
            .field("name")
            .map(|s| form_of(EntityKind::Person, s));
        assert!(name.is_some_and(|f| f.derived_from.is_empty() && f.max_chars == Some(50)));
    }
}
