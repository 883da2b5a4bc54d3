//! The command's argument template: words with `{index}`-style placeholders,
//! parsed once at start and filled in for each chunk.
//!
//! Only the names in [`Placeholder`] are placeholders; any other text in
//! braces is an ordinary part of the word, so programs for awk, jq or a shell
//! (`{print $1}`) pass through untouched. A filled-in word is always exactly
//! one argument, except that a word holding `{items}` becomes one argument per
//! line of the chunk: nothing is split, globbed or quoted, and there is no shell.

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
    FirstLine,
    /// The text of the chunk's one line, without its newline.
    Item,
    /// The text of each of the chunk's lines: the word is repeated per line.
    Items,
}

impl Placeholder {
    const ALL: [Self; 10] = [
        Self::Index,
        Self::Start,
        Self::End,
        Self::Path,
        Self::Offset,
        Self::Length,
        Self::Attempt,
        Self::FirstLine,
        Self::Item,
        Self::Items,
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
            Self::FirstLine => "first_line",
            Self::Item => "item",
            Self::Items => "items",
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

    /// The line texts exist only where a chunk is made of lines.
    fn needs_lines(self) -> bool {
        matches!(self, Self::Item | Self::Items)
    }
}

/// Placeholder names that were renamed: `{line}` read as "the line" to anyone
/// who knows GNU parallel, while it was the line's number. Refused rather than
/// kept as an alias, so a command written for the text never silently gets
/// a number.
const RENAMED: [(&str, Placeholder); 1] = [("line", Placeholder::FirstLine)];

/// An argument names a placeholder that no longer exists.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "`{{{old}}}` was renamed `{{{}}}` (the number of the chunk's first line, from 0); \
     for the text of a line use `{{item}}` (a chunk of one line) or `{{items}}` (every line)",
    .new.name()
)]
pub struct Renamed {
    old: &'static str,
    new: Placeholder,
}

/// A chunk asked for a value its job does not have.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RenderError {
    #[error(
        "the argument placeholder {{{}}} needs an input file, but this job's source is a range",
        .0.name()
    )]
    NeedsInputFile(Placeholder),
    #[error(
        "the argument placeholder {{{}}} needs a `lines` source, whose chunks are lines",
        .0.name()
    )]
    NeedsLines(Placeholder),
    #[error(
        "the argument placeholder {{item}} takes a chunk of exactly one line, and this one has {0}: \
         use `chunk = 1`, or {{items}} for every line of a chunk"
    )]
    NotOneItem(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Value(Placeholder),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    /// No placeholder: the same argument for every chunk.
    Fixed(OsString),
    /// One argument per chunk.
    Parts(Vec<Part>),
    /// Holds `{items}`: one argument per line of the chunk.
    PerItem(Vec<Part>),
}

/// The arguments after the program, pre-parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    words: Vec<Word>,
}

/// What a chunk's arguments are made from besides the chunk itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    /// The job's input file, if it has one.
    pub path: Option<&'a Path>,
    /// The chunk's lines without their newlines, when the job's chunks are
    /// lines and the template asked for them.
    pub items: Option<&'a [&'a [u8]]>,
}

impl Template {
    /// # Errors
    ///
    /// When an argument names a placeholder that was renamed.
    pub fn parse<I, S>(args: I) -> Result<Self, Renamed>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let words = args
            .into_iter()
            .map(|arg| parse_word(arg.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { words })
    }

    /// Whether rendering needs the text of the chunk's lines.
    pub fn needs_items(&self) -> bool {
        self.words.iter().any(|word| match word {
            Word::Fixed(_) => false,
            Word::Parts(parts) | Word::PerItem(parts) => parts
                .iter()
                .any(|p| matches!(p, Part::Value(v) if v.needs_lines())),
        })
    }

    /// The arguments for `chunk`.
    ///
    /// # Errors
    ///
    /// When an argument names `{path}`, `{offset}` or `{length}` and there is
    /// no input file, `{item}` or `{items}` and there are no lines, or
    /// `{item}` and the chunk is not one line.
    pub fn render(&self, chunk: &Chunk, inputs: Inputs<'_>) -> Result<Vec<OsString>, RenderError> {
        let mut args = Vec::with_capacity(self.words.len());
        for word in &self.words {
            match word {
                Word::Fixed(arg) => args.push(arg.clone()),
                Word::Parts(parts) => args.push(fill(parts, chunk, inputs, None)?),
                Word::PerItem(parts) => {
                    let items = inputs
                        .items
                        .ok_or(RenderError::NeedsLines(Placeholder::Items))?;
                    for item in items {
                        args.push(fill(parts, chunk, inputs, Some(item))?);
                    }
                }
            }
        }
        Ok(args)
    }
}

