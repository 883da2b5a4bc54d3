//! Lines as arguments (`{item}`, `{items}`) and the exit statuses that count
//! as success, through the real binary.

use protocol::SupervisorMessage;
use protocol::message::Input;

use super::files::TempFile;
use super::harness::{Reply, assign, assign_from};
use super::spawn;

/// Lines a shell would mangle: spaces, quotes, substitutions, globs,
/// operators, a leading dash, an empty line, a carriage return.
const TRICKY: [&str; 9] = [
    "plain",
    "two  spaces and\ttab",
    "'single' \"double\" \\back",
    "$(touch pwned) `touch pwned` ${HOME}",
    "; rm -rf / && echo | cat > out",
    "*.txt ~ ?",
    "-n",
    "",
    "ends with cr\r",
];

/// The lines file, and each line's byte range.
fn lines_file(lines: &[&str]) -> (TempFile, Vec<(u64, u64)>) {
    let mut text = Vec::new();
    let mut ranges = Vec::new();
    for line in lines {
        let start = text.len() as u64;
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
        ranges.push((start, text.len() as u64));
    }
    (TempFile::new(&text), ranges)
}

fn lines_input(file: &TempFile) -> Input {
    Input::Lines {
        path: file.path().to_str().unwrap().into(),
    }
}

#[test]
fn item_is_the_one_line_as_one_word_and_no_shell_runs() {
    let (file, ranges) = lines_file(&TRICKY);
    let mut w = spawn(&["--", "/usr/bin/printf", "[%s] <%s>\n", "{item}", "n={item}"]);
    w.handshake(lines_input(&file));
    let batch: Vec<_> = (0..)
        .zip(&ranges)
        .map(|(k, &(start, end))| assign_from(k, start, end, 1, k))
        .collect();
    w.send(&batch);
    for (k, line) in (0..).zip(TRICKY) {
        let output = String::from_utf8(w.recv().unwrap().output(k)).unwrap();
        assert_eq!(output, format!("[{line}] <n={line}>\n"), "line {k}");
    }
    // No shell: nothing ran `touch`, beside the input or where the worker runs.
    let folder = file.path().parent().unwrap();
    assert!(!folder.join("pwned").exists());
    assert!(!std::path::Path::new("pwned").exists());
}

#[test]
fn items_makes_each_line_of_the_chunk_a_word_of_its_own() {
    let (file, ranges) = lines_file(&TRICKY);
    let mut w = spawn(&[
        "--",
        "/usr/bin/printf",
        "<%s>",
        "{index}:",
        "{items}",
        "x{items}",
    ]);
    w.handshake(lines_input(&file));
    // Lines 1 to 5 in one chunk, then the last three.
    let (start, end) = (ranges[1].0, ranges[5].1);
    w.send(&[
        assign_from(0, start, end, 1, 1),
        assign_from(1, ranges[6].0, ranges[8].1, 1, 6),
    ]);
    for (k, lines) in [(0, &TRICKY[1..=5]), (1, &TRICKY[6..=8])] {
        let mut expected = format!("<{k}:>");
        for line in lines {
            expected.push_str(&format!("<{line}>"));
        }
        for line in lines {
            expected.push_str(&format!("<x{line}>"));
        }
        let output = String::from_utf8(w.recv().unwrap().output(k)).unwrap();
        assert_eq!(output, expected, "chunk {k}");
    }
}

#[test]
fn item_fails_a_chunk_of_several_lines() {
    let (file, ranges) = lines_file(&["a", "b", "c"]);
    let mut w = spawn(&["--", "/bin/echo", "{item}"]);
    w.handshake(lines_input(&file));
    w.send(&[
        assign_from(0, ranges[0].0, ranges[1].1, 1, 0),
        assign_from(1, ranges[2].0, ranges[2].1, 1, 2),
    ]);
    let error = w.recv().unwrap().failure(0);
    assert!(
        error.contains("{item} takes a chunk of exactly one line, and this one has 2"),
        "{error}"
    );
    assert_eq!(w.recv(), Some(Reply::done(1, "c\n")));
}

