//! One-liners end to end: each against its job-file twin (the same output
//! bytes, report counts and plan; with `--chunk auto`, the bytes and the
//! plan), lines handed to the command as single
//! words with no shell, a named one-liner resumed after SIGTERM, bad flags
//! refused before anything starts, `--success-exit` with grep, and what an
//! unnamed one-liner leaves behind: nothing but a list of failed chunks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use crate::harness::{Finished, Launch, Scenario, assert_stderr_contains};
use crate::sources::{serial, text_file};

/// Runs the supervisor with `args` and a temporary folder of the
/// scenario's own (`tmp/`), where an unnamed one-liner keeps its state.
fn run(scenario: &Scenario, args: &[&str]) -> Finished {
    scenario.start_with(args, with_own_tmp(scenario)).finish()
}

fn with_own_tmp(scenario: &Scenario) -> Launch {
    let tmp = scenario.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    Launch::default().env("TMPDIR", tmp.to_str().unwrap())
}

/// Every path under the scenario's folder, relative to it.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, found: &mut BTreeSet<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            found.insert(path.strip_prefix(root).unwrap().to_path_buf());
            if path.is_dir() {
                walk(root, &path, found);
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(dir, dir, &mut found);
    found
}

fn report_chunks(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    report["chunks"].clone()
}

/// A jsonl output's records without what differs from run to run (the
/// worker slot, the time), sorted by chunk index.
fn records_by_index(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut records: Vec<(u64, String)> = text
        .lines()
        .map(|line| {
            let mut record: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).unwrap();
            record.remove("worker");
            record.remove("seconds");
            let index = record["index"].as_u64().unwrap();
            (index, serde_json::to_string(&record).unwrap())
        })
        .collect();
    records.sort();
    records.into_iter().map(|(_, record)| record).collect()
}

/// A one-liner and the job file written by hand that should be the same job.
struct Twin {
    name: &'static str,
    /// The one-liner's flags and command (with `--name {name}` and
    /// `--output {output}` added).
    words: &'static [&'static str],
    output: &'static str,
    /// The twin job file, whose output is `twin-{output}`.
    toml: &'static str,
    /// jsonl in completion order: compared record by record, by index.
    unordered: bool,
}

const TWINS: [Twin; 4] = [
    Twin {
        name: "ranged",
        words: &[
            "-j", "2", "--range", "0..1000", "--chunk", "70", "--", "printf", "%s-%s\\n",
            "{start}", "{end}",
        ],
        output: "ranged.out",
        toml: r#"
[source]
range = { start = 0, end = 1000 }
chunk = 70

[worker]
exec = ["printf", "%s-%s\\n", "{start}", "{end}"]

[supervisor]
workers = 2

[output]
path = "twin-ranged.out"
format = "raw"
"#,
        unordered: false,
    },
    Twin {
        name: "upper",
        words: &[
            "-j",
            "2",
            "--file",
            "input.txt",
            "--chunk",
            "64KiB",
            "--",
            "tr",
            "a-z",
            "A-Z",
        ],
        output: "upper.out",
        toml: r#"
[source]
file = { path = "input.txt" }
chunk = "64KiB"

[worker]
exec = ["tr", "a-z", "A-Z"]
stdin = "chunk"

[output]
path = "twin-upper.out"
format = "raw"
"#,
        unordered: false,
    },
    Twin {
        name: "grouped",
        words: &[
            "--lines",
            "lines.txt",
            "--chunk",
            "7",
            "--",
            "printf",
            "%s\\n",
            "{items}",
        ],
        output: "grouped.out",
        toml: r#"
[source]
lines = { path = "lines.txt" }
chunk = 7

[worker]
exec = ["printf", "%s\\n", "{items}"]

[output]
path = "twin-grouped.out"
format = "raw"
"#,
        unordered: false,
    },
    Twin {
        name: "each",
        words: &[
            "-j",
            "2",
            "--lines",
            "lines.txt",
            "--format",
            "jsonl",
            "--order",
            "completion",
            "--",
            "printf",
            "<%s>",
            "{item}",
        ],
        output: "each.jsonl",
        toml: r#"
[source]
lines = { path = "lines.txt" }

[worker]
exec = ["printf", "<%s>", "{item}"]

[supervisor]
workers = 2

[output]
path = "twin-each.jsonl"
order = "completion"
"#,
        unordered: true,
    },
];