fn parse_word(word: &OsStr) -> Result<Word, Renamed> {
    let mut parts = Vec::new();
    let mut literal = Vec::new();
    let mut rest = word.as_bytes();
    while let Some(open) = rest.iter().position(|&b| b == b'{') {
        let inside = &rest[open + 1..];
        let name = inside
            .iter()
            .position(|&b| b == b'}')
            .map(|close| (&inside[..close], close));
        if let Some((name, _)) = name
            && let Some(&(old, new)) = RENAMED.iter().find(|(old, _)| old.as_bytes() == name)
        {
            return Err(Renamed { old, new });
        }
        match name.and_then(|(name, close)| Some((Placeholder::from_name(name)?, close))) {
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
        return Ok(Word::Fixed(word.to_owned()));
    }
    literal.extend_from_slice(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    if parts.contains(&Part::Value(Placeholder::Items)) {
        Ok(Word::PerItem(parts))
    } else {
        Ok(Word::Parts(parts))
    }
}

/// One argument from `parts`; `item` is the line an `{items}` word is
/// being repeated for.
fn fill(
    parts: &[Part],
    chunk: &Chunk,
    inputs: Inputs<'_>,
    item: Option<&[u8]>,
) -> Result<OsString, RenderError> {
    let mut arg = Vec::new();
    for part in parts {
        match part {
            Part::Literal(bytes) => arg.extend_from_slice(bytes),
            Part::Value(p) => write_value(*p, chunk, inputs, item, &mut arg)?,
        }
    }
    Ok(OsString::from_vec(arg))
}

fn write_value(
    p: Placeholder,
    chunk: &Chunk,
    inputs: Inputs<'_>,
    item: Option<&[u8]>,
    arg: &mut Vec<u8>,
) -> Result<(), RenderError> {
    if p.needs_input_file() && inputs.path.is_none() {
        return Err(RenderError::NeedsInputFile(p));
    }
    // Writing into a Vec cannot fail.
    let _ = match p {
        Placeholder::Index => write!(arg, "{}", chunk.index),
        Placeholder::Start | Placeholder::Offset => write!(arg, "{}", chunk.start),
        Placeholder::End => write!(arg, "{}", chunk.end),
        Placeholder::Length => write!(arg, "{}", chunk.len()),
        Placeholder::Attempt => write!(arg, "{}", chunk.attempt),
        Placeholder::FirstLine => write!(arg, "{}", chunk.first_item),
        Placeholder::Path => {
            arg.extend_from_slice(inputs.path.unwrap_or(Path::new("")).as_os_str().as_bytes());
            Ok(())
        }
        Placeholder::Item => {
            let items = inputs.items.ok_or(RenderError::NeedsLines(p))?;
            match items {
                [one] => arg.extend_from_slice(one),
                _ => return Err(RenderError::NotOneItem(items.len())),
            }
            Ok(())
        }
        Placeholder::Items => {
            // Only a `PerItem` word holds `{items}`, and it always passes its line.
            arg.extend_from_slice(item.ok_or(RenderError::NeedsLines(p))?);
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

    fn render_with(args: &[&str], inputs: Inputs<'_>) -> Result<Vec<String>, RenderError> {
        let rendered = Template::parse(args).unwrap().render(&CHUNK, inputs)?;
        Ok(rendered
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect())
    }

    fn render(args: &[&str], input: Option<&str>) -> Result<Vec<String>, RenderError> {
        let inputs = Inputs {
            path: input.map(Path::new),
            items: None,
        };
        render_with(args, inputs)
    }

    fn render_items(args: &[&str], items: &[&[u8]]) -> Result<Vec<String>, RenderError> {
        let inputs = Inputs {
            path: Some(Path::new("/in.txt")),
            items: Some(items),
        };
        render_with(args, inputs)
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
            "{first_line}",
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
            "{lines}",
            "{item",
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
                "{lines}",
                "{item",
            ]
        );
    }

    #[test]
    fn the_old_line_placeholder_is_refused_naming_its_new_name() {
        for word in ["{line}", "n={line}", "{index}{line}"] {
            let err = Template::parse([word]).unwrap_err();
            assert_eq!(
                err.to_string(),
                "`{line}` was renamed `{first_line}` (the number of the chunk's first line, \
                 from 0); for the text of a line use `{item}` (a chunk of one line) or \
                 `{items}` (every line)"
            );
        }
        // Only the whole name in braces is the old placeholder.
        assert!(Template::parse(["{lines}", "line", "{line", "{{line}"]).is_err());
        assert!(Template::parse(["{lines}", "line", "{line"]).is_ok());
    }

    #[test]
    fn words_without_placeholders_are_parsed_once_as_they_are() {
        let template = Template::parse(["-l", "{print}", "a{b}c"]).unwrap();
        assert!(template.words.iter().all(|w| matches!(w, Word::Fixed(_))));
        assert!(!template.needs_items());
    }

    #[test]
    fn a_word_is_split_into_literals_and_values() {
        assert_eq!(
            parse_word(OsStr::new("a{index}{end}b{x}")),
            Ok(Word::Parts(vec![
                Part::Literal(b"a".to_vec()),
                Part::Value(Placeholder::Index),
                Part::Value(Placeholder::End),
                Part::Literal(b"b{x}".to_vec()),
            ]))
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_pass_through() {
        let word = OsStr::from_bytes(b"\xff{index}\xfe");
        let rendered = Template::parse([word])
            .unwrap()
            .render(&CHUNK, Inputs::default())
            .unwrap();
        assert_eq!(rendered, [OsStr::from_bytes(b"\xff7\xfe")]);
    }

    #[test]
    fn file_values_in_a_range_job_are_an_error() {
        for (arg, p) in [
            ("{path}", Placeholder::Path),
            ("at {offset}", Placeholder::Offset),
            ("{length}", Placeholder::Length),
        ] {
            assert_eq!(
                render(&["ok", arg], None),
                Err(RenderError::NeedsInputFile(p))
            );
        }
        assert_eq!(
            RenderError::NeedsInputFile(Placeholder::Path).to_string(),
            "the argument placeholder {path} needs an input file, but this job's source is a range"
        );
        // The rest has a meaning for a range too.
        assert!(render(&["{index} {start} {end} {attempt} {first_line}"], None).is_ok());
    }

    #[test]
    fn item_is_the_one_line_as_one_word_whatever_it_holds() {
        let line: &[u8] = b"a 'quoted' \"word\" $(touch x) `y` *.txt ; | > z";
        let args = render_items(&["{item}", "--name={item}", "{item}{item}"], &[line]).unwrap();
        let text = String::from_utf8(line.to_vec()).unwrap();
        assert_eq!(
            args,
            [text.clone(), format!("--name={text}"), text.repeat(2)]
        );
        assert_eq!(render_items(&["[{item}]"], &[b""]).unwrap(), ["[]"]);
    }

    #[test]
    fn item_refuses_a_chunk_of_other_than_one_line() {
        assert_eq!(
            render_items(&["{item}"], &[b"a", b"b"]),
            Err(RenderError::NotOneItem(2))
        );
        assert_eq!(
            render_items(&["{item}"], &[]),
            Err(RenderError::NotOneItem(0))
        );
        assert_eq!(
            RenderError::NotOneItem(2).to_string(),
            "the argument placeholder {item} takes a chunk of exactly one line, and this one \
             has 2: use `chunk = 1`, or {items} for every line of a chunk"
        );
    }

    #[test]
    fn items_repeats_its_word_once_per_line() {
        let lines: &[&[u8]] = &[b"one", b"two words", b"", b"$(three)"];
        assert_eq!(
            render_items(&["-x", "{items}", "k={items}:{index}", "end"], lines).unwrap(),
            [
                "-x",
                "one",
                "two words",
                "",
                "$(three)",
                "k=one:7",
                "k=two words:7",
                "k=:7",
                "k=$(three):7",
                "end"
            ]
        );
        // The same line in both places of one word.
        assert_eq!(
            render_items(&["{items}={items}"], &[b"a", b"b"]).unwrap(),
            ["a=a", "b=b"]
        );
        assert_eq!(render_items(&["x", "{items}"], &[]).unwrap(), ["x"]);
    }

    #[test]
    fn line_texts_need_lines() {
        let template = Template::parse(["{items}"]).unwrap();
        assert!(template.needs_items());
        assert!(Template::parse(["a{item}b"]).unwrap().needs_items());
        for arg in ["{item}", "{items}"] {
            let p = Placeholder::from_name(&arg.as_bytes()[1..arg.len() - 1]).unwrap();
            assert_eq!(render(&[arg], Some("/f")), Err(RenderError::NeedsLines(p)));
        }
    }
}
