//! The job file loader against fixture files: every malformed file is refused
//! with a located, snapshot-checked message; well-formed files get the
//! documented defaults and paths.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use supervisor::config::{
    ConfigError, Job, Order, OutputFormat, OutputPath, RestartPolicy, Source, load,
};

const BAD: &str = "tests/fixtures/bad";
const GOOD: &str = "tests/fixtures/good";

fn manifest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .unwrap()
}

fn fixture_dir(kind: &str) -> PathBuf {
    manifest_dir().join(kind).canonicalize().unwrap()
}

fn exe_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

fn load_good(name: &str, workers: Option<usize>) -> Job {
    let path = Path::new(GOOD).join(name);
    load(&path, workers).unwrap_or_else(|e| panic!("{} should load: {e}", path.display()))
}

/// The messages name the folders searched; those differ per machine.
fn redact(message: &str) -> String {
    message
        .replace(&*exe_dir().to_string_lossy(), "[EXE_DIR]")
        .replace(&*manifest_dir().to_string_lossy(), "[CRATE_DIR]")
}

fn bad_fixtures() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(BAD)
        .unwrap()
        .map(|entry| Path::new(BAD).join(entry.unwrap().file_name()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
}

fn check_shape(path: &Path, err: &ConfigError) {
    let shown = err.to_string();
    assert_eq!(err.file, path, "{shown}");
    assert!(err.line >= 1 && err.column >= 1, "no location: {shown}");
    assert_eq!(err.location(), Some((err.line, err.column)));
    assert!(!err.key.is_empty(), "no key: {shown}");
    assert!(!err.message.is_empty(), "no message: {shown}");
    assert!(!shown.contains('\n'), "more than one line: {shown}");
    let prefix = format!(
        "{}:{}:{}: {}: ",
        path.display(),
        err.line,
        err.column,
        err.key
    );
    assert!(
        shown.starts_with(&prefix),
        "{shown} should start with {prefix}"
    );
    assert!(
        !err.message.contains("$__"),
        "internal serde names leaked: {shown}"
    );
}

#[test]
fn every_bad_fixture_is_refused_with_a_located_message() {
    let fixtures = bad_fixtures();
    assert!(fixtures.len() >= 18, "only {} bad fixtures", fixtures.len());
    for path in fixtures {
        let err = match load(&path, None) {
            Ok(job) => panic!("{} should be refused, got {job:#?}", path.display()),
            Err(err) => err,
        };
        check_shape(&path, &err);
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let mut settings = insta::Settings::clone_current();
        settings.set_description(fs::read_to_string(&path).unwrap());
        settings.set_omit_expression(true);
        settings.bind(|| insta::assert_snapshot!(name, redact(&err.to_string())));
    }
}

#[test]
fn bad_fixtures_with_a_known_location() {
    let cases = [
        ("unknown_key_worker", 6, 1, "worker.timout"),
        ("unknown_table", 7, 2, "wroker"),
        ("negative_start", 2, 19, "source.range.start"),
        ("empty_range", 2, 9, "source.range"),
        ("chunk_zero", 3, 9, "source.chunk"),
        ("retries_out_of_range", 6, 11, "worker.retries"),
        ("workers_zero", 8, 11, "supervisor.workers"),
        ("bad_order", 8, 9, "output.order"),
        ("unicode_column", 6, 18, "worker.env.ключ"),
        ("missing_source", 1, 1, "source"),
        ("syntax_duplicate_key", 7, 1, "worker.retries"),
        ("max_chunks_negative", 6, 14, "worker.max_chunks"),
        ("memory_limit_too_small", 6, 16, "worker.memory_limit"),
        ("memory_limit_integer", 6, 16, "worker.memory_limit"),
        ("drain_timeout_zero", 8, 17, "supervisor.drain_timeout"),
        ("output_in_state_folder", 8, 8, "output.path"),
        (
            "max_failed_over_100_percent",
            8,
            14,
            "supervisor.max_failed",
        ),
        ("max_failed_not_a_count", 8, 14, "supervisor.max_failed"),
        ("output_is_the_job_file", 8, 8, "output.path"),
        ("exec_path_needs_file", 5, 35, "worker.exec"),
        ("line_placeholder_renamed", 5, 17, "worker.exec"),
        ("item_chunk_not_one", 3, 9, "source.chunk"),
        ("success_exit_out_of_range", 7, 23, "worker.success_exit"),
    ];
    for (name, line, column, key) in cases {
        let path = Path::new(BAD).join(format!("{name}.toml"));
        let err = load(&path, None).unwrap_err();
        assert_eq!(
            (err.line, err.column, err.key.as_str()),
            (line, column, key),
            "{err}"
        );
    }
}

#[test]
fn places_a_run_cannot_make_are_refused_at_load() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a-file"), "x").unwrap();
    std::os::unix::fs::symlink(root.path().join("nowhere"), root.path().join("dangling")).unwrap();
    let cases = [
        (
            "[output]\npath = \"a-file/out.jsonl\"\n",
            "output.path",
            "a-file is a file, not a folder: the output cannot be made there",
        ),
        (
            "[state]\ndir = \"dangling\"\n",
            "state.dir",
            "dangling is a link to nothing: the state folder cannot be made there",
        ),
        (
            "[state]\ndir = \"a-file/state\"\n",
            "state.dir",
            "a-file is a file, not a folder",
        ),
    ];
    for (extra, key, message) in cases {
        let path = root.path().join("job.toml");
        std::fs::write(
            &path,
            format!("[source]\nrange = {{ start = 0, end = 100 }}\n\n[worker]\ncommand = [\"sh\"]\n\n{extra}"),
        )
        .unwrap();
        let err = load(&path, None).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(err.to_string().contains(message), "{err}");
        assert!(err.line >= 1, "{err}");
    }
}

