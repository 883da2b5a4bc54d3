//! What a handler is given: the chunk to work on and the worker's [`Context`].

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use protocol::message::{Assign, AssignData, Input};
use serde::de::DeserializeOwned;

use crate::error::WorkerError;
use crate::inbox::Inbox;

/// One chunk of the job: the items in `[start, end)` of a range source, the
/// bytes in `[start, end)` of the input file of a `file` or `lines` source, or
/// of the supervisor's standard input for a `stdin` source (which come with
/// the chunk: [`Chunk::data`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub index: u64,
    pub start: u64,
    pub end: u64,
    /// 1 for the first attempt; a retry after a crash, hang or failure counts up.
    pub attempt: u32,
    /// The number of the chunk's first item over the whole job, from 0: for a
    /// `lines` source the number of its first line, otherwise `start`.
    pub first_item: u64,
    /// The chunk's bytes, when they came with it: for a `stdin` source,
    /// whose input the worker cannot read itself. `None` for other sources.
    pub data: Option<Vec<u8>>,
}

impl Chunk {
    /// `end - start`: items for a range, bytes for a file.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunk's bytes for a `stdin` source (`end - start` of them, whole
    /// records); `None` for other sources, whose bytes
    /// [`Context::read_chunk`] reads from the input file.
    pub fn data(&self) -> Option<&[u8]> {
        self.data.as_deref()
    }
}

impl From<Assign> for Chunk {
    fn from(a: Assign) -> Self {
        Self {
            index: a.index,
            start: a.start,
            end: a.end,
            attempt: a.attempt,
            first_item: a.first_item,
            data: None,
        }
    }
}

impl From<AssignData> for Chunk {
    fn from(a: AssignData) -> Self {
        Self {
            index: a.index,
            start: a.start,
            end: a.end,
            attempt: a.attempt,
            first_item: a.first_item,
            data: Some(a.data),
        }
    }
}

/// The worker's view of the run, the same for every chunk it serves.
#[derive(Debug)]
pub struct Context {
    worker_id: u32,
    params: String,
    input: Input,
    /// The input file, opened on first use and kept for every later chunk.
    file: OnceLock<File>,
    inbox: Arc<Inbox>,
    socket: UnixStream,
}

impl Context {
    pub(crate) fn new(
        worker_id: u32,
        params: String,
        input: Input,
        inbox: Arc<Inbox>,
        socket: UnixStream,
    ) -> Self {
        Self {
            worker_id,
            params,
            input,
            file: OnceLock::new(),
            inbox,
            socket,
        }
    }

    /// The worker's slot, 0-based; a replacement for a crashed worker gets the same number.
    pub fn worker_id(&self) -> u32 {
        self.worker_id
    }

    /// The job's `[worker] params` table as JSON text.
    pub fn params_json(&self) -> &str {
        &self.params
    }

    /// The job's `[worker] params` table, deserialized. An empty text reads as `{}`.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, WorkerError> {
        let text = match self.params.trim() {
            "" => "{}",
            text => text,
        };
        serde_json::from_str(text).map_err(WorkerError::Params)
    }

    /// The job's source: a range, the file that chunks' byte ranges lie in,
    /// or the supervisor's standard input.
    pub fn input(&self) -> &Input {
        &self.input
    }

    /// The input file of a `file` or `lines` source; `None` for a range or
    /// standard input.
    pub fn input_path(&self) -> Option<&Path> {
        match &self.input {
            Input::Range | Input::Stdin => None,
            Input::File { path } | Input::Lines { path } => Some(Path::new(path)),
        }
    }

    /// Appends the chunk's bytes (`[start, end)` of the input file) to `buf`.
    /// The file is opened once per worker and read with positioned reads, so
    /// chunks never share a file offset. For a `stdin` source, the bytes
    /// that came with the chunk.
    ///
    /// # Errors
    ///
    /// When the job has no input file, the file cannot be opened, or it ends
    /// before `end` (it changed since the supervisor cut it).
    pub fn read_chunk(&self, chunk: &Chunk, buf: &mut Vec<u8>) -> io::Result<()> {
        if let Some(data) = chunk.data() {
            buf.extend_from_slice(data);
            return Ok(());
        }
        let file = self.input_file()?;
        let len = usize::try_from(chunk.len()).map_err(io::Error::other)?;
        let at = buf.len();
        buf.resize(at + len, 0);
        let read = file.read_exact_at(&mut buf[at..], chunk.start);
        if read.is_err() {
            buf.truncate(at);
        }
        read
    }

    /// The input file, opened on first use.
    pub fn input_file(&self) -> io::Result<&File> {
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let path = self.input_path().ok_or_else(|| {
            let source = match self.input {
                Input::Stdin => "standard input, whose bytes come with each chunk",
                _ => "a range",
            };
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("the job's source is {source}: there is no input file"),
            )
        })?;
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(self.file.get_or_init(|| file))
    }

    /// True once the supervisor has cancelled the chunk running now, or has
    /// gone away. Long handlers should poll this now and then and return
    /// early: whatever they return is then answered as `Cancelled`.
    pub fn is_cancelled(&self) -> bool {
        self.inbox.is_cancelled()
    }

    /// The raw socket to the supervisor, for fault injection in tests only:
    /// anything written here bypasses framing. Answers are written between
    /// handler calls, so bytes written here never split a frame.
    #[doc(hidden)]
    pub fn raw_socket_for_tests(&self) -> &UnixStream {
        &self.socket
    }

    pub(crate) fn socket(&self) -> &UnixStream {
        &self.socket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(input: Input) -> Context {
        let (socket, _) = UnixStream::pair().unwrap();
        Context::new(0, "{}".into(), input, Arc::default(), socket)
    }

    fn chunk(start: u64, end: u64) -> Chunk {
        Chunk {
            index: 0,
            start,
            end,
            attempt: 1,
            first_item: start,
            data: None,
        }
    }

    #[test]
    fn read_chunk_appends_exactly_the_chunks_bytes() {
        let dir = std::env::temp_dir().join(format!("worker-context-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("input.txt");
        std::fs::write(&path, b"0123456789").unwrap();
        let ctx = context(Input::File {
            path: path.to_str().unwrap().to_owned(),
        });
        let mut buf = b">".to_vec();
        ctx.read_chunk(&chunk(3, 7), &mut buf).unwrap();
        ctx.read_chunk(&chunk(9, 9), &mut buf).unwrap();
        assert_eq!(buf, b">3456");
        // A range past the end (the file shrank) is an error and leaves the
        // buffer as it was.
        let err = ctx.read_chunk(&chunk(8, 12), &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(buf, b">3456");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_bytes_of_a_stdin_chunk_are_the_ones_it_came_with() {
        let ctx = context(Input::Stdin);
        assert_eq!(ctx.input_path(), None);
        let chunk = Chunk {
            data: Some(b"a\nb\n".to_vec()),
            ..chunk(10, 14)
        };
        assert_eq!(chunk.data(), Some(&b"a\nb\n"[..]));
        let mut buf = b">".to_vec();
        ctx.read_chunk(&chunk, &mut buf).unwrap();
        assert_eq!(buf, b">a\nb\n");
        let err = ctx.input_file().unwrap_err();
        assert!(err.to_string().contains("standard input"), "{err}");
    }

    #[test]
    fn a_range_job_has_no_input_file() {
        let ctx = context(Input::Range);
        assert_eq!(ctx.input_path(), None);
        let err = ctx.read_chunk(&chunk(0, 1), &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
