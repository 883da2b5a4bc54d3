//! Stage one: the job file as written. Every table denies unknown keys;
//! values that need checks beyond their type keep their span for the error.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};
use toml::Spanned;

use super::error::{ConfigError, JobText};

/// Parses `text` into the raw shape; the only place TOML is read.
pub(super) fn parse(text: &JobText<'_>) -> Result<RawJobFile, ConfigError> {
    let deserializer =
        toml::de::Deserializer::parse(text.text).map_err(|e| text.syntax_error(&e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| text.shape_error(&e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJobFile {
    pub(super) job: Option<RawJob>,
    pub(super) source: Option<Spanned<RawSource>>,
    pub(super) worker: Option<Spanned<RawWorker>>,
    pub(super) supervisor: Option<RawSupervisor>,
    pub(super) output: Option<RawOutput>,
    pub(super) state: Option<RawState>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub(super) name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) range: Option<Spanned<RawRange>>,
    pub(super) file: Option<Spanned<RawFileSource>>,
    pub(super) lines: Option<Spanned<RawLinesSource>>,
    pub(super) chunk: Option<Spanned<RawChunk>>,
    /// With `chunk = "auto"`: how long a chunk should take.
    pub(super) target: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRange {
    pub(super) start: Spanned<i64>,
    pub(super) end: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFileSource {
    pub(super) path: Spanned<String>,
    pub(super) delimiter: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLinesSource {
    pub(super) path: Spanned<String>,
}

/// `chunk` is an item count for a range but a byte size or `"auto"` for other
/// sources, so both shapes are accepted here and judged against the source.
pub(super) enum RawChunk {
    Count(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawChunk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChunkVisitor;

        impl Visitor<'_> for ChunkVisitor {
            type Value = RawChunk;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive integer")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawChunk, E> {
                Ok(RawChunk::Count(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawChunk, E> {
                i64::try_from(v)
                    .map(RawChunk::Count)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawChunk, E> {
                Ok(RawChunk::Text(v.to_owned()))
            }
        }

        deserializer.deserialize_any(ChunkVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorker {
    pub(super) command: Option<Spanned<Vec<String>>>,
    /// Each word spanned, so an error can point at the one that is wrong.
    pub(super) exec: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) stdin: Option<Spanned<RawStdin>>,
    pub(super) success_exit: Option<Spanned<Vec<Spanned<i64>>>>,
    pub(super) env: Option<BTreeMap<String, Spanned<String>>>,
    pub(super) params: Option<Spanned<toml::Table>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) start_timeout: Option<Spanned<String>>,
    pub(super) retries: Option<Spanned<i64>>,
    pub(super) max_chunks: Option<Spanned<i64>>,
    /// Any TOML value, so that a bare number can be refused with a message
    /// that asks for a unit rather than serde's "expected a string".
    pub(super) memory_limit: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSupervisor {
    pub(super) workers: Option<Spanned<i64>>,
    pub(super) restart: Option<RawRestart>,
    pub(super) drain_timeout: Option<Spanned<String>>,
    pub(super) max_failed: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRestart {
    pub(super) max: Spanned<i64>,
    pub(super) within: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutput {
    pub(super) path: Option<Spanned<String>>,
    pub(super) format: Option<Spanned<RawFormat>>,
    pub(super) order: Option<Spanned<RawOrder>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawStdin {
    Chunk,
    None,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawFormat {
    Jsonl,
    Raw,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawOrder {
    Index,
    Completion,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) dir: Option<Spanned<String>>,
}
