//! Validation and normalisation of captures and edits: form input (text per field) in, normalised
//! field values out, or every field error at once. Runs on the device at capture and again on the
//! server, so the rules exist here only.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::date::{self, Date};
use crate::error::{Error, FieldError, Reason, Result};
use crate::schema::{EntityKind, FieldSpec, FieldType, Writer};
use crate::text::excerpt;
use crate::{id_number, phone, plate};

/// Field values of one entity, by field name. `Value::Null` means cleared.
pub type Fields = BTreeMap<String, Value>;

/// Form input: the text typed into each field. An empty text clears an optional field.
pub type Input = BTreeMap<String, String>;

/// Most characters of a list of names as typed: a list holds a few hundred items at most, so
/// its JSON holds that many nodes at most (a server reads a push's values within a budget of
/// nodes, `baylink_sync::bounded`, which a phone's valid values always fit).
pub const TEXT_LIST_CHARS: usize = 1_000;

/// Validates a new record: every required field present, every value well-formed, derived fields
/// filled in. Returns the normalised fields to store.
pub fn validate_capture(kind: EntityKind, input: &Input, today: Date) -> Result<Fields> {
    check(kind, &Fields::new(), input, today)
}

/// Validates an edit of a record holding `current`: the whole record must still be valid
/// afterwards. Returns only the fields whose value changes (derived ones included).
pub fn validate_edit(
    kind: EntityKind,
    current: &Fields,
    input: &Input,
    today: Date,
) -> Result<Fields> {
    check(kind, current, input, today)
}

/// Validates field values that arrive already typed (from another replica), as the server must:
/// each value is re-read as text and must come out unchanged by normalisation.
pub fn validate_values(kind: EntityKind, values: &Fields, today: Date) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (name, value) in values {
        let Some(spec) = kind.field(name) else {
            continue;
        };
        errors.extend(value_error(spec, value, today));
    }
    errors.extend(resident_error(
        kind,
        values.get("id_type"),
        values.get("id_number"),
        today,
    ));
    errors
}

/// The first error [`validate_values`] finds in one field's value read alone, an ID number read
/// by its record's document type `id_type`: what a server decides a pushed value by. Only
/// whether that type is a resident ID card counts, so a document type of any length costs
/// nothing here, however many numbers are read by it.
pub fn validate_value(
    kind: EntityKind,
    field: &str,
    value: &Value,
    id_type: Option<&Value>,
    today: Date,
) -> Option<FieldError> {
    let spec = kind.field(field)?;
    value_error(spec, value, today).or_else(|| {
        let id_type = id_type.filter(|_| field == "id_number");
        resident_error(kind, id_type, Some(value), today)
    })
}

/// A typed value's own error: not well-formed for its field, or not as normalisation leaves it.
fn value_error(spec: &FieldSpec, value: &Value, today: Date) -> Option<FieldError> {
    if spec.writer == Writer::System || value.is_null() {
        return None;
    }
    let text = to_text(value);
    match parse_value(spec, &text, today) {
        Ok(parsed) if &parsed == value => None,
        Ok(_) => Some(not_normalised().for_field(spec.name, spec.zh, spec.en)),
        Err(reason) => Some(reason.for_field(spec.name, spec.zh, spec.en)),
    }
}

/// A person's ID number that a resident ID card does not have, when her document is one.
fn resident_error(
    kind: EntityKind,
    id_type: Option<&Value>,
    number: Option<&Value>,
    today: Date,
) -> Option<FieldError> {
    let resident = id_type.and_then(Value::as_str) == Some("resident_id");
    let number = number.and_then(Value::as_str)?;
    if kind != EntityKind::Person || !resident {
        return None;
    }
    let reason = id_number::parse(number, today).err()?;
    Some(reason.for_field("id_number", "证件号码", "ID number"))
}

