//! The progress bar and the log formats end to end: a bar in a real terminal
//! (a tmux pane) that never cuts a log line, no bar on a pipe unless asked
//! for, and JSON logs that parse line by line.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{PATIENCE, Scenario, squares_job, supervisor_bin};

/// The bar's own text, e.g. `12/30 chunks [=====>     ] 14.2/s, ETA 2s`.
fn is_bar(line: &str, total: u64) -> bool {
    line.contains(&format!("/{total} chunks ["))
}

/// A log line as the text format writes it, whole: it starts at column 0
/// with its timestamp (`2024-05-01T12:00:00.123456Z`) and the level follows.
fn starts_as_log_line(line: &str) -> bool {
    let bytes = line.as_bytes();
    let timestamp = bytes.len() > 20
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[10] == b'T';
    let level = line.split_once("Z ").is_some_and(|(_, rest)| {
        ["TRACE ", "DEBUG ", "INFO ", "WARN ", "ERROR "]
            .iter()
            .any(|level| rest.trim_start().starts_with(level))
    });
    timestamp && level
}

fn has_level(line: &str) -> bool {
    [" INFO ", " WARN ", " ERROR "]
        .iter()
        .any(|level| line.contains(level))
}

/// A tmux server of the test's own, on a private socket, so tests running in
/// parallel never share one; killed when dropped, whatever happened.
struct Terminal {
    socket: String,
    /// Where the server listens; the file outlives the server otherwise.
    socket_path: Option<String>,
}

