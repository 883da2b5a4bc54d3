//! Stage two: the raw job file checked against the rules and turned into a
//! [`Job`], with defaults filled in and paths resolved.

use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, JobText};
use super::exec;
use super::job::{
    InputFile, Job, MaxFailed, Order, OutputFormat, OutputPath, OutputSpec, RestartPolicy,
    SupervisorSpec,
};
use super::paths::{job_dir, resolve};
use super::raw::{self, RawFormat, RawJob, RawJobFile, RawOrder, RawOutput, RawSupervisor};
use super::{defaults, places};

const MAX_WORKERS: i64 = 1024;

/// Reads, parses and validates the job file at `path`. `workers_override`
/// (the command line's `--workers`) wins over the file's `[supervisor] workers`.
pub fn load(path: &Path, workers_override: Option<usize>) -> Result<Job, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        key: String::new(),
        message: format!("cannot read job file: {e}"),
    })?;
    let text = JobText {
        file: path,
        text: &text,
    };
    let raw = raw::parse(&text)?;
    text.validate(raw, workers_override)
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

impl JobText<'_> {
    fn validate(&self, raw: RawJobFile, workers_override: Option<usize>) -> Result<Job> {
        let dir = job_dir(self.file);
        let name = self.name(raw.job)?;
        let Some(source) = raw.source else {
            return Err(self.error(
                0..0,
                "source",
                "the job file has no `[source]` table; set one of `range`, `file`, `lines` in it",
            ));
        };
        // `{item}` takes chunks of one line: that is then the default chunk.
        let one_line = raw
            .worker
            .as_ref()
            .and_then(|w| w.get_ref().exec.as_ref())
            .is_some_and(|exec| exec.get_ref().get(1..).is_some_and(exec::wants_one_line));
        let (source, chunk, auto) = self.source(source, &dir, one_line)?;
        let Some(worker) = raw.worker else {
            return Err(self.error(
                0..0,
                "worker",
                "the job file has no `[worker]` table; set `command` in it",
            ));
        };
        let worker = self.worker(worker, &dir, &source)?;
        let supervisor = self.supervisor(raw.supervisor, workers_override)?;
        let output_span = raw
            .output
            .as_ref()
            .and_then(|o| o.path.as_ref())
            .map_or(0..0, Spanned::span);
        let state_span = raw
            .state
            .as_ref()
            .and_then(|s| s.dir.as_ref())
            .map_or(0..0, Spanned::span);
        let output = self.output(raw.output, &dir, &name, source.input())?;
        let state_dir = match raw.state.and_then(|s| s.dir) {
            Some(d) => resolve(&dir, self.non_empty_path(&d, "state.dir")?),
            None => {
                let base = match &output.path {
                    OutputPath::File(p) => p.parent().unwrap_or(&dir),
                    OutputPath::Stdout => &dir,
                };
                base.join(".supervisor").join(&name)
            }
        };
        self.places(&output.path, output_span, &state_dir, state_span)?;
        Ok(Job {
            file: self.file.to_path_buf(),
            dir,
            name,
            source,
            chunk,
            auto,
            worker,
            supervisor,
            output,
            state_dir,
            shard: None,
        })
    }

    fn name(&self, job: Option<RawJob>) -> Result<String> {
        if let Some(name) = job.and_then(|j| j.name) {
            if !valid_name(name.get_ref()) {
                return Err(self.error(
                    name.span(),
                    "job.name",
                    format!("`{}` is not a valid job name: {NAME_RULE}", name.get_ref()),
                ));
            }
            return Ok(name.into_inner());
        }
        let stem = self.file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if !valid_name(stem) {
            return Err(self.error(
                0..0,
                "job.name",
                format!(
                    "no `[job] name` is set and the file name `{stem}` is not a valid job name: {NAME_RULE}"
                ),
            ));
        }
        Ok(stem.to_owned())
    }

    fn supervisor(
        &self,
        raw: Option<RawSupervisor>,
        workers_override: Option<usize>,
    ) -> Result<SupervisorSpec> {
        let Some(raw) = raw else {
            return Ok(SupervisorSpec {
                workers: workers_override.unwrap_or_else(available_workers),
                restart: defaults::RESTART,
                drain_timeout: defaults::DRAIN_TIMEOUT,
                max_failed: None,
            });
        };
        let max_failed = match &raw.max_failed {
            Some(value) => Some(self.max_failed(value)?),
            None => None,
        };
        let from_file = match &raw.workers {
            Some(w) => Some(self.int_in(w, "supervisor.workers", 1..=MAX_WORKERS)? as usize),
            None => None,
        };
        let restart = match &raw.restart {
            Some(r) => RestartPolicy {
                max: self.int_in(&r.max, "supervisor.restart.max", 0..=i64::from(u32::MAX))? as u32,
                within: self.duration(&r.within, "supervisor.restart.within")?,
            },
            None => defaults::RESTART,
        };
        let drain_timeout = match &raw.drain_timeout {
            Some(d) => self.duration(d, "supervisor.drain_timeout")?,
            None => defaults::DRAIN_TIMEOUT,
        };
        Ok(SupervisorSpec {
            workers: workers_override
                .or(from_file)
                .unwrap_or_else(available_workers),
            restart,
            drain_timeout,
            max_failed,
        })
    }

    /// A count of chunks (an integer) or a share of those finished (`"5%"`).
    fn max_failed(&self, value: &Spanned<toml::Value>) -> Result<MaxFailed> {
        let key = "supervisor.max_failed";
        let wrong = || {
            self.error(
                value.span(),
                key,
                "expected a count of chunks (an integer such as 10) or a share of the chunks \
                 finished (a string such as \"5%\" or \"0.5%\")",
            )
        };
        match value.get_ref() {
            toml::Value::Integer(count) => u64::try_from(*count)
                .map(MaxFailed::Count)
                .map_err(|_| self.error(value.span(), key, "must not be negative")),
            toml::Value::String(text) => {
                let number = text.trim().strip_suffix('%').ok_or_else(wrong)?;
                let percent: f64 = number.trim().parse().map_err(|_| wrong())?;
                if !(0.0..=100.0).contains(&percent) {
                    return Err(self.error(
                        value.span(),
                        key,
                        "a share must be between 0% and 100%",
                    ));
                }
                Ok(MaxFailed::Share {
                    per_million: (percent * 10_000.0).round() as u32,
                })
            }
            _ => Err(wrong()),
        }
    }

    fn output(
        &self,
        raw: Option<RawOutput>,
        dir: &Path,
        name: &str,
        input: Option<&InputFile>,
    ) -> Result<OutputSpec> {
        let raw = raw.unwrap_or(RawOutput {
            path: None,
            format: None,
            order: None,
        });
        let format = match &raw.format {
            None => OutputFormat::Jsonl,
            Some(f) => match f.get_ref() {
                RawFormat::Jsonl => OutputFormat::Jsonl,
                RawFormat::Raw => OutputFormat::Raw,
            },
        };
        let path = match &raw.path {
            Some(p) if p.get_ref() == "-" => OutputPath::Stdout,
            Some(p) => OutputPath::File(resolve(dir, self.non_empty_path(p, "output.path")?)),
            None => OutputPath::File(dir.join(match format {
                OutputFormat::Jsonl => format!("{name}.jsonl"),
                OutputFormat::Raw => format!("{name}.out"),
            })),
        };
        if let (OutputPath::File(out), Some(input)) = (&path, input)
            && same_file(out, &input.path)
        {
            let span = raw.path.as_ref().map_or(0..0, Spanned::span);
            return Err(self.error(
                span,
                "output.path",
                format!(
                    "{} is the input file: the output would overwrite what it is made from",
                    out.display()
                ),
            ));
        }
        let order = match raw.order.as_ref().map(Spanned::get_ref) {
            None | Some(RawOrder::Index) => Order::Index,
            Some(RawOrder::Completion) => Order::Completion,
        };
        Ok(OutputSpec {
            path,
            format,
            order,
        })
    }

    /// The output and the state folder can be made, and are not each other
    /// nor the job file.
    pub(super) fn places(
        &self,
        output: &OutputPath,
        output_span: Range<usize>,
        state_dir: &Path,
        state_span: Range<usize>,
    ) -> Result<()> {
        let OutputPath::File(out) = output else {
            return self.state_folder(state_dir, state_span);
        };
        if let Some(reason) = out.parent().and_then(places::not_a_folder) {
            return Err(self.error(
                output_span,
                "output.path",
                format!("{reason}: the output cannot be made there"),
            ));
        }
        if places::is_inside(out, state_dir) {
            return Err(self.error(
                output_span,
                "output.path",
                format!(
                    "{} is inside the state folder {}: the run would overwrite its own journal; \
                     put the output elsewhere or set `[state] dir`",
                    out.display(),
                    state_dir.display()
                ),
            ));
        }
        if same_file(out, self.file) {
            return Err(self.error(
                output_span,
                "output.path",
                format!("{} is the job file itself", out.display()),
            ));
        }
        self.state_folder(state_dir, state_span)
    }

    pub(super) fn state_folder(&self, state_dir: &Path, state_span: Range<usize>) -> Result<()> {
        if let Some(reason) = places::not_a_folder(state_dir) {
            return Err(self.error(
                state_span,
                "state.dir",
                format!("{reason}: the state folder cannot be made there"),
            ));
        }
        Ok(())
    }

    pub(super) fn non_empty_path<'s>(
        &self,
        value: &'s Spanned<String>,
        key: &str,
    ) -> Result<&'s Path> {
        if value.get_ref().is_empty() {
            return Err(self.error(value.span(), key, "must not be empty"));
        }
        Ok(Path::new(value.get_ref()))
    }

    pub(super) fn int_in(
        &self,
        value: &Spanned<i64>,
        key: &str,
        range: RangeInclusive<i64>,
    ) -> Result<i64> {
        let v = *value.get_ref();
        if range.contains(&v) {
            return Ok(v);
        }
        let message = match (*range.start(), *range.end()) {
            (lo, i64::MAX) => format!("must be {lo} or greater, got {v}"),
            (lo, hi) => format!("must be between {lo} and {hi}, got {v}"),
        };
        Err(self.error(value.span(), key, message))
    }

    pub(super) fn duration(&self, value: &Spanned<String>, key: &str) -> Result<Duration> {
        let text = value.get_ref();
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() => Err(self.error(value.span(), key, "must be longer than zero")),
            Ok(d) => Ok(d),
            Err(e) => Err(self.error(
                value.span(),
                key,
                format!(
                    "\"{text}\" is not a duration ({e}); write e.g. \"90s\", \"1m 30s\" or \"2h\""
                ),
            )),
        }
    }
}

const NAME_RULE: &str = "use only letters, digits, `_`, `.` and `-`, and not `.` or `..`";

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether two paths name one file: the same path, or (when both exist) the
/// same device and inode, so a link or another spelling is caught too.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn available_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
