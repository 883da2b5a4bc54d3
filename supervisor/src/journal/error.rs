//! The journal's errors, each worded to say what the user can do about it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const FRESH_ADVICE: &str =
    "run with --fresh to start over (the earlier output and journal are discarded)";

/// Longest value a [`JournalError::Changed`] message shows in full.
const SHOWN_VALUE: usize = 80;

/// Why the state folder cannot be used, or the journal cannot be kept.
///
/// `Clone` because a commit that failed on the committer thread is reported
/// again by every later call: the run must not go on journaling after it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// Another process holds the state folder's lock.
    #[error("{}", locked(dir, *pid))]
    Locked { dir: PathBuf, pid: Option<u32> },
    /// The journal was written for a job whose chunks or outputs differ.
    /// Each change is `(field, was, now)`; `(none)` stands for a field one
    /// side does not have.
    #[error("{}", changed(dir, changes))]
    Changed {
        dir: PathBuf,
        changes: Vec<(String, String, String)>,
    },
    /// The journal cannot be read as one: not a torn tail (that is repaired)
    /// but a header or record that no supervisor writes.
    #[error("the journal {} is damaged: {reason}; {FRESH_ADVICE}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The output is not what the journal recorded: a finished chunk's bytes
    /// there do not match their checksum (the file was edited or replaced).
    #[error(
        "the output {} is not what the journal recorded: chunk {index}'s bytes {offset}..{} \
         differ (was it edited?); {FRESH_ADVICE}",
        output.display(),
        offset + len
    )]
    OutputChanged {
        output: PathBuf,
        index: u64,
        offset: u64,
        len: u64,
    },
    /// A file operation failed; `action` reads "cannot {action} {path}".
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// The committer thread ended without a word: it panicked.
    #[error("the journal's committer stopped unexpectedly")]
    CommitterGone,
}

impl JournalError {
    pub(super) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| JournalError::Io {
            action,
            path,
            source: Arc::new(source),
        }
    }

    /// Whether the machine ran out of what the state needs (a full disk, a
    /// quota, an I/O error, memory), which may pass, rather than the job's
    /// state forbidding the run (another supervisor holds it, the job
    /// changed, the journal or output is not what was written) or a state
    /// folder the job cannot use (read-only, not permitted, through a file).
    pub fn is_exhaustion(&self) -> bool {
        match self {
            JournalError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC | libc::EDQUOT | libc::EIO | libc::ENOMEM)
            ),
            JournalError::CommitterGone => true,
            JournalError::Locked { .. }
            | JournalError::Changed { .. }
            | JournalError::Corrupt { .. }
            | JournalError::OutputChanged { .. } => false,
        }
    }

    pub(super) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        JournalError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

fn locked(dir: &Path, pid: Option<u32>) -> String {
    let who = match pid {
        Some(pid) => format!("another supervisor (pid {pid})"),
        None => "another supervisor".to_owned(),
    };
    format!("{who} is running the job in {}", dir.display())
}

fn changed(dir: &Path, changes: &[(String, String, String)]) -> String {
    let mut message = format!(
        "the job changed since the journal in {} was written",
        dir.display()
    );
    for (i, (field, was, now)) in changes.iter().enumerate() {
        let sep = if i == 0 { ": " } else { ", " };
        message.push_str(&format!("{sep}{field} {} → {}", Shown(was), Shown(now)));
    }
    message.push_str("; ");
    message.push_str(FRESH_ADVICE);
    message
}

/// A value in a message: long ones (params, argument lists) are cut, since
/// the field name already says where to look, and control characters (a
/// path with a newline) escaped, so that the refusal stays one line.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shown, cut) = match self.0.char_indices().nth(SHOWN_VALUE) {
            Some((cut, _)) => (&self.0[..cut], true),
            None => (self.0, false),
        };
        for c in shown.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        if cut {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_exhaustion_and_a_read_only_one_is_not() {
        let io = |errno| {
            JournalError::io("write the lock file", Path::new("/state/lock"))(
                io::Error::from_raw_os_error(errno),
            )
        };
        for errno in [libc::ENOSPC, libc::EDQUOT, libc::EIO] {
            assert!(io(errno).is_exhaustion(), "{errno}");
        }
        for errno in [libc::EROFS, libc::EACCES, libc::ENOTDIR, libc::EEXIST] {
            assert!(!io(errno).is_exhaustion(), "{errno}");
        }
        let locked = JournalError::Locked {
            dir: PathBuf::from("/state"),
            pid: None,
        };
        assert!(!locked.is_exhaustion());
    }

    #[test]
    fn a_changed_value_with_a_newline_is_shown_on_one_line() {
        let changed = JournalError::Changed {
            dir: PathBuf::from("/jobs/.supervisor/squares"),
            changes: vec![("source.path".into(), "in\nput".into(), "in\tput".into())],
        };
        let shown = changed.to_string();
        assert!(shown.contains(r"source.path in\nput → in\tput"), "{shown}");
        assert!(!shown.contains('\n') && !shown.contains('\t'), "{shown}");
    }

    #[test]
    fn messages_say_what_to_do() {
        let dir = PathBuf::from("/jobs/.supervisor/squares");
        let locked = JournalError::Locked {
            dir: dir.clone(),
            pid: Some(1234),
        };
        assert_eq!(
            locked.to_string(),
            "another supervisor (pid 1234) is running the job in /jobs/.supervisor/squares"
        );
        let changed = JournalError::Changed {
            dir,
            changes: vec![
                ("chunk".into(), "100".into(), "200".into()),
                ("output.order".into(), "index".into(), "completion".into()),
            ],
        };
        assert_eq!(
            changed.to_string(),
            "the job changed since the journal in /jobs/.supervisor/squares was written: \
             chunk 100 → 200, output.order index → completion; run with --fresh to start \
             over (the earlier output and journal are discarded)"
        );
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(200);
        let shown = Shown(&long).to_string();
        assert_eq!(shown.chars().count(), SHOWN_VALUE + 1);
        assert!(shown.ends_with('…'));
    }
}
