//! Where a shard's I/N comes from: `--shard`, else the variables a scheduler
//! sets in each task of an array (Slurm, AWS Batch, Google Cloud Batch).
//! Kubernetes sets only an index, so its manifest passes `--shard`.

use super::{JobShard, Shard};

/// Who chose the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// `--shard`.
    CommandLine,
    /// `--shard` in a Kubernetes Indexed Job, whose `JOB_COMPLETION_INDEX`
    /// agrees with it.
    Kubernetes,
    /// A Slurm array task: `SLURM_ARRAY_TASK_ID`, `_MIN`, `_STEP`, `_COUNT`.
    Slurm,
    /// An AWS Batch array job: `AWS_BATCH_JOB_ARRAY_INDEX`, `_SIZE`.
    AwsBatch,
    /// A Google Cloud Batch task: `BATCH_TASK_INDEX`, `BATCH_TASK_COUNT`.
    GoogleBatch,
}

impl Scheduler {
    /// The name in the report and the metrics' labels.
    pub fn label(self) -> &'static str {
        match self {
            Scheduler::CommandLine => "command-line",
            Scheduler::Kubernetes => "kubernetes",
            Scheduler::Slurm => "slurm",
            Scheduler::AwsBatch => "aws-batch",
            Scheduler::GoogleBatch => "google-batch",
        }
    }

    /// The name in a sentence.
    pub fn describe(self) -> &'static str {
        match self {
            Scheduler::CommandLine => "the command line",
            Scheduler::Kubernetes => "a Kubernetes Indexed Job",
            Scheduler::Slurm => "a Slurm array task",
            Scheduler::AwsBatch => "an AWS Batch array job",
            Scheduler::GoogleBatch => "a Google Cloud Batch task",
        }
    }
}

/// The shard to run: `--shard` when given, else what a scheduler's
/// variables say (read through `var`), else none. Shard `0/1`, from either,
/// is the whole job: none.
pub fn choose(
    command_line: Option<Shard>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<JobShard>, String> {
    let chosen = match command_line {
        Some(shard) => match set(&var, "JOB_COMPLETION_INDEX") {
            Some(index) if index.trim() == shard.index.to_string() => JobShard {
                shard,
                from: Scheduler::Kubernetes,
                evidence: format!("--shard {shard}, JOB_COMPLETION_INDEX={index}"),
            },
            _ => JobShard {
                shard,
                from: Scheduler::CommandLine,
                evidence: format!("--shard {shard}"),
            },
        },
        None => match detect(&var)? {
            Some(detected) => detected,
            None => return Ok(None),
        },
    };
    Ok((chosen.shard.count > 1).then_some(chosen))
}

/// The shard a scheduler's variables describe, if any is set. A task of an
/// array whose variables make no sense (an index past the count, an array
/// that is not an evenly stepped range) is an error: guessing would run a
/// block twice or not at all.
pub fn detect(var: impl Fn(&str) -> Option<String>) -> Result<Option<JobShard>, String> {
    if let Some(id) = set(&var, "SLURM_ARRAY_TASK_ID") {
        return slurm(&id, &var).map(Some);
    }
    if let Some(index) = set(&var, "AWS_BATCH_JOB_ARRAY_INDEX") {
        let names = ("AWS_BATCH_JOB_ARRAY_INDEX", "AWS_BATCH_JOB_ARRAY_SIZE");
        return indexed(Scheduler::AwsBatch, names, &index, &var).map(Some);
    }
    if let Some(index) = set(&var, "BATCH_TASK_INDEX") {
        let names = ("BATCH_TASK_INDEX", "BATCH_TASK_COUNT");
        return indexed(Scheduler::GoogleBatch, names, &index, &var).map(Some);
    }
    Ok(None)
}

/// A variable that is set to something: an empty one counts as unset.
fn set(var: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    var(name).filter(|value| !value.trim().is_empty())
}

fn number(name: &str, value: &str) -> Result<u64, String> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{name}={value} is not a whole number"));
    }
    value
        .parse()
        .map_err(|_| format!("{name}={value} is not a whole number"))
}

