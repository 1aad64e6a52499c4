//! Telephone numbers: mainland mobiles (11 digits, `1[3-9]…`) and landlines with their area code;
//! numbers of Hong Kong, Macau, Taiwan and abroad with their country code (`+852…`), as many
//! of the district's residents and landlords have.

use crate::error::Reason;

/// Validates and normalises a phone number: mobiles to 11 digits, landlines to `0752-1234567`.
pub fn parse(raw: &str) -> Result<String, Reason> {
    let half = crate::text::to_half_width(raw);
    let mut digits: String = half
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '(' | ')' | '+'))
        .collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.is_empty() {
        return Err(Reason::new(
            "characters",
            "只能包含数字",
            "may contain only digits",
        ));
    }
    // A country code: written with `+` or `00`, or Hong Kong's and Macau's without either
    // (no mainland number begins with 85).
    let international = half.trim_start().starts_with('+')
        || digits.starts_with("00")
        || (digits.len() == 11 && (digits.starts_with("852") || digits.starts_with("853")));
    if international {
        let number = digits.strip_prefix("00").unwrap_or(&digits);
        if let Some(mainland) = number.strip_prefix("86") {
            digits = mainland.to_owned();
        } else {
            return abroad(number);
        }
    } else if digits.len() == 13 && digits.starts_with("86") {
        digits.drain(..2);
    }
    if digits.is_empty() {
        return Err(Reason::new(
            "characters",
            "只能包含数字",
            "may contain only digits",
        ));
    }
    let bytes = digits.as_bytes();
    if bytes[0] == b'1' {
        if bytes.len() == 11 && (b'3'..=b'9').contains(&bytes[1]) {
            return Ok(digits);
        }
        return Err(Reason::new(
            "mobile",
            "手机号应为11位，以13-19开头（港澳台及境外号码前加“+”和地区代码）",
            "a mobile number has 11 digits and starts with 13 to 19 (outside the mainland: + and the country code)",
        ));
    }
    if bytes[0] == b'0' {
        // Beijing (010) and the 02x cities have three-digit area codes, all others four.
        let area = if digits.starts_with("010") || digits.starts_with("02") {
            3
        } else {
            4
        };
        let local = digits.len().saturating_sub(area);
        if (7..=8).contains(&local) && bytes.get(area) != Some(&b'0') {
            return Ok(format!("{}-{}", &digits[..area], &digits[area..]));
        }
    }
    Err(Reason::new(
        "format",
        "应为11位手机号，或带区号的固定电话（如 0752-1234567）",
        "must be an 11-digit mobile or a landline with its area code (like 0752-1234567)",
    ))
}

/// A number outside the mainland, digits after its country code: Hong Kong's and Macau's have
/// eight, Taiwan's nine (its trunk 0 left out); elsewhere what the international plan allows
/// (at most 15 digits in all). Stored as `+` and the digits.
fn abroad(number: &str) -> Result<String, Reason> {
    let wrong = || {
        Reason::new(
            "international",
            "境外号码应为“+国家或地区代码”加号码，如 +852 9123 4567（香港、澳门8位，台湾9位）",
            "a number outside the mainland is + and its country code, then the number, like +852 9123 4567 (8 digits in Hong Kong and Macau, 9 in Taiwan)",
        )
    };
    // Hong Kong's, Macau's and Taiwan's numbers without the trunk 0 some write after the code.
    let known = ["852", "853", "886"]
        .into_iter()
        .find_map(|code| Some((code, number.strip_prefix(code)?.trim_start_matches('0'))));
    let digits = match known {
        Some((code @ ("852" | "853"), national)) if national.len() == 8 => {
            format!("{code}{national}")
        }
        Some(("886", national)) if national.len() == 9 => format!("886{national}"),
        Some(_) => return Err(wrong()),
        // No country code begins with 0, and the shortest numbers abroad have 7 digits and a
        // one-digit code; the international plan allows 15 digits in all.
        None if !number.starts_with('0') && (8..=15).contains(&number.len()) => number.to_owned(),
        None => return Err(wrong()),
    };
    Ok(format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobiles_and_landlines_normalise() {
        assert_eq!(parse("138 0013 8000").unwrap(), "13800138000");
        assert_eq!(parse("+86 138-0013-8000").unwrap(), "13800138000");
        assert_eq!(parse("０７５２－５５１２３４５").unwrap(), "0752-5512345");
        assert_eq!(parse("07525512345").unwrap(), "0752-5512345");
        assert_eq!(parse("010-12345678").unwrap(), "010-12345678");
        assert_eq!(parse("(020)87654321").unwrap(), "020-87654321");
    }

    #[test]
    fn numbers_outside_the_mainland_keep_their_country_code() {
        assert_eq!(parse("+852 9123 4567").unwrap(), "+85291234567");
        assert_eq!(parse("852-91234567").unwrap(), "+85291234567");
        assert_eq!(parse("00852 2123 4567").unwrap(), "+85221234567");
        assert_eq!(parse("+853 6612 3456").unwrap(), "+85366123456");
        assert_eq!(parse("+886 0912 345 678").unwrap(), "+886912345678");
        assert_eq!(parse("+1 415 555 0134").unwrap(), "+14155550134");
        // A trunk 0 after the code is left out, however many.
        assert_eq!(parse("+852 0 9123 4567").unwrap(), "+85291234567");
        let padded = format!("+852{}91234567", "0".repeat(60));
        assert_eq!(parse(&padded).unwrap(), "+85291234567");
        // The mainland's own country code is the mainland's number.
        assert_eq!(parse("0086 138 0013 8000").unwrap(), "13800138000");
        assert_eq!(parse("+86 0752 5512345").unwrap(), "0752-5512345");
        for wrong in [
            "+852 9123 456",
            "+853 6612 34567",
            "+886 912 345",
            "+1 234",
            "+0 12345678",
        ] {
            assert_eq!(parse(wrong).unwrap_err().code, "international", "{wrong}");
        }
    }

    #[test]
    fn bad_numbers_say_why() {
        assert_eq!(parse("12800138000").unwrap_err().code, "mobile");
        assert_eq!(parse("1380013800").unwrap_err().code, "mobile");
        assert_eq!(parse("0752-55123").unwrap_err().code, "format");
        assert_eq!(parse("138abc").unwrap_err().code, "characters");
        assert_eq!(parse("").unwrap_err().code, "characters");
    }
}
