//! Text normalisation shared by the validators: what phones and scanners type is often
//! full-width, padded or interspersed with separators.

/// Maps full-width ASCII forms (U+FF01..U+FF5E) and the ideographic space to their ASCII forms.
pub(crate) fn to_half_width(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .collect()
}

/// Half-width, trimmed, with inner white space collapsed to one space.
pub(crate) fn clean(text: &str) -> String {
    to_half_width(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first character a person cannot see or that changes how text around it is shown:
/// control characters (white space aside, which [`clean`] collapses), NUL, bidirectional
/// overrides and isolates, zero-width characters. Such text is refused, never stored: it could
/// hide an identifier from a search or reorder what a reviewer reads.
pub(crate) fn hidden_char(text: &str) -> Option<char> {
    text.chars().find(|&c| {
        (c.is_control() && !c.is_whitespace())
            || matches!(
                c,
                '\u{00AD}'
                    | '\u{061C}'
                    | '\u{180E}'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{202A}'..='\u{202E}'
                    | '\u{2060}'..='\u{2064}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{FEFF}'
                    | '\u{FFF9}'..='\u{FFFB}'
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_are_found_and_visible_ones_are_not() {
        for bad in [
            "a\0b",
            "\u{202E}gpj.exe",
            "李\u{200B}明",
            "\u{1b}[31m",
            "\u{FEFF}x",
            "a\u{2066}b",
        ] {
            assert!(hidden_char(bad).is_some(), "{bad:?}");
        }
        for good in ["王芳", "张 三\n李", "（注）：，。", "A-1/2#"] {
            assert_eq!(hidden_char(good), None, "{good:?}");
        }
    }

    #[test]
    fn full_width_becomes_ascii() {
        assert_eq!(to_half_width("１２３ｘＸ－"), "123xX-");
        assert_eq!(clean("\u{3000} 张  三 \n"), "张 三");
        assert_eq!(clean(" 张 三\t李"), "张 三 李");
        assert_eq!(clean("王芳"), "王芳");
    }
}