/// Validates a whole record as a replica holds it after a merge, as the server must before it
/// stores what a device sent: every value well-formed, every required field present, the derived
/// fields it holds agreeing with what they derive from (a person's gender, birth date and origin
/// with the ID number), the cross-field rules kept. One error per field at most.
pub fn validate_record(kind: EntityKind, values: &Fields, today: Date) -> Vec<FieldError> {
    let mut errors = validate_values(kind, values, today);
    let failed: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
    // Every derived field is checked as if entered, so a held one that disagrees is an error.
    let derived: Vec<&'static str> = kind
        .fields()
        .filter(|s| s.writer == Writer::Derived && values.get(s.name).is_some_and(|v| !v.is_null()))
        .map(|s| s.name)
        .collect();
    let mut merged = values.clone();
    let mut rules = Rules {
        kind,
        merged: &mut merged,
        entered: &derived,
        errors: &mut errors,
        today,
    };
    rules.apply();
    for spec in kind.fields().filter(|s| s.required) {
        let missing = values.get(spec.name).is_none_or(Value::is_null);
        if missing && !failed.iter().any(|f| f == spec.name) {
            let reason = Reason::new("required", "必须填写", "is required");
            errors.push(reason.for_field(spec.name, spec.zh, spec.en));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    errors.retain(|e| seen.insert(e.field.clone()));
    errors
}

/// The derived fields a record lacks, as its rules derive them (a person's gender, birth date,
/// origin and category from the ID number; a vehicle's plate kind from the plate): what the
/// server fills in when a device left them out.
pub fn missing_derived(kind: EntityKind, values: &Fields, today: Date) -> Fields {
    let mut merged = values.clone();
    let mut errors = Vec::new();
    let mut rules = Rules {
        kind,
        merged: &mut merged,
        entered: &[],
        errors: &mut errors,
        today,
    };
    rules.apply();
    kind.fields()
        .filter(|s| s.writer == Writer::Derived && values.get(s.name).is_none_or(Value::is_null))
        .filter_map(|s| {
            let value = merged.get(s.name).filter(|v| !v.is_null())?;
            Some((s.name.to_owned(), value.clone()))
        })
        .collect()
}

/// A stored value as the text a form shows and `parse_value` reads back: strings as they are,
/// lists joined by `;`, positions as `lat,lon`, `null` as empty.
pub fn to_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(to_text).collect::<Vec<_>>().join(";"),
        Value::Object(o) => match (o.get("lat"), o.get("lon")) {
            (Some(lat), Some(lon)) => format!("{lat},{lon}"),
            _ => value.to_string(),
        },
        Value::Bool(_) | Value::Number(_) => value.to_string(),
    }
}

fn not_normalised() -> Reason {
    Reason::new("not_normalised", "格式不规范", "is not in normalised form")
}

