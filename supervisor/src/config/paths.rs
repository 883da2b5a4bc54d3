//! Where things are: the job's folder, paths relative to it, and the worker
//! program.

use std::path::{Path, PathBuf};

/// `path` against the job's folder, without the `.` components that would
/// otherwise show up in messages and the plan.
pub(super) fn resolve(dir: &Path, path: &Path) -> PathBuf {
    dir.join(path).components().collect()
}

/// The job file's folder, absolute. Canonical when possible so that the paths
/// derived from it do not depend on the working directory.
pub(super) fn job_dir(file: &Path) -> PathBuf {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parent
        .canonicalize()
        .or_else(|_| std::path::absolute(parent))
        .unwrap_or_else(|_| parent.to_path_buf())
}

/// Finds the worker program: a name with a `/` is a path relative to the job's
/// folder; a bare name is looked for beside the running supervisor (so workers
/// built with it are found), then on PATH.
pub(super) fn resolve_program(name: &str, dir: &Path) -> Result<PathBuf, String> {
    if name.is_empty() {
        return Err("the program name (`command[0]`) is empty".to_owned());
    }
    if name.contains('/') {
        let path = resolve(dir, Path::new(name));
        return match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "`{name}` does not exist (looked for {})",
                path.display()
            )),
            Err(e) => Err(format!("`{name}` cannot be used ({}: {e})", path.display())),
            Ok(m) if m.is_dir() => Err(format!("`{name}` is a folder ({})", path.display())),
            Ok(_) if !is_executable(&path) => {
                Err(format!("`{name}` is not executable ({})", path.display()))
            }
            Ok(_) => Ok(path),
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    if let Some(candidate) = beside.as_ref().map(|d| d.join(name))
        && is_executable(&candidate)
    {
        return Ok(candidate);
    }
    match which::which(name) {
        Ok(found) => Ok(std::path::absolute(&found).unwrap_or(found)),
        Err(_) => Err(match beside {
            Some(d) => format!(
                "`{name}` was not found beside the supervisor ({}) or on PATH",
                d.display()
            ),
            None => format!("`{name}` was not found on PATH"),
        }),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