#[test]
fn an_input_that_is_not_a_regular_file_is_refused_at_load() {
    // A pipe or a device has no byte offsets to cut, and a worker opening
    // `/dev/stdin` would read its own stdin: every chunk would fail.
    let root = tempfile::tempdir().unwrap();
    let fifo = root.path().join("fifo");
    let fifo_c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) }, 0);
    for (kind, path) in [
        ("lines", fifo.to_str().unwrap()),
        ("file", fifo.to_str().unwrap()),
        ("lines", "/dev/null"),
    ] {
        let job = root.path().join("job.toml");
        std::fs::write(
            &job,
            format!("[source]\n{kind} = {{ path = \"{path}\" }}\n\n[worker]\ncommand = [\"sh\"]\n"),
        )
        .unwrap();
        let err = load(&job, None).unwrap_err();
        assert_eq!(err.key, format!("source.{kind}.path"), "{err}");
        assert!(err.to_string().contains("is not a regular file"), "{err}");
        assert_eq!(err.line, 2, "{err}");
    }
}

#[test]
fn params_too_large_to_hand_a_worker_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("job.toml");
    let big = "x".repeat(protocol::frame::MAX_FRAME_LEN as usize);
    std::fs::write(
        &path,
        format!(
            "[source]\nrange = {{ start = 0, end = 100 }}\n\n[worker]\ncommand = [\"sh\"]\n\
             params = {{ blob = \"{big}\" }}\n"
        ),
    )
    .unwrap();
    let err = load(&path, None).unwrap_err();
    assert_eq!(
        (err.line, err.key.as_str()),
        (6, "worker.params"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("put large data in a file"),
        "{}",
        err.message
    );
}

#[test]
fn an_unreadable_file_names_the_file_only() {
    let path = Path::new("tests/fixtures/no-such-job.toml");
    let err = load(path, None).unwrap_err();
    assert_eq!(err.location(), None);
    let shown = err.to_string();
    assert!(
        shown.starts_with("tests/fixtures/no-such-job.toml: cannot read job file: "),
        "{shown}"
    );
}

#[test]
fn a_minimal_file_gets_every_default() {
    let job = load_good("minimal.toml", None);
    let dir = fixture_dir(GOOD);
    assert_eq!(job.file, Path::new(GOOD).join("minimal.toml"));
    assert_eq!(job.dir, dir);
    assert_eq!(job.name, "minimal");
    assert_eq!(
        job.source,
        Source::Range {
            start: 0,
            end: 10_000
        }
    );
    // About 1024 chunks: ceil(10_000 / 1024) items each.
    assert_eq!(job.chunk, 10);
    assert_eq!(job.chunk_count(), 1000);

    assert_eq!(job.worker.program, which::which("sh").unwrap());
    assert!(job.worker.program.is_absolute());
    assert!(job.worker.args.is_empty());
    assert!(job.worker.env.is_empty());
    assert_eq!(job.worker.params_json, "{}");
    assert_eq!(job.worker.timeout, Some(Duration::from_secs(3600)));
    assert_eq!(job.worker.start_timeout, Duration::from_secs(30));
    assert_eq!(job.worker.retries, 2);
    assert_eq!(job.worker.max_chunks, 0);
    assert_eq!(job.worker.memory_limit, None);

    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(job.supervisor.workers, cpus);
    assert_eq!(
        job.supervisor.restart,
        RestartPolicy {
            max: 10,
            within: Duration::from_secs(60)
        }
    );
    assert_eq!(job.supervisor.drain_timeout, Duration::from_secs(30));

    assert_eq!(job.output.path, OutputPath::File(dir.join("minimal.jsonl")));
    assert_eq!(job.output.format, OutputFormat::Jsonl);
    assert_eq!(job.output.order, Order::Index);
    assert_eq!(job.state_dir, dir.join(".supervisor/minimal"));
}

