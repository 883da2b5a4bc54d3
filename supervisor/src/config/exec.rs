//! An `exec` job's command against its source: each placeholder its
//! arguments name checked for what it needs, so a command that cannot work
//! is refused at load rather than failing on every chunk; and the statuses
//! that count as its success.

use std::ops::Range;

use toml::Spanned;

use super::error::{ConfigError, JobText};
use super::job::Source;
use super::raw::RawChunk;

/// Placeholders that name the input file.
const FILE_PLACEHOLDERS: [&str; 3] = ["{path}", "{offset}", "{length}"];

/// The text of the chunk's one line, for chunks of one line.
const ITEM: &str = "{item}";

/// Placeholders only a `lines` source has, and what each is.
const LINES_PLACEHOLDERS: [(&str, &str); 3] = [
    ("{first_line}", "the number of the chunk's first line"),
    (ITEM, "the text of the chunk's one line"),
    ("{items}", "the text of each line of the chunk"),
];

/// Names that were renamed, and the message that says into what. `{line}`
/// read as "the line" to anyone who knows GNU parallel, while it was the
/// line's number: refused rather than kept as an alias, so a command written
/// for the text never silently gets a number.
const RENAMED: [(&str, &str); 1] = [(
    "{line}",
    "`{line}` was renamed `{first_line}` (the number of the chunk's first line, from 0); \
     for the text of a line use `{item}` (a chunk of one line) or `{items}` (every line)",
)];

/// Whether the arguments (the words after the program) name `{item}`, which
/// takes chunks of one line.
pub(super) fn wants_one_line(args: &[Spanned<String>]) -> bool {
    args.iter().any(|word| word.get_ref().contains(ITEM))
}

/// Why the argument `word` cannot be used with `source`, if it cannot.
fn check_word(word: &str, source: &Source) -> Result<(), String> {
    if let Some((_, message)) = RENAMED.iter().find(|(old, _)| word.contains(old)) {
        return Err((*message).to_owned());
    }
    if matches!(source, Source::Range { .. })
        && let Some(p) = FILE_PLACEHOLDERS.iter().find(|p| word.contains(**p))
    {
        return Err(format!(
            "`{p}` needs an input file, but the source is a `range`"
        ));
    }
    if !matches!(source, Source::Lines { .. })
        && let Some((p, what)) = LINES_PLACEHOLDERS.iter().find(|(p, _)| word.contains(p))
    {
        return Err(format!("`{p}` ({what}) needs a `lines` source"));
    }
    Ok(())
}

/// The smallest and largest exit status a process can have.
const STATUSES: std::ops::RangeInclusive<i64> = 0..=255;

impl JobText<'_> {
    /// Each argument of an `exec` command checked against the source, the
    /// error at the word that fails.
    pub(super) fn exec_args(
        &self,
        args: &[Spanned<String>],
        source: &Source,
    ) -> Result<(), ConfigError> {
        for word in args {
            check_word(word.get_ref(), source)
                .map_err(|message| self.error(word.span(), "worker.exec", message))?;
        }
        Ok(())
    }

    /// `chunk` for a `lines` source whose command names `{item}`: 1, by
    /// default too.
    pub(super) fn one_line_chunk(
        &self,
        chunk: Option<&Spanned<RawChunk>>,
    ) -> Result<u64, ConfigError> {
        match chunk {
            None => Ok(1),
            Some(chunk) if matches!(chunk.get_ref(), RawChunk::Count(1)) => Ok(1),
            Some(chunk) => Err(self.error(
                chunk.span(),
                "source.chunk",
                "`{item}` in `worker.exec` is the text of a chunk's one line: set `chunk = 1` \
                 (the default with `{item}`), or use `{items}` for every line of a chunk",
            )),
        }
    }

    /// `success_exit`: the exit statuses, each 0 to 255, that count as success;
    /// `None` for the default, `[0]`.
    pub(super) fn success_exit(
        &self,
        list: &Spanned<Vec<Spanned<i64>>>,
    ) -> Result<Option<Vec<u8>>, ConfigError> {
        const KEY: &str = "worker.success_exit";
        if list.get_ref().is_empty() {
            return Err(self.error(
                list.span(),
                KEY,
                "must list at least one exit status; the default is [0]",
            ));
        }
        let mut statuses = Vec::new();
        for status in list.get_ref() {
            let code = *status.get_ref();
            if !STATUSES.contains(&code) {
                return Err(self.error(
                    status.span(),
                    KEY,
                    format!("{code} is not an exit status: they are 0 to 255"),
                ));
            }
            statuses.push(code as u8);
        }
        statuses.sort_unstable();
        statuses.dedup();
        Ok((statuses != [0]).then_some(statuses))
    }

    /// `success_exit` given with `command`, which has no exit status per chunk.
    pub(super) fn success_exit_without_exec(&self, span: Range<usize>) -> ConfigError {
        self.error(
            span,
            "worker.success_exit",
            "`success_exit` goes with `exec`: a `command` worker says itself whether a chunk failed",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InputFile;

    fn lines() -> Source {
        Source::Lines {
            input: InputFile {
                path: "/in.txt".into(),
                size: 10,
                modified: None,
            },
            lines: 2,
        }
    }

    fn file() -> Source {
        let Source::Lines { input, .. } = lines() else {
            unreachable!()
        };
        Source::File {
            input,
            delimiter: b"\n".to_vec(),
            chunks: 1,
        }
    }

    const RANGE: Source = Source::Range { start: 0, end: 10 };

    #[test]
    fn each_placeholder_needs_its_source() {
        for word in ["{item}", "x={items}", "{first_line}"] {
            assert!(check_word(word, &lines()).is_ok(), "{word}");
            for source in [file(), RANGE] {
                let err = check_word(word, &source).unwrap_err();
                assert!(err.ends_with("needs a `lines` source"), "{word}: {err}");
            }
        }
        for word in ["{path}", "{offset}", "at {length}"] {
            assert!(check_word(word, &lines()).is_ok());
            assert!(check_word(word, &file()).is_ok());
            assert!(
                check_word(word, &RANGE)
                    .unwrap_err()
                    .contains("needs an input file")
            );
        }
        for word in [
            "{index}",
            "{start}",
            "{end}",
            "{attempt}",
            "{}",
            "{print $1}",
            "{lines}",
        ] {
            for source in [lines(), file(), RANGE] {
                assert!(check_word(word, &source).is_ok(), "{word}");
            }
        }
    }

    #[test]
    fn the_old_line_placeholder_says_what_it_became() {
        for source in [lines(), file(), RANGE] {
            let err = check_word("n={line}", &source).unwrap_err();
            assert!(
                err.starts_with("`{line}` was renamed `{first_line}`"),
                "{err}"
            );
        }
    }

    #[test]
    fn item_alone_asks_for_one_line_chunks() {
        let words = |ws: &[&str]| -> Vec<Spanned<String>> {
            ws.iter()
                .map(|w| Spanned::new(0..0, (*w).to_owned()))
                .collect()
        };
        assert!(wants_one_line(&words(&["-n", "{item}"])));
        assert!(wants_one_line(&words(&["--x={item}.txt"])));
        assert!(!wants_one_line(&words(&["{items}", "{first_line}"])));
    }
}
