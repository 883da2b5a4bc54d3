//! The command's argument template: words with `{index}`-style placeholders,
//! parsed once at start and filled in for each chunk.
//!
//! Only the names in [`Placeholder`] are placeholders; any other text in
//! braces is an ordinary part of the word, so programs for awk, jq or a shell
//! (`{print $1}`) pass through untouched. A filled-in word is always exactly
//! one argument: nothing is split, globbed or quoted, and there is no shell.

use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::Path;

use thiserror::Error;
use worker::Chunk;

/// A value of the chunk that an argument can name as `{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    Index,
    Start,
    End,
    /// The input file.
    Path,
    /// `start`, named for the byte offset it is in a file job.
    Offset,
    /// `end - start`.
    Length,
    Attempt,
    /// The chunk's first item over the whole job: its first line's number for
    /// a lines source.
    Line,
}

impl Placeholder {
    const ALL: [Self; 8] = [
        Self::Index,
        Self::Start,
        Self::End,
        Self::Path,
        Self::Offset,
        Self::Length,
        Self::Attempt,
        Self::Line,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Index => "index",
            Self::Start => "start",
            Self::End => "end",
            Self::Path => "path",
            Self::Offset => "offset",
            Self::Length => "length",
            Self::Attempt => "attempt",
            Self::Line => "line",
        }
    }

    fn from_name(name: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name().as_bytes() == name)
    }

    /// `{offset}` and `{length}` count bytes of a file; for a range job they
    /// would silently mean `start` and a count of integers, which is more
    /// likely a job written for the wrong source than intended.
    fn needs_input_file(self) -> bool {
        matches!(self, Self::Path | Self::Offset | Self::Length)
    }
}

/// A chunk asked for a value a range job does not have.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "the argument placeholder {{{}}} needs an input file, but this job's source is a range",
    .0.name()
)]
pub struct NeedsInputFile(pub Placeholder);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Value(Placeholder),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    /// No placeholder: the same argument for every chunk.
    Fixed(OsString),
    Parts(Vec<Part>),
}

/// The arguments after the program, pre-parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    words: Vec<Word>,
}

impl Template {
    pub fn parse<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let words = args
            .into_iter()
            .map(|arg| parse_word(arg.as_ref()))
            .collect();
        Self { words }
    }

    /// The arguments for `chunk`; `input` is the job's input file, if it has one.
    ///
    /// # Errors
    ///
    /// When an argument names `{path}`, `{offset}` or `{length}` and there is
    /// no input file.
    pub fn render(
        &self,
        chunk: &Chunk,
        input: Option<&Path>,
    ) -> Result<Vec<OsString>, NeedsInputFile> {
        let mut args = Vec::with_capacity(self.words.len());
        for word in &self.words {
            match word {
                Word::Fixed(arg) => args.push(arg.clone()),
                Word::Parts(parts) => {
                    let mut arg = Vec::new();
                    for part in parts {
                        match part {
                            Part::Literal(bytes) => arg.extend_from_slice(bytes),
                            Part::Value(p) => write_value(*p, chunk, input, &mut arg)?,
                        }
                    }
                    args.push(OsString::from_vec(arg));
                }
            }
        }
        Ok(args)
    }
}

fn parse_word(word: &OsStr) -> Word {
    let mut parts = Vec::new();
    let mut literal = Vec::new();
    let mut rest = word.as_bytes();
    while let Some(open) = rest.iter().position(|&b| b == b'{') {
        let inside = &rest[open + 1..];
        let placeholder = inside
            .iter()
            .position(|&b| b == b'}')
            .and_then(|close| Some((Placeholder::from_name(&inside[..close])?, close)));
        match placeholder {
            Some((p, close)) => {
                literal.extend_from_slice(&rest[..open]);
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Value(p));
                rest = &inside[close + 1..];
            }
            // Keep the brace and look for a placeholder right after it: in
            // `{{index}}` the inner one still counts.
            None => {
                literal.extend_from_slice(&rest[..=open]);
                rest = inside;
            }
        }
    }
    if parts.is_empty() {
        return Word::Fixed(word.to_owned());
    }
    literal.extend_from_slice(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Word::Parts(parts)
}

