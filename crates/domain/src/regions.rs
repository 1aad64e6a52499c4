//! The administrative division table (GB/T 2260, 2023 edition) that the first six digits of a
//! resident ID number refer to, embedded in the binary so validation works offline.

use std::collections::HashMap;
use std::sync::OnceLock;

const TABLE: &str = include_str!("../data/regions-gbt2260.csv");

/// Province-level codes that appear in valid ID numbers but not in the division table:
/// residence permits for Hong Kong, Macau and Taiwan residents (issued since 2018).
const PERMIT_PROVINCES: [(&str, &str); 3] = [
    ("81", "香港特别行政区"),
    ("82", "澳门特别行政区"),
    ("83", "台湾省"),
];

/// One division: its code and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// The code as found: 2 (province), 4 (city) or 6 (county) digits.
    pub code: &'static str,
    /// The official name.
    pub name: &'static str,
}

fn table() -> &'static HashMap<&'static str, &'static str> {
    static TABLE_MAP: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    TABLE_MAP.get_or_init(|| {
        let mut map: HashMap<&'static str, &'static str> = TABLE
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut cols = line.split(',');
                Some((cols.next()?, cols.next()?))
            })
            .collect();
        map.extend(PERMIT_PROVINCES);
        map
    })
}

/// The division named by exactly this code, if it exists.
pub fn lookup(code: &str) -> Option<Region> {
    table()
        .get_key_value(code)
        .map(|(code, name)| Region { code, name })
}

/// The most precise division known for a six-digit county code: the county itself, else its city,
/// else its province. County codes retire and are renamed, so old ID numbers often name a county
/// that is no longer in the table; only an unknown province makes the code wrong.
pub fn resolve_county(code: &str) -> Option<Region> {
    if code.len() != 6 || !code.is_ascii() {
        return None;
    }
    lookup(code)
        .or_else(|| lookup(&code[..4]))
        .or_else(|| lookup(&code[..2]))
}

/// The full name of the origin, province first (`广东省惠州市惠阳区`), as far as it is known.
pub fn full_name(code: &str) -> Option<String> {
    // Every capture of a person asks this: current counties are named once, up front.
    static FULL_NAMES: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    let names = FULL_NAMES.get_or_init(|| {
        table()
            .keys()
            .filter(|c| c.len() == 6)
            .filter_map(|c| Some((*c, compose(c)?)))
            .collect()
    });
    match names.get(code) {
        Some(name) => Some(name.clone()),
        None => compose(code),
    }
}

fn compose(code: &str) -> Option<String> {
    if code.len() != 6 || !code.is_ascii() {
        return None;
    }
    let mut name = lookup(&code[..2])?.name.to_owned();
    for part in [&code[..4], code] {
        if let Some(region) = lookup(part) {
            // Municipalities repeat their name at city level (北京市 / 市辖区): skip the filler.
            if region.name != "市辖区" && region.name != "县" && !name.ends_with(region.name) {
                name.push_str(region.name);
            }
        }
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_counties_resolve_and_retired_ones_fall_back() {
        assert_eq!(resolve_county("441303").map(|r| r.name), Some("惠阳区"));
        // 440000-level county that does not exist: falls back to the city, then the province.
        assert_eq!(resolve_county("441399").map(|r| r.code), Some("4413"));
        assert_eq!(resolve_county("449999").map(|r| r.code), Some("44"));
        assert_eq!(resolve_county("991303"), None);
        assert_eq!(
            resolve_county("810000").map(|r| r.name),
            Some("香港特别行政区")
        );
    }

    #[test]
    fn full_names_read_province_first() {
        assert_eq!(full_name("441303").as_deref(), Some("广东省惠州市惠阳区"));
        assert_eq!(full_name("110105").as_deref(), Some("北京市朝阳区"));
        assert_eq!(full_name("441399").as_deref(), Some("广东省惠州市"));
    }
}
