//! The `[source]` table and `chunk`: what the job is cut into, and how many
//! chunks that makes.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::error::{ConfigError, JobText};
use super::job::{AutoChunk, InputFile, Source};
use super::paths::resolve;
use super::raw::{RawChunk, RawSource};
use super::{defaults, size};

use super::defaults::MAX_CHUNKS;

type Result<T, E = ConfigError> = std::result::Result<T, E>;

impl JobText<'_> {
    pub(super) fn source(
        &self,
        source: Spanned<RawSource>,
        dir: &Path,
        one_line: bool,
    ) -> Result<(Source, u64, Option<AutoChunk>)> {
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
        let target = source.target;
        let (mut source, source_span, chunk) = if let Some(file) = source.file {
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
            let chunks = match chunk {
                Some(chunk) => {
                    let most = crate::chunks::FileChunks::most_chunks(input.size, chunk);
                    if most > MAX_CHUNKS {
                        return Err(
                            self.too_many_chunks(most, chunk_span.clone().unwrap_or(file_span))
                        );
                    }
                    crate::chunks::FileChunks::count(&input.path, delimiter.clone(), chunk)
                        .map_err(|e| {
                            self.error(
                                file.path.span(),
                                "source.file.path",
                                format!("cannot read {}: {e}", input.path.display()),
                            )
                        })?
                }
                // Cut as the run goes, so there is nothing to count; the
                // bound is set below, once the smallest chunk is known.
                None => 0,
            };
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
                Some(self.one_line_chunk(chunk.as_ref())?)
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
        let auto = self.auto(chunk, target.as_ref())?;
        // With "auto" the smallest chunk is what keeps the count within bounds.
        let chunk = chunk.unwrap_or_else(|| source.units().div_ceil(MAX_CHUNKS).max(1));
        if auto.is_some()
            && let Source::File { input, chunks, .. } = &mut source
        {
            *chunks = crate::chunks::FileChunks::most_chunks(input.size, chunk);
        }
        let chunks = source.chunk_count(chunk);
        if chunks > MAX_CHUNKS {
            return Err(self.too_many_chunks(chunks, chunk_span.unwrap_or(source_span)));
        }
        Ok((source, chunk, auto))
    }

    /// `chunk = "auto"` (`chunk` is `None` then) and its `target`, which
    /// means nothing with a fixed chunk.
    fn auto(
        &self,
        chunk: Option<u64>,
        target: Option<&Spanned<String>>,
    ) -> Result<Option<AutoChunk>> {
        match (chunk, target) {
            (Some(_), None) => Ok(None),
            (Some(_), Some(target)) => Err(self.error(
                target.span(),
                "source.target",
                "`target` goes with `chunk = \"auto\"`: it is how long an automatic chunk \
                 should take; a fixed chunk has its size already",
            )),
            (None, target) => Ok(Some(AutoChunk {
                target: match target {
                    Some(target) => self.duration(target, "source.target")?,
                    None => defaults::AUTO_TARGET,
                },
            })),
        }
    }

    pub(super) fn too_many_chunks(&self, chunks: u64, span: Range<usize>) -> ConfigError {
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
    pub(super) fn input_file(
        &self,
        path: &Spanned<String>,
        key: &str,
        dir: &Path,
    ) -> Result<InputFile> {
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
    /// a positive integer, or about 1024 chunks by default; `None` for
    /// `"auto"`. `source` and `unit` name them in messages.
    pub(super) fn count_chunk(
        &self,
        chunk: Option<&Spanned<RawChunk>>,
        total: u64,
        source: &str,
        unit: &str,
    ) -> Result<Option<u64>> {
        let Some(chunk) = chunk else {
            return Ok(Some(total.div_ceil(defaults::CHUNKS).max(1)));
        };
        match chunk.get_ref() {
            RawChunk::Count(n) if *n > 0 => Ok(Some(*n as u64)),
            RawChunk::Count(n) => Err(self.error(
                chunk.span(),
                "source.chunk",
                format!("must be a positive number of {unit}, got {n}"),
            )),
            RawChunk::Text(t) if t == "auto" => Ok(None),
            RawChunk::Text(t) => Err(self.error(
                chunk.span(),
                "source.chunk",
                format!(
                    "for a `{source}` source, `chunk` counts {unit}: use a positive integer or \"auto\", not \"{t}\""
                ),
            )),
        }
    }

    /// `chunk` for a `file` source: bytes, as an integer or a size with a
    /// unit; by default about 256 chunks of 64 KiB to 16 MiB; `None` for
    /// `"auto"`.
    pub(super) fn file_chunk(
        &self,
        chunk: Option<&Spanned<RawChunk>>,
        size: u64,
    ) -> Result<Option<u64>> {
        let Some(chunk) = chunk else {
            return Ok(Some(
                size.div_ceil(defaults::FILE_CHUNKS)
                    .clamp(defaults::MIN_FILE_CHUNK, defaults::MAX_FILE_CHUNK),
            ));
        };
        let bytes = match chunk.get_ref() {
            RawChunk::Count(n) => *n,
            RawChunk::Text(t) if t == "auto" => return Ok(None),
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
        Ok(Some(bytes as u64))
    }
}
