//! The command's stderr: passed on line by line to the worker's own stderr
//! (which the supervisor logs with the chunk), with the last part kept for the
//! chunk's error message.

use std::io::{self, Write};

/// How much of the end of stderr a failure message quotes.
pub const TAIL_LEN: usize = 2048;

/// A line longer than this is passed on in pieces, so a command that writes
/// megabytes without a newline cannot make the worker hold them all.
const MAX_LINE: usize = 16 * 1024;

/// The command's stderr as it arrives, in pieces of any size: whole lines go
/// on to this process's stderr, the last part is kept for the error message.
#[derive(Debug, Default)]
pub struct Forward {
    /// The line being gathered, never longer than [`MAX_LINE`].
    line: Vec<u8>,
    tail: Tail,
}

impl Forward {
    /// Takes the next bytes of stderr.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.feed_to(bytes, &mut io::stderr());
    }

    /// Passes on a last line without a newline; returns the end of stderr.
    pub fn finish(self) -> Tail {
        self.finish_to(&mut io::stderr())
    }

    fn feed_to(&mut self, mut bytes: &[u8], to: &mut impl Write) {
        while !bytes.is_empty() {
            let room = bytes.len().min(MAX_LINE - self.line.len());
            let (take, ended) = match bytes[..room].iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (room, false),
            };
            self.line.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if ended || self.line.len() >= MAX_LINE {
                pass_on(&mut self.line, &mut self.tail, to);
            }
        }
    }

    fn finish_to(mut self, to: &mut impl Write) -> Tail {
        if !self.line.is_empty() {
            pass_on(&mut self.line, &mut self.tail, to);
        }
        self.tail
    }
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

    /// Feeds `input` whole, and again in pieces of every size up to 9 bytes;
    /// each way must pass on the same lines.
    fn forward_bytes(input: &[u8]) -> (Vec<u8>, Tail) {
        let mut to = Vec::new();
        let mut forward = Forward::default();
        forward.feed_to(input, &mut to);
        let tail = forward.finish_to(&mut to);
        for piece in 1..10 {
            let mut again = Vec::new();
            let mut forward = Forward::default();
            for bytes in input.chunks(piece) {
                forward.feed_to(bytes, &mut again);
            }
            let again_tail = forward.finish_to(&mut again);
            assert!(again == to, "pieces of {piece}");
            assert_eq!(again_tail.text(), tail.text(), "pieces of {piece}");
        }
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
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
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