/// A Slurm array task. Task ids need not start at 0 nor step by 1
/// (`--array=1-7:2`): the shard is `(ID − MIN) / STEP` of `COUNT`, which
/// holds only for an evenly stepped range, so anything else is refused.
fn slurm(id: &str, var: &impl Fn(&str) -> Option<String>) -> Result<JobShard, String> {
    let mut evidence = vec![format!("SLURM_ARRAY_TASK_ID={}", id.trim())];
    let mut read = |name: &str| -> Result<Option<u64>, String> {
        match set(var, name) {
            Some(value) => {
                evidence.push(format!("{name}={}", value.trim()));
                number(name, &value).map(Some)
            }
            None => Ok(None),
        }
    };
    let id = number("SLURM_ARRAY_TASK_ID", id)?;
    let count = read("SLURM_ARRAY_TASK_COUNT")?;
    let min = read("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
    let max = read("SLURM_ARRAY_TASK_MAX")?;
    let step = read("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1);
    let evidence = evidence.join(", ");
    let refuse = |why: String| {
        Err(format!(
            "cannot tell which shard this Slurm array task is ({evidence}): {why}; \
             pass --shard I/N"
        ))
    };
    let Some(count) = count else {
        return refuse("SLURM_ARRAY_TASK_COUNT is not set".to_owned());
    };
    if step == 0 {
        return refuse("the step is 0".to_owned());
    }
    if id < min || (id - min) % step != 0 {
        return refuse(format!(
            "task {id} is not on the array's range from {min} in steps of {step}"
        ));
    }
    if let Some(max) = max
        && (max < min || (max - min) / step + 1 != count || (max - min) % step != 0)
    {
        return refuse(format!(
            "the array is not an evenly stepped range ({count} tasks from {min} to {max} \
             in steps of {step}), as with --array=1,4,9"
        ));
    }
    match Shard::new((id - min) / step, count) {
        Ok(shard) => Ok(JobShard {
            shard,
            from: Scheduler::Slurm,
            evidence,
        }),
        Err(why) => refuse(why),
    }
}

/// An array whose scheduler sets a 0-based index and the array's size.
fn indexed(
    from: Scheduler,
    (index_name, count_name): (&str, &str),
    index: &str,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<JobShard, String> {
    let index = number(index_name, index)?;
    let Some(count) = set(var, count_name) else {
        return Err(format!(
            "{index_name}={index} is set but {count_name} is not: cannot tell how many \
             shards there are; pass --shard I/N"
        ));
    };
    let count = number(count_name, &count)?;
    let evidence = format!("{index_name}={index}, {count_name}={count}");
    let shard = Shard::new(index, count).map_err(|why| format!("{evidence}: {why}"))?;
    Ok(JobShard {
        shard,
        from,
        evidence,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    fn shard(index: u64, count: u64) -> Shard {
        Shard::new(index, count).unwrap()
    }

    fn detected(vars: &[(&str, &str)]) -> (Shard, Scheduler) {
        let found = detect(env(vars)).unwrap().expect("a shard");
        (found.shard, found.from)
    }

    #[test]
    fn nothing_set_is_no_shard() {
        assert_eq!(detect(env(&[])), Ok(None));
        assert_eq!(choose(None, env(&[("SLURM_JOB_ID", "12")])), Ok(None));
    }

    #[test]
    fn a_slurm_array_from_zero() {
        let vars = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
            ("SLURM_ARRAY_TASK_STEP", "1"),
        ];
        assert_eq!(detected(&vars), (shard(2, 4), Scheduler::Slurm));
    }

    #[test]
    fn a_slurm_array_starting_at_1_in_steps_of_2() {
        // sbatch --array=1-7:2 runs tasks 1, 3, 5, 7.
        for (id, index) in [("1", 0), ("3", 1), ("5", 2), ("7", 3)] {
            let vars = [
                ("SLURM_ARRAY_TASK_ID", id),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_MAX", "7"),
                ("SLURM_ARRAY_TASK_STEP", "2"),
            ];
            assert_eq!(detected(&vars), (shard(index, 4), Scheduler::Slurm));
        }
        let found = detect(env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            found.evidence,
            "SLURM_ARRAY_TASK_ID=5, SLURM_ARRAY_TASK_COUNT=4, SLURM_ARRAY_TASK_MIN=1, \
             SLURM_ARRAY_TASK_STEP=2"
        );
    }

    #[test]
    fn a_slurm_array_that_is_not_a_stepped_range_is_refused() {
        // --array=1,4,9: three tasks, but no step maps them onto 0..3.
        let error = detect(env(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "9"),
            ("SLURM_ARRAY_TASK_STEP", "1"),
        ]))
        .unwrap_err();
        assert!(error.contains("not an evenly stepped range"), "{error}");
        assert!(error.ends_with("pass --shard I/N"), "{error}");
        // A task off the step, a missing count, garbage.
        for vars in [
            &[
                ("SLURM_ARRAY_TASK_ID", "4"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_STEP", "2"),
            ][..],
            &[("SLURM_ARRAY_TASK_ID", "4")],
            &[
                ("SLURM_ARRAY_TASK_ID", "x"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ],
            &[
                ("SLURM_ARRAY_TASK_ID", "4"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ],
        ] {
            assert!(detect(env(vars)).is_err(), "{vars:?}");
        }
    }

    #[test]
    fn aws_batch_and_google_batch() {
        assert_eq!(
            detected(&[
                ("AWS_BATCH_JOB_ARRAY_INDEX", "9"),
                ("AWS_BATCH_JOB_ARRAY_SIZE", "10")
            ]),
            (shard(9, 10), Scheduler::AwsBatch)
        );
        assert_eq!(
            detected(&[("BATCH_TASK_INDEX", "0"), ("BATCH_TASK_COUNT", "3")]),
            (shard(0, 3), Scheduler::GoogleBatch)
        );
        let error = detect(env(&[("AWS_BATCH_JOB_ARRAY_INDEX", "1")])).unwrap_err();
        assert!(error.contains("AWS_BATCH_JOB_ARRAY_SIZE is not"), "{error}");
        let error =
            detect(env(&[("BATCH_TASK_INDEX", "3"), ("BATCH_TASK_COUNT", "3")])).unwrap_err();
        assert!(
            error.starts_with("BATCH_TASK_INDEX=3, BATCH_TASK_COUNT=3: "),
            "{error}"
        );
    }

    #[test]
    fn the_command_line_wins_and_0_of_1_opts_out() {
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
        ];
        let chosen = choose(Some(shard(0, 2)), env(&slurm)).unwrap().unwrap();
        assert_eq!(
            (chosen.shard, chosen.from),
            (shard(0, 2), Scheduler::CommandLine)
        );
        assert_eq!(choose(Some(shard(0, 1)), env(&slurm)), Ok(None));
        let chosen = choose(None, env(&slurm)).unwrap().unwrap();
        assert_eq!((chosen.shard, chosen.from), (shard(1, 4), Scheduler::Slurm));
        // A one-task array is the whole job.
        let one = [("BATCH_TASK_INDEX", "0"), ("BATCH_TASK_COUNT", "1")];
        assert_eq!(choose(None, env(&one)), Ok(None));
    }

    #[test]
    fn kubernetes_is_named_when_its_index_agrees() {
        let pod = [("JOB_COMPLETION_INDEX", "2")];
        let chosen = choose(Some(shard(2, 8)), env(&pod)).unwrap().unwrap();
        assert_eq!(chosen.from, Scheduler::Kubernetes);
        assert_eq!(chosen.evidence, "--shard 2/8, JOB_COMPLETION_INDEX=2");
        let chosen = choose(Some(shard(3, 8)), env(&pod)).unwrap().unwrap();
        assert_eq!(chosen.from, Scheduler::CommandLine);
    }
}