/// The plan `check` prints for `args`, and its first line (`job: …`) apart.
fn plan(scenario: &Scenario, args: &[&str]) -> (String, String) {
    let finished = run(scenario, args);
    finished.expect_code(0);
    let plan = String::from_utf8(finished.stdout.clone()).unwrap();
    let (first, rest) = plan.split_once('\n').unwrap();
    (first.to_owned(), rest.to_owned())
}

#[test]
fn each_one_liner_runs_the_job_of_its_twin_job_file() {
    let scenario = Scenario::new();
    let input = text_file(&scenario.path("input.txt"), 40_000, false);
    let lines: String = (0..200)
        .map(|i| format!("line {i} with  spaces, 'quotes' and \"more\"\n"))
        .collect();
    std::fs::write(scenario.path("lines.txt"), lines).unwrap();
    for twin in &TWINS {
        let mut words = vec!["--name", twin.name, "--output", twin.output];
        words.extend_from_slice(twin.words);
        let one_report = format!("{}-report.json", twin.name);
        let mut args = vec!["--report", one_report.as_str()];
        args.extend(&words);
        run(&scenario, &args).expect_code(0);

        let job = scenario.job(&format!("twin-{}.toml", twin.name), twin.toml);
        let twin_report = format!("twin-{}-report.json", twin.name);
        run(
            &scenario,
            &["--report", &twin_report, job.to_str().unwrap()],
        )
        .expect_code(0);

        let ours = scenario.path(twin.output);
        let theirs = scenario.path(&format!("twin-{}", twin.output));
        if twin.unordered {
            assert_eq!(
                records_by_index(&ours),
                records_by_index(&theirs),
                "{}",
                twin.name
            );
        } else {
            assert_eq!(
                std::fs::read(&ours).unwrap(),
                std::fs::read(&theirs).unwrap(),
                "{}",
                twin.name
            );
        }
        let counts = report_chunks(&scenario.path(&one_report));
        assert_eq!(
            counts,
            report_chunks(&scenario.path(&twin_report)),
            "{}",
            twin.name
        );
        assert!(counts["total"].as_u64().unwrap() > 1, "{counts}");

        // The job file the one-liner prints is planned as the one-liner is.
        let mut print = vec!["--print-job"];
        print.extend(&words);
        let printed = run(&scenario, &print);
        printed.expect_code(0);
        let file = scenario.job(
            &format!("printed-{}.toml", twin.name),
            std::str::from_utf8(&printed.stdout).unwrap(),
        );
        let mut check = vec!["check"];
        check.extend(&words);
        let (one_liner_job, one_liner_plan) = plan(&scenario, &check);
        let (file_job, file_plan) = plan(&scenario, &["check", file.to_str().unwrap()]);
        assert_eq!(one_liner_plan, file_plan, "{}", twin.name);
        assert_eq!(one_liner_job, format!("job: {} (command line)", twin.name));
        assert_eq!(file_job, format!("job: {} ({})", twin.name, file.display()));
        // Both find the run the one-liner made, and would resume it.
        assert!(
            one_liner_plan.contains(&format!(
                "resume: would resume: {0} of {0} chunks done",
                counts["total"]
            )),
            "{one_liner_plan}"
        );
    }
    // The file's twin is also the serial command's.
    assert_eq!(
        std::fs::read(scenario.path("upper.out")).unwrap(),
        serial("tr", &["a-z", "A-Z"], &input)
    );
    scenario.assert_no_survivors();
}

