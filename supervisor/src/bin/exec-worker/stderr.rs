//! The command's stderr: passed on line by line to the worker's own stderr
//! (which the supervisor logs with the chunk), with the last part kept for the
//! chunk's error message.

use std::io::{self, BufRead, BufReader, Read, Write};

/// How much of the end of stderr a failure message quotes.
pub const TAIL_LEN: usize = 2048;

/// A line longer than this is passed on in pieces, so a command that writes
/// megabytes without a newline cannot make the worker hold them all.
const MAX_LINE: usize = 16 * 1024;

/// Copies `from` to this process's stderr a line at a time until it ends, and
/// returns its last [`TAIL_LEN`] bytes or so.
pub fn forward(from: impl Read) -> Tail {
    forward_to(from, &mut io::stderr())
}

fn forward_to(from: impl Read, to: &mut impl Write) -> Tail {
    let mut from = BufReader::new(from);
    let mut line = Vec::new();
    let mut tail = Tail::default();
    loop {
        let buf = match from.fill_buf() {
            Ok([]) => break,
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let (take, ended) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        from.consume(take);
        if ended || line.len() >= MAX_LINE {
            pass_on(&mut line, &mut tail, to);
        }
    }
    if !line.is_empty() {
        pass_on(&mut line, &mut tail, to);
    }
    tail
}

fn pass_on(line: &mut Vec<u8>, tail: &mut Tail, to: &mut impl Write) {
    tail.push(line);
    if !line.ends_with(b"\n") {
        line.push(b'\n');
    }
    // One write per line, so lines of other writers to the same stderr do
    // not land in the middle. Nobody to tell if it fails: the supervisor is
    // gone, and the worker with it.
    let _ = to.write_all(line);
    line.clear();
}

/// The end of a stream, kept in a buffer that never grows past twice its size.
#[derive(Debug, Default)]
pub struct Tail {
    bytes: Vec<u8>,
    cut: bool,
}

impl Tail {
    fn push(&mut self, more: &[u8]) {
        self.bytes.extend_from_slice(more);
        if self.bytes.len() > 2 * TAIL_LEN {
            let excess = self.bytes.len() - TAIL_LEN;
            self.bytes.drain(..excess);
            self.cut = true;
        }
    }

    /// The last [`TAIL_LEN`] bytes or fewer as text, trailing white space
    /// removed, starting with `…` when earlier output was left out.
    pub fn text(&self) -> String {
        let from = self.bytes.len().saturating_sub(TAIL_LEN);
        let mut kept = &self.bytes[from..];
        let cut = self.cut || from > 0;
        if cut {
            // Do not start in the middle of a UTF-8 character.
            while let [first, rest @ ..] = kept
                && first & 0b1100_0000 == 0b1000_0000
            {
                kept = rest;
            }
        }
        let text = String::from_utf8_lossy(kept);
        let text = text.trim_end();
        if text.is_empty() {
            String::new()
        } else if cut {
            format!("…{text}")
        } else {
            text.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward_bytes(input: &[u8]) -> (Vec<u8>, Tail) {
        let mut to = Vec::new();
        let tail = forward_to(input, &mut to);
        (to, tail)
    }

    #[test]
    fn lines_are_passed_on_and_the_last_one_gets_its_newline() {
        let (to, tail) = forward_bytes(b"one\ntwo\n\nthree");
        assert_eq!(to, b"one\ntwo\n\nthree\n");
        assert_eq!(tail.text(), "one\ntwo\n\nthree");
    }

    #[test]
    fn nothing_in_nothing_out() {
        let (to, tail) = forward_bytes(b"");
        assert!(to.is_empty());
        assert_eq!(tail.text(), "");
        assert_eq!(forward_bytes(b"\n \n").1.text(), "");
    }

    #[test]
    fn an_endless_line_is_passed_on_in_pieces() {
        let input = vec![b'x'; 3 * MAX_LINE + 5];
        let (to, tail) = forward_bytes(&input);
        let lines: Vec<_> = to.split(|&b| b == b'\n').collect();
        assert!(lines.len() >= 4, "{} lines", lines.len());
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE + 8 * 1024));
        assert_eq!(to.iter().filter(|&&b| b == b'x').count(), input.len());
        let text = tail.text();
        assert!(text.starts_with('…'), "{text}");
        assert_eq!(text.len(), '…'.len_utf8() + TAIL_LEN);
    }

    #[test]
    fn the_tail_keeps_the_end() {
        let mut input = String::new();
        for i in 0..1000 {
            input.push_str(&format!("line {i}\n"));
        }
        let (_, tail) = forward_bytes(input.as_bytes());
        let text = tail.text();
        assert!(text.starts_with('…'));
        assert!(text.ends_with("line 998\nline 999"), "{text}");
        assert!(text.len() <= TAIL_LEN + '…'.len_utf8());
    }

    #[test]
    fn a_cut_tail_starts_on_a_character() {
        let mut tail = Tail::default();
        tail.push(&[b'a'; 10]);
        // An odd number of bytes after the characters, so the cut falls
        // inside one.
        tail.push("é".repeat(TAIL_LEN).as_bytes());
        tail.push(b"b");
        let text = tail.text();
        assert!(text.starts_with("…é"), "{}", &text[..10]);
        assert!(text.ends_with("éb"));
        assert!(!text.contains('\u{fffd}'));
    }
}
