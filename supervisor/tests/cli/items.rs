//! Per-chunk commands the way GNU parallel users write them: a line as an
//! argument (`{item}`, like `{}`), every line of a chunk as arguments
//! (`{items}`, like `-X`), statuses that count as success (`grep`), and
//! output byte-identical to the serial command.

use super::failed_file;
use crate::harness::{Scenario, read_records};
use crate::sources::{serial, text_file};

/// Lines a shell would mangle: spaces, quotes, substitutions, globs,
/// operators, a leading dash, an empty line.
const TRICKY: [&str; 10] = [
    "plain",
    "two  spaces and\ttab",
    "'single' \"double\" \\back",
    "$(touch pwned)",
    "`touch pwned` ${HOME} $((1+1))",
    "; touch pwned && echo | cat > pwned",
    "*.toml ~ ?",
    "-n",
    "",
    "{index} {item} {}",
];

fn tricky_file(scenario: &Scenario) -> Vec<u8> {
    let text: String = TRICKY.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(scenario.path("lines.txt"), &text).unwrap();
    text.into_bytes()
}

/// Whatever a shell would have made of the lines, it would have left a
/// `pwned` file in the job's folder, where commands run.
fn assert_no_shell_ran(scenario: &Scenario) {
    assert!(
        !scenario.path("pwned").exists(),
        "a shell ran one of the lines"
    );
}

#[test]
fn item_passes_each_line_as_one_argument_and_no_shell_runs() {
    let scenario = Scenario::new();
    tricky_file(&scenario);
    let job = scenario.job(
        "each.toml",
        r#"
[source]
lines = { path = "lines.txt" }

[worker]
exec = ["printf", "[%s] <%s>\n", "{item}", "--name={item}"]

[output]
path = "each.txt"
format = "raw"
"#,
    );
    // `{item}` makes chunks of one line unless told otherwise.
    let plan = scenario.run(&["check", job.to_str().unwrap()]);
    plan.expect_code(0);
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(plan.contains("chunks: 10 of 1 lines"), "{plan}");

    scenario
        .run(&["--workers", "2", job.to_str().unwrap()])
        .expect_code(0);
    let expected: String = TRICKY
        .iter()
        .map(|l| format!("[{l}] <--name={l}>\n"))
        .collect();
    let output = std::fs::read_to_string(scenario.path("each.txt")).unwrap();
    assert_eq!(output, expected);
    assert_no_shell_ran(&scenario);
    scenario.assert_no_survivors();
}

#[test]
fn items_passes_every_line_of_a_chunk_as_its_own_argument() {
    let scenario = Scenario::new();
    let input = tricky_file(&scenario);
    let job = scenario.job(
        "grouped.toml",
        r#"
[source]
lines = { path = "lines.txt" }
chunk = 3

[worker]
exec = ["printf", "%s\n", "{items}"]
"#,
    );
    scenario
        .run(&["--workers", "2", job.to_str().unwrap()])
        .expect_code(0);
    let records = read_records(&scenario.path("grouped.jsonl"));
    assert_eq!(records.len(), 4);
    for (k, record) in records.iter().enumerate() {
        // printf repeats its format per argument: one line per word, so
        // each chunk's output is its own lines back, whole and in order.
        let lines: String = TRICKY
            .iter()
            .skip(3 * k)
            .take(3)
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(record.output.as_str(), Some(lines.as_str()), "{record:?}");
    }

    // The same as raw output: the input, byte for byte.
    let job = scenario.job(
        "raw.toml",
        r#"
[source]
lines = { path = "lines.txt" }
chunk = 4

[worker]
exec = ["printf", "%s\n", "{items}"]

[output]
path = "raw.txt"
format = "raw"
"#,
    );
    scenario
        .run(&["--workers", "2", job.to_str().unwrap()])
        .expect_code(0);
    assert!(std::fs::read(scenario.path("raw.txt")).unwrap() == input);
    assert_no_shell_ran(&scenario);
    scenario.assert_no_survivors();
}

