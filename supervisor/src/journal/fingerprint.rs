//! The job's fingerprint: the settings that decide what the chunks and their
//! outputs are, and a digest of them that an earlier run's journal must match.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::{Job, Order, OutputPath, Source};

/// What a journal was written for. Two jobs with the same digest cut the same
/// chunks and write them the same way, so one can resume the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// SHA-256 of the canonical JSON of `fields`, in lowercase hex.
    pub digest: String,
    /// Dotted setting names (`source.end`, `worker.params`) to their values as text.
    pub fields: BTreeMap<String, String>,
    /// What the run found that the user did not write and the digest leaves
    /// out (`worker.resolved`: the program the command named, found on PATH
    /// or beside the supervisor): told when a resume finds it changed.
    #[serde(default)]
    pub notes: BTreeMap<String, String>,
}

/// The fingerprint of `job`.
///
/// In it: the source and its range (or its input file's path, size and
/// modification time, and the delimiter), the chunk size, the worker command
/// as the job file wrote it (`command`, or `exec` and `stdin`), the params,
/// the output's format, order and path. Not the program the command
/// resolves to: activating a virtualenv or a version manager's shim changes
/// that path, not what the worker computes; it is kept as a note instead.
/// The output's path is in because the journal records byte offsets into
/// that one file: pointed elsewhere, a resumed run would miss every chunk
/// the journal counts as done. A shard's also has `shard` (`I/N`): a
/// shard's journal proves to `merge` which block of the job it ran, and a
/// shard is never resumed as another one. A job run whole has no `shard`
/// field, so journals written before shards existed still match.
///
/// Not in it: workers, timeouts, retries, restart policy, drain timeout,
/// environment, memory limit, worker recycling, the job's name and the state
/// folder. They change how a run goes, not what a finished chunk's record
/// says, so they may change between a run and its resumption.
pub fn fingerprint(job: &Job) -> Fingerprint {
    let mut fields = BTreeMap::new();
    let mut set = |key: &str, value: String| {
        fields.insert(key.to_owned(), value);
    };
    match &job.source {
        Source::Range { start, end } => {
            set("source", "range".to_owned());
            set("source.start", start.to_string());
            set("source.end", end.to_string());
        }
        Source::File { delimiter, .. } => {
            set("source", "file".to_owned());
            set(
                "source.delimiter",
                serde_json::to_string(&String::from_utf8_lossy(delimiter)).expect("a string"),
            );
        }
        Source::Lines { .. } => set("source", "lines".to_owned()),
        // Never journaled (it cannot resume), but a job has one fingerprint
        // whatever its source: the same job loaded two ways compares equal.
        Source::Stdin { delimiter } => {
            set("source", "stdin".to_owned());
            set(
                "source.delimiter",
                serde_json::to_string(&String::from_utf8_lossy(delimiter)).expect("a string"),
            );
        }
    }
    // Chunks are byte ranges of the input: another file, or the same one
    // changed, would cut differently and disagree with the output so far.
    if let Some(input) = job.source.input() {
        set("source.path", input.path.to_string_lossy().into_owned());
        set("source.size", input.size.to_string());
        let modified = input
            .modified
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or_else(|| "unknown".to_owned(), |d| d.as_nanos().to_string());
        set("source.modified", modified);
    }
    // Automatic chunks are journaled with their boundaries, so how they
    // are sized (`target`) may change between a run and its resumption.
    match job.auto {
        Some(_) => set("chunk", AUTO.to_owned()),
        None => set("chunk", job.chunk.to_string()),
    }
    for (key, value) in &job.worker.written {
        set(key, value.clone());
    }
    set("worker.params", canonical_json(&job.worker.params_json));
    set("output.format", job.output.format.name().to_owned());
    set(
        "output.order",
        match job.output.order {
            Order::Index => "index",
            Order::Completion => "completion",
        }
        .to_owned(),
    );
    set(
        "output.path",
        match &job.output.path {
            OutputPath::Stdout => "-".to_owned(),
            OutputPath::File(path) => path.to_string_lossy().into_owned(),
        },
    );
    if let Some(shard) = &job.shard {
        set("shard", shard.shard.to_string());
    }
    let mut fingerprint = Fingerprint::from_fields(fields);
    let resolved = std::iter::once(job.worker.program.to_string_lossy().into_owned())
        .chain(job.worker.args.iter().cloned())
        .collect::<Vec<_>>();
    fingerprint
        .notes
        .insert("worker.resolved".to_owned(), json(&resolved));
    fingerprint
}

