//! Telephone numbers: mainland mobiles (11 digits, `1[3-9]…`) and landlines with their area code.

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
    if digits.len() == 13 && digits.starts_with("86") {
        digits.drain(..2);
    }
    let bytes = digits.as_bytes();
    if bytes[0] == b'1' {
        if bytes.len() == 11 && (b'3'..=b'9').contains(&bytes[1]) {
            return Ok(digits);
        }
        return Err(Reason::new(
            "mobile",
            "手机号应为11位，以13-19开头",
            "a mobile number has 11 digits and starts with 13 to 19",
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
    fn bad_numbers_say_why() {
        assert_eq!(parse("12800138000").unwrap_err().code, "mobile");
        assert_eq!(parse("1380013800").unwrap_err().code, "mobile");
        assert_eq!(parse("0752-55123").unwrap_err().code, "format");
        assert_eq!(parse("138abc").unwrap_err().code, "characters");
        assert_eq!(parse("").unwrap_err().code, "characters");
    }
}
