//! The input files exec-worker's tests hand the worker, and how a Welcome names them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use protocol::message::Input;

pub fn file_input(path: &Path) -> Input {
    Input::File {
        path: path.to_str().expect("a UTF-8 path").to_owned(),
    }
}

/// A file in the test's scratch folder, removed when dropped.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(contents: &[u8]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "exec-worker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, contents).expect("write a temp file");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
