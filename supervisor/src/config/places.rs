//! Where a run writes, checked at load: the output and the state folder must
//! be creatable, and neither may be the other, the job file or the input,
//! so that a run never destroys its own state or what it is made from.

use std::io;
use std::path::{Path, PathBuf};

/// Why a place cannot be used, in words that complete "… : ".
pub fn not_a_folder(dir: &Path) -> Option<String> {
    for ancestor in dir.ancestors() {
        if ancestor.as_os_str().is_empty() {
            return None;
        }
        let meta = match std::fs::symlink_metadata(ancestor) {
            Ok(meta) => meta,
            // Missing, or under a file: what is wrong shows further up.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue;
            }
            Err(e) => return Some(format!("{} cannot be looked at: {e}", ancestor.display())),
        };
        if meta.is_dir() {
            return None;
        }
        if meta.file_type().is_symlink() {
            return match std::fs::metadata(ancestor) {
                Ok(target) if target.is_dir() => None,
                Ok(_) => Some(format!(
                    "{} is a link to something that is not a folder",
                    ancestor.display()
                )),
                Err(_) => Some(format!("{} is a link to nothing", ancestor.display())),
            };
        }
        return Some(format!("{} is a file, not a folder", ancestor.display()));
    }
    None
}

/// Whether `path` lies inside `dir`, comparing them as they will be
/// resolved: through the symbolic links of whatever part already exists.
pub fn is_inside(path: &Path, dir: &Path) -> bool {
    let path = resolved(path);
    let dir = resolved(dir);
    path.starts_with(&dir)
}

/// `path` with its longest existing prefix canonicalized and the rest kept.
fn resolved(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut cursor = path;
    loop {
        if let Ok(real) = cursor.canonicalize() {
            return missing.iter().rev().fold(real, |acc, part| acc.join(part));
        }
        match (cursor.parent(), cursor.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                cursor = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_through_a_file_or_a_dangling_link_is_no_folder() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(not_a_folder(&root.path().join("a/b")), None);
        let through = not_a_folder(&file.join("sub")).unwrap();
        assert!(through.ends_with("is a file, not a folder"), "{through}");
        let dangling = root.path().join("dangling");
        std::os::unix::fs::symlink(root.path().join("nowhere"), &dangling).unwrap();
        let link = not_a_folder(&dangling).unwrap();
        assert!(link.ends_with("is a link to nothing"), "{link}");
    }

    #[test]
    fn inside_is_judged_through_links() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let alias = root.path().join("alias");
        std::os::unix::fs::symlink(&state, &alias).unwrap();
        assert!(is_inside(&alias.join("journal"), &state));
        assert!(is_inside(&state.join("new/out.jsonl"), &alias));
        assert!(!is_inside(&root.path().join("out.jsonl"), &state));
    }
}
