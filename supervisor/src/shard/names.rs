//! Where a shard's files live: its output is the job's with `.shard-I-of-N`
//! put before the extension (`squares.shard-0-of-2.jsonl`), its state folder
//! the job's with the suffix added (`.supervisor/squares.shard-0-of-2`);
//! and finding the shards of a job again by those names.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use super::{JobShard, Shard};
use crate::config::{Job, OutputPath};

/// The job as `shard` runs it: the same job, with the shard's output and
/// state folder. A job whose output is stdout cannot be sharded: its shards
/// would have nothing to be merged from.
pub fn for_shard(mut job: Job, shard: JobShard) -> Result<Job, String> {
    if let Some(why) = job.shard_refusal() {
        return Err(format!(
            "shard {} (from {}): {why}",
            shard.shard,
            shard.from.describe()
        ));
    }
    let OutputPath::File(output) = &job.output.path else {
        return Err(format!(
            "shard {} (from {}): a job whose output is stdout cannot run as shards, since \
             each shard's output is a file that `supervisor merge` combines; set [output] \
             path in {}",
            shard.shard,
            shard.from.describe(),
            job.file.display()
        ));
    };
    let files = ShardFiles::of(output, &job.state_dir, shard.shard)?;
    job.output.path = OutputPath::File(files.output);
    job.state_dir = files.state_dir;
    job.shard = Some(shard);
    Ok(job)
}

/// A shard's output and state folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardFiles {
    pub output: PathBuf,
    pub state_dir: PathBuf,
}

impl ShardFiles {
    /// The files of `shard` of a job whose own output and state folder are
    /// `output` and `state_dir`.
    pub fn of(output: &Path, state_dir: &Path, shard: Shard) -> Result<Self, String> {
        let suffix = shard.suffix();
        let (stem, extension) = output_parts(output)?;
        let mut name = stem.to_owned();
        name.push(&suffix);
        if let Some(extension) = extension {
            name.push(".");
            name.push(extension);
        }
        let state_name = state_dir.file_name().ok_or_else(|| {
            format!(
                "the state folder {} has no name that {suffix} could be added to",
                state_dir.display()
            )
        })?;
        let mut state = state_name.to_owned();
        state.push(&suffix);
        Ok(Self {
            output: output.with_file_name(name),
            state_dir: state_dir.with_file_name(state),
        })
    }
}

fn output_parts(output: &Path) -> Result<(&std::ffi::OsStr, Option<&std::ffi::OsStr>), String> {
    let stem = output
        .file_stem()
        .ok_or_else(|| format!("the output {} names no file", output.display()))?;
    Ok((stem, output.extension()))
}

/// What lies beside a job's output and state folder under shards' names:
/// for each shard count N, each shard index seen, and the paths that showed it.
pub type FoundShards = BTreeMap<u64, BTreeMap<u64, Vec<PathBuf>>>;

/// Looks for the shards of the job whose own output and state folder are
/// `output` and `state_dir`, by name: outputs `{stem}.shard-I-of-N{.ext}`
/// beside the output and state folders `{state}.shard-I-of-N` beside the
/// state folder. Missing folders hold no shards.
pub fn find_shards(output: &Path, state_dir: &Path) -> io::Result<FoundShards> {
    let mut found = FoundShards::new();
    let (stem, extension) = output_parts(output).map_err(io::Error::other)?;
    let mut output_prefix = stem.to_owned();
    output_prefix.push(".shard-");
    let output_suffix = extension.map_or_else(OsString::new, |e| {
        let mut dot = OsString::from(".");
        dot.push(e);
        dot
    });
    if let Some(dir) = output.parent() {
        scan(dir, &output_prefix, &output_suffix, &mut found)?;
    }
    if let (Some(dir), Some(name)) = (state_dir.parent(), state_dir.file_name()) {
        let mut prefix = name.to_owned();
        prefix.push(".shard-");
        scan(dir, &prefix, &OsString::new(), &mut found)?;
    }
    Ok(found)
}

fn scan(
    dir: &Path,
    prefix: &OsString,
    suffix: &OsString,
    found: &mut FoundShards,
) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let (Some(prefix), Some(suffix)) = (prefix.to_str(), suffix.to_str()) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(middle) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
        else {
            continue;
        };
        if let Some(shard) = parse_middle(middle) {
            found
                .entry(shard.count)
                .or_default()
                .entry(shard.index)
                .or_default()
                .push(entry.path());
        }
    }
    Ok(())
}

/// `I-of-N` as a shard, when it is one.
fn parse_middle(middle: &str) -> Option<Shard> {
    let (index, count) = middle.split_once("-of-")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(index) || !digits(count) {
        return None;
    }
    Shard::new(index.parse().ok()?, count.parse().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(index: u64, count: u64) -> Shard {
        Shard::new(index, count).unwrap()
    }

    #[test]
    fn the_suffix_goes_before_the_extension_and_after_the_state_folder() {
        let files = ShardFiles::of(
            Path::new("/jobs/squares.jsonl"),
            Path::new("/jobs/.supervisor/squares"),
            shard(0, 2),
        )
        .unwrap();
        assert_eq!(files.output, Path::new("/jobs/squares.shard-0-of-2.jsonl"));
        assert_eq!(
            files.state_dir,
            Path::new("/jobs/.supervisor/squares.shard-0-of-2")
        );
        let files = ShardFiles::of(
            Path::new("/out/data"),
            Path::new("/state/x.y"),
            shard(3, 10),
        )
        .unwrap();
        assert_eq!(files.output, Path::new("/out/data.shard-3-of-10"));
        assert_eq!(files.state_dir, Path::new("/state/x.y.shard-3-of-10"));
    }

    #[test]
    fn shards_are_found_by_name() {
        let root = tempfile::tempdir().unwrap();
        let output = root.path().join("squares.jsonl");
        let state = root.path().join(".supervisor").join("squares");
        std::fs::create_dir_all(root.path().join(".supervisor")).unwrap();
        for name in [
            "squares.shard-0-of-2.jsonl",
            "squares.shard-1-of-2.jsonl",
            "squares.shard-2-of-3.jsonl",
            // Not shards of this job.
            "squares.shard-2-of-2.jsonl",
            "squares.shard-x-of-2.jsonl",
            "squares.shard-0-of-2.json",
            "cubes.shard-0-of-2.jsonl",
            "squares.jsonl",
        ] {
            std::fs::write(root.path().join(name), "").unwrap();
        }
        std::fs::create_dir(state.with_file_name("squares.shard-1-of-2")).unwrap();
        std::fs::create_dir(state.with_file_name("squares.shard-0-of-5")).unwrap();
        let found = find_shards(&output, &state).unwrap();
        let summary: Vec<(u64, Vec<(u64, usize)>)> = found
            .iter()
            .map(|(n, shards)| (*n, shards.iter().map(|(i, p)| (*i, p.len())).collect()))
            .collect();
        assert_eq!(
            summary,
            [
                (2, vec![(0, 1), (1, 2)]),
                (3, vec![(2, 1)]),
                (5, vec![(0, 1)])
            ]
        );
    }

    #[test]
    fn nothing_is_found_where_nothing_is() {
        let root = tempfile::tempdir().unwrap();
        let found = find_shards(
            &root.path().join("missing/out.jsonl"),
            &root.path().join("missing/.supervisor/out"),
        )
        .unwrap();
        assert!(found.is_empty());
    }
}
