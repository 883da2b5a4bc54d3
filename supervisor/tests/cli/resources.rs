//! The machine's limits, reached for real: too few file descriptors for the
//! workers asked, and a file system that fills up in the middle of a run.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::assert_exactly_once;
use crate::harness::{PATIENCE, Scenario, read_records, squares_job, supervisor_bin};

/// Runs the supervisor with `args` under an open-file limit of `soft`
/// (and `hard`, when given), to its end; its exit code and stderr.
fn run_with_file_limit(
    scenario: &Scenario,
    args: &[&str],
    soft: u64,
    hard: Option<u64>,
) -> (Option<i32>, String) {
    let (mark, value) = scenario.mark_env();
    let mut command = Command::new(supervisor_bin());
    command
        .args(args)
        .current_dir(scenario.dir())
        .env(mark, value)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: getrlimit and setrlimit are async-signal-safe, and nothing
    // here allocates.
    unsafe {
        command.pre_exec(move || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = soft as libc::rlim_t;
            if let Some(hard) = hard {
                limit.rlim_max = hard as libc::rlim_t;
            }
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the supervisor did not finish within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), reader.join().unwrap())
}

#[test]
fn a_low_soft_file_limit_is_raised_to_the_hard_one_for_a_hundred_workers() {
    let scenario = Scenario::new();
    let job = scenario.job("many.toml", &squares_job(200_000, 1000, &[], ""));
    let (code, stderr) =
        run_with_file_limit(&scenario, &["-w", "100", job.to_str().unwrap()], 64, None);
    assert_eq!(code, Some(0), "{stderr}");
    assert_exactly_once(&read_records(&scenario.path("many.jsonl")), 200);
    scenario.assert_no_survivors();
}

#[test]
fn a_hard_file_limit_too_low_for_the_workers_is_refused_before_anything_starts() {
    let scenario = Scenario::new();
    let job = scenario.job("many.toml", &squares_job(200_000, 1000, &[], ""));
    let (code, stderr) = run_with_file_limit(
        &scenario,
        &["-w", "100", job.to_str().unwrap()],
        64,
        Some(64),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("100 workers need about 464 open files, but the limit is 64"),
        "{stderr}"
    );
    assert!(
        !scenario.path("many.jsonl").exists(),
        "an output was written"
    );
    assert!(
        !scenario.path(".supervisor").exists(),
        "a state folder was made"
    );
    scenario.assert_no_survivors();
}

/// A tmpfs mounted for the test, unmounted when it ends.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` at `path`; `None` (with a line saying why)
    /// where that cannot be done: not root, or no right to mount.
    fn mount(path: &Path, size: &str) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a small file system needs root");
            return None;
        }
        std::fs::create_dir_all(path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(Stdio::piped())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self {
                path: path.to_owned(),
            }),
            Ok(out) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_aborts_with_exit_3_and_the_run_resumes_exactly_once_space_is_freed() {
    let scenario = Scenario::new();
    let Some(_disk) = SmallDisk::mount(&scenario.path("disk"), "4m") else {
        return;
    };
    // All but 256 KiB of the disk taken; the job needs about 2 MiB of
    // output and journal.
    let filler = scenario.path("disk/filler");
    std::fs::write(&filler, vec![7u8; (4 << 20) - (256 << 10)]).unwrap();
    // The worker by its path, so that the test can load the job itself.
    // Chunk 1000 is held for a second: the records before it (about 150 KiB
    // of output and journal) are committed while it waits, and the disk fills
    // after it, however fast the rest runs.
    let worker = supervisor_bin().with_file_name("squares-worker");
    let job = scenario.job(
        "full.toml",
        &format!(
            "[source]\nrange = {{ start = 0, end = 200_000 }}\nchunk = 10\n\n\
             [worker]\ncommand = [{worker:?}, \"--hold\", \"1000:1000\"]\n\n\
             [output]\npath = \"disk/full.jsonl\"\n\n[state]\ndir = \"disk/state\"\n"
        ),
    );
    let job = job.to_str().unwrap();
    let full = scenario.run(&["-w", "2", job]);
    full.expect_code(3);
    assert!(
        full.stderr.contains("No space left on device"),
        "{}",
        full.stderr
    );
    scenario.assert_no_survivors();

    // What the journal says is what the output holds: check reads it back
    // (every finished chunk's bytes against its checksum) and would resume.
    let check = scenario.run(&["check", job]);
    check.expect_code(0);
    let plan = String::from_utf8_lossy(&check.stdout);
    assert!(plan.contains("resume: would resume: "), "{plan}");
    let loaded = supervisor::config::load(Path::new(job), None).unwrap();
    let recovered = supervisor::journal::inspect(
        &loaded.state_dir,
        &supervisor::journal::fingerprint(&loaded),
        loaded.chunk_count(),
        Some(&scenario.path("disk/full.jsonl")),
    )
    .unwrap()
    .expect("a journal");
    assert!(recovered.records > 0, "{recovered:?}");
    assert_eq!(recovered.damaged_at, None, "{recovered:?}");

    std::fs::remove_file(&filler).unwrap();
    scenario.run(&["-w", "2", job]).expect_code(0);
    let records = read_records(&scenario.path("disk/full.jsonl"));
    assert_exactly_once(&records, 20_000);
    scenario.assert_no_survivors();
}

#[test]
fn a_disk_already_full_when_the_run_starts_exits_3() {
    let scenario = Scenario::new();
    let Some(_disk) = SmallDisk::mount(&scenario.path("disk"), "1m") else {
        return;
    };
    let filler = scenario.path("disk/filler");
    // As much as the file system takes: the write stops when it is full.
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![7u8; 64 << 10];
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    drop(file);
    let job = scenario.job(
        "full.toml",
        &squares_job(
            10_000,
            1000,
            &[],
            "[output]\npath = \"disk/full.jsonl\"\n[state]\ndir = \"disk/state\"",
        ),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(3);
    assert!(
        finished.stderr.contains("No space left on device"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();

    // Nothing was left half-written: once there is room the same command
    // runs the job, every chunk once.
    std::fs::remove_file(&filler).unwrap();
    scenario
        .run(&["-w", "2", job.to_str().unwrap()])
        .expect_code(0);
    assert_exactly_once(&read_records(&scenario.path("disk/full.jsonl")), 10);
    scenario.assert_no_survivors();
}
