//! Stage two: the raw job file checked against the rules and turned into a
//! [`Job`], with defaults filled in and paths resolved.

use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, JobText};
use super::job::{
    Job, Order, OutputFormat, OutputPath, OutputSpec, RestartPolicy, Source, SupervisorSpec,
    WorkerSpec,
};
use super::paths::{job_dir, resolve, resolve_program};
use super::raw::{
    self, RawChunk, RawFormat, RawJob, RawJobFile, RawOrder, RawOutput, RawSource, RawSupervisor,
    RawWorker,
};
use super::size;

/// The most chunks a job may have: resume keeps two bits per chunk in memory
/// (done, failed), 256 MiB at this count.
const MAX_CHUNKS: u64 = 1 << 30;

/// Without `chunk`, a range source is cut into about this many chunks.
const DEFAULT_CHUNKS: u64 = 1024;
/// Without `[worker] timeout`, an attempt may run this long.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Without `[worker] start_timeout`, a new worker has this long to say hello.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 2;
const MAX_RETRIES: i64 = 1000;
const MAX_WORKERS: i64 = 1024;
const DEFAULT_RESTART: RestartPolicy = RestartPolicy {
    max: 10,
    within: Duration::from_secs(60),
};
/// Without `[supervisor] drain_timeout`, chunks in flight get this long to
/// finish after the first SIGTERM or SIGINT.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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
        let (source, chunk) = self.source(source)?;
        let Some(worker) = raw.worker else {
            return Err(self.error(
                0..0,
                "worker",
                "the job file has no `[worker]` table; set `command` in it",
            ));
        };
        let worker = self.worker(worker, &dir)?;
        let supervisor = self.supervisor(raw.supervisor, workers_override)?;
        let output = self.output(raw.output, &dir, &name)?;
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
        Ok(Job {
            file: self.file.to_path_buf(),
            dir,
            name,
            source,
            chunk,
            worker,
            supervisor,
            output,
            state_dir,
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

    fn source(&self, source: Spanned<RawSource>) -> Result<(Source, u64)> {
        let span = source.span();
        let source = source.into_inner();
        let given: Vec<(&str, Range<usize>)> = [
            ("range", source.range.as_ref().map(Spanned::span)),
            ("file", source.file.as_ref().map(Spanned::span)),
            ("lines", source.lines.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(k, s)| Some((k, s?)))
        .collect();
        match given.as_slice() {
            [] => {
                return Err(self.error(
                    span,
                    "source",
                    "no input: set exactly one of `range`, `file`, `lines`",
                ));
            }
            [(first, _), (second, s), ..] => {
                return Err(self.error(
                    s.clone(),
                    "source",
                    format!(
                        "`{first}` and `{second}` are both set; set exactly one of `range`, `file`, `lines`"
                    ),
                ));
            }
            [_] => {}
        }
        if let Some(file) = &source.file {
            return self.unsupported(file.span(), "source.file");
        }
        if let Some(lines) = &source.lines {
            return self.unsupported(lines.span(), "source.lines");
        }
        let range = source.range.expect("exactly one source is set");
        let range_span = range.span();
        let range = range.into_inner();
        let start = self.int_in(&range.start, "source.range.start", 0..=i64::MAX)?;
        let end = self.int_in(&range.end, "source.range.end", 0..=i64::MAX)?;
        let (start, end) = (start as u64, end as u64);
        if start == end {
            return Err(self.error(
                range_span,
                "source.range",
                format!("the range is empty (start = end = {start}); `end` is exclusive"),
            ));
        }
        if start > end {
            return Err(self.error(
                range_span,
                "source.range",
                format!("start ({start}) is greater than end ({end})"),
            ));
        }
        let chunk_span = source
            .chunk
            .as_ref()
            .map_or(range_span.clone(), |c| c.span());
        let chunk = match source.chunk {
            None => (end - start).div_ceil(DEFAULT_CHUNKS).max(1),
            Some(chunk) => match chunk.get_ref() {
                RawChunk::Count(n) if *n > 0 => *n as u64,
                RawChunk::Count(n) => {
                    return Err(self.error(
                        chunk.span(),
                        "source.chunk",
                        format!("must be a positive number of items, got {n}"),
                    ));
                }
                RawChunk::Text(t) if t == "auto" => {
                    return Err(self.error(
                        chunk.span(),
                        "source.chunk",
                        "`chunk = \"auto\"` is not supported by this version of supervisor; \
                         give the number of items per chunk",
                    ));
                }
                RawChunk::Text(t) => {
                    return Err(self.error(
                        chunk.span(),
                        "source.chunk",
                        format!(
                            "for a `range` source, `chunk` counts items: use a positive integer, not \"{t}\""
                        ),
                    ));
                }
            },
        };
        let chunks = (end - start).div_ceil(chunk);
        if chunks > MAX_CHUNKS {
            return Err(self.error(
                chunk_span,
                "source.chunk",
                format!(
                    "{chunks} chunks is more than the {MAX_CHUNKS} a job may have \
                     (resume keeps a bit per chunk): use larger chunks"
                ),
            ));
        }
        Ok((Source::Range { start, end }, chunk))
    }

    fn worker(&self, worker: Spanned<RawWorker>, dir: &Path) -> Result<WorkerSpec> {
        let span = worker.span();
        let worker = worker.into_inner();
        if let Some(exec) = &worker.exec {
            return self.unsupported(exec.span(), "worker.exec");
        }
        if let Some(stdin) = &worker.stdin {
            return self.unsupported(stdin.span(), "worker.stdin");
        }
        let Some(command) = worker.command else {
            return Err(self.error(
                span,
                "worker.command",
                "missing key `command`: the worker program and its arguments, e.g. [\"squares-worker\"]",
            ));
        };
        let Some((program, args)) = command.get_ref().split_first() else {
            return Err(self.error(
                command.span(),
                "worker.command",
                "must not be empty: give the worker program and its arguments",
            ));
        };
        let program = resolve_program(program, dir)
            .map_err(|message| self.error(command.span(), "worker.command", message))?;
        let args = args.to_vec();

        let mut env = Vec::new();
        for (name, value) in worker.env.unwrap_or_default() {
            let key = format!("worker.env.{name}");
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(self.error(
                    value.span(),
                    key,
                    "an environment variable name must be non-empty and contain no `=` or NUL",
                ));
            }
            if value.get_ref().contains('\0') {
                return Err(self.error(value.span(), key, "the value must not contain NUL"));
            }
            env.push((name, value.into_inner()));
        }

        let params_json = match worker.params {
            None => "{}".to_owned(),
            Some(params) => {
                let json = table_to_json(params.get_ref(), "worker.params")
                    .map_err(|(key, message)| self.error(params.span(), key, message))?;
                serde_json::Value::Object(json).to_string()
            }
        };

        let timeout = match &worker.timeout {
            Some(t) => self.duration(t, "worker.timeout")?,
            None => DEFAULT_TIMEOUT,
        };
        let start_timeout = match &worker.start_timeout {
            Some(t) => self.duration(t, "worker.start_timeout")?,
            None => DEFAULT_START_TIMEOUT,
        };
        let retries = match &worker.retries {
            Some(r) => self.int_in(r, "worker.retries", 0..=MAX_RETRIES)? as u32,
            None => DEFAULT_RETRIES,
        };
        let max_chunks = match &worker.max_chunks {
            Some(m) => self.int_in(m, "worker.max_chunks", 0..=i64::MAX)? as u64,
            None => 0,
        };
        let memory_limit = match &worker.memory_limit {
            Some(limit) => Some(
                size::memory_limit(limit.get_ref())
                    .map_err(|message| self.error(limit.span(), "worker.memory_limit", message))?,
            ),
            None => None,
        };
        Ok(WorkerSpec {
            program,
            args,
            env,
            params_json,
            timeout: Some(timeout),
            start_timeout,
            retries,
            max_chunks,
            memory_limit,
        })
    }

    fn supervisor(
        &self,
        raw: Option<RawSupervisor>,
        workers_override: Option<usize>,
    ) -> Result<SupervisorSpec> {
        let Some(raw) = raw else {
            return Ok(SupervisorSpec {
                workers: workers_override.unwrap_or_else(available_workers),
                restart: DEFAULT_RESTART,
                drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            });
        };
        if let Some(max_failed) = &raw.max_failed {
            return self.unsupported(max_failed.span(), "supervisor.max_failed");
        }
        let from_file = match &raw.workers {
            Some(w) => Some(self.int_in(w, "supervisor.workers", 1..=MAX_WORKERS)? as usize),
            None => None,
        };
        let restart = match &raw.restart {
            Some(r) => RestartPolicy {
                max: self.int_in(&r.max, "supervisor.restart.max", 0..=i64::from(u32::MAX))? as u32,
                within: self.duration(&r.within, "supervisor.restart.within")?,
            },
            None => DEFAULT_RESTART,
        };
        let drain_timeout = match &raw.drain_timeout {
            Some(d) => self.duration(d, "supervisor.drain_timeout")?,
            None => DEFAULT_DRAIN_TIMEOUT,
        };
        Ok(SupervisorSpec {
            workers: workers_override
                .or(from_file)
                .unwrap_or_else(available_workers),
            restart,
            drain_timeout,
        })
    }

    fn output(&self, raw: Option<RawOutput>, dir: &Path, name: &str) -> Result<OutputSpec> {
        let raw = raw.unwrap_or(RawOutput {
            path: None,
            format: None,
            order: None,
        });
        let path = match &raw.path {
            Some(p) if p.get_ref() == "-" => OutputPath::Stdout,
            Some(p) => OutputPath::File(resolve(dir, self.non_empty_path(p, "output.path")?)),
            None => OutputPath::File(dir.join(format!("{name}.jsonl"))),
        };
        let format = match &raw.format {
            None => OutputFormat::Jsonl,
            Some(f) => match f.get_ref() {
                RawFormat::Jsonl => OutputFormat::Jsonl,
                RawFormat::Raw => {
                    return Err(self.error(
                        f.span(),
                        "output.format",
                        "`format = \"raw\"` is not supported by this version of supervisor; use \"jsonl\"",
                    ));
                }
            },
        };
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

    fn non_empty_path<'s>(&self, value: &'s Spanned<String>, key: &str) -> Result<&'s Path> {
        if value.get_ref().is_empty() {
            return Err(self.error(value.span(), key, "must not be empty"));
        }
        Ok(Path::new(value.get_ref()))
    }

    fn int_in(&self, value: &Spanned<i64>, key: &str, range: RangeInclusive<i64>) -> Result<i64> {
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

    fn duration(&self, value: &Spanned<String>, key: &str) -> Result<Duration> {
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

fn available_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Workers receive params as JSON; TOML datetimes have no JSON form, so they
/// travel as their TOML text.
fn table_to_json(
    table: &toml::Table,
    key: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, (String, String)> {
    table
        .iter()
        .map(|(k, v)| Ok((k.clone(), value_to_json(v, &format!("{key}.{k}"))?)))
        .collect()
}

fn value_to_json(value: &toml::Value, key: &str) -> Result<serde_json::Value, (String, String)> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => J::Number(n),
            None => return Err((key.to_owned(), format!("{f} cannot be passed as JSON"))),
        },
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{key}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => J::Object(table_to_json(t, key)?),
    })
}