/// The `chunk` field of a job whose chunks size themselves.
const AUTO: &str = "auto";

impl Fingerprint {
    /// Whether the journal's job had `chunk = "auto"`: its chunks' boundaries
    /// are decided by the run, and a resumed run must read them back.
    pub fn auto_chunks(&self) -> bool {
        self.fields.get("chunk").is_some_and(|chunk| chunk == AUTO)
    }

    /// Computes the digest of `fields`.
    pub fn from_fields(fields: BTreeMap<String, String>) -> Self {
        // A BTreeMap serializes in key order, and strings have one JSON
        // form: the bytes hashed depend on the fields alone.
        let canonical = serde_json::to_vec(&fields).expect("a map of strings serializes");
        let mut digest = String::with_capacity(64);
        for byte in Sha256::digest(&canonical) {
            let _ = write!(digest, "{byte:02x}");
        }
        Self {
            digest,
            fields,
            notes: BTreeMap::new(),
        }
    }

    /// The fields that differ from `now`'s, as `(field, was, now)`, in field
    /// order; `(none)` for a field one side lacks.
    pub fn changes(&self, now: &Fingerprint) -> Vec<(String, String, String)> {
        const NONE: &str = "(none)";
        let mut keys: Vec<&String> = self.fields.keys().chain(now.fields.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|key| {
                let was = self.fields.get(key).map_or(NONE, String::as_str);
                let is = now.fields.get(key).map_or(NONE, String::as_str);
                (was != is).then(|| (key.clone(), was.to_owned(), is.to_owned()))
            })
            .collect()
    }
}

fn json(args: &[String]) -> String {
    serde_json::to_string(args).expect("strings serialize")
}

/// The params as one canonical text, so that writing the same table another
/// way (key order, spacing) does not count as a change.
fn canonical_json(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => sort_keys(value).to_string(),
        Err(_) => text.to_owned(),
    }
}

