//! The lines of a shard's failed file that belong to the chunks its journal
//! says failed: for each, the last line written for it (a run that crashed
//! after writing a line but before its journal record ran the chunk again,
//! which may have written another).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead as _, BufReader};
use std::path::Path;

use fixedbitset::FixedBitSet;

/// For each failed chunk (`failed` holds indices less `first`), where its
/// line is in the file at `path`: `(offset, length)` without the newline.
/// Lines that are not a failed chunk's record (a torn last line) are passed
/// over. Memory: one entry per failed chunk.
pub fn lines_of(
    path: &Path,
    failed: &FixedBitSet,
    first: u64,
) -> io::Result<BTreeMap<u64, (u64, u64)>> {
    #[derive(serde::Deserialize)]
    struct Line {
        index: u64,
    }
    let mut lines = BTreeMap::new();
    let mut reader = BufReader::with_capacity(1 << 16, File::open(path)?);
    let mut line = Vec::new();
    let mut offset = 0u64;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Ok(Line { index }) = serde_json::from_slice(text)
            && index >= first
            && failed.contains((index - first) as usize)
        {
            lines.insert(index, (offset, text.len() as u64));
        }
        offset += read as u64;
    }
    Ok(lines)
}