#[test]
fn a_full_file_is_taken_as_written() {
    let job = load_good("full.toml", None);
    let dir = fixture_dir(GOOD);
    assert_eq!(job.name, "squares");
    assert_eq!(
        job.source,
        Source::Range {
            start: 5,
            end: 1006
        }
    );
    assert_eq!(job.chunk, 100);
    // 1001 items: ten full chunks and one of a single item.
    assert_eq!(job.chunk_count(), 11);
    assert_eq!(job.worker.args, ["-c", "exit 0"]);
    assert_eq!(
        job.worker.env,
        [
            ("A".to_owned(), "1".to_owned()),
            ("RUST_LOG".to_owned(), "info".to_owned())
        ]
    );
    assert_eq!(job.worker.timeout, Some(Duration::from_secs(90)));
    assert_eq!(job.worker.start_timeout, Duration::from_secs(5));
    assert_eq!(job.worker.retries, 0);
    assert_eq!(job.worker.max_chunks, 100);
    assert_eq!(job.worker.memory_limit, Some(2 << 30));
    assert_eq!(job.supervisor.workers, 3);
    assert_eq!(
        job.supervisor.restart,
        RestartPolicy {
            max: 2,
            within: Duration::from_secs(10)
        }
    );
    assert_eq!(job.supervisor.drain_timeout, Duration::from_secs(45));
    assert_eq!(
        job.output.path,
        OutputPath::File(dir.join("out/squares.jsonl"))
    );
    assert_eq!(job.output.order, Order::Completion);
    assert_eq!(job.state_dir, dir.join("state/here"));
}

#[test]
fn max_chunks_memory_limit_and_drain_timeout_are_taken_alone() {
    let job = load_good("max_chunks.toml", None);
    assert_eq!(job.worker.max_chunks, 100);
    assert_eq!(job.worker.memory_limit, None);

    let job = load_good("memory_limit.toml", None);
    // A decimal unit: 1.5 × 10^9 bytes, not 1.5 GiB.
    assert_eq!(job.worker.memory_limit, Some(1_500_000_000));
    assert_eq!(job.worker.max_chunks, 0);

    let job = load_good("drain_timeout.toml", None);
    assert_eq!(job.supervisor.drain_timeout, Duration::from_secs(150));
    assert_eq!(job.supervisor.restart.max, 10);
}

#[test]
fn params_become_json() {
    let job = load_good("full.toml", None);
    let params: serde_json::Value = serde_json::from_str(&job.worker.params_json).unwrap();
    assert_eq!(
        params,
        serde_json::json!({
            "modulus": 10007,
            "ratio": 0.5,
            "verbose": true,
            "label": "sq",
            "primes": [2, 3, 5],
            "since": "2024-05-01T12:00:00Z",
            "nested": { "depth": 2, "tags": ["a", "b"] },
        })
    );
}

#[test]
fn workers_come_from_the_command_line_then_the_file_then_the_cpus() {
    assert_eq!(load_good("full.toml", Some(7)).supervisor.workers, 7);
    assert_eq!(load_good("full.toml", None).supervisor.workers, 3);
    assert_eq!(load_good("minimal.toml", Some(5)).supervisor.workers, 5);
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(load_good("minimal.toml", None).supervisor.workers, cpus);
}

#[test]
fn a_bad_workers_value_in_the_file_is_refused_even_when_overridden() {
    let err = load(&Path::new(BAD).join("workers_zero.toml"), Some(4)).unwrap_err();
    assert_eq!(err.key, "supervisor.workers");
}

#[test]
fn stdout_output_keeps_the_state_in_the_job_folder() {
    let job = load_good("stdout.toml", None);
    assert_eq!(job.output.path, OutputPath::Stdout);
    assert_eq!(job.state_dir, fixture_dir(GOOD).join(".supervisor/stdout"));
}

#[test]
fn the_state_defaults_to_beside_the_output() {
    let job = load_good("output_elsewhere.toml", None);
    let results = fixture_dir(GOOD).join("../results");
    assert_eq!(
        job.output.path,
        OutputPath::File(results.join("elsewhere.jsonl"))
    );
    assert_eq!(job.state_dir, results.join(".supervisor/elsewhere"));
}