#[test]
fn an_automatic_chunk_one_liner_is_the_job_of_its_printed_file() {
    let scenario = Scenario::new();
    let input = text_file(&scenario.path("input.txt"), 40_000, false);
    let words = [
        "--name",
        "upper",
        "--file",
        "input.txt",
        "--chunk",
        "auto",
        "--target",
        "20ms",
        "--output",
        "upper.out",
        "--",
        "tr",
        "a-z",
        "A-Z",
    ];
    run(&scenario, &words).expect_code(0);
    // Sizes follow measured times, so the chunk count is the run's own;
    // the bytes are the serial command's whatever the cuts.
    assert_eq!(
        std::fs::read(scenario.path("upper.out")).unwrap(),
        serial("tr", &["a-z", "A-Z"], &input)
    );
    let mut print = vec!["--print-job"];
    print.extend(&words);
    let printed = run(&scenario, &print);
    printed.expect_code(0);
    let text = std::str::from_utf8(&printed.stdout).unwrap();
    assert!(
        text.contains("[source]\nchunk = \"auto\"\ntarget = \"20ms\"\n"),
        "{text}"
    );
    let file = scenario.job("printed.toml", text);
    let mut check = vec!["check"];
    check.extend(&words);
    let (_, one_liner_plan) = plan(&scenario, &check);
    let (_, file_plan) = plan(&scenario, &["check", file.to_str().unwrap()]);
    assert_eq!(one_liner_plan, file_plan);
    assert!(
        one_liner_plan.contains("chunks: decided at run time (chunk = \"auto\")"),
        "{one_liner_plan}"
    );
    // Both find the run the one-liner made, and would resume it.
    assert!(
        one_liner_plan.contains("resume: would resume"),
        "{one_liner_plan}"
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_named_one_liner_and_its_printed_job_file_resume_each_other() {
    let scenario = Scenario::new();
    let words = [
        "--range",
        "0..50",
        "--chunk",
        "10",
        "--name",
        "shared",
        "--output",
        "shared.out",
        "--",
        "echo",
        "{start}",
    ];
    run(&scenario, &words).expect_code(0);
    let before = std::fs::read(scenario.path("shared.out")).unwrap();
    let mut print = vec!["--print-job"];
    print.extend(&words);
    let printed = run(&scenario, &print);
    printed.expect_code(0);
    let file = scenario.job("shared.toml", std::str::from_utf8(&printed.stdout).unwrap());
    // The same fingerprint: the file's run finds the one-liner's finished.
    let again = run(&scenario, &[file.to_str().unwrap()]);
    again.expect_code(0);
    assert_stderr_contains(
        &again,
        "resuming: 5 of 5 chunks were finished by an earlier run",
    );
    assert_eq!(std::fs::read(scenario.path("shared.out")).unwrap(), before);
    scenario.assert_no_survivors();
}

/// Lines a shell would mangle, and `$(touch marker)` in several spellings:
/// run by a shell in the folder commands run in, they would leave `marker`.
const TRICKY: [&str; 9] = [
    "plain",
    "two  spaces and\ttab",
    "'single' \"double\" \\back",
    "$(touch marker)",
    "`touch marker` ${HOME}",
    "; touch marker && echo | cat > marker",
    "*.txt ~ ?",
    "-n",
    "{index} {item} {}",
];

#[test]
fn lines_reach_the_command_as_single_words_and_no_shell_runs() {
    let scenario = Scenario::new();
    let text: String = TRICKY.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(scenario.path("tricky.txt"), &text).unwrap();
    run(
        &scenario,
        &[
            "-j",
            "2",
            "--lines",
            "tricky.txt",
            "--output",
            "each.out",
            "--",
            "printf",
            "[%s] <%s>\\n",
            "{item}",
            "--name={item}",
        ],
    )
    .expect_code(0);
    let expected: String = TRICKY
        .iter()
        .map(|line| format!("[{line}] <--name={line}>\n"))
        .collect();
    assert_eq!(
        std::fs::read_to_string(scenario.path("each.out")).unwrap(),
        expected
    );

    run(
        &scenario,
        &[
            "--lines",
            "tricky.txt",
            "--chunk",
            "4",
            "--output",
            "grouped.out",
            "--",
            "printf",
            "%s\\n",
            "{items}",
        ],
    )
    .expect_code(0);
    assert_eq!(
        std::fs::read_to_string(scenario.path("grouped.out")).unwrap(),
        text
    );
    assert!(
        !scenario.path("marker").exists(),
        "a shell ran one of the lines"
    );
    scenario.assert_no_survivors();
}

/// The numbers of the chunks a run's command said it began, from its stderr
/// (forwarded to the log).
fn began(finished: &Finished) -> Vec<u64> {
    finished
        .stderr
        .lines()
        .filter_map(|line| {
            let rest = &line[line.find("began ")? + "began ".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

#[test]
fn a_named_one_liner_stopped_by_sigterm_resumes_where_it_stopped() {
    let scenario = Scenario::new();
    let one_liner = |name: &'static str, output: &'static str| -> Vec<&'static str> {
        vec![
            "-j",
            "2",
            "--range",
            "0..30",
            "--chunk",
            "1",
            "--name",
            name,
            "--output",
            output,
            "--",
            "sh",
            "-c",
            "echo \"began $1\" >&2; sleep 0.1; echo \"chunk $1\"",
            "sh",
            "{index}",
        ]
    };
    let expected: String = (0..30).map(|i| format!("chunk {i}\n")).collect();

    let mut first = scenario.start_with(&one_liner("slow", "slow.out"), with_own_tmp(&scenario));
    first.wait_for_line("chunk 6 begun", |line| line.contains("began 6"));
    first.signal(Signal::SIGTERM);
    let first = first.finish();
    first.expect_code(143);
    assert_stderr_contains(&first, "run the same command again to resume");
    let partial = std::fs::read_to_string(scenario.path("slow.out")).unwrap();
    assert!(
        expected.starts_with(&partial),
        "not a prefix in order: {partial:?}"
    );
    assert!(
        partial.len() < expected.len(),
        "the run was not stopped early"
    );

    let second = run(&scenario, &one_liner("slow", "slow.out"));
    second.expect_code(0);
    assert_stderr_contains(&second, "resuming: ");
    assert_eq!(
        std::fs::read_to_string(scenario.path("slow.out")).unwrap(),
        expected
    );
    // Each chunk ran once: what the first run began, it finished.
    let mut all: Vec<u64> = began(&first).into_iter().chain(began(&second)).collect();
    all.sort_unstable();
    assert_eq!(all, (0..30).collect::<Vec<_>>());

    // And it is what a run never stopped writes.
    run(&scenario, &one_liner("whole", "whole.out")).expect_code(0);
    assert_eq!(
        std::fs::read(scenario.path("whole.out")).unwrap(),
        std::fs::read(scenario.path("slow.out")).unwrap()
    );
    scenario.assert_no_survivors();
}

#[test]
fn bad_flags_are_refused_by_name_before_anything_starts() {
    let scenario = Scenario::new();
    std::fs::write(scenario.path("lines.txt"), "a\nb\n").unwrap();
    let job = scenario.job(
        "job.toml",
        "[source]\nrange = { start = 0, end = 10 }\n\n[worker]\nexec = [\"echo\"]\n",
    );
    let job = job.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--range", "5..3", "--", "echo"],
            "--range 5..3: start (5) is greater than end (3)",
        ),
        (
            vec!["--range", "0..10", "--chunk", "0", "--", "echo"],
            "--chunk 0: must be a positive",
        ),
        (
            vec!["--range", "0..10", "--chunk", "1MiB", "--", "echo"],
            "--chunk 1MiB: for a `--range` source, `--chunk` counts items",
        ),
        (
            vec!["--lines", "missing.txt", "--", "echo", "{item}"],
            "--lines missing.txt: the input file does not exist",
        ),
        (
            vec![
                "--range", "0..10", "--chunk", "5", "--target", "1s", "--", "echo",
            ],
            "--target 1s: `--target` goes with `--chunk auto`",
        ),
        (
            vec!["--range", "0..10", "--timeout", "soon", "--", "echo"],
            "--timeout soon: \"soon\" is not a duration",
        ),
        (
            vec!["--range", "0..10", "--retries", "5000", "--", "echo"],
            "--retries 5000: must be between 0 and 1000",
        ),
        (
            vec!["--range", "0..10", "--name", "a/b", "--", "echo"],
            "--name a/b: `a/b` is not a valid job name",
        ),
        (
            vec!["--range", "0..10", "--success-exit", "0,300", "--", "echo"],
            "--success-exit 0,300: 300 is not an exit status",
        ),
        (
            vec!["--range", "0..10", "--max-failed", "many", "--", "echo"],
            "--max-failed many: expected a count of chunks",
        ),
        (
            vec!["--range", "0..10", "--stdin", "chunk", "--", "cat"],
            "--stdin chunk: `--stdin chunk` needs an input file",
        ),
        (
            vec![
                "--lines",
                "lines.txt",
                "--chunk",
                "2",
                "--",
                "echo",
                "{item}",
            ],
            "--chunk 2: `{item}` in the command is the text of a chunk's one line",
        ),
        (
            vec!["--range", "0..10", "--", "no-such-command-here"],
            "the command (after --): `no-such-command-here` was not found",
        ),
        (
            vec!["--range", "0..10", "--", "echo", "{path}"],
            "the command (after --): `{path}` needs an input file",
        ),
        (
            vec!["--range", "0..10", "--delimiter", ";", "--", "cat"],
            "--delimiter goes with --file or --pipe",
        ),
        (
            vec!["--file", "lines.txt", "--delimiter", "\\q", "--", "cat"],
            "--delimiter \\q: `\\q` is no escape",
        ),
        (
            vec!["--file", "lines.txt", "--output", "lines.txt", "--", "cat"],
            "--output lines.txt: ",
        ),
        (
            vec!["--range", "0..10", "echo", "hi"],
            "`echo hi`: a one-liner's command goes after `--`",
        ),
        (
            vec!["--range", "0..10"],
            "a one-liner needs the command to run for each chunk, after `--`",
        ),
        (
            vec!["--range", "0..10", "--format", "xml", "--", "echo"],
            "'--format <FORMAT>'",
        ),
        (
            vec!["--range", "0..10", "--lines", "lines.txt", "--", "cat"],
            "'--range <START..END>' cannot be used with '--lines <PATH>'",
        ),
        (
            vec!["--range", "0..=10", "--", "echo"],
            "'--range <START..END>'",
        ),
        (
            vec!["--range", "0..10", "--retry-failed", "--", "echo"],
            "--retry-failed needs --name",
        ),
        (
            vec!["--range", "0..10", "--shard", "0/2", "--", "echo"],
            "give it --name NAME and --output FILE",
        ),
        (
            vec![
                "--range", "0..10", "--name", "n", "--shard", "0/2", "--", "echo",
            ],
            "give it --output FILE",
        ),
        (vec!["--chunk", "3", job], "--chunk is a one-liner's flag"),
        (
            vec![job, "--", "echo"],
            "`-- echo`: a command after `--` is a one-liner's",
        ),
        (
            vec!["check", "--range", "5..3", "--", "echo"],
            "--range 5..3: start (5) is greater",
        ),
        (
            vec!["--print-job", "--range", "0..10", "--", "echo", "{item}"],
            "the command (after --): `{item}`",
        ),
    ];
    let before = tree(scenario.dir());
    for (args, expected) in cases {
        let finished = run(&scenario, &args);
        finished.expect_code(2);
        assert_stderr_contains(&finished, expected);
        assert!(finished.stdout.is_empty(), "{}", finished.description);
        // Nothing written: no output, no state folder, no temporary folder.
        let mut now = tree(scenario.dir());
        now.remove(Path::new("tmp"));
        assert_eq!(now, before, "{}", finished.description);
        assert_eq!(std::fs::read_dir(scenario.path("tmp")).unwrap().count(), 0);
        // Nothing started.
        assert_eq!(scenario.survivors(), vec![], "{}", finished.description);
    }
}

#[test]
fn success_exit_lets_grep_find_nothing_in_a_chunk() {
    let scenario = Scenario::new();
    // Chunks of 3 lines: the first and the last have a needle, the middle
    // two none, where grep exits 1.
    let hay: String = (0..12)
        .map(|i| match i {
            1 | 10 => format!("a needle in line {i}\n"),
            _ => format!("only hay in line {i}\n"),
        })
        .collect();
    std::fs::write(scenario.path("hay.txt"), &hay).unwrap();
    let grep = |status: &'static [&'static str], output: &'static str| -> Vec<&'static str> {
        let mut words = vec![
            "--lines",
            "hay.txt",
            "--chunk",
            "3",
            "--stdin",
            "chunk",
            "--retries",
            "0",
            "--output",
            output,
        ];
        words.extend_from_slice(status);
        words.extend(["--", "grep", "-F", "needle"]);
        words
    };
    let failing = run(&scenario, &grep(&[], "strict.out"));
    failing.expect_code(1);
    assert_stderr_contains(&failing, "failed chunks are listed in");

    run(&scenario, &grep(&["--success-exit", "0,1"], "found.out")).expect_code(0);
    let expected = "a needle in line 1\na needle in line 10\n";
    assert_eq!(
        std::fs::read_to_string(scenario.path("found.out")).unwrap(),
        expected
    );
    assert_eq!(
        serial(
            "sh",
            &["-c", "grep -F needle || test $? = 1"],
            hay.as_bytes()
        ),
        expected.as_bytes()
    );
    scenario.assert_no_survivors();
}

#[test]
fn an_unnamed_one_liner_leaves_nothing_behind_but_a_list_of_its_failures() {
    let scenario = Scenario::new();
    run(
        &scenario,
        &[
            "--range", "0..8", "--chunk", "2", "--output", "out.txt", "--", "echo", "{start}",
        ],
    )
    .expect_code(0);
    assert_eq!(
        std::fs::read_to_string(scenario.path("out.txt")).unwrap(),
        "0\n2\n4\n6\n"
    );
    let left: BTreeSet<PathBuf> = ["out.txt", "tmp"].iter().map(PathBuf::from).collect();
    assert_eq!(
        tree(scenario.dir()),
        left,
        "no state folder, and tmp/ empty"
    );
    let (_, plan) = plan(
        &scenario,
        &["check", "--range", "0..8", "--", "echo", "{start}"],
    );
    assert!(
        plan.contains("\nstate: a temporary folder, removed when the run ends"),
        "{plan}"
    );
    assert!(
        plan.contains("\nresume: no: a one-liner without --name starts over"),
        "{plan}"
    );

    // Stopped, it says how to make it resumable, and leaves nothing.
    let mut stopped = scenario.start_with(
        &[
            "-j",
            "1",
            "--range",
            "0..20",
            "--chunk",
            "1",
            "--",
            "sh",
            "-c",
            "echo \"began $1\" >&2; sleep 0.1",
            "sh",
            "{index}",
        ],
        with_own_tmp(&scenario),
    );
    stopped.wait_for_line("chunk 2 begun", |line| line.contains("began 2"));
    stopped.signal(Signal::SIGTERM);
    let stopped = stopped.finish();
    stopped.expect_code(143);
    assert_stderr_contains(&stopped, "give it --name NAME to resume");
    assert_eq!(tree(scenario.dir()), left);

    // Chunk 2 fails: its failed list is kept, in the temporary folder, and named.
    let failed = run(
        &scenario,
        &[
            "--range",
            "0..4",
            "--chunk",
            "1",
            "--retries",
            "0",
            "--",
            "sh",
            "-c",
            "test \"$1\" != 2",
            "sh",
            "{index}",
        ],
    );
    failed.expect_code(1);
    let kept: Vec<PathBuf> = std::fs::read_dir(scenario.path("tmp"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let name = kept[0].file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("supervisor-sh-"), "{name}");
    let list = kept[0].join("failed.jsonl");
    assert_stderr_contains(
        &failed,
        &format!("failed chunks are listed in {}", list.display()),
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&list)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["index"], 2);
    scenario.assert_no_survivors();
}
