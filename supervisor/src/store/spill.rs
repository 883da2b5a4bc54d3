//! The reorder buffer's overflow on disk: results that must wait for their
//! turn beyond the memory budget, in a file of the state folder that has no
//! name (it goes with the process, however the process ends).

use std::fs::File;
use std::io::{self, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use crate::dispatcher::Spill;

pub struct FileSpill {
    file: File,
    /// Where the next result goes.
    end: u64,
}

impl FileSpill {
    /// An unnamed file in `dir`, which exists (the state folder).
    pub fn new_in(dir: &Path) -> io::Result<Self> {
        Ok(Self {
            file: tempfile::tempfile_in(dir)?,
            end: 0,
        })
    }
}

impl Spill for FileSpill {
    fn append(&mut self, bytes: &[u8]) -> io::Result<u64> {
        let at = self.end;
        self.file.seek(SeekFrom::Start(at))?;
        self.file.write_all(bytes)?;
        self.end += bytes.len() as u64;
        Ok(at)
    }

    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, at)
    }

    fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.end = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_as_they_went_and_the_file_empties() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = FileSpill::new_in(dir.path()).unwrap();
        let first = spill.append(b"first").unwrap();
        let second = spill.append(b"second!").unwrap();
        let mut buf = [0; 7];
        spill.read_at(second, &mut buf).unwrap();
        assert_eq!(&buf, b"second!");
        let mut buf = [0; 5];
        spill.read_at(first, &mut buf).unwrap();
        assert_eq!(&buf, b"first");
        spill.clear().unwrap();
        assert_eq!(spill.append(b"again").unwrap(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the file has no name"
        );
    }
}
