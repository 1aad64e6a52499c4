//! Motor vehicle plates (机动车号牌, GA 36): normalisation, validation and the plate kind they imply.

use crate::error::Reason;
use crate::text::excerpt;

/// Abbreviations of the provinces, one of which starts every civil plate.
const PROVINCES: &str = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼";
/// Special last characters: coach, police, trailer, Hong Kong, Macau, test, ultra-limit, consulate.
const SPECIAL_ENDINGS: &str = "学警挂港澳试超领";

/// What a plate's shape says about the vehicle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlateShape {
    /// Seven characters, blue or yellow plate.
    Ordinary,
    /// Eight characters, small new-energy vehicle (D or F after the issuing letter).
    NewEnergySmall,
    /// Eight characters, large new-energy vehicle (D or F at the end).
    NewEnergyLarge,
    /// Seven characters ending in a special character.
    Special(char),
}

impl PlateShape {
    /// The plate kind code (see `schema::PLATE_KINDS`) that this shape implies.
    pub fn kind_code(self) -> &'static str {
        match self {
            PlateShape::Ordinary => "small",
            PlateShape::NewEnergySmall => "new_energy_small",
            PlateShape::NewEnergyLarge => "new_energy_large",
            PlateShape::Special('学') => "coach",
            PlateShape::Special('警') => "police",
            PlateShape::Special('挂') => "trailer",
            PlateShape::Special('港') => "hong_kong",
            PlateShape::Special('澳') => "macau",
            PlateShape::Special(_) => "other",
        }
    }
}

/// Drops separators (`·`, spaces, hyphens), maps full-width letters and upper-cases.
pub fn normalize(raw: &str) -> String {
    crate::text::to_half_width(raw)
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '·' | '•' | '.' | '-' | '_' | '‧' | '・'))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Letters and digits that may follow the issuing letter: I and O are never used, they read as 1 and 0.
fn is_serial_char(c: char) -> bool {
    c.is_ascii_digit() || (c.is_ascii_uppercase() && c != 'I' && c != 'O')
}

/// Validates a plate and tells its shape; returns the normalised plate.
pub fn parse(raw: &str) -> Result<(String, PlateShape), Reason> {
    let plate = normalize(raw);
    let chars: Vec<char> = plate.chars().collect();
    let Some(&first) = chars.first() else {
        return Err(Reason::new("empty", "不能为空", "is empty"));
    };
    if !PROVINCES.contains(first) {
        return Err(Reason::new(
            "province",
            format!("首字“{first}”不是省份简称"),
            format!("starts with “{first}”, which is not a province abbreviation"),
        ));
    }
    let issuer = chars.get(1).copied().unwrap_or(' ');
    if !issuer.is_ascii_uppercase() || issuer == 'I' {
        return Err(Reason::new(
            "issuer",
            "第二位应为发牌机关字母（A-Z，不含I）",
            "the second character must be the issuing authority's letter (A-Z, not I)",
        ));
    }
    let rest = &chars[2..];
    let shape = match rest.len() {
        5 if rest.iter().all(|&c| is_serial_char(c)) => Some(PlateShape::Ordinary),
        5 if rest[..4].iter().all(|&c| is_serial_char(c)) && SPECIAL_ENDINGS.contains(rest[4]) => {
            Some(PlateShape::Special(rest[4]))
        }
        6 if matches!(rest[0], 'D' | 'F')
            && is_serial_char(rest[1])
            && rest[2..].iter().all(char::is_ascii_digit) =>
        {
            Some(PlateShape::NewEnergySmall)
        }
        6 if rest[..5].iter().all(char::is_ascii_digit) && matches!(rest[5], 'D' | 'F') => {
            Some(PlateShape::NewEnergyLarge)
        }
        _ => None,
    };
    // A serial holding I or O is the right length with letters plates never use (they read as
    // 1 and 0): say that, not that its length is wrong.
    let letter = rest.iter().find(|c| matches!(c, 'I' | 'O'));
    match (shape, letter) {
        (Some(shape), _) => Ok((plate, shape)),
        (None, Some(letter)) if matches!(rest.len(), 5 | 6) => Err(Reason::new(
            "format",
            format!(
                "“{}”含字母{letter}：号牌不用I和O（易与1、0混淆），应为数字1或0",
                excerpt(&plate)
            ),
            format!(
                "“{}” holds the letter {letter}: plates never use I or O (read as 1 and 0); type the digit",
                excerpt(&plate)
            ),
        )),
        (None, _) => Err(Reason::new(
            "format",
            format!("“{}”格式不对：普通号牌7位，新能源号牌8位", excerpt(&plate)),
            format!(
                "“{}” is malformed: ordinary plates have 7 characters, new-energy plates 8",
                excerpt(&plate)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn separators_and_case_do_not_matter() {
        for raw in [
            "粤L·12345",
            "粤l12345",
            "粤L12345",
            " 粤 L 12345 ",
            "粤Ｌ１２３４５",
        ] {
            assert_eq!(
                parse(raw).unwrap(),
                ("粤L12345".to_owned(), PlateShape::Ordinary),
                "{raw}"
            );
        }
    }

    #[test]
    fn a_plate_with_i_or_o_says_so_not_that_its_length_is_wrong() {
        for raw in ["粤L1234O", "粤LI2345", "粤LD1O345"] {
            let why = parse(raw).unwrap_err();
            assert!(
                why.zh.contains("不用I和O") && why.en.contains("never use I or O"),
                "{raw}: {why:?}"
            );
        }
        assert!(parse("粤L123456").unwrap_err().zh.contains("普通号牌7位"));
    }

    #[test]
    fn new_energy_and_special_plates_are_valid() {
        assert_eq!(parse("粤LD12345").unwrap().1, PlateShape::NewEnergySmall);
        assert_eq!(parse("粤LFA1234").unwrap().1, PlateShape::NewEnergySmall);
        assert_eq!(parse("粤L12345D").unwrap().1, PlateShape::NewEnergyLarge);
        assert_eq!(parse("粤L1234学").unwrap().1.kind_code(), "coach");
        assert_eq!(parse("粤L1234挂").unwrap().1.kind_code(), "trailer");
        assert_eq!(parse("粤Z1234港").unwrap().1.kind_code(), "hong_kong");
    }

    #[test]
    fn bad_plates_say_why() {
        assert_eq!(parse("粤I12345").unwrap_err().code, "issuer");
        assert_eq!(parse("X L12345").unwrap_err().code, "province");
        assert_eq!(parse("粤L1234").unwrap_err().code, "format");
        assert_eq!(parse("粤L12O45").unwrap_err().code, "format");
        assert_eq!(parse("粤LA12345").unwrap_err().code, "format");
        assert_eq!(parse("").unwrap_err().code, "empty");
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent_and_parse_never_panics(raw in "\\PC{0,12}") {
            let once = normalize(&raw);
            prop_assert_eq!(normalize(&once), once);
            if let Ok((plate, _)) = parse(&raw) {
                prop_assert_eq!(parse(&plate).map(|p| p.0), Ok(plate));
            }
        }
    }
}
