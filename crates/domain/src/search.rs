//! What the text typed in a search box is looked up as: a prefix per searchable column,
//! normalised as that column's values are stored (`粤L·D1` finds the plate `粤LD12345`, `李 明`
//! the name `李明`). The phone's search and the console's both use it.

use crate::{id_number, plate, text};

/// The (column, prefix) pairs to look up; none for blank text.
pub fn prefixes(typed: &str) -> Vec<(&'static str, String)> {
    let cleaned = text::clean(typed);
    if cleaned.is_empty() {
        return Vec::new();
    }
    let mut probes = vec![("name", cleaned.clone()), ("address", cleaned.clone())];
    let compact = id_number::normalize(&cleaned);
    // A number with its country code (`+852 9123…`), as a phone outside the mainland is stored.
    let international: String = compact.chars().filter(|c| *c != '-').collect();
    // Resident ID numbers are digits (and X); passports and permits (E1234567, H12345678) start
    // with letters: any run of letters and digits with a digit in it may be one.
    let number_like = compact.bytes().all(|b| b.is_ascii_alphanumeric())
        && compact.bytes().any(|b| b.is_ascii_digit());
    if compact.len() >= 2 && number_like {
        probes.push(("id_number", compact.clone()));
        if compact.bytes().all(|b| b.is_ascii_digit()) {
            // A number outside the mainland is stored with `+` and its country code: typed
            // with the code but no `+`, or as Hong Kong's or Macau's local eight digits.
            if ["852", "853", "886"]
                .iter()
                .any(|code| compact.starts_with(code))
            {
                probes.push(("phone", format!("+{compact}")));
            }
            if compact.len() >= 4 && compact.len() <= 8 && !compact.starts_with(['0', '1']) {
                probes.push(("phone", format!("+852{compact}")));
                probes.push(("phone", format!("+853{compact}")));
            }
            probes.push(("phone", compact));
        }
    }
    if international.len() >= 2
        && international.starts_with('+')
        && international[1..].bytes().all(|b| b.is_ascii_digit())
    {
        probes.push(("phone", international));
    }
    let plate = plate::normalize(&cleaned);
    if plate.chars().count() >= 2 {
        probes.push(("plate", plate));
    }
    probes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(typed: &str, column: &str) -> Option<String> {
        prefixes(typed)
            .into_iter()
            .find(|(c, _)| *c == column)
            .map(|(_, p)| p)
    }

    #[test]
    fn each_column_is_searched_as_it_is_stored() {
        assert_eq!(prefix("粤L·D1", "plate").as_deref(), Some("粤LD1"));
        assert_eq!(prefix(" 李 明 ", "name").as_deref(), Some("李明"));
        assert_eq!(prefix("John  Smith", "name").as_deref(), Some("John Smith"));
        assert_eq!(
            prefix("110105 1949", "id_number").as_deref(),
            Some("1101051949")
        );
        assert_eq!(prefix("１３８００", "phone").as_deref(), Some("13800"));
        // A passport's number, typed as on the document or in lower case.
        assert_eq!(
            prefix("e900 0002", "id_number").as_deref(),
            Some("E9000002")
        );
        assert_eq!(prefix("E9000002", "phone"), None);
        assert_eq!(prefix("Smith", "id_number"), None);
        assert_eq!(prefix("王芳", "phone"), None);
        assert_eq!(prefix("+852 9123", "phone").as_deref(), Some("+8529123"));
        assert_eq!(prefix("+", "phone"), None);
        // A number abroad typed without its +, or as its local eight digits.
        let phones = |typed: &str| -> Vec<String> {
            prefixes(typed)
                .into_iter()
                .filter(|(c, _)| *c == "phone")
                .map(|(_, p)| p)
                .collect()
        };
        assert!(phones("852 9123 4567").contains(&"+85291234567".to_owned()));
        assert!(phones("9123 4567").contains(&"+85291234567".to_owned()));
        assert!(phones("6612").contains(&"+8536612".to_owned()));
        assert_eq!(phones("13800"), ["13800"]);
        assert_eq!(phones("0752"), ["0752"]);
        assert!(prefixes("   ").is_empty());
    }
}
