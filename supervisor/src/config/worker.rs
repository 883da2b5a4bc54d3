//! The `[worker]` table: the program (a `command`, or an `exec` command
//! under its host), its environment, params, timeouts and retries.

use std::path::Path;

use toml::Spanned;

use super::error::{ConfigError, JobText};
use super::job::{Source, WorkerSpec};
use super::paths::resolve_program;
use super::raw::{RawStdin, RawWorker};
use super::{defaults, size};

/// The program that runs an `exec` job's command once per chunk.
const EXEC_HOST: &str = "exec-worker";
const MAX_RETRIES: i64 = 1000;

type Result<T, E = ConfigError> = std::result::Result<T, E>;

impl JobText<'_> {
    pub(super) fn worker(
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
    pub(super) fn exec(
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
