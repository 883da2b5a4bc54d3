//! Writing the report file: whole or not at all, and durable.

use std::io;
use std::path::Path;

use super::schema::Report;
use crate::durable;

/// Writes the report so that a reader sees the old file or the new one,
/// never half of one, and the new one survives a crash once this returns.
pub fn write_report(path: &Path, report: &Report) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(report).map_err(io::Error::other)?;
    bytes.push(b'\n');
    durable::replace(path, &bytes)
}
