//! A `lines` source: `chunk` lines per chunk, as byte ranges.

// Stub: being written.
#[derive(Debug)]
pub struct LinesChunks;
#[derive(Debug)]
pub struct LineCount;
pub fn count_lines() {}
