//! A one-liner's errors in its own words: what the job file's validation
//! finds wrong with a key is told as the flag that wrote the key, with what
//! was typed after it, never as a line of a file nobody saw.

use crate::config::ConfigError;

/// The flag that writes each key, the longer of two overlapping keys first.
/// `--` stands for the command.
const FLAGS: [(&str, &str); 19] = [
    ("source.file.delimiter", "--delimiter"),
    ("source.stdin.delimiter", "--delimiter"),
    ("source.range", "--range"),
    ("source.file", "--file"),
    ("source.lines", "--lines"),
    ("source.stdin", "--pipe"),
    ("source.chunk", "--chunk"),
    ("source.target", "--target"),
    ("worker.exec", "--"),
    ("worker.stdin", "--stdin"),
    ("worker.success_exit", "--success-exit"),
    ("worker.timeout", "--timeout"),
    ("worker.retries", "--retries"),
    ("supervisor.workers", "--workers"),
    ("supervisor.max_failed", "--max-failed"),
    ("output.path", "--output"),
    ("output.format", "--format"),
    ("output.order", "--order"),
    ("job.name", "--name"),
];

/// Phrases of the job file's messages that name its keys, and the flags
/// that say the same on a command line; applied in order.
const REWORDED: [(&str, &str); 10] = [
    ("`{item}` in `worker.exec`", "`{item}` in the command"),
    ("`chunk = 1`", "`--chunk 1`"),
    ("`chunk = \"auto\"`", "`--chunk auto`"),
    ("`stdin = \"chunk\"`", "`--stdin chunk`"),
    ("`chunk`", "`--chunk`"),
    ("`target`", "`--target`"),
    ("`success_exit`", "`--success-exit`"),
    ("`range`", "`--range`"),
    ("`file`", "`--file`"),
    ("`lines`", "`--lines`"),
];

/// The flag that wrote `key`, if a flag did.
pub(super) fn flag_of(key: &str) -> Option<&'static str> {
    FLAGS.iter().find_map(|(prefix, flag)| {
        let rest = key.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with(['.', '['])).then_some(*flag)
    })
}

/// `error`, found in the job file of a one-liner whose flags were `typed`,
/// as one line that names the flag and what was typed after it.
pub(super) fn blame(error: &ConfigError, typed: &[(&'static str, String)]) -> String {
    if let Some(refusal) = no_stdin_source(error) {
        return refusal;
    }
    let message = REWORDED
        .iter()
        .fold(error.message.clone(), |text, (from, to)| {
            text.replace(from, to)
        });
    let what = match flag_of(&error.key) {
        Some("--") => "the command (after --)".to_owned(),
        Some(flag) => match typed.iter().find(|(given, _)| *given == flag) {
            Some((_, text)) if !text.is_empty() => format!("{flag} {text}"),
            _ => flag.to_owned(),
        },
        None if error.key == "state.dir" => "the state folder".to_owned(),
        None => format!("the one-liner's `{}`", error.key),
    };
    format!("{what}: {message}")
}

/// `--pipe` refused by a build whose job files have no `stdin` source: the
/// loader's own words follow, so the refusal stays true whatever it says.
fn no_stdin_source(error: &ConfigError) -> Option<String> {
    (error.key == "source.stdin" && error.message.starts_with("unknown key")).then(|| {
        format!(
            "--pipe: this supervisor cannot read chunks from its stdin: the job file --pipe \
             stands for has a `[source.stdin]` table, which its job files do not take ({}); \
             save the input to a file and name it with --file PATH",
            error.message
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(key: &str, message: &str) -> ConfigError {
        ConfigError {
            file: super::super::ORIGIN.into(),
            line: 3,
            column: 9,
            key: key.to_owned(),
            message: message.to_owned(),
        }
    }

    #[test]
    fn each_key_is_told_as_its_flag_with_what_was_typed() {
        let typed = [
            ("--range", "5..3".to_owned()),
            ("--chunk", "2".to_owned()),
            ("--pipe", String::new()),
        ];
        assert_eq!(
            blame(
                &error("source.range", "start (5) is greater than end (3)"),
                &typed
            ),
            "--range 5..3: start (5) is greater than end (3)"
        );
        assert_eq!(
            blame(
                &error("source.stdin.delimiter", "must not be empty"),
                &typed
            ),
            "--delimiter: must not be empty"
        );
        let refusal = blame(
            &error(
                "source.stdin",
                "unknown key `stdin`; expected one of `range`, `file`",
            ),
            &typed,
        );
        assert!(
            refusal.starts_with("--pipe: this supervisor cannot read chunks from its stdin"),
            "{refusal}"
        );
        assert!(
            refusal.contains("(unknown key `stdin`; expected one of `range`, `file`)"),
            "{refusal}"
        );
        assert!(refusal.ends_with("with --file PATH"), "{refusal}");
        // A build that has the source blames its keys as any other's.
        assert_eq!(
            blame(&error("source.stdin", "must be a table"), &typed),
            "--pipe: must be a table"
        );
        assert_eq!(
            blame(&error("worker.exec", "`x` was not found on PATH"), &typed),
            "the command (after --): `x` was not found on PATH"
        );
        assert_eq!(
            blame(&error("state.dir", "/a is a file, not a folder"), &typed),
            "the state folder: /a is a file, not a folder"
        );
        assert_eq!(flag_of("source.range.start"), Some("--range"));
        assert_eq!(flag_of("worker.success_exit[2]"), Some("--success-exit"));
        assert_eq!(flag_of("source.ranges"), None);
    }

    #[test]
    fn the_job_files_words_become_the_flags() {
        let message = "`{item}` in `worker.exec` is the text of a chunk's one line: set \
                       `chunk = 1` (the default with `{item}`), or use `{items}` for every line \
                       of a chunk";
        assert_eq!(
            blame(
                &error("source.chunk", message),
                &[("--chunk", "2".to_owned())]
            ),
            "--chunk 2: `{item}` in the command is the text of a chunk's one line: set \
             `--chunk 1` (the default with `{item}`), or use `{items}` for every line of a chunk"
        );
        assert_eq!(
            blame(
                &error(
                    "source.target",
                    "`target` goes with `chunk = \"auto\"`: it is how long an automatic \
                     chunk should take"
                ),
                &[("--target", "1s".to_owned())]
            ),
            "--target 1s: `--target` goes with `--chunk auto`: it is how long an automatic \
             chunk should take"
        );
        assert_eq!(
            blame(
                &error(
                    "worker.stdin",
                    "`stdin = \"chunk\"` needs an input file, but the source is a `range`"
                ),
                &[("--stdin", "chunk".to_owned())]
            ),
            "--stdin chunk: `--stdin chunk` needs an input file, but the source is a `--range`"
        );
    }
}
