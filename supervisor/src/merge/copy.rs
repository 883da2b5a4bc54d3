//! Copying byte ranges from a shard's output into the merged output: in the
//! kernel with `copy_file_range` where the file systems allow it (no bytes
//! pass through user space; some file systems share the blocks), else
//! through one buffer. Contiguous records are copied as one range.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::FileExt as _;

/// Bytes asked of the kernel in one call: large enough that calls cost
/// nothing, small enough to stay below every platform's limit.
const KERNEL_STEP: usize = 1 << 30;
/// The buffer when the kernel cannot copy.
const BUFFER: usize = 1 << 20;

/// Appends ranges of one file to another at given offsets.
pub struct Copier {
    in_kernel: bool,
    buffer: Vec<u8>,
}

impl Copier {
    pub fn new() -> Self {
        Self {
            in_kernel: true,
            buffer: Vec::new(),
        }
    }

    /// Copies `len` bytes of `from` at `offset` into `to` at `at`. A source
    /// that ends before the range does is an error.
    pub fn copy(
        &mut self,
        from: &File,
        offset: u64,
        len: u64,
        to: &File,
        at: u64,
    ) -> io::Result<()> {
        let (mut offset, mut len, mut at) = (offset, len, at);
        while len > 0 && self.in_kernel {
            match copy_in_kernel(from, offset, len, to, at) {
                Ok(0) => return Err(ended_early(offset)),
                Ok(n) => {
                    let n = n as u64;
                    offset += n;
                    at += n;
                    len -= n;
                }
                // Across file systems (older kernels), on a file system or
                // kernel that cannot: the buffer does it, from here on.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(
                            libc::EXDEV
                                | libc::EINVAL
                                | libc::ENOSYS
                                | libc::EOPNOTSUPP
                                | libc::EPERM
                        )
                    ) =>
                {
                    self.in_kernel = false
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if len > 0 && self.buffer.is_empty() {
            self.buffer = vec![0; BUFFER];
        }
        while len > 0 {
            let want = self
                .buffer
                .len()
                .min(usize::try_from(len).unwrap_or(usize::MAX));
            let n = match from.read_at(&mut self.buffer[..want], offset) {
                Ok(0) => return Err(ended_early(offset)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            to.write_all_at(&self.buffer[..n], at)?;
            offset += n as u64;
            at += n as u64;
            len -= n as u64;
        }
        Ok(())
    }

    /// Whether every copy so far stayed in the kernel.
    pub fn in_kernel(&self) -> bool {
        self.in_kernel
    }
}

fn copy_in_kernel(from: &File, offset: u64, len: u64, to: &File, at: u64) -> io::Result<usize> {
    let (Ok(mut off_in), Ok(mut off_out)) = (i64::try_from(offset), i64::try_from(at)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let step = usize::try_from(len).unwrap_or(usize::MAX).min(KERNEL_STEP);
    // SAFETY: both descriptors are open files borrowed for the call, and the
    // offsets are valid `loff_t`s the kernel reads and updates.
    let copied = unsafe {
        libc::copy_file_range(
            from.as_raw_fd(),
            &mut off_in,
            to.as_raw_fd(),
            &mut off_out,
            step,
            0,
        )
    };
    if copied < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(copied as usize)
}

fn ended_early(offset: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the shard's output ends at byte {offset}, before its journal says it does"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> File {
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(bytes, 0).unwrap();
        file
    }

    fn contents(file: &File) -> Vec<u8> {
        let mut bytes = vec![0; file.metadata().unwrap().len() as usize];
        file.read_exact_at(&mut bytes, 0).unwrap();
        bytes
    }

    #[test]
    fn ranges_land_where_they_are_told_by_either_path() {
        for in_kernel in [true, false] {
            let from = file_with(b"0123456789");
            let to = tempfile::tempfile().unwrap();
            let mut copier = Copier::new();
            copier.in_kernel = in_kernel;
            copier.copy(&from, 5, 3, &to, 0).unwrap();
            copier.copy(&from, 0, 2, &to, 3).unwrap();
            copier.copy(&from, 9, 0, &to, 5).unwrap();
            assert_eq!(contents(&to), b"56701");
        }
    }

    #[test]
    fn a_source_that_ends_early_is_an_error() {
        for in_kernel in [true, false] {
            let from = file_with(b"0123");
            let to = tempfile::tempfile().unwrap();
            let mut copier = Copier::new();
            copier.in_kernel = in_kernel;
            let error = copier.copy(&from, 2, 5, &to, 0).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
