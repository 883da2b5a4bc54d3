//! How many shards to merge: the count their names show beside the job's
//! output and state folder, or the one `--shards N` picks.

use std::path::Path;

use anyhow::Context as _;

use super::MergeError;
use crate::config::Job;
use crate::journal::JOURNAL_FILE;
use crate::shard::find_shards;

/// The shard count N. Without `asked`, exactly one count must show among
/// the names: none means nothing ran, unless the job ran whole (1); two mean
/// shards of an earlier split lie beside these, and picking one would be a
/// guess.
pub fn shard_count(job: &Job, output: &Path, asked: Option<u64>) -> Result<u64, MergeError> {
    if let Some(count) = asked {
        return Ok(count);
    }
    let found = find_shards(output, &job.state_dir).with_context(|| {
        format!(
            "cannot look for the shards beside {} and {}",
            output.display(),
            job.state_dir.display()
        )
    })?;
    let mut counts = found.iter();
    match (counts.next(), counts.next()) {
        // Shard 0 of 1 is the job itself, run whole: a one-task array.
        (None, _) if job.state_dir.join(JOURNAL_FILE).exists() => Ok(1),
        (None, _) => Err(MergeError::refused(format!(
            "no shards of the job {} were found: there is no {} nor {} for any I and N; \
             run the shards first (`supervisor --shard I/N {}`)",
            job.name,
            pattern(output, true),
            pattern(&job.state_dir, false),
            job.file.display()
        ))),
        (Some((count, _)), None) => Ok(*count),
        (Some(_), Some(_)) => {
            let seen: Vec<String> = found
                .iter()
                .map(|(count, shards)| {
                    let indices: Vec<String> = shards.keys().map(u64::to_string).collect();
                    let noun = if shards.len() == 1 { "shard" } else { "shards" };
                    format!("of {count} ({noun} {})", indices.join(", "))
                })
                .collect();
            Err(MergeError::refused(format!(
                "shards of different counts lie beside the job's output: {}; remove the \
                 stale ones, or pick the count to merge with --shards N",
                seen.join(" and ")
            )))
        }
    }
}

/// A shard's name with I and N left open, for messages: the suffix before
/// the extension (an output's) or at the end (a state folder's).
fn pattern(path: &Path, before_extension: bool) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let with = |name: &str| path.with_file_name(name).display().to_string();
    match (name, path.extension()) {
        (Some(_), Some(extension)) if before_extension => {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            with(&format!(
                "{stem}.shard-I-of-N.{}",
                extension.to_string_lossy()
            ))
        }
        (Some(name), _) => with(&format!("{name}.shard-I-of-N")),
        (None, _) => path.display().to_string(),
    }
}
