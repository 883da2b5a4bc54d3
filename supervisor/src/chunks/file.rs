//! A `file` source: byte ranges of about `chunk` bytes, each boundary just
//! after a delimiter, found lazily with positioned reads.

// Stub: being written.
#[derive(Debug)]
pub struct FileChunks;