fn check(kind: EntityKind, current: &Fields, input: &Input, today: Date) -> Result<Fields> {
    let mut errors = Vec::new();
    let mut merged = current.clone();
    let mut entered = Vec::new();
    for (name, raw) in input {
        let Some(spec) = kind.field(name) else {
            errors.push(FieldError {
                field: name.clone(),
                code: "unknown_field".into(),
                message_zh: format!("{name}：{}没有这个字段", kind.label_zh()),
                message_en: format!("{name}: a {kind} has no such field"),
            });
            continue;
        };
        if spec.writer == Writer::System {
            let reason = Reason::new(
                "system_field",
                "由系统维护，不能填写",
                "is kept by the system",
            );
            errors.push(reason.for_field(spec.name, spec.zh, spec.en));
            continue;
        }
        match parse_value(spec, raw, today) {
            Ok(value) => {
                merged.insert(spec.name.to_owned(), value);
                entered.push(spec.name);
            }
            Err(reason) => errors.push(reason.for_field(spec.name, spec.zh, spec.en)),
        }
    }
    let failed: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
    let mut rules = Rules {
        kind,
        merged: &mut merged,
        entered: &entered,
        errors: &mut errors,
        today,
    };
    rules.apply();
    for spec in kind.fields().filter(|s| s.required) {
        let missing = merged.get(spec.name).is_none_or(Value::is_null);
        if missing && !failed.iter().any(|f| f == spec.name) {
            let reason = Reason::new("required", "必须填写", "is required");
            errors.push(reason.for_field(spec.name, spec.zh, spec.en));
        }
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    merged.retain(|name, value| current.get(name) != Some(value));
    Ok(merged)
}

/// Parses the text of one field into its stored value.
pub fn parse_value(spec: &FieldSpec, raw: &str, today: Date) -> Result<Value, Reason> {
    let text = match spec.ty {
        FieldType::Prose(_) => crate::text::prose(raw),
        _ => crate::text::clean(raw),
    };
    if text.is_empty() {
        return Ok(Value::Null);
    }
    if let Some(c) = crate::text::hidden_char(&text) {
        let code = c as u32;
        return Err(Reason::new(
            "hidden_character",
            format!("含有不可见或控制字符 U+{code:04X}"),
            format!("holds an invisible or control character, U+{code:04X}"),
        ));
    }
    let bad = |zh: &str, en: &str| Reason::new("format", zh, en);
    Ok(match &spec.ty {
        FieldType::Text(max) | FieldType::Prose(max) => {
            let n = text.chars().count();
            if n > *max {
                return Err(Reason::new(
                    "too_long",
                    format!("最多{max}个字，现有{n}个"),
                    format!("takes at most {max} characters, has {n}"),
                ));
            }
            Value::String(text)
        }
        FieldType::Choice(choices) => {
            let Some(choice) = choices.iter().find(|c| c.code == text || c.zh == text) else {
                let codes: Vec<_> = choices
                    .iter()
                    .map(|c| format!("{}({})", c.code, c.zh))
                    .collect();
                return Err(Reason::new(
                    "choice",
                    format!("“{}”不是可选值：{}", excerpt(&text), codes.join("、")),
                    format!("“{}” is not one of: {}", excerpt(&text), codes.join(", ")),
                ));
            };
            Value::String(choice.code.to_owned())
        }
        FieldType::Date => {
            let date = Date::parse(&text).ok_or_else(|| {
                bad(
                    "应为有效日期，如 2024-05-01",
                    "must be a real date like 2024-05-01",
                )
            })?;
            if date > today {
                return Err(Reason::new(
                    "future",
                    format!("{date} 晚于今天"),
                    format!("{date} is in the future"),
                ));
            }
            Value::String(date.to_string())
        }
        FieldType::DateTime => {
            let at = date::normalize_datetime(&text).ok_or_else(|| {
                bad(
                    "应为日期时间，如 2024-05-01 14:30",
                    "must be a date and time like 2024-05-01 14:30",
                )
            })?;
            // What happened cannot have happened after today, as for dates.
            if at
                .get(..10)
                .and_then(Date::parse)
                .is_some_and(|d| d > today)
            {
                return Err(Reason::new(
                    "future",
                    format!("{at} 晚于今天"),
                    format!("{at} is in the future"),
                ));
            }
            Value::String(at)
        }
        FieldType::Int(min, max) => {
            let n: i64 = text
                .parse()
                .map_err(|_| bad("应为整数", "must be a whole number"))?;
            if n < *min || n > *max {
                return Err(Reason::new(
                    "range",
                    format!("应在{min}到{max}之间"),
                    format!("must be between {min} and {max}"),
                ));
            }
            json!(n)
        }
        // Which rule applies depends on the document type: see `Rules::person`.
        FieldType::IdNumber => Value::String(id_number::normalize(&text)),
        FieldType::ResidentId => Value::String(id_number::parse(&text, today)?.number),
        FieldType::Plate => Value::String(plate::parse(&text)?.0),
        FieldType::Phone => Value::String(phone::parse(&text)?),
        FieldType::Ref(_) | FieldType::Redirect => {
            let id = uuid::Uuid::parse_str(&text)
                .map_err(|_| bad("应为记录编号（UUID）", "must be a record id (a UUID)"))?;
            Value::String(id.hyphenated().to_string())
        }
        FieldType::Geo => {
            let parsed = text.split_once(',').and_then(|(lat, lon)| {
                Some((
                    lat.trim().parse::<f64>().ok()?,
                    lon.trim().parse::<f64>().ok()?,
                ))
            });
            match parsed {
                Some((lat, lon))
                    if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
                {
                    json!({"lat": lat, "lon": lon})
                }
                _ => {
                    return Err(bad(
                        "应为“纬度,经度”，如 22.75,114.53",
                        "must be “lat,lon” like 22.75,114.53",
                    ));
                }
            }
        }
        FieldType::Village => {
            if text.len() != 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(
                    "应为12位村（社区）代码",
                    "must be a 12-digit village code",
                ));
            }
            Value::String(text)
        }
        FieldType::AddressCode => {
            let code = text.to_ascii_uppercase();
            if code.len() > 40 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(bad(
                    "只能包含字母和数字（最多40位）",
                    "may hold only letters and digits (40 at most)",
                ));
            }
            Value::String(code)
        }
        FieldType::TextList => {
            let n = text.chars().count();
            if n > TEXT_LIST_CHARS {
                return Err(Reason::new(
                    "too_long",
                    format!("最多{TEXT_LIST_CHARS}个字，现有{n}个"),
                    format!("takes at most {TEXT_LIST_CHARS} characters, has {n}"),
                ));
            }
            let items: Vec<Value> = text
                .split([';', '；', '、', ','])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect();
            if items.is_empty() {
                return Ok(Value::Null);
            }
            Value::Array(items)
        }
        FieldType::Bool => match text.as_str() {
            "true" | "1" | "是" => Value::Bool(true),
            "false" | "0" | "否" => Value::Bool(false),
            _ => return Err(bad("应为“是”或“否”", "must be true or false")),
        },
    })
}