/// serde_json keeps insertion order when another crate in the build turns on
/// `preserve_order`: sorting here keeps the text independent of that.
fn sort_keys(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A job read from a real job file, so these tests follow the validated
    /// `Job` as it grows.
    fn job() -> (tempfile::TempDir, Job) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("squares.toml");
        std::fs::write(
            &path,
            r#"
[source]
range = { start = 0, end = 1000 }
chunk = 100

[worker]
command = ["/bin/sh", "-c", "true"]
params = { modulus = 10007, name = "x" }
"#,
        )
        .unwrap();
        let job = crate::config::load(&path, None).unwrap();
        (dir, job)
    }

    #[test]
    fn the_digest_is_sha256_of_the_fields_as_json() {
        let fingerprint = Fingerprint::from_fields([("a".to_owned(), "b".to_owned())].into());
        // sha256sum of the 9 bytes `{"a":"b"}`
        assert_eq!(
            fingerprint.digest,
            "db4a7ecb114bc66c623a06c4ff6fe8daa2f49cc270ebbf7a1f81e22ab061c837"
        );
    }

    #[test]
    fn settings_that_decide_the_results_are_in_it() {
        let (_dir, job) = job();
        let before = fingerprint(&job);
        assert_eq!(before.fields["source"], "range");
        assert_eq!(before.fields["source.end"], "1000");
        assert_eq!(before.fields["chunk"], "100");
        assert_eq!(
            before.fields["worker.command"],
            r#"["/bin/sh","-c","true"]"#
        );
        assert_eq!(
            before.fields["worker.params"],
            r#"{"modulus":10007,"name":"x"}"#
        );
        assert_eq!(before.fields["output.order"], "index");

        let mut changed = job.clone();
        changed.chunk = 50;
        changed.source = Source::Range {
            start: 0,
            end: 2000,
        };
        changed.worker.params_json = r#"{"modulus":7}"#.to_owned();
        let after = fingerprint(&changed);
        assert_ne!(before.digest, after.digest);
        assert_eq!(
            before.changes(&after),
            vec![
                ("chunk".to_owned(), "100".to_owned(), "50".to_owned()),
                (
                    "source.end".to_owned(),
                    "1000".to_owned(),
                    "2000".to_owned()
                ),
                (
                    "worker.params".to_owned(),
                    r#"{"modulus":10007,"name":"x"}"#.to_owned(),
                    r#"{"modulus":7}"#.to_owned()
                ),
            ]
        );
    }

    #[test]
    fn settings_that_only_change_how_a_run_goes_are_not() {
        let (_dir, job) = job();
        let mut other = job.clone();
        other.supervisor.workers += 3;
        other.supervisor.restart.max += 1;
        other.worker.retries += 1;
        other.worker.timeout = Some(Duration::from_secs(1));
        other.worker.env.push(("A".to_owned(), "b".to_owned()));
        other.state_dir = other.state_dir.join("elsewhere");
        other.name = "renamed".to_owned();
        assert_eq!(fingerprint(&job), fingerprint(&other));
    }

    #[test]
    fn the_program_a_command_resolves_to_is_a_note_not_part_of_the_digest() {
        let (_dir, job) = job();
        let mut elsewhere = job.clone();
        elsewhere.worker.program = "/opt/venv/bin/sh".into();
        let (was, now) = (fingerprint(&job), fingerprint(&elsewhere));
        assert_eq!(
            was.digest, now.digest,
            "a venv's shim changes nothing computed"
        );
        assert_ne!(was.notes["worker.resolved"], now.notes["worker.resolved"]);
        assert!(now.notes["worker.resolved"].starts_with(r#"["/opt/venv/bin/sh","#));
    }

    #[test]
    fn a_shard_is_in_it_and_the_whole_job_is_not() {
        let (_dir, job) = job();
        assert!(!fingerprint(&job).fields.contains_key("shard"));
        let shard = |index, count| crate::shard::JobShard {
            shard: crate::shard::Shard::new(index, count).unwrap(),
            from: crate::shard::Scheduler::CommandLine,
            evidence: String::new(),
        };
        let one_of_four = crate::shard::for_shard(job.clone(), shard(1, 4)).unwrap();
        let mut one_of_three = one_of_four.clone();
        one_of_three.shard = Some(shard(1, 3));
        assert_eq!(fingerprint(&one_of_four).fields["shard"], "1/4");
        assert_eq!(
            fingerprint(&one_of_four).changes(&fingerprint(&one_of_three)),
            [("shard".to_owned(), "1/4".to_owned(), "1/3".to_owned())]
        );
        // Where the shard came from does not matter.
        let mut from_slurm = one_of_four.clone();
        from_slurm.shard.as_mut().unwrap().from = crate::shard::Scheduler::Slurm;
        assert_eq!(fingerprint(&one_of_four), fingerprint(&from_slurm));
    }

    #[test]
    fn params_written_another_way_are_the_same() {
        assert_eq!(
            canonical_json(r#"{ "b": [1, {"y": 2, "x": 1}], "a": 1 }"#),
            r#"{"a":1,"b":[1,{"x":1,"y":2}]}"#
        );
    }

    #[test]
    fn a_missing_field_shows_as_none() {
        let was = Fingerprint::from_fields([("a".to_owned(), "1".to_owned())].into());
        let now = Fingerprint::from_fields([("b".to_owned(), "2".to_owned())].into());
        assert_eq!(
            was.changes(&now),
            vec![
                ("a".to_owned(), "1".to_owned(), "(none)".to_owned()),
                ("b".to_owned(), "(none)".to_owned(), "2".to_owned()),
            ]
        );
    }
}
