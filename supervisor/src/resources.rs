//! What the OS tells of processes and their files: resident memory now and
//! at its peak, this process's children, a process's name and the path of an
//! open file from `/proc`, CPU time and peak memory from `getrusage`.

use std::collections::BTreeSet;

/// Resident memory of a process now, from /proc; `None` once it is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = read_proc_file(&format!("/proc/{pid}/statm"))?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// A process's resident high-water mark (VmHWM), from /proc; `None` once it
/// is gone.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    parse_vm_hwm(&read_proc_file(&format!("/proc/{pid}/status"))?)
}

/// A file of /proc, read whole in one read where it fits: its size shows as
/// 0, so `read_to_string` would start with a 32-byte read and grow from
/// there, eight reads for a process's `status` once a second per worker.
fn read_proc_file(path: &str) -> Option<String> {
    use std::io::Read;
    let mut text = String::with_capacity(4096);
    std::fs::File::open(path)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let mut words = line.split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(kib * 1024),
        Some(_) => None,
    }
}

/// This process's children, from every thread's `children` list: a child
/// is listed under the thread that started it, and an orphan handed to a
/// subreaper under one of its threads.
pub fn children() -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return found;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            found.extend(
                list.split_whitespace()
                    .filter_map(|pid| pid.parse::<u32>().ok()),
            );
        }
    }
    found
}

/// A process's name (its `comm`), empty once it is gone.
pub fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|name| name.trim_end().to_owned())
        .unwrap_or_default()
}

/// The path of an open file, for messages and for syncing its folder; Linux
/// names every open descriptor under `/proc/self/fd`.
pub fn open_file_path(file: &std::fs::File) -> std::path::PathBuf {
    use std::os::fd::AsRawFd as _;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .unwrap_or_else(|_| std::path::PathBuf::from("the output"))
}

/// CPU time and peak memory of this process or of its reaped children.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User plus system time.
    pub cpu_seconds: f64,
    pub max_rss_bytes: u64,
}

/// Whose usage [`usage`] reports.
#[derive(Debug, Clone, Copy)]
pub enum Who {
    Supervisor,
    /// Every worker the supervisor has reaped.
    Workers,
}

pub fn usage(who: Who) -> Option<Usage> {
    let who = match who {
        Who::Supervisor => libc::RUSAGE_SELF,
        Who::Workers => libc::RUSAGE_CHILDREN,
    };
    // SAFETY: rusage is plain integers, for which all zeroes is a value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live, writable rusage of the right type.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return None;
    }
    // Summed in whole microseconds (exact in an f64), so the figure carries
    // no float noise.
    let micros = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    Some(Usage {
        cpu_seconds: (micros(usage.ru_utime) + micros(usage.ru_stime)) / 1e6,
        // Linux gives it in KiB.
        max_rss_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status =
            "Name:\tsquares-worker\nVmPeak:\t   10000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn this_process_has_memory_and_a_gone_one_has_none() {
        let me = std::process::id();
        assert!(rss_bytes(me).is_some_and(|b| b > 0));
        assert!(peak_rss_bytes(me).is_some_and(|b| b > 0));
        assert_eq!(rss_bytes(u32::MAX), None);
        assert!(usage(Who::Supervisor).is_some_and(|u| u.max_rss_bytes > 0));
    }
}