/// A folder of its own under the system's temp folder, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("supervisor-config-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir.canonicalize().unwrap())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write_executable(path: &Path) {
    fs::write(path, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn job_running(command: &str) -> String {
    format!(
        "[source]\nrange = {{ start = 0, end = 10 }}\n\n[worker]\ncommand = [\"{command}\", \"--x\"]\n"
    )
}

#[test]
fn a_command_with_a_slash_is_relative_to_the_job_folder() {
    let scratch = Scratch::new("slash");
    fs::create_dir(scratch.0.join("bin")).unwrap();
    write_executable(&scratch.0.join("bin/worker.sh"));
    let job_file = scratch.0.join("job.toml");
    fs::write(&job_file, job_running("./bin/worker.sh")).unwrap();

    let job = load(&job_file, None).unwrap();
    assert_eq!(job.dir, scratch.0);
    assert_eq!(job.worker.program, scratch.0.join("bin/worker.sh"));
    assert_eq!(job.worker.args, ["--x"]);
    assert_eq!(
        job.output.path,
        OutputPath::File(scratch.0.join("job.jsonl"))
    );
}

#[test]
fn a_bare_command_is_found_beside_the_supervisor() {
    // A name of this process's own so that concurrent test binaries sharing
    // the folder are not affected.
    let name = format!("config-test-worker-{}", std::process::id());
    let beside = exe_dir().join(&name);
    write_executable(&beside);
    let scratch = Scratch::new("beside");
    let job_file = scratch.0.join("job.toml");
    fs::write(&job_file, job_running(&name)).unwrap();

    let loaded = load(&job_file, None);
    fs::remove_file(&beside).unwrap();
    assert_eq!(loaded.unwrap().worker.program, beside);
}

#[test]
fn a_bare_command_is_then_found_on_path() {
    let scratch = Scratch::new("path");
    let job_file = scratch.0.join("job.toml");
    fs::write(&job_file, job_running("sh")).unwrap();
    let job = load(&job_file, None).unwrap();
    assert_eq!(job.worker.program, which::which("sh").unwrap());
}

#[test]
fn a_file_source_is_measured_and_its_chunks_counted() {
    let scratch = Scratch::new("file-source");
    let input = scratch.0.join("events.txt");
    // 30,000 records of 100 bytes, each ending with the delimiter.
    let record = [vec![b'x'; 98], b"||".to_vec()].concat();
    fs::write(&input, record.repeat(30_000)).unwrap();
    let job_file = scratch.0.join("events.toml");
    fs::write(
        &job_file,
        "[source]\nfile = { path = \"events.txt\", delimiter = \"||\" }\n\n\
         [worker]\ncommand = [\"sh\"]\n\n[output]\nformat = \"raw\"\n",
    )
    .unwrap();
    let job = load(&job_file, None).unwrap();
    let Source::File {
        input: file,
        delimiter,
        chunks,
    } = &job.source
    else {
        panic!("{:?}", job.source);
    };
    assert_eq!(file.path, input);
    assert_eq!(file.size, 3_000_000);
    assert!(file.modified.is_some());
    assert_eq!(delimiter, b"||");
    // About 256 chunks, but never under 64 KiB.
    assert_eq!(job.chunk, 64 << 10);
    // Records far shorter than a chunk: a cut near every nominal position.
    assert_eq!(job.chunk_count(), 3_000_000_u64.div_ceil(64 << 10));
    assert_eq!(*chunks, job.chunk_count());
    assert_eq!(job.output.format, OutputFormat::Raw);
    assert_eq!(
        job.output.path,
        OutputPath::File(scratch.0.join("events.out"))
    );
    assert_eq!(job.worker.cwd, scratch.0);

    fs::write(
        &job_file,
        "[source]\nfile = { path = \"events.txt\" }\nchunk = \"1MiB\"\n\n\
         [worker]\ncommand = [\"sh\"]\n",
    )
    .unwrap();
    let job = load(&job_file, None).unwrap();
    assert_eq!(job.chunk, 1 << 20);
    // No newline in the file: one record, so one chunk, never empty ones.
    assert_eq!(job.chunk_count(), 1);
    assert!(matches!(&job.source, Source::File { delimiter, .. } if delimiter == b"\n"));
}

#[test]
fn a_lines_source_is_counted_and_an_empty_file_has_no_chunks() {
    let scratch = Scratch::new("lines-source");
    fs::write(scratch.0.join("in.txt"), "a\nbb\n\nccc").unwrap();
    fs::write(scratch.0.join("empty.txt"), "").unwrap();
    let job_file = scratch.0.join("lines.toml");
    let text = |path: &str, chunk: &str| {
        format!(
            "[source]\nlines = {{ path = \"{path}\" }}\n{chunk}\n[worker]\ncommand = [\"sh\"]\n"
        )
    };
    fs::write(&job_file, text("in.txt", "chunk = 3")).unwrap();
    let job = load(&job_file, None).unwrap();
    assert!(
        matches!(job.source, Source::Lines { lines: 4, .. }),
        "{:?}",
        job.source
    );
    assert_eq!(job.chunk_count(), 2);

    fs::write(&job_file, text("empty.txt", "")).unwrap();
    let job = load(&job_file, None).unwrap();
    assert!(matches!(job.source, Source::Lines { lines: 0, .. }));
    assert_eq!(job.chunk_count(), 0);
}
