//! Cutting text to a length: for stored names and for error messages.

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// `text` for an error message: control characters dropped, at most `max` bytes (on a
/// character boundary), `…` when something was cut.
pub fn for_message(text: &str, max: usize) -> String {
    let visible: String = text.chars().filter(|c| !c.is_control()).collect();
    let shown = clip(&visible, max);
    if shown.len() < visible.len() {
        format!("{shown}…")
    } else {
        shown.to_owned()
    }
}

/// Message length for user-supplied names and paths.
pub const MESSAGE_NAME_BYTES: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("aéb", 2), "a", "é is two bytes");
        assert_eq!(for_message("ab\u{7}cd", 10), "abcd");
        assert_eq!(for_message("abcdef", 3), "abc…");
        assert_eq!(for_message(&"ü".repeat(200), MESSAGE_NAME_BYTES).chars().count(), 101);
    }
}
