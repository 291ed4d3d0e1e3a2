//! Motor's JSON files (`ms_controller.json`, `ms_coordinator.json`, the global ranktable) read
//! under Motor's rules (SPEC-CLUSTER §1): path ≤ 256 characters, no `..`, no symlink, owned by
//! this process's user, mode ≤ 0640. `MINDIE_CHECK_INPUTFILES_PERMISSION=0` turns the symlink,
//! owner and mode findings into warnings, as for the daemon's own files.

use std::path::{Component, Path, PathBuf};

use crate::security::perms::{FileRole, PermChecker, PermError, PERMISSION_CHECK_ENV};

/// The longest path Motor accepts for its input files.
pub const MAX_PATH_CHARS: usize = 256;

/// Why a Motor file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{what} {path}: the path has {len} characters; at most {MAX_PATH_CHARS} are allowed")]
    PathTooLong {
        what: &'static str,
        path: PathBuf,
        len: usize,
    },
    #[error("{what} {path}: the path contains `..`; give a path without parent references")]
    ParentRef { what: &'static str, path: PathBuf },
    #[error("{what}: {0}", what = .1)]
    Perm(PermError, &'static str),
    #[error("{what} {path}: cannot read: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: not valid JSON: {source}")]
    Json {
        what: &'static str,
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A permission checker set from the process environment (`MINDIE_CHECK_INPUTFILES_PERMISSION`).
pub fn checker_from_env() -> PermChecker {
    let value = std::env::var(PERMISSION_CHECK_ENV).ok();
    PermChecker::new(PermChecker::enforce_from_env_value(value.as_deref()))
}

/// Checks a path's shape (length, no `..`) and its permissions for `role`, with the
/// environment's enforcement setting.
pub fn check_path(path: &Path, role: FileRole, what: &'static str) -> Result<(), FileError> {
    check_path_with(path, role, what, &mut checker_from_env())
}

fn check_path_with(
    path: &Path,
    role: FileRole,
    what: &'static str,
    checker: &mut PermChecker,
) -> Result<(), FileError> {
    let len = path.as_os_str().to_string_lossy().chars().count();
    if len > MAX_PATH_CHARS {
        return Err(FileError::PathTooLong {
            what,
            path: path.to_path_buf(),
            len,
        });
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(FileError::ParentRef {
            what,
            path: path.to_path_buf(),
        });
    }
    checker
        .check(path, role)
        .map_err(|e| FileError::Perm(e, what))
}

/// Reads a Motor JSON file (config or ranktable) after the checks of [`check_path`].
pub fn read_json(path: &Path, what: &'static str) -> Result<serde_json::Value, FileError> {
    read_json_with(path, what, &mut checker_from_env())
}

fn read_json_with(
    path: &Path,
    what: &'static str,
    checker: &mut PermChecker,
) -> Result<serde_json::Value, FileError> {
    let role = if what.contains("ranktable") {
        FileRole::Ranktable
    } else {
        FileRole::Config
    };
    check_path_with(path, role, what, checker)?;
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| FileError::Json {
        what,
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    #[test]
    fn reads_a_private_json_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "ms.json", r#"{"a": 1}"#, 0o640);
        let v = read_json_with(&p, "config file", &mut PermChecker::new(true)).expect("read");
        assert_eq!(v["a"], 1);
    }

    #[test]
    fn refuses_parent_refs_long_paths_and_bad_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "bad.json", "{", 0o600);
        let e = read_json(&p, "config file").expect_err("bad json");
        assert!(e.to_string().contains("not valid JSON"), "{e}");
        let up = dir.path().join("..").join("x.json");
        let e = read_json(&up, "config file").expect_err("parent ref");
        assert!(e.to_string().contains("`..`"), "{e}");
        let long = PathBuf::from(format!("/{}", "a".repeat(300)));
        let e = read_json(&long, "config file").expect_err("long");
        assert!(e.to_string().contains("at most 256"), "{e}");
    }

    #[test]
    fn refuses_a_group_writable_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "open.json", "{}", 0o660);
        let e = read_json_with(&p, "config file", &mut PermChecker::new(true)).expect_err("mode");
        assert!(e.to_string().contains("config file"), "{e}");
        let mut lenient = PermChecker::new(false);
        read_json_with(&p, "config file", &mut lenient).expect("waived");
        assert_eq!(lenient.warnings.len(), 1);
    }
}
