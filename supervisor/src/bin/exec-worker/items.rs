//! The text of a chunk's lines, for `{item}` and `{items}`: the chunk's
//! bytes cut at each newline, the newlines dropped.

/// The lines of `bytes`, each without its `\n`; a last line without one
/// counts too, and an empty `bytes` has none. A `\r` before the newline stays,
/// as with GNU parallel: it is part of the line's bytes.
pub fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == b'\n').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_their_newline_and_keep_everything_else() {
        let lines: &[&[u8]] = &[b"a b", b"", b" 'q' \"x\" $(y)\r", b"last"];
        assert_eq!(split_lines(b"a b\n\n 'q' \"x\" $(y)\r\nlast\n"), lines);
        assert_eq!(split_lines(b"a b\n\n 'q' \"x\" $(y)\r\nlast"), lines);
    }

    #[test]
    fn an_empty_line_is_an_item_and_nothing_is_none() {
        assert_eq!(split_lines(b"\n"), [b""]);
        assert_eq!(split_lines(b"\n\n"), [b"", b""]);
        assert!(split_lines(b"").is_empty());
    }
}
