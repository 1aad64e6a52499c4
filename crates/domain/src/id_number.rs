//! Resident ID numbers (居民身份证号码, GB 11643-1999): normalisation, validation and what can be
//! derived from them (birth date, gender, origin).

use crate::date::Date;
use crate::error::Reason;
use crate::regions;
use crate::schema::Gender;

/// Weights of the first 17 digits in the ISO 7064 MOD 11-2 check.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character for each remainder of the weighted sum modulo 11.
const CHECK_CHARS: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// A valid resident ID number and what it says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResidentId {
    /// The normalised 18 characters.
    pub number: String,
    /// Date of birth (digits 7 to 14).
    pub birth_date: Date,
    /// Gender (digit 17: odd for men, even for women).
    pub gender: Gender,
    /// The six-digit division code of the issuing county.
    pub origin_code: String,
    /// The name of the origin, as precise as the division table allows.
    pub origin_name: String,
}

/// Trims, maps full-width characters to ASCII, drops inner spaces and upper-cases `x`.
pub fn normalize(raw: &str) -> String {
    if raw.bytes().all(|b| b.is_ascii_digit() || b == b'X') {
        return raw.to_owned();
    }
    crate::text::to_half_width(raw)
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The check character that the first 17 digits call for.
pub fn check_char(first17: &[u8]) -> char {
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    CHECK_CHARS[(sum % 11) as usize]
}

/// Validates a resident ID number, given today's date (a birth date may not be in the future).
pub fn parse(raw: &str, today: Date) -> Result<ResidentId, Reason> {
    let number = normalize(raw);
    let len = number.chars().count();
    if len == 15 && number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reason::new(
            "old_format",
            "是15位旧号码，请填写18位号码",
            "is an old 15-digit number; enter the 18-character number",
        ));
    }
    if len != 18 {
        return Err(Reason::new(
            "length",
            format!("应为18位，实际为{len}位"),
            format!("must have 18 characters, has {len}"),
        ));
    }
    let bytes = number.as_bytes();
    let last = bytes[17];
    if !bytes[..17].iter().all(u8::is_ascii_digit) || !(last.is_ascii_digit() || last == b'X') {
        return Err(Reason::new(
            "characters",
            "前17位须为数字，末位为数字或X",
            "must be 17 digits followed by a digit or X",
        ));
    }
    let origin_code = &number[..6];
    let Some(origin) = regions::resolve_county(origin_code) else {
        return Err(Reason::new(
            "region",
            format!("地区码 {} 不存在", &number[..2]),
            format!("province code {} does not exist", &number[..2]),
        ));
    };
    let birth = Date::new(
        number[6..10].parse().unwrap_or(0),
        number[10..12].parse().unwrap_or(0),
        number[12..14].parse().unwrap_or(0),
    );
    let Some(birth_date) = birth.filter(|d| d.year() >= 1900) else {
        return Err(Reason::new(
            "birth_date",
            format!("出生日期 {} 不是有效日期", &number[6..14]),
            format!("birth date {} is not a real date", &number[6..14]),
        ));
    };
    if birth_date > today {
        return Err(Reason::new(
            "birth_date_future",
            format!("出生日期 {birth_date} 晚于今天"),
            format!("birth date {birth_date} is in the future"),
        ));
    }
    let gender = if (bytes[16] - b'0') % 2 == 1 {
        Gender::Male
    } else {
        Gender::Female
    };
    let origin_name = regions::full_name(origin_code).unwrap_or_else(|| origin.name.to_owned());
    if char::from(last) != check_char(&bytes[..17]) {
        // A wrong check character means a wrong digit somewhere, not (usually) a wrong last
        // one: naming the character the rest calls for would lead to a valid, wrong number.
        // What the first 17 digits say is shown to compare with the card instead.
        let (zh, en) = match gender {
            Gender::Male => ("男", "male"),
            Gender::Female => ("女", "female"),
        };
        return Err(Reason::new(
            "checksum",
            format!(
                "号码有误（校验位不符），请与证件逐位核对；按此号码：出生 {birth_date}，{zh}，{origin_name}"
            ),
            format!(
                "the number is wrong (its check character does not match): compare it digit by digit with the card; as typed it says born {birth_date}, {en}, {origin_name}"
            ),
        ));
    }
    Ok(ResidentId {
        origin_code: origin_code.to_owned(),
        origin_name,
        gender,
        birth_date,
        number,
    })
}