fn write_value(
    p: Placeholder,
    chunk: &Chunk,
    input: Option<&Path>,
    arg: &mut Vec<u8>,
) -> Result<(), NeedsInputFile> {
    if p.needs_input_file() && input.is_none() {
        return Err(NeedsInputFile(p));
    }
    // Writing into a Vec cannot fail.
    let _ = match p {
        Placeholder::Index => write!(arg, "{}", chunk.index),
        Placeholder::Start | Placeholder::Offset => write!(arg, "{}", chunk.start),
        Placeholder::End => write!(arg, "{}", chunk.end),
        Placeholder::Length => write!(arg, "{}", chunk.len()),
        Placeholder::Attempt => write!(arg, "{}", chunk.attempt),
        Placeholder::Line => write!(arg, "{}", chunk.first_item),
        Placeholder::Path => {
            arg.extend_from_slice(input.unwrap_or(Path::new("")).as_os_str().as_bytes());
            Ok(())
        }
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: Chunk = Chunk {
        index: 7,
        start: 700,
        end: 800,
        attempt: 2,
        first_item: 42,
    };

    fn render(args: &[&str], input: Option<&str>) -> Result<Vec<String>, NeedsInputFile> {
        let rendered = Template::parse(args).render(&CHUNK, input.map(Path::new))?;
        Ok(rendered
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect())
    }

    #[test]
    fn every_placeholder_is_filled_in() {
        let args = [
            "{index}",
            "{start}",
            "{end}",
            "{path}",
            "{offset}",
            "{length}",
            "{attempt}",
            "{line}",
        ];
        assert_eq!(
            render(&args, Some("/data/in.txt")).unwrap(),
            ["7", "700", "800", "/data/in.txt", "700", "100", "2", "42"]
        );
    }

    #[test]
    fn placeholders_are_filled_in_anywhere_inside_a_word() {
        assert_eq!(
            render(
                &["part-{index}.gz", "x{index}y{attempt}", "{start}-{end}"],
                None
            )
            .unwrap(),
            ["part-7.gz", "x7y2", "700-800"]
        );
    }

    #[test]
    fn a_word_stays_one_argument_whatever_it_holds() {
        assert_eq!(
            render(
                &["a b {index}", "", "$(rm -rf /) {path}"],
                Some("/my dir/f *.txt")
            )
            .unwrap(),
            ["a b 7", "", "$(rm -rf /) /my dir/f *.txt"]
        );
    }

    #[test]
    fn other_text_in_braces_is_left_alone() {
        let args = [
            "{print $1}",
            "{}",
            "{ index }",
            "{INDEX}",
            "{index",
            "index}",
            "}{",
            "{{index}}",
            "{{}}",
            "{pathx}",
            "${index}",
        ];
        assert_eq!(
            render(&args, None).unwrap(),
            [
                "{print $1}",
                "{}",
                "{ index }",
                "{INDEX}",
                "{index",
                "index}",
                "}{",
                "{7}",
                "{{}}",
                "{pathx}",
                "$7",
            ]
        );
    }

    #[test]
    fn words_without_placeholders_are_parsed_once_as_they_are() {
        let template = Template::parse(["-l", "{print}", "a{b}c"]);
        assert!(template.words.iter().all(|w| matches!(w, Word::Fixed(_))));
    }

    #[test]
    fn a_word_is_split_into_literals_and_values() {
        assert_eq!(
            parse_word(OsStr::new("a{index}{end}b{x}")),
            Word::Parts(vec![
                Part::Literal(b"a".to_vec()),
                Part::Value(Placeholder::Index),
                Part::Value(Placeholder::End),
                Part::Literal(b"b{x}".to_vec()),
            ])
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_pass_through() {
        let word = OsStr::from_bytes(b"\xff{index}\xfe");
        let rendered = Template::parse([word]).render(&CHUNK, None).unwrap();
        assert_eq!(rendered, [OsStr::from_bytes(b"\xff7\xfe")]);
    }

    #[test]
    fn file_values_in_a_range_job_are_an_error() {
        for (arg, p) in [
            ("{path}", Placeholder::Path),
            ("at {offset}", Placeholder::Offset),
            ("{length}", Placeholder::Length),
        ] {
            assert_eq!(render(&["ok", arg], None), Err(NeedsInputFile(p)));
        }
        assert_eq!(
            NeedsInputFile(Placeholder::Path).to_string(),
            "the argument placeholder {path} needs an input file, but this job's source is a range"
        );
        // The rest has a meaning for a range too.
        assert!(render(&["{index} {start} {end} {attempt} {line}"], None).is_ok());
    }
}
