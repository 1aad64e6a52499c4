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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_width_becomes_ascii() {
        assert_eq!(to_half_width("１２３ｘＸ－"), "123xX-");
        assert_eq!(clean("\u{3000} 张  三 \n"), "张 三");
        assert_eq!(clean(" 张 三\t李"), "张 三 李");
        assert_eq!(clean("王芳"), "王芳");
    }
}