impl Terminal {
    /// Runs `command` under `/bin/sh` in a new 120×30 pane.
    fn start(command: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let socket = format!(
            "supervisor-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut terminal = Self {
            socket,
            socket_path: None,
        };
        // Several words are run as they are, not by the user's shell, which
        // might not speak `sh`.
        let output = terminal.tmux(&[
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "30",
            "/bin/sh",
            "-c",
            command,
        ]);
        assert!(
            output.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = terminal.tmux(&["display-message", "-p", "#{socket_path}"]);
        terminal.socket_path = Some(String::from_utf8_lossy(&path.stdout).trim().to_owned())
            .filter(|path| !path.is_empty());
        terminal
    }

    fn tmux(&self, args: &[&str]) -> Output {
        tmux(&[&["-L", &self.socket, "-f", "/dev/null"], args].concat())
    }

    /// The pane's text: its whole history and the screen, wrapped lines
    /// joined, trailing blanks cut.
    fn capture(&self) -> Vec<String> {
        let output = self.tmux(&["capture-pane", "-p", "-J", "-S", "-"]);
        assert!(
            output.status.success(),
            "tmux capture-pane failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.trim_end().to_owned())
            .collect()
    }

    /// Waits for the command of [`in_terminal`] to end; its exit status.
    fn exit_status(&self) -> String {
        self.wait_for("exit status", |lines| {
            lines
                .iter()
                .find_map(|line| line.strip_prefix(EXITED))
                .map(str::to_owned)
        })
    }

    /// Captures until `found` picks something out of the pane.
    fn wait_for<T>(&self, what: &str, found: impl Fn(&[String]) -> Option<T>) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let lines = self.capture();
            if let Some(value) = found(&lines) {
                return value;
            }
            if Instant::now() > deadline {
                panic!(
                    "no {what} in the terminal within {PATIENCE:?}; it shows:\n{}",
                    lines.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Runs tmux, failing the test with advice when it is not installed.
fn tmux(args: &[&str]) -> Output {
    match Command::new("tmux").args(args).output() {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "tmux is not installed: the progress bar is tested in a real terminal, \
             which this test gets from tmux; install it (e.g. `apt-get install tmux`)"
        ),
        Err(error) => panic!("cannot run tmux: {error}"),
    }
}

/// A shell command that runs the supervisor in the scenario's folder, marked
/// as the scenario's, then says how it exited and keeps the pane open. The
/// shell shares the supervisor's process group, so it gets a Ctrl-C too: the
/// trap keeps it alive to tell.
fn in_terminal(scenario: &Scenario, args: &[&str], job: &Path) -> String {
    let (mark_var, mark) = scenario.mark_env();
    let args: Vec<String> = args.iter().map(|arg| quoted(arg)).collect();
    format!(
        "trap : INT; cd {dir} && env {mark_var}={mark} RUST_LOG=info {bin} {args} {job}; \
         echo \"{EXITED}$?\"; sleep 600",
        dir = quoted(scenario.dir().to_str().unwrap()),
        mark = quoted(mark),
        bin = quoted(supervisor_bin().to_str().unwrap()),
        args = args.join(" "),
        job = quoted(job.to_str().unwrap()),
    )
}

/// What the pane prints after the supervisor exits, before its exit status.
const EXITED: &str = "supervisor exited with ";

/// Quotes `word` for `sh`.
fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[test]
fn in_a_terminal_the_bar_shows_and_never_cuts_a_log_line() {
    // Asked first, so a machine without tmux fails here with a clear message.
    tmux(&["-V"]);
    let scenario = Scenario::new();
    // Every chunk logs a line from its worker and one crash logs warnings,
    // while the bar redraws: plenty of chances for the two to collide.
    let job = scenario.job(
        "tty.toml",
        &squares_job(
            30_000,
            1000,
            &[
                "--slow-ms",
                "100",
                "--stderr-lines",
                "1",
                "--fault",
                "crash:7:2",
            ],
            "",
        ),
    );
    let terminal = Terminal::start(&in_terminal(
        &scenario,
        &["--progress", "auto", "-w", "2"],
        &job,
    ));

    let bar = terminal.wait_for("progress bar", |lines| {
        lines.iter().find(|line| is_bar(line, 30)).cloned()
    });
    assert!(bar.starts_with(char::is_numeric), "{bar:?}");
    assert!(bar.contains("/s"), "no rate in {bar:?}");

    let exit = terminal.exit_status();
    let lines = terminal.capture();
    let screen = lines.join("\n");
    assert_eq!(exit, "0", "{screen}");
    assert!(
        lines
            .iter()
            .any(|line| line.contains("30 of 30 chunks done")),
        "no summary:\n{screen}"
    );
    // Cleared before every log line and at the end: nothing of the bar is
    // left anywhere, neither on a line of its own nor inside another.
    assert!(
        !lines.iter().any(|line| is_bar(line, 30)),
        "the bar was left behind:\n{screen}"
    );
    for line in lines.iter().filter(|line| has_level(line)) {
        assert!(
            starts_as_log_line(line),
            "a log line does not start at column 0:\n{line:?}\nin:\n{screen}"
        );
    }
    // Every chunk's announcement arrived whole, its message and its fields.
    let mut announced = std::collections::BTreeSet::new();
    for line in &lines {
        let Some((_, message)) = line.split_once("]: chunk ") else {
            continue;
        };
        assert!(starts_as_log_line(line), "{line:?}");
        let mut words = message.split(' ');
        let index: u64 = words.next().unwrap().parse().unwrap();
        assert_eq!(words.next(), Some("attempt"), "{line:?}");
        words.next();
        assert_eq!(words.next(), Some("line"), "{line:?}");
        assert!(
            words.next().is_some_and(|n| n.parse::<u32>().is_ok()),
            "{line:?}"
        );
        assert!(
            words.next().is_some_and(|w| w.starts_with("worker=")),
            "{line:?}"
        );
        assert!(
            line.rsplit(' ')
                .next()
                .is_some_and(|last| last.starts_with("chunk=")),
            "{line:?}"
        );
        announced.insert(index);
    }
    assert_eq!(announced, (0..30).collect(), "{screen}");
    assert!(
        lines
            .iter()
            .any(|line| line.contains(" WARN ") && line.contains("SIGABRT")),
        "no warning about the crash:\n{screen}"
    );
    scenario.assert_no_survivors();
    drop(terminal);
}

#[test]
fn ctrl_c_in_a_terminal_shows_the_drain_and_leaves_no_bar_behind() {
    tmux(&["-V"]);
    let scenario = Scenario::new();
    // Chunks slow enough that the drain lasts a while after Ctrl-C.
    let job = scenario.job(
        "ctrlc.toml",
        &squares_job(
            20_000,
            1000,
            &["--slow-ms", "3000", "--stderr-lines", "1"],
            "",
        ),
    );
    let terminal = Terminal::start(&in_terminal(&scenario, &["-w", "2"], &job));
    terminal.wait_for("progress bar", |lines| {
        lines.iter().find(|line| is_bar(line, 20)).cloned()
    });
    // Both workers busy with a chunk, so the drain has something to wait for.
    terminal.wait_for("both workers busy", |lines| {
        let busy = lines
            .iter()
            .filter(|line| line.contains("]: chunk ") && line.contains(" attempt 1 line 1"))
            .count();
        (busy >= 2).then_some(())
    });
    // As a person would: the terminal sends SIGINT and echoes `^C` where the
    // cursor is, which must not push the bar out of reach of its clearing.
    let sent = terminal.tmux(&["send-keys", "C-c"]);
    assert!(sent.status.success(), "{sent:?}");
    let draining = terminal.wait_for("draining bar", |lines| {
        lines
            .iter()
            .find(|line| is_bar(line, 20) && line.contains("draining"))
            .cloned()
    });
    assert!(!draining.contains("ETA"), "{draining:?}");
    let exit = terminal.exit_status();
    let lines = terminal.capture();
    let screen = lines.join("\n");
    assert_eq!(exit, "130", "{screen}");
    assert!(
        !lines.iter().any(|line| is_bar(line, 20)),
        "the bar was left behind:\n{screen}"
    );
    for line in lines.iter().filter(|line| has_level(line)) {
        assert!(starts_as_log_line(line), "{line:?} in:\n{screen}");
    }
    assert!(
        lines
            .iter()
            .any(|line| line.contains("stopped after a drain")),
        "{screen}"
    );
    scenario.assert_no_survivors();
    drop(terminal);
}

#[test]
fn on_a_pipe_the_bar_shows_only_when_asked_for() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "pipe.toml",
        &squares_job(
            10_000,
            1000,
            &["--slow-ms", "50", "--stderr-lines", "1"],
            "",
        ),
    );
    let job = job.to_str().unwrap();

    let auto = scenario.run(&["--progress", "auto", "-w", "2", job]);
    auto.expect_code(0);
    assert!(
        !auto.stderr.contains('\x1b') && !auto.stderr.contains('\r'),
        "escape sequences on a pipe:\n{:?}",
        auto.stderr
    );
    assert!(
        !auto.stderr.lines().any(|line| is_bar(line, 10)),
        "{}",
        auto.stderr
    );
    assert!(
        auto.stderr.contains("10 of 10 chunks done"),
        "{}",
        auto.stderr
    );
    for line in auto.stderr.lines().filter(|line| has_level(line)) {
        assert!(starts_as_log_line(line), "{line:?}");
    }

    let always = scenario.run(&["--progress", "always", "--fresh", "-w", "2", job]);
    always.expect_code(0);
    assert!(
        always.stderr.lines().any(|line| is_bar(line, 10)),
        "no bar:\n{:?}",
        always.stderr
    );
    assert!(
        always.stderr.contains("10 of 10 chunks done"),
        "{}",
        always.stderr
    );
    // The bar is redrawn in place, and cleared before the summary.
    let summary = always
        .stderr
        .lines()
        .find(|line| line.contains("10 of 10 chunks done"))
        .unwrap();
    let after_clear = summary.rsplit("\r\x1b[2K").next().unwrap();
    assert!(
        !is_bar(after_clear, 10),
        "the summary shares its line with the bar: {summary:?}"
    );
    scenario.assert_no_survivors();
}

#[test]
fn json_logs_are_one_object_a_line_summary_included() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "json.toml",
        &squares_job(
            10_000,
            1000,
            &["--fault", "crash:3:2", "--stderr-lines", "1"],
            "",
        ),
    );
    let finished = scenario.run(&["--log-format", "json", "-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let mut levels = std::collections::BTreeMap::new();
    let mut messages = Vec::new();
    for line in finished
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
    {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nstderr:\n{}", finished.stderr));
        let level = event["level"]
            .as_str()
            .unwrap_or_else(|| panic!("no level: {line}"));
        *levels.entry(level.to_owned()).or_insert(0) += 1;
        assert!(event["timestamp"].is_string(), "no timestamp: {line}");
        assert!(event["target"].is_string(), "no target: {line}");
        let message = event["fields"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no fields.message: {line}"));
        assert!(!line.contains('\x1b'), "colours in JSON: {line:?}");
        if message.contains("]: chunk ") {
            assert_eq!(event["target"], "worker", "{line}");
            assert!(event["fields"]["worker"].is_u64(), "{line}");
            assert!(event["fields"]["pid"].is_u64(), "{line}");
        }
        messages.push(message.to_owned());
    }
    assert!(levels.contains_key("WARN"), "{levels:?}");
    assert!(levels.contains_key("INFO"), "{levels:?}");
    assert!(
        messages.iter().any(|m| m.contains("10 of 10 chunks done")),
        "the summary is not a JSON event:\n{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}