#[test]
fn lines_as_words_need_a_lines_source() {
    let (file, _) = lines_file(&["a"]);
    for word in ["{item}", "{items}"] {
        let mut w = spawn(&["--", "/bin/echo", word]);
        w.handshake(Input::File {
            path: file.path().to_str().unwrap().into(),
        });
        w.send(&[assign(0, 0, 2, 1)]);
        let error = w.recv().unwrap().failure(0);
        assert!(error.contains("needs a `lines` source"), "{word}: {error}");
    }
}

#[test]
fn a_line_with_a_nul_byte_fails_its_chunk() {
    let file = TempFile::new(b"fine\nnul\0inside\n");
    let mut w = spawn(&["--", "/bin/echo", "{items}"]);
    w.handshake(lines_input(&file));
    w.send(&[assign_from(0, 0, 5, 1, 0), assign_from(1, 5, 16, 1, 1)]);
    assert_eq!(w.recv(), Some(Reply::done(0, "fine\n")));
    let error = w.recv().unwrap().failure(1);
    assert_eq!(
        error,
        "argument 1 holds a NUL byte, which no program argument can"
    );
}

#[test]
fn success_exit_lists_the_statuses_that_count_as_success() {
    let script = r#"echo "out $0"; exit "$0""#;
    let mut w = spawn(&[
        "--success-exit",
        "0,1",
        "--",
        "/bin/sh",
        "-c",
        script,
        "{index}",
    ]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 1, 1), assign(1, 1, 2, 1), assign(2, 2, 3, 1)]);
    assert_eq!(w.recv(), Some(Reply::done(0, "out 0\n")));
    assert_eq!(w.recv(), Some(Reply::done(1, "out 1\n")));
    assert_eq!(
        w.recv().unwrap().failure(2),
        "`/bin/sh` exited with status 2"
    );

    // A signal never counts, whatever the list.
    let mut w = spawn(&[
        "--success-exit",
        "0,9,137",
        "--",
        "/bin/sh",
        "-c",
        "kill -KILL $$",
    ]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 1, 1)]);
    let error = w.recv().unwrap().failure(0);
    assert!(error.contains("was killed by SIGKILL"), "{error}");
}

#[test]
fn grep_without_a_match_succeeds_with_success_exit() {
    let file = TempFile::new(b"apple\nbanana\ncherry\n");
    let input = Input::Lines {
        path: file.path().to_str().unwrap().into(),
    };
    let mut w = spawn(&[
        "--stdin",
        "chunk",
        "--success-exit",
        "0,1",
        "--",
        "/bin/grep",
        "an",
    ]);
    w.handshake(input.clone());
    w.send(&[assign(0, 0, 6, 1), assign(1, 6, 20, 1)]);
    assert_eq!(w.recv(), Some(Reply::done(0, "")));
    assert_eq!(w.recv(), Some(Reply::done(1, "banana\n")));

    // Without it, no match is a failure, as grep says.
    let mut w = spawn(&["--stdin", "chunk", "--", "/bin/grep", "an"]);
    w.handshake(input);
    w.send(&[assign(0, 0, 6, 1), SupervisorMessage::Stop]);
    assert_eq!(
        w.recv().unwrap().failure(0),
        "`/bin/grep` exited with status 1"
    );
}

#[test]
fn a_chunk_too_large_for_one_command_line_fails_saying_so() {
    // No single argument may pass 128 KiB, whatever the other limits.
    let long = "x".repeat(200_000);
    let (file, ranges) = lines_file(&["short", &long]);
    let mut w = spawn(&["--", "/bin/echo", "{items}"]);
    w.handshake(lines_input(&file));
    w.send(&[
        assign_from(0, ranges[0].0, ranges[1].1, 1, 0),
        assign_from(1, ranges[0].0, ranges[0].1, 1, 0),
    ]);
    let error = w.recv().unwrap().failure(0);
    assert!(
        error.starts_with(
            "cannot run `/bin/echo`: its command line (3 words, 200017 bytes) is longer"
        ),
        "{error}"
    );
    assert!(
        error.ends_with("one word passes 128 KiB (E2BIG); use a smaller `chunk`"),
        "{error}"
    );
    assert_eq!(w.recv(), Some(Reply::done(1, "short\n")));
}