#[test]
fn grep_finding_nothing_in_a_chunk_succeeds_with_success_exit() {
    let scenario = Scenario::new();
    // Lines of "line N: …"; only a few hold "zz", so most chunks match nothing.
    let input = text_file(&scenario.path("input.txt"), 20_000, true);
    let job = |name: &str, success: &str| {
        scenario.job(
            &format!("{name}.toml"),
            &format!(
                r#"
[source]
lines = {{ path = "input.txt" }}
chunk = 500

[worker]
exec = ["grep", "line 1[0-9]*7: "]
stdin = "chunk"
retries = 0
{success}

[output]
path = "{name}.txt"
format = "raw"
"#
            ),
        )
    };
    let expected = serial("grep", &["line 1[0-9]*7: "], &input);
    assert!(!expected.is_empty());

    let grep = job("grep", "success_exit = [0, 1]");
    let plan = scenario.run(&["check", grep.to_str().unwrap()]);
    plan.expect_code(0);
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(plan.contains("--success-exit 0,1 --"), "{plan}");
    scenario
        .run(&["--workers", "2", grep.to_str().unwrap()])
        .expect_code(0);
    assert!(
        std::fs::read(scenario.path("grep.txt")).unwrap() == expected,
        "the output differs from the serial grep's"
    );

    // Without it, each chunk without a match fails, as grep's status says.
    let strict = job("strict", "");
    scenario
        .run(&["--workers", "2", strict.to_str().unwrap()])
        .expect_code(1);
    let failed = failed_file(&scenario, "strict");
    assert!(!failed.is_empty());
    let error = failed[0]["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("exited with status 1"), "{error}");

    // A status outside the list still fails: grep's 2 is an error.
    let broken = scenario.job(
        "broken.toml",
        r#"
[source]
lines = { path = "input.txt" }
chunk = 5000

[worker]
exec = ["grep", "["]
stdin = "chunk"
retries = 0
success_exit = [0, 1]
"#,
    );
    scenario
        .run(&["--workers", "2", broken.to_str().unwrap()])
        .expect_code(1);
    let failed = failed_file(&scenario, "broken");
    assert_eq!(failed.len(), 4, "{failed:?}");
    let error = failed[0]["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("exited with status 2"), "{error}");
    scenario.assert_no_survivors();
}

#[test]
fn a_command_that_grows_its_input_gives_the_serial_commands_bytes() {
    let scenario = Scenario::new();
    let input = text_file(&scenario.path("input.txt"), 60_000, false);
    let job = scenario.job(
        "sed.toml",
        r#"
[source]
file = { path = "input.txt" }
chunk = "1MiB"

[worker]
exec = ["sed", "s/a/<A>/g"]
stdin = "chunk"

[output]
path = "sed.txt"
format = "raw"
"#,
    );
    scenario
        .run(&["--workers", "2", job.to_str().unwrap()])
        .expect_code(0);
    let output = std::fs::read(scenario.path("sed.txt")).unwrap();
    let expected = serial("sed", &["s/a/<A>/g"], &input);
    assert!(expected.len() > input.len() && input.len() > 4 << 20);
    assert!(
        output == expected,
        "the output differs from the serial sed's"
    );
    scenario.assert_no_survivors();
}

#[test]
fn the_old_line_placeholder_is_refused_naming_its_new_name() {
    let scenario = Scenario::new();
    tricky_file(&scenario);
    let job = scenario.job(
        "old.toml",
        "[source]\nlines = { path = \"lines.txt\" }\n\n[worker]\nexec = [\"echo\", \"{line}\"]\n",
    );
    let finished = scenario.run(&[job.to_str().unwrap()]);
    finished.expect_code(2);
    assert!(
        finished
            .stderr
            .contains("old.toml:5:17: worker.exec: `{line}` was renamed `{first_line}`"),
        "{}",
        finished.stderr
    );
    // Refused before anything started: no output, no state.
    assert!(!scenario.path("old.jsonl").exists());
    assert!(!scenario.path(".supervisor").exists());
}