/// What a resident ID number says as far as it is typed, for a form to show while the officer
/// types: the region from 6 digits on, the birth date and age from 14, the sex from 17, and the
/// verdict at 18.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The characters as normalised ([`normalize`]).
    pub number: String,
    /// The six-digit division code, once typed and known.
    pub origin_code: Option<String>,
    /// Its name, as precise as the division table allows.
    pub origin_name: Option<String>,
    /// The birth date, once typed and real.
    pub birth_date: Option<Date>,
    /// Whole years from the birth date to today.
    pub age: Option<u32>,
    /// The sex, once the 17th digit is typed.
    pub gender: Option<Gender>,
    /// All 18 characters are there and [`parse`] takes them.
    pub valid: bool,
    /// What is wrong so far (a wrong character, an unknown region, a date that is not real, a
    /// wrong check character, a length other than 18 once complete).
    pub problem: Option<Reason>,
}

/// Decodes what is typed of a resident ID number so far ([`Decoded`]).
pub fn decode(raw: &str, today: Date) -> Decoded {
    let number = normalize(raw);
    let mut out = Decoded {
        number: number.clone(),
        origin_code: None,
        origin_name: None,
        birth_date: None,
        age: None,
        gender: None,
        valid: false,
        problem: None,
    };
    if number.chars().count() > 18 {
        out.problem = parse(&number, today).err();
        return out;
    }
    let bytes = number.as_bytes();
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    let last_x = bytes.len() == 18 && digits == 17 && bytes[17] == b'X';
    if digits < bytes.len() && !last_x {
        out.problem = Some(Reason::new(
            "characters",
            "前17位须为数字，末位为数字或X",
            "must be 17 digits followed by a digit or X",
        ));
        return out;
    }
    if digits >= 6 {
        match regions::resolve_county(&number[..6]) {
            Some(origin) => {
                out.origin_code = Some(number[..6].to_owned());
                out.origin_name = Some(
                    regions::full_name(&number[..6]).unwrap_or_else(|| origin.name.to_owned()),
                );
            }
            None => {
                out.problem = Some(Reason::new(
                    "region",
                    format!("地区码 {} 不存在", &number[..6]),
                    format!("region code {} does not exist", &number[..6]),
                ));
                return out;
            }
        }
    }
    if digits >= 14 {
        let birth = Date::new(
            number[6..10].parse().unwrap_or(0),
            number[10..12].parse().unwrap_or(0),
            number[12..14].parse().unwrap_or(0),
        )
        .filter(|d| d.year() >= 1900 && *d <= today);
        let Some(birth) = birth else {
            out.problem = Some(Reason::new(
                "birth_date",
                format!("出生日期 {} 不是有效日期", &number[6..14]),
                format!("birth date {} is not a real date", &number[6..14]),
            ));
            return out;
        };
        out.birth_date = Some(birth);
        out.age = Some(age_on(birth, today));
    }
    if digits >= 17 {
        out.gender = Some(if (bytes[16] - b'0') % 2 == 1 {
            Gender::Male
        } else {
            Gender::Female
        });
    }
    if number.len() >= 18 {
        match parse(&number, today) {
            Ok(_) => out.valid = true,
            Err(reason) => out.problem = Some(reason),
        }
    }
    out
}