/// The other fields an error of `field` in a whole record is read from: the cross-field rules
/// report an error on one field of those they read (a resident ID number entered as another
/// document is `id_type`'s error, read from `id_number`; a derived field that disagrees is its
/// own, read from the document type and number). A record already in error stays so,
/// unchallenged, only while the field and these keep their values.
pub fn read_with(kind: EntityKind, field: &str) -> &'static [&'static str] {
    match (kind, field) {
        (EntityKind::Person, "id_type") => &["id_number"],
        (EntityKind::Person, "id_number") => &["id_type"],
        (EntityKind::Person, "gender" | "birth_date" | "origin_code" | "origin_name") => {
            &["id_type", "id_number"]
        }
        (EntityKind::Residence, "moved_out") => &["moved_in"],
        (EntityKind::Dispute, "closed_on") => &["reported_on"],
        _ => &[],
    }
}

/// Cross-field rules of each kind, run on the merged record.
struct Rules<'a> {
    kind: EntityKind,
    merged: &'a mut Fields,
    entered: &'a [&'static str],
    errors: &'a mut Vec<FieldError>,
    today: Date,
}

impl Rules<'_> {
    fn apply(&mut self) {
        match self.kind {
            EntityKind::Person => self.person(),
            EntityKind::Vehicle => self.vehicle(),
            EntityKind::Residence => self.not_before("moved_out", "moved_in"),
            EntityKind::Dispute => self.not_before("closed_on", "reported_on"),
            EntityKind::House | EntityKind::Visit => {}
        }
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.merged.get(name).and_then(Value::as_str)
    }

    fn fail(&mut self, name: &str, reason: Reason) {
        if let Some(spec) = self.kind.field(name) {
            self.errors
                .push(reason.for_field(spec.name, spec.zh, spec.en));
        }
    }

    /// Sets a derived field, or checks the value the officer entered against it.
    fn derive(&mut self, name: &'static str, value: &str, source_zh: &str, source_en: &str) {
        let entered = self.entered.contains(&name);
        match self.text(name) {
            Some(current) if entered && current != value => {
                // A choice is named in each language by its label (男, not `male`).
                let zh = self
                    .kind
                    .field(name)
                    .and_then(|spec| spec.choice_label(value))
                    .unwrap_or(value);
                let reason = Reason::new(
                    "mismatch",
                    format!("与{source_zh}不符（应为 {zh}）"),
                    format!("does not agree with the {source_en} (which says {value})"),
                );
                self.fail(name, reason);
            }
            _ => {
                self.merged
                    .insert(name.to_owned(), Value::String(value.to_owned()));
            }
        }
    }

    fn person(&mut self) {
        // Nearly everyone registered holds a resident ID card: it is the default document.
        if let (None, Some(default)) = (
            self.text("id_type"),
            EntityKind::Person.default_value("id_type"),
        ) {
            self.merged
                .insert("id_type".into(), Value::String(default.into()));
        }
        let id_type = self.text("id_type").map(str::to_owned);
        let number = self.text("id_number").map(str::to_owned);
        if let (Some(id_type), Some(number)) = (id_type.as_deref(), number) {
            if id_type == "resident_id" {
                match id_number::parse(&number, self.today) {
                    Ok(id) => {
                        let birth = id.birth_date.to_string();
                        self.derive("gender", id.gender.code(), "身份证号", "ID number");
                        self.derive("birth_date", &birth, "身份证号", "ID number");
                        self.derive("origin_code", &id.origin_code, "身份证号", "ID number");
                        self.derive("origin_name", &id.origin_name, "身份证号", "ID number");
                    }
                    Err(reason) => self.fail("id_number", reason),
                }
            } else if id_number::parse(&number, self.today).is_ok() {
                // A resident ID number entered as another document would escape what is derived
                // from it (the origin a watch list of regions reads).
                let reason = Reason::new(
                    "resident_number",
                    "这是居民身份证号码，请选择“居民身份证”",
                    "this is a resident ID number: choose resident_id",
                );
                self.fail("id_type", reason);
            } else {
                let ok = (5..=30).contains(&number.len())
                    && number.bytes().all(|b| b.is_ascii_alphanumeric());
                if !ok {
                    let reason = Reason::new(
                        "format",
                        "证件号码应为5到30位字母或数字",
                        "must be 5 to 30 letters or digits",
                    );
                    self.fail("id_number", reason);
                }
            }
            if self.text("category").is_none() {
                let category = if id_type == "resident_id" {
                    "floating"
                } else {
                    "overseas"
                };
                self.merged
                    .insert("category".into(), Value::String(category.into()));
            }
        }
    }

    fn vehicle(&mut self) {
        let changed = self.entered.contains(&"plate") || self.entered.contains(&"vehicle_type");
        let kind_missing = self.text("plate_kind").is_none();
        if (changed || kind_missing)
            && !self.entered.contains(&"plate_kind")
            && let Some(Ok((_, shape))) = self.text("plate").map(plate::parse)
        {
            // An ordinary plate's text is the same on a car, a truck and a motorcycle: the
            // vehicle's type says which plate it is.
            let code = match (shape, self.text("vehicle_type")) {
                (plate::PlateShape::Ordinary, Some("motorcycle")) => "motorcycle",
                (plate::PlateShape::Ordinary, Some("truck")) => "large",
                _ => shape.kind_code(),
            };
            self.merged
                .insert("plate_kind".into(), Value::String(code.into()));
        }
    }

    /// `later` may not be before `earlier` (dates as `YYYY-MM-DD` compare as text).
    fn not_before(&mut self, later: &str, earlier: &str) {
        if let (Some(l), Some(e)) = (self.text(later), self.text(earlier))
            && l < e
        {
            let reason = Reason::new(
                "before",
                format!("不能早于 {e}"),
                format!("cannot be before {e}"),
            );
            self.fail(later, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Date {
        Date::new(2026, 11, 28).unwrap()
    }

    fn input(pairs: &[(&str, &str)]) -> Input {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn person() -> Input {
        input(&[
            ("village", "441303006001"),
            ("id_type", "居民身份证"),
            ("id_number", "11010519491231002x"),
            ("name", " 王  芳 "),
            ("phone", "138 0013 8000"),
        ])
    }

    #[test]
    fn a_list_of_names_is_split_and_held_to_its_length() {
        let spec = EntityKind::Dispute.field("parties").unwrap();
        let list = parse_value(spec, "王芳；李四、 张三", today()).unwrap();
        assert_eq!(list, serde_json::json!(["王芳", "李四", "张三"]));
        // As many one-letter names as fit: within the length, a node each.
        let most = vec!["a"; TEXT_LIST_CHARS / 2].join(";");
        let items = parse_value(spec, &most, today()).unwrap();
        assert_eq!(items.as_array().unwrap().len(), TEXT_LIST_CHARS / 2);
        let reason = parse_value(spec, &format!("{most};ab"), today()).unwrap_err();
        assert_eq!(reason.code, "too_long");
    }

    #[test]
    fn a_person_is_normalised_and_derived_fields_filled() {
        let fields = validate_capture(EntityKind::Person, &person(), today()).unwrap();
        assert_eq!(fields["id_type"], "resident_id");
        assert_eq!(fields["id_number"], "11010519491231002X");
        assert_eq!(fields["name"], "王芳");
        assert_eq!(fields["gender"], "female");
        assert_eq!(fields["birth_date"], "1949-12-31");
        assert_eq!(fields["origin_name"], "北京市朝阳区");
        assert_eq!(fields["category"], "floating");
        assert_eq!(fields["phone"], "13800138000");
    }

    #[test]
    fn entered_gender_and_birth_date_must_agree_with_the_id_number() {
        let mut form = person();
        form.insert("gender".into(), "男".into());
        form.insert("birth_date".into(), "1949-12-30".into());
        let err = validate_capture(EntityKind::Person, &form, today()).unwrap_err();
        let fields: Vec<_> = err
            .field_errors()
            .iter()
            .map(|e| e.field.as_str())
            .collect();
        assert_eq!(fields, ["gender", "birth_date"]);
        assert!(err.field_errors()[0].message_zh.starts_with("性别："));
        assert!(err.field_errors()[0].message_en.starts_with("gender: "));
    }

    #[test]
    fn every_error_is_reported_at_once_naming_its_field() {
        let form = input(&[
            ("village", "4413"),
            ("id_type", "resident_id"),
            ("id_number", "110105194912310021"),
            ("phone", "12345"),
            ("shoe_size", "42"),
            ("review_status", "approved"),
        ]);
        let err = validate_capture(EntityKind::Person, &form, today()).unwrap_err();
        let mut fields: Vec<_> = err.field_errors().iter().map(|e| e.field.clone()).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "id_number",
                "name",
                "phone",
                "review_status",
                "shoe_size",
                "village"
            ]
        );
        let id = err
            .field_errors()
            .iter()
            .find(|e| e.field == "id_number")
            .unwrap();
        assert_eq!(id.code, "checksum");
        assert!(id.message_zh.contains("证件号码") && id.message_en.contains("ID number"));
    }

    #[test]
    fn an_edit_returns_only_what_changes_and_rederives() {
        let current = validate_capture(EntityKind::Person, &person(), today()).unwrap();
        let same = validate_edit(
            EntityKind::Person,
            &current,
            &input(&[("name", "王芳芳 ")]),
            today(),
        );
        assert_eq!(same.unwrap().keys().collect::<Vec<_>>(), ["name"]);
        // A corrected ID number re-derives gender and birth date.
        let mut first17 = b"44130319900101123".to_vec();
        first17.push(id_number::check_char(&first17) as u8);
        let number = String::from_utf8(first17).unwrap();
        let changes = validate_edit(
            EntityKind::Person,
            &current,
            &input(&[("id_number", &number)]),
            today(),
        )
        .unwrap();
        assert_eq!(changes["gender"], "male");
        assert_eq!(changes["birth_date"], "1990-01-01");
        assert_eq!(changes["origin_name"], "广东省惠州市惠阳区");
        // Clearing a required field is refused.
        let err = validate_edit(
            EntityKind::Person,
            &current,
            &input(&[("name", "")]),
            today(),
        );
        assert_eq!(err.unwrap_err().field_errors()[0].code, "required");
    }

    fn fields_with_errors(kind: EntityKind, values: &Fields) -> Vec<(String, String)> {
        validate_record(kind, values, today())
            .into_iter()
            .map(|e| (e.field, e.code))
            .collect()
    }

    #[test]
    fn a_motorcycle_gets_a_motorcycle_plate_and_a_truck_a_large_one() {
        let vehicle = |kind: &str| {
            let form = input(&[
                ("village", "441303006001"),
                ("plate", "粤L·D1234"),
                ("vehicle_type", kind),
            ]);
            validate_capture(EntityKind::Vehicle, &form, today()).unwrap()["plate_kind"].clone()
        };
        assert_eq!(vehicle("motorcycle"), "motorcycle");
        assert_eq!(vehicle("truck"), "large");
        assert_eq!(vehicle("car"), "small");
    }

    #[test]
    fn a_date_and_time_after_today_is_refused_like_a_date() {
        let spec = EntityKind::Visit.field("time").unwrap();
        let err = parse_value(spec, "2026-11-29 09:00", today()).unwrap_err();
        assert_eq!(err.code, "future");
        assert_eq!(
            parse_value(spec, "2026-11-28 09:00", today()).unwrap(),
            json!("2026-11-28 09:00:00")
        );
    }

    #[test]
    fn a_gender_that_disagrees_with_the_id_number_is_named_in_chinese() {
        let mut input = person();
        input.insert("gender".into(), "男".into());
        let err = validate_capture(EntityKind::Person, &input, today()).unwrap_err();
        let error = &err.field_errors()[0];
        assert_eq!(
            (error.field.as_str(), error.code.as_str()),
            ("gender", "mismatch")
        );
        assert!(error.message_zh.contains("应为 女"), "{}", error.message_zh);
        assert!(error.message_en.contains("female"), "{}", error.message_en);
    }

    #[test]
    fn a_whole_record_needs_its_required_fields_and_derived_ones_that_agree() {
        let fields = validate_capture(EntityKind::Person, &person(), today()).unwrap();
        assert_eq!(fields_with_errors(EntityKind::Person, &fields), []);
        let mut nameless = fields.clone();
        nameless.remove("name");
        assert_eq!(
            fields_with_errors(EntityKind::Person, &nameless),
            [("name".into(), "required".into())]
        );
        // An origin that would keep a person off a watch list of her real region.
        let mut forged = fields.clone();
        forged.insert("origin_code".into(), json!("440000"));
        assert_eq!(
            fields_with_errors(EntityKind::Person, &forged),
            [("origin_code".into(), "mismatch".into())]
        );
        // Left out, it is filled in from the ID number.
        let mut left_out = fields.clone();
        left_out.remove("origin_code");
        left_out.remove("gender");
        assert_eq!(fields_with_errors(EntityKind::Person, &left_out), []);
        assert_eq!(
            missing_derived(EntityKind::Person, &left_out, today()),
            Fields::from([
                ("gender".into(), json!("female")),
                ("origin_code".into(), fields["origin_code"].clone())
            ])
        );
    }

    #[test]
    fn prose_is_kept_as_typed_and_short_texts_are_cleaned() {
        let mut form = person();
        form.insert(
            "notes".into(),
            " 租户自述：月租800元；\r\n房东称已签合同（一年）。\n".into(),
        );
        let fields = validate_capture(EntityKind::Person, &form, today()).unwrap();
        assert_eq!(
            fields["notes"],
            "租户自述：月租800元；\n房东称已签合同（一年）。"
        );
        // What a replica sends back is as normalised as it was.
        assert_eq!(fields_with_errors(EntityKind::Person, &fields), []);
        // Short texts are still cleaned: half-width, white space collapsed (none between
        // Chinese characters).
        assert_eq!(fields["name"], "王芳");
        form.insert("notes".into(), "行一\u{0}行二".into());
        let err = validate_capture(EntityKind::Person, &form, today()).unwrap_err();
        assert_eq!(err.field_errors()[0].code, "hidden_character");
    }

    #[test]
    fn invisible_and_control_characters_are_refused_in_every_field() {
        let mut form = person();
        form.insert("id_type".into(), "passport".into());
        form.insert("id_number".into(), "E1234\u{200B}5678".into());
        let err = validate_capture(EntityKind::Person, &form, today()).unwrap_err();
        assert_eq!(err.field_errors()[0].field, "id_number");
        let mut fields = validate_capture(EntityKind::Person, &person(), today()).unwrap();
        fields.insert("name".into(), json!("王\u{202E}芳"));
        fields.insert("notes".into(), json!("\u{1b}[2J"));
        assert_eq!(
            fields_with_errors(EntityKind::Person, &fields),
            [
                ("name".into(), "hidden_character".into()),
                ("notes".into(), "hidden_character".into())
            ]
        );
        fields.insert("name".into(), json!("王芳"));
        fields.remove("notes");
        fields.insert("id_type".into(), json!("passport"));
        fields.insert("id_number".into(), json!("E1234\u{200B}5678"));
        assert!(
            fields_with_errors(EntityKind::Person, &fields)
                .iter()
                .any(|(f, _)| f == "id_number")
        );
    }

    #[test]
    fn the_document_defaults_to_the_resident_id_card() {
        let mut form = person();
        form.remove("id_type");
        let fields = validate_capture(EntityKind::Person, &form, today()).unwrap();
        assert_eq!(fields["id_type"], "resident_id");
        form.insert("id_number".into(), "110105194912310021".into());
        let err = validate_capture(EntityKind::Person, &form, today()).unwrap_err();
        assert_eq!(err.field_errors()[0].code, "checksum");
    }

    #[test]
    fn passports_are_not_checked_as_resident_ids() {
        let form = input(&[
            ("village", "441303006001"),
            ("id_type", "passport"),
            ("id_number", "e 1234 5678"),
            ("name", "John Smith"),
        ]);
        let fields = validate_capture(EntityKind::Person, &form, today()).unwrap();
        assert_eq!(fields["id_number"], "E12345678");
        assert_eq!(fields["category"], "overseas");
        assert!(!fields.contains_key("gender"));
    }

    #[test]
    fn moved_out_may_not_precede_moved_in() {
        let form = input(&[
            ("village", "441303006001"),
            ("person", "0190c1f4-0000-7000-8000-000000000001"),
            ("house", "0190c1f4-0000-7000-8000-000000000002"),
            ("moved_in", "2024-05-01"),
            ("moved_out", "2024-04-30"),
            ("relation", "tenant"),
        ]);
        let err = validate_capture(EntityKind::Residence, &form, today()).unwrap_err();
        assert_eq!(err.field_errors()[0].field, "moved_out");
        assert_eq!(err.field_errors()[0].code, "before");
    }

    #[test]
    fn plates_normalise_and_imply_their_kind() {
        let form = input(&[
            ("village", "441303006001"),
            ("plate", "粤l·d12345"),
            ("vehicle_type", "car"),
        ]);
        let fields = validate_capture(EntityKind::Vehicle, &form, today()).unwrap();
        assert_eq!(fields["plate"], "粤LD12345");
        assert_eq!(fields["plate_kind"], "new_energy_small");
    }

    #[test]
    fn typed_values_from_other_replicas_are_revalidated() {
        let good = validate_capture(EntityKind::Person, &person(), today()).unwrap();
        assert!(validate_values(EntityKind::Person, &good, today()).is_empty());
        let mut bad = good;
        bad.insert("id_number".into(), json!("110105194912310021"));
        bad.insert("phone".into(), json!("138 0013 8000"));
        let errors = validate_values(EntityKind::Person, &bad, today());
        let mut codes: Vec<_> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.code.as_str()))
            .collect();
        codes.sort_unstable();
        assert_eq!(
            codes,
            [("id_number", "checksum"), ("phone", "not_normalised")]
        );
    }

    /// A value read alone is judged as the first error `validate_values` finds for its field
    /// in the value with its record's document type beside it: every kind, field, value and
    /// document type of a set chosen to meet each branch, both checks failing at once among them.
    #[test]
    fn a_value_alone_is_judged_as_among_its_record_s_values() {
        let values = [
            json!("11010519491231002X"),
            json!("110105194912310021"),
            json!("E9000001"),
            json!("王芳"),
            json!(" 王芳"),
            json!("resident_id"),
            json!("passport"),
            json!("13800138000"),
            json!("1990-01-01"),
            json!("粤LD12345"),
            json!("car"),
            json!(true),
            json!(12),
            json!(["a"]),
            Value::Null,
        ];
        let fields = [
            "id_number",
            "id_type",
            "name",
            "phone",
            "plate",
            "birth_date",
            "deleted",
            "hull",
        ];
        let (mut judged, mut resident) = (0, 0);
        for kind in EntityKind::ALL {
            for field in fields {
                for value in &values {
                    for id_type in std::iter::once(None).chain(values.iter().map(Some)) {
                        let mut all = Fields::from([(field.to_owned(), value.clone())]);
                        if let (true, Some(id_type)) = (field == "id_number", id_type) {
                            all.insert("id_type".into(), id_type.clone());
                        }
                        let among = validate_values(kind, &all, today())
                            .into_iter()
                            .find(|e| e.field == field);
                        let alone = validate_value(kind, field, value, id_type, today());
                        judged += usize::from(alone.is_some());
                        resident +=
                            usize::from(alone.as_ref().is_some_and(|e| e.code == "checksum"));
                        assert_eq!(alone, among, "{kind} {field} {value} {id_type:?}");
                    }
                }
            }
        }
        // Each branch met: values judged wrong, ID numbers wrong as a resident card's only.
        assert!(
            judged > 900 && resident > 0,
            "errors: {judged}, {resident} by the card"
        );
    }

    #[test]
    fn an_id_number_is_read_as_a_resident_card_s_only_by_that_document_type() {
        let bad = json!("110105194912310021");
        let read_by = |id_type: Option<Value>| {
            validate_value(
                EntityKind::Person,
                "id_number",
                &bad,
                id_type.as_ref(),
                today(),
            )
            .map(|e| e.code)
        };
        assert_eq!(
            read_by(Some(json!("resident_id"))).as_deref(),
            Some("checksum")
        );
        assert_eq!(read_by(Some(json!("passport"))), None);
        assert_eq!(read_by(None), None);
        // A document type of a megabyte is no resident card: the number is read as any other.
        assert_eq!(read_by(Some(json!("r".repeat(1 << 20)))), None);
        // A number neither well-formed nor a resident card's: the first is said.
        let spaced = json!(" 11010519491231002X");
        let resident = json!("resident_id");
        let error = validate_value(
            EntityKind::Person,
            "id_number",
            &spaced,
            Some(&resident),
            today(),
        );
        assert_eq!(error.map(|e| e.code).as_deref(), Some("not_normalised"));
        // A document type of a megabyte is refused in words of bounded length.
        let long = json!("r".repeat(1 << 20));
        let error = validate_value(EntityKind::Person, "id_type", &long, None, today()).unwrap();
        assert!(
            error.to_string().len() < 1_000,
            "{}",
            error.to_string().len()
        );
        // And a plate of a megabyte.
        let long = json!(format!("粤L{}", "1".repeat(1 << 20)));
        let error = validate_value(EntityKind::Vehicle, "plate", &long, None, today()).unwrap();
        assert_eq!(error.code, "format");
        assert!(error.to_string().len() < 1_000);
        // Only an ID number is read by it.
        let name = json!("王芳");
        let resident = json!("resident_id");
        assert!(
            validate_value(EntityKind::Person, "name", &name, Some(&resident), today()).is_none()
        );
    }
}
