//! Stage two: the raw job file checked against the rules and turned into a
//! [`Job`], with defaults filled in and paths resolved.

use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, JobText};
use super::exec;
use super::job::{
    InputFile, Job, MaxFailed, Order, OutputFormat, OutputPath, OutputSpec, RestartPolicy, Source,
    SupervisorSpec, WorkerSpec,
};
use super::paths::{job_dir, resolve, resolve_program};
use super::raw::{
    self, RawChunk, RawFormat, RawJob, RawJobFile, RawOrder, RawOutput, RawSource, RawStdin,
    RawSupervisor, RawWorker,
};
use super::{defaults, places, size};

/// The most chunks a job may have: resume keeps two bits per chunk in memory
/// (done, failed), 256 MiB at this count.
const MAX_CHUNKS: u64 = 1 << 30;

/// The program that runs an `exec` job's command once per chunk.
const EXEC_HOST: &str = "exec-worker";
const MAX_RETRIES: i64 = 1000;
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
        let (source, chunk) = self.source(source, &dir, one_line)?;
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

    fn source(
        &self,
        source: Spanned<RawSource>,
        dir: &Path,
        one_line: bool,
    ) -> Result<(Source, u64)> {
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
        let chunk = source.chunk;
        let chunk_span = chunk.as_ref().map(Spanned::span);
        let (source, source_span, chunk) = if let Some(file) = source.file {
            let file_span = file.span();
            let file = file.into_inner();
            let input = self.input_file(&file.path, "source.file.path", dir)?;
            let delimiter = match &file.delimiter {
                Some(d) if d.get_ref().is_empty() => {
                    return Err(self.error(
                        d.span(),
                        "source.file.delimiter",
                        "must not be empty: records end with it (the default is \"\\n\")",
                    ));
                }
                Some(d) => d.get_ref().as_bytes().to_vec(),
                None => b"\n".to_vec(),
            };
            let chunk = self.file_chunk(chunk.as_ref(), input.size)?;
            let most = crate::chunks::FileChunks::most_chunks(input.size, chunk);
            if most > MAX_CHUNKS {
                return Err(self.too_many_chunks(most, chunk_span.clone().unwrap_or(file_span)));
            }
            let chunks = crate::chunks::FileChunks::count(&input.path, delimiter.clone(), chunk)
                .map_err(|e| {
                    self.error(
                        file.path.span(),
                        "source.file.path",
                        format!("cannot read {}: {e}", input.path.display()),
                    )
                })?;
            let source = Source::File {
                input,
                delimiter,
                chunks,
            };
            (source, file_span, chunk)
        } else if let Some(lines) = source.lines {
            let lines_span = lines.span();
            let lines = lines.into_inner();
            let input = self.input_file(&lines.path, "source.lines.path", dir)?;
            let count = crate::chunks::count_lines(&input.path).map_err(|e| {
                self.error(
                    lines.path.span(),
                    "source.lines.path",
                    format!("cannot read {}: {e}", input.path.display()),
                )
            })?;
            let chunk = if one_line {
                self.one_line_chunk(chunk.as_ref())?
            } else {
                self.count_chunk(chunk.as_ref(), count.lines, "lines", "lines")?
            };
            let source = Source::Lines {
                input,
                lines: count.lines,
            };
            (source, lines_span, chunk)
        } else {
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
            let chunk = self.count_chunk(chunk.as_ref(), end - start, "range", "items")?;
            (Source::Range { start, end }, range_span, chunk)
        };
        let chunks = source.chunk_count(chunk);
        if chunks > MAX_CHUNKS {
            return Err(self.too_many_chunks(chunks, chunk_span.unwrap_or(source_span)));
        }
        Ok((source, chunk))
    }

    fn too_many_chunks(&self, chunks: u64, span: Range<usize>) -> ConfigError {
        self.error(
            span,
            "source.chunk",
            format!(
                "{chunks} chunks is more than the {MAX_CHUNKS} a job may have \
                 (resume keeps a bit per chunk): use larger chunks"
            ),
        )
    }

    /// The input file of a `file` or `lines` source: it must exist, be a
    /// regular file, and have a UTF-8 path (workers are handed it as text).
    fn input_file(&self, path: &Spanned<String>, key: &str, dir: &Path) -> Result<InputFile> {
        let resolved = resolve(dir, self.non_empty_path(path, key)?);
        // Through every link to the file itself: workers open the path in
        // their own processes, where `/dev/stdin` is not the supervisor's.
        let resolved = resolved.canonicalize().unwrap_or(resolved);
        let fail = |message: String| self.error(path.span(), key, message);
        let meta = std::fs::metadata(&resolved).map_err(|e| {
            fail(match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!(
                        "the input file does not exist (looked for {})",
                        resolved.display()
                    )
                }
                _ => format!("cannot read the input file {}: {e}", resolved.display()),
            })
        })?;
        if !meta.is_file() {
            return Err(fail(format!(
                "{} is not a regular file: a `file` or `lines` source is cut by byte offsets",
                resolved.display()
            )));
        }
        if let Err(e) = std::fs::File::open(&resolved) {
            return Err(fail(format!(
                "cannot read the input file {}: {e}",
                resolved.display()
            )));
        }
        if resolved.to_str().is_none() {
            return Err(fail(format!(
                "the path {} is not valid UTF-8, and workers are handed it as text",
                resolved.display()
            )));
        }
        Ok(InputFile {
            path: resolved,
            size: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    /// `chunk` for a source that counts things (`items` of a range, `lines`):
    /// a positive integer, or about 1024 chunks by default. `source` and
    /// `unit` name them in messages.
    fn count_chunk(
        &self,
        chunk: Option<&Spanned<RawChunk>>,
        total: u64,
        source: &str,
        unit: &str,
    ) -> Result<u64> {
        let Some(chunk) = chunk else {
            return Ok(total.div_ceil(defaults::CHUNKS).max(1));
        };
        match chunk.get_ref() {
            RawChunk::Count(n) if *n > 0 => Ok(*n as u64),
            RawChunk::Count(n) => Err(self.error(
                chunk.span(),
                "source.chunk",
                format!("must be a positive number of {unit}, got {n}"),
            )),
            RawChunk::Text(t) if t == "auto" => Err(self.auto_chunk(chunk.span(), unit)),
            RawChunk::Text(t) => Err(self.error(
                chunk.span(),
                "source.chunk",
                format!(
                    "for a `{source}` source, `chunk` counts {unit}: use a positive integer, not \"{t}\""
                ),
            )),
        }
    }

    /// `chunk` for a `file` source: bytes, as an integer or a size with a
    /// unit; by default about 256 chunks of 64 KiB to 16 MiB.
    fn file_chunk(&self, chunk: Option<&Spanned<RawChunk>>, size: u64) -> Result<u64> {
        let Some(chunk) = chunk else {
            return Ok(size
                .div_ceil(defaults::FILE_CHUNKS)
                .clamp(defaults::MIN_FILE_CHUNK, defaults::MAX_FILE_CHUNK));
        };
        let bytes = match chunk.get_ref() {
            RawChunk::Count(n) => *n,
            RawChunk::Text(t) if t == "auto" => return Err(self.auto_chunk(chunk.span(), "bytes")),
            RawChunk::Text(t) => {
                let bytes = size::parse(t)
                    .map_err(|message| self.error(chunk.span(), "source.chunk", message))?;
                i64::try_from(bytes).unwrap_or(i64::MAX)
            }
        };
        if bytes <= 0 {
            return Err(self.error(
                chunk.span(),
                "source.chunk",
                format!("must be a positive number of bytes, got {bytes}"),
            ));
        }
        Ok(bytes as u64)
    }

    fn auto_chunk(&self, span: Range<usize>, unit: &str) -> ConfigError {
        self.error(
            span,
            "source.chunk",
            format!(
                "`chunk = \"auto\"` is not supported by this version of supervisor; \
                 give the number of {unit} per chunk"
            ),
        )
    }

    fn worker(
        &self,
        worker: Spanned<RawWorker>,
        dir: &Path,
        source: &Source,
    ) -> Result<WorkerSpec> {
        let span = worker.span();
        let worker = worker.into_inner();
        let as_json = |words: &[String]| serde_json::to_string(words).expect("strings serialize");
        let mut written = Vec::new();
        if let Some(command) = &worker.command {
            written.push(("worker.command".to_owned(), as_json(command.get_ref())));
        }
        if let Some(exec) = &worker.exec {
            let words: Vec<String> = exec.get_ref().iter().map(|w| w.get_ref().clone()).collect();
            written.push(("worker.exec".to_owned(), as_json(&words)));
            let stdin = match worker.stdin.as_ref().map(Spanned::get_ref) {
                Some(RawStdin::Chunk) => "chunk",
                _ => "none",
            };
            written.push(("worker.stdin".to_owned(), stdin.to_owned()));
        }
        let (program, args) = match (worker.command, worker.exec) {
            (Some(_), Some(exec)) => {
                return Err(self.error(
                    exec.span(),
                    "worker.exec",
                    "`command` and `exec` are both set: `command` is a program that speaks the \
                     worker protocol, `exec` a command run once per chunk; set one",
                ));
            }
            (None, None) => {
                return Err(self.error(
                    span,
                    "worker.command",
                    "missing key `command`: the worker program and its arguments, e.g. \
                     [\"squares-worker\"] (or `exec`, a command run once per chunk)",
                ));
            }
            (Some(command), None) => {
                if let Some(list) = &worker.success_exit {
                    return Err(self.success_exit_without_exec(list.span()));
                }
                if let Some(stdin) = &worker.stdin {
                    return Err(self.error(
                        stdin.span(),
                        "worker.stdin",
                        "`stdin` goes with `exec`: a `command` worker reads its input itself",
                    ));
                }
                let Some((program, args)) = command.get_ref().split_first() else {
                    return Err(self.error(
                        command.span(),
                        "worker.command",
                        "must not be empty: give the worker program and its arguments",
                    ));
                };
                let program = resolve_program(program, dir)
                    .map_err(|message| self.error(command.span(), "worker.command", message))?;
                (program, args.to_vec())
            }
            (None, Some(exec)) => self.exec(
                &exec,
                worker.stdin.as_ref(),
                worker.success_exit.as_ref(),
                dir,
                source,
            )?,
        };

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
                let json = serde_json::Value::Object(json).to_string();
                if json.len() > protocol::codec::MAX_WELCOME_PARAMS {
                    return Err(self.error(
                        params.span(),
                        "worker.params",
                        format!(
                            "{} bytes as JSON: more than a worker can be handed when it starts \
                             (at most {}); put large data in a file and pass its path",
                            json.len(),
                            protocol::codec::MAX_WELCOME_PARAMS
                        ),
                    ));
                }
                json
            }
        };

        let timeout = match &worker.timeout {
            Some(t) => self.duration(t, "worker.timeout")?,
            None => defaults::TIMEOUT,
        };
        let start_timeout = match &worker.start_timeout {
            Some(t) => self.duration(t, "worker.start_timeout")?,
            None => defaults::START_TIMEOUT,
        };
        let retries = match &worker.retries {
            Some(r) => self.int_in(r, "worker.retries", 0..=MAX_RETRIES)? as u32,
            None => defaults::RETRIES,
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
            written,
            cwd: dir.to_path_buf(),
            env,
            params_json,
            timeout: Some(timeout),
            start_timeout,
            retries,
            max_chunks,
            memory_limit,
        })
    }

    /// An `exec` job: its command, resolved and checked against the source,
    /// run once per chunk by the `exec-worker` host, which speaks the protocol.
    fn exec(
        &self,
        exec: &Spanned<Vec<Spanned<String>>>,
        stdin: Option<&Spanned<RawStdin>>,
        success_exit: Option<&Spanned<Vec<Spanned<i64>>>>,
        dir: &Path,
        source: &Source,
    ) -> Result<(std::path::PathBuf, Vec<String>)> {
        let fail = |message: String| self.error(exec.span(), "worker.exec", message);
        let Some((program, args)) = exec.get_ref().split_first() else {
            return Err(fail(
                "must not be empty: give the command to run for each chunk and its arguments"
                    .to_owned(),
            ));
        };
        let program = resolve_program(program.get_ref(), dir).map_err(fail)?;
        self.exec_args(args, source)?;
        let success = success_exit
            .map(|list| self.success_exit(list))
            .transpose()?
            .flatten();
        let stdin_mode = match stdin {
            Some(s) if *s.get_ref() == RawStdin::Chunk => {
                if matches!(source, Source::Range { .. }) {
                    return Err(self.error(
                        s.span(),
                        "worker.stdin",
                        "`stdin = \"chunk\"` needs an input file, but the source is a `range`",
                    ));
                }
                "chunk"
            }
            _ => "none",
        };
        let host = resolve_program(EXEC_HOST, dir).map_err(|message| {
            fail(format!(
                "`exec` runs each chunk's command through `{EXEC_HOST}`, which is missing: {message}"
            ))
        })?;
        let mut host_args = vec!["--stdin".to_owned(), stdin_mode.to_owned()];
        if let Some(statuses) = success {
            let list: Vec<String> = statuses.iter().map(u8::to_string).collect();
            host_args.extend(["--success-exit".to_owned(), list.join(",")]);
        }
        host_args.push("--".to_owned());
        host_args.push(program.to_string_lossy().into_owned());
        host_args.extend(args.iter().map(|word| word.get_ref().clone()));
        Ok((host, host_args))
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
    fn places(
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

    fn state_folder(&self, state_dir: &Path, state_span: Range<usize>) -> Result<()> {
        if let Some(reason) = places::not_a_folder(state_dir) {
            return Err(self.error(
                state_span,
                "state.dir",
                format!("{reason}: the state folder cannot be made there"),
            ));
        }
        Ok(())
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
