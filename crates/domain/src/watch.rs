//! The station's watch list: ID numbers to watch for and risk regions (division codes, as in the
//! epidemic warnings of the original app). A person matches a region when their origin — the
//! division of their ID number — lies inside it.

use crate::error::Reason;
use crate::{id_number, regions};

/// One rule of the watch list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// A normalised ID number.
    IdNumber(String),
    /// A division prefix: 2 digits (province), 4 (city) or 6 (county).
    Region(String),
}

impl Rule {
    /// The rule's kind as stored: `id_number` or `region`.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::IdNumber(_) => "id_number",
            Rule::Region(_) => "region",
        }
    }

    /// The rule's value as stored.
    pub fn value(&self) -> &str {
        match self {
            Rule::IdNumber(v) | Rule::Region(v) => v,
        }
    }

    /// A rule read back from storage.
    pub fn from_stored(kind: &str, value: &str) -> Option<Rule> {
        match kind {
            "id_number" => Some(Rule::IdNumber(value.to_owned())),
            "region" => Some(Rule::Region(value.to_owned())),
            _ => None,
        }
    }

    /// A watched ID number as an administrator types it (any document type, normalised).
    pub fn id_number(raw: &str) -> Result<Rule, Reason> {
        let number = id_number::normalize(raw);
        if number.len() < 5
            || number.len() > 30
            || !number.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(Reason::new(
                "invalid",
                "应为5至30位字母或数字",
                "must be 5 to 30 letters or digits",
            ));
        }
        Ok(Rule::IdNumber(number))
    }

    /// A risk region from a division code: `420000` (a province), `420100` (a city) or
    /// `420106` (a county), or the same as 2 or 4 digits. It must be a known division.
    pub fn region(raw: &str) -> Result<Rule, Reason> {
        let code = raw.trim();
        let unknown = || {
            Reason::new(
                "unknown_region",
                "不是已知的行政区划代码",
                "is not a known division code",
            )
        };
        if !matches!(code.len(), 2 | 4 | 6) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        let mut prefix = code;
        while prefix.len() > 2 && prefix.ends_with("00") {
            prefix = &prefix[..prefix.len() - 2];
        }
        regions::lookup(prefix).ok_or_else(unknown)?;
        Ok(Rule::Region(prefix.to_owned()))
    }

    /// Whether a person with this ID number and origin code matches the rule.
    pub fn matches(&self, id_number: Option<&str>, origin_code: Option<&str>) -> bool {
        match self {
            Rule::IdNumber(watched) => id_number == Some(watched.as_str()),
            Rule::Region(prefix) => origin_code.is_some_and(|o| o.starts_with(prefix.as_str())),
        }
    }

    /// The rule's display name: the number, or the division's full name with its code.
    pub fn describe(&self) -> String {
        match self {
            Rule::IdNumber(number) => number.clone(),
            Rule::Region(prefix) => {
                let name = regions::lookup(prefix).map_or("", |r| r.name);
                format!("{name}（{prefix}）")
            }
        }
    }
}

/// A person's origin division: the derived `origin_code`, else the first six digits of a
/// resident ID number (records from apps that did not derive it).
pub fn origin<'a>(
    id_type: Option<&str>,
    id_number: Option<&'a str>,
    origin_code: Option<&'a str>,
) -> Option<&'a str> {
    origin_code.or_else(|| {
        let number = id_number?;
        (id_type.is_none_or(|t| t == "resident_id")
            && number.len() == 18
            && number.bytes().take(6).all(|b| b.is_ascii_digit()))
        .then(|| &number[..6])
    })
}

/// The rules a person matches.
pub fn matching<'r>(
    rules: &'r [Rule],
    id_number: Option<&str>,
    origin_code: Option<&str>,
) -> Vec<&'r Rule> {
    rules
        .iter()
        .filter(|r| r.matches(id_number, origin_code))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_match_every_county_inside_them() {
        let hubei = Rule::region("420000").unwrap();
        let wuhan = Rule::region("4201").unwrap();
        let wuchang = Rule::region("420106").unwrap();
        assert_eq!(hubei, Rule::Region("42".into()));
        assert_eq!(wuhan, Rule::Region("4201".into()));
        for rule in [&hubei, &wuhan, &wuchang] {
            assert!(rule.matches(None, Some("420106")), "{rule:?}");
        }
        assert!(hubei.matches(None, Some("422801")));
        assert!(!wuhan.matches(None, Some("422801")));
        assert!(!wuchang.matches(None, Some("420102")));
        assert!(!hubei.matches(Some("420106199001011234"), None));
        assert!(hubei.describe().contains("湖北省"));
    }

    #[test]
    fn unknown_or_malformed_regions_are_refused() {
        for bad in ["990000", "4201x6", "42010", "", "4"] {
            assert_eq!(
                Rule::region(bad).unwrap_err().code,
                "unknown_region",
                "{bad}"
            );
        }
    }

    #[test]
    fn watched_numbers_are_normalised_and_match_exactly() {
        let rule = Rule::id_number(" 44130219900101123x ").unwrap();
        assert_eq!(rule, Rule::IdNumber("44130219900101123X".into()));
        assert!(rule.matches(Some("44130219900101123X"), None));
        assert!(!rule.matches(Some("441302199001011230"), None));
        assert!(Rule::id_number("12").is_err());
        assert_eq!(
            origin(Some("resident_id"), Some("44130219900101123X"), None),
            Some("441302")
        );
        assert_eq!(
            origin(Some("passport"), Some("441302199001011230"), None),
            None
        );
        assert_eq!(
            origin(None, Some("E1234567"), Some("420106")),
            Some("420106")
        );
        let rules = [rule, Rule::region("44").unwrap()];
        assert_eq!(
            matching(&rules, Some("44130219900101123X"), Some("441302")).len(),
            2
        );
        assert_eq!(
            Rule::from_stored(rules[1].kind(), rules[1].value()),
            Some(rules[1].clone())
        );
    }
}
