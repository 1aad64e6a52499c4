//! Text normalisation shared by the validators: what phones and scanners type is often
//! full-width, padded or interspersed with separators.

/// Characters of a typed value an error message quotes, at most.
pub(crate) const EXCERPT_CHARS: usize = 32;

/// A typed value as an error message quotes it: its first [`EXCERPT_CHARS`] characters, `…`
/// after them when there were more. A message is kept and sent back for each change it refuses,
/// so it must not grow with what was typed.
pub fn excerpt(text: &str) -> String {
    cut_to(text, EXCERPT_CHARS)
}

/// `text`'s first `chars` characters, `…` after them when there were more.
pub fn cut_to(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

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

/// Half-width, trimmed, with inner white space collapsed to one space, and none between two
/// Chinese characters (Chinese is written without spaces: `李 明` is the name `李明`, which a
/// search for 李明 must find; `John Smith` keeps its space).
pub(crate) fn clean(text: &str) -> String {
    let half = to_half_width(text);
    let words: Vec<&str> = half.split_whitespace().collect();
    let mut out = String::with_capacity(half.len());
    for (i, word) in words.iter().enumerate() {
        let joined = i > 0
            && words[i - 1].chars().next_back().is_some_and(is_han)
            && word.chars().next().is_some_and(is_han);
        if i > 0 && !joined {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// A Chinese character: the CJK ideograph blocks, and the private-use area, where older systems
/// put rare name characters (生僻字).
fn is_han(c: char) -> bool {
    matches!(c as u32,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0xE000..=0xF8FF | 0x20000..=0x3FFFF)
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
pub fn hidden_char(text: &str) -> Option<char> {
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
    fn a_quoted_value_is_cut_to_its_first_characters() {
        assert_eq!(excerpt("王芳"), "王芳");
        let exact = "字".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), exact);
        let cut = excerpt(&"字".repeat(1 << 20));
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

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
        // No space between Chinese characters; one between other words.
        assert_eq!(clean("\u{3000} 张  三 \n"), "张三");
        assert_eq!(clean(" 张 三\t李"), "张三李");
        assert_eq!(clean("John  Smith"), "John Smith");
        assert_eq!(clean("王 John"), "王 John");
        assert_eq!(clean("王芳"), "王芳");
    }
}
