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

/// Prose as typed: trimmed, line endings made `\n`; everything else (full-width punctuation,
/// inner spaces, line breaks) kept.
pub(crate) fn prose(text: &str) -> String {
    text.trim().replace("\r\n", "\n").replace('\r', "\n")
}

/// The first character a person cannot see or that changes how text around it is shown:
/// control characters (white space aside, which [`clean`] collapses), NUL, every format
/// character (Unicode's `Cf`: bidirectional overrides and isolates, zero-width characters, tags),
/// variation selectors, and the characters that render as blanks (Hangul fillers, the braille
/// blank). Such text is refused, never stored: it could hide an identifier from a search or
/// reorder what a reviewer reads. Private-use characters stay: older systems write rare name
/// characters (生僻字) there.
pub(crate) fn hidden_char(text: &str) -> Option<char> {
    text.chars().find(|&c| {
        (c.is_control() && !c.is_whitespace())
            || matches!(
                c,
                // Format characters (Cf), Unicode 16.
                '\u{00AD}'
                    | '\u{0600}'..='\u{0605}'
                    | '\u{061C}'
                    | '\u{06DD}'
                    | '\u{070F}'
                    | '\u{0890}'..='\u{0891}'
                    | '\u{08E2}'
                    | '\u{180E}'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{202A}'..='\u{202E}'
                    | '\u{2060}'..='\u{2064}'
                    | '\u{2066}'..='\u{206F}'
                    | '\u{FEFF}'
                    | '\u{FFF9}'..='\u{FFFB}'
                    | '\u{110BD}'
                    | '\u{110CD}'
                    | '\u{13430}'..='\u{1343F}'
                    | '\u{1BCA0}'..='\u{1BCA3}'
                    | '\u{1D173}'..='\u{1D17A}'
                    | '\u{E0001}'
                    | '\u{E0020}'..='\u{E007F}'
                    // Invisible by design: the combining grapheme joiner, Khmer inherent vowels,
                    // Mongolian and other variation selectors, Hangul fillers, the braille
                    // blank, the object replacement character.
                    | '\u{034F}'
                    | '\u{115F}'..='\u{1160}'
                    | '\u{17B4}'..='\u{17B5}'
                    | '\u{180B}'..='\u{180F}'
                    | '\u{2800}'
                    | '\u{3164}'
                    | '\u{FE00}'..='\u{FE0F}'
                    | '\u{FFA0}'
                    | '\u{FFFC}'
                    | '\u{E0100}'..='\u{E01EF}'
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
        for good in ["王芳", "张 三\n李", "（注）：，。", "A-1/2#", "\u{E000}明"] {
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