/// Whole years from `birth` to `today`.
pub fn age_on(birth: Date, today: Date) -> u32 {
    let (b, t) = (birth.to_string(), today.to_string());
    let years = today.year() - birth.year();
    // `YYYY-MM-DD` compares as the date does: the birthday this year not reached yet.
    let before_birthday = t.get(5..) < b.get(5..);
    u32::try_from(years - i32::from(before_birthday)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_number_is_decoded_as_far_as_it_is_typed() {
        let partial = decode("441303", today());
        assert_eq!(partial.origin_name.as_deref(), Some("广东省惠州市惠阳区"));
        assert_eq!(
            (partial.birth_date, partial.valid, partial.problem),
            (None, false, None)
        );
        let born = decode("44130319900229", today());
        assert_eq!(
            born.problem.map(|p| p.code),
            Some("birth_date"),
            "1990 was not a leap year"
        );
        let typed = decode("4413031990010100", today());
        assert_eq!(typed.birth_date, Date::new(1990, 1, 1));
        assert_eq!((typed.age, typed.gender), (Some(36), None));
        let whole = decode("11010519491231002x", today());
        assert!(whole.valid && whole.problem.is_none());
        assert_eq!((whole.gender, whole.age), (Some(Gender::Female), Some(76)));
        let wrong = decode("110105194912310021", today());
        assert_eq!(
            (wrong.valid, wrong.problem.map(|p| p.code)),
            (false, Some("checksum"))
        );
        assert_eq!(
            wrong.gender,
            Some(Gender::Female),
            "what it says is shown to compare"
        );
        assert_eq!(
            decode("1101x5", today()).problem.map(|p| p.code),
            Some("characters")
        );
        assert_eq!(decode("9901", today()).origin_code, None);
        let long = decode(&"4".repeat(100_000), today());
        assert_eq!(
            (long.problem.map(|p| p.code), long.origin_code),
            (Some("length"), None)
        );
    }

    #[test]
    fn age_counts_the_birthday_reached_or_not() {
        let born = Date::new(2000, 11, 28).unwrap();
        assert_eq!(age_on(born, today()), 26);
        assert_eq!(age_on(born, Date::new(2026, 11, 27).unwrap()), 25);
    }

    fn today() -> Date {
        Date::new(2026, 11, 28).unwrap()
    }

    #[test]
    fn a_wrong_check_character_says_what_the_number_decodes_to_not_what_would_pass() {
        // The standard's sample with one birth-date digit mistyped: naming the check character
        // the rest calls for would lead the officer to a valid number one day off.
        let err = parse("11010519491230002X", today()).unwrap_err();
        assert_eq!(err.code, "checksum");
        assert!(
            err.zh.contains("出生 1949-12-30")
                && err.zh.contains("女")
                && err.zh.contains("北京市朝阳区"),
            "{}",
            err.zh
        );
        assert!(!err.zh.contains("末位") && !err.en.contains("should be"));
    }

    #[test]
    fn the_standards_sample_is_a_woman_born_on_new_years_eve_1949() {
        let id = parse("11010519491231002X", today()).unwrap();
        assert_eq!(id.gender, Gender::Female);
        assert_eq!(id.birth_date.to_string(), "1949-12-31");
        assert_eq!(id.origin_code, "110105");
        assert_eq!(id.origin_name, "北京市朝阳区");
    }

    #[test]
    fn lower_case_x_full_width_and_spaces_normalise() {
        for raw in [
            "11010519491231002x",
            "１１０１０５１９４９１２３１００２Ｘ",
            " 110105 19491231 002x ",
        ] {
            assert_eq!(
                parse(raw, today()).unwrap().number,
                "11010519491231002X",
                "{raw}"
            );
        }
    }

    #[test]
    fn changing_any_one_character_of_the_sample_makes_it_invalid() {
        let sample = "11010519491231002X";
        for pos in 0..18 {
            for replacement in "0123456789X".chars() {
                let mut chars: Vec<char> = sample.chars().collect();
                if chars[pos] == replacement || (pos < 17 && replacement == 'X') {
                    continue;
                }
                chars[pos] = replacement;
                let changed: String = chars.into_iter().collect();
                assert!(parse(&changed, today()).is_err(), "{changed} accepted");
            }
        }
    }

    #[test]
    fn a_retired_county_code_is_accepted_but_an_unknown_province_is_not() {
        // 440399 is no county of Shenzhen; with a correct check character the number stands.
        let mut first17 = b"44039919900101123".to_vec();
        let check = check_char(&first17);
        first17.push(check as u8);
        let number = String::from_utf8(first17).unwrap();
        let id = parse(&number, today()).unwrap();
        assert_eq!(id.origin_name, "广东省深圳市");
        assert_eq!(id.gender, Gender::Male);

        let mut bad = b"99039919900101123".to_vec();
        bad.push(check_char(&bad) as u8);
        let err = parse(std::str::from_utf8(&bad).unwrap(), today()).unwrap_err();
        assert_eq!(err.code, "region");
    }

    #[test]
    fn wrong_lengths_dates_and_old_numbers_are_explained() {
        assert_eq!(
            parse("110105491231002", today()).unwrap_err().code,
            "old_format"
        );
        assert_eq!(
            parse("1101051949123100", today()).unwrap_err().code,
            "length"
        );
        let mut future = b"11010520301231002".to_vec();
        future.push(check_char(&future) as u8);
        let err = parse(std::str::from_utf8(&future).unwrap(), today()).unwrap_err();
        assert_eq!(err.code, "birth_date_future");
        let mut feb30 = b"11010519490230002".to_vec();
        feb30.push(check_char(&feb30) as u8);
        assert_eq!(
            parse(std::str::from_utf8(&feb30).unwrap(), today())
                .unwrap_err()
                .code,
            "birth_date"
        );
    }

    proptest! {
        #[test]
        fn every_generated_valid_number_parses_and_round_trips(
            county in prop::sample::select(vec!["441303", "110105", "440306", "510104"]),
            days in -20_000i64..20_000,
            seq in 0u32..1000,
        ) {
            let birth = Date::from_days(days);
            let mut first17 = format!("{county}{}{seq:03}", birth.to_string().replace('-', ""));
            let check = check_char(first17.as_bytes());
            first17.push(check);
            let id = parse(&first17.to_lowercase(), today()).unwrap();
            prop_assert_eq!(id.birth_date, birth);
            prop_assert_eq!(id.gender, if seq % 2 == 1 { Gender::Male } else { Gender::Female });
            prop_assert_eq!(&id.number, &first17);
        }

        #[test]
        fn arbitrary_text_never_panics(raw in "\\PC{0,30}") {
            let _ = parse(&raw, today());
        }

        /// Whatever is typed, decoding never panics, calls valid exactly what parsing takes,
        /// and every prefix of a valid number decodes without a problem, saying what it holds.
        #[test]
        fn decoding_agrees_with_parsing_at_every_prefix(
            raw in "[0-9Xx ]{0,20}",
            county in prop::sample::select(vec!["441303", "110105", "440306"]),
            days in -20_000i64..20_000,
            seq in 0u32..1000,
        ) {
            prop_assert_eq!(decode(&raw, today()).valid, parse(&raw, today()).is_ok());
            let birth = Date::from_days(days);
            let mut number = format!("{county}{}{seq:03}", birth.to_string().replace('-', ""));
            number.push(check_char(number.as_bytes()));
            for end in 0..=18 {
                let d = decode(&number[..end], today());
                prop_assert!(d.problem.is_none(), "{}: {:?}", &number[..end], d.problem);
                prop_assert_eq!(d.valid, end == 18);
                prop_assert_eq!(d.birth_date.is_some(), end >= 14);
                prop_assert_eq!(d.gender.is_some(), end >= 17);
            }
        }
    }
}
