//! Permission checks of files the daemon trusts (SPEC §0.8, §5): owner, maximum mode, no
//! symlinks. Each refusal names the file, what was found, what is allowed and the fix.
//!
//! This module owns the policy (which role may have which mode) and the wording of every
//! refusal. A missing file, or a file of the wrong type (a folder where a file is expected),
//! is always an error. Symlink, owner and mode findings are errors when the checker enforces,
//! and warnings otherwise (`MINDIE_CHECK_INPUTFILES_PERMISSION=0`, read by the caller).

use std::fmt;
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The environment variable that turns owner/mode/symlink refusals into warnings.
pub const PERMISSION_CHECK_ENV: &str = "MINDIE_CHECK_INPUTFILES_PERMISSION";

/// What a file is; decides its maximum mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// The daemon's config.json (≤ 640).
    Config,
    /// A model folder's config.json (≤ 750).
    ModelConfig,
    /// Ranktable (≤ 640).
    Ranktable,
    /// Certificate or CA certificate (≤ 640).
    Cert,
    /// CRL (≤ 640).
    Crl,
    /// Private key (≤ 600).
    Key,
    /// Key passphrase file (≤ 600).
    Password,
    /// A folder of the security layout (≤ 750).
    SecurityDir,
}

impl FileRole {
    /// The permission bits this role may have; any bit outside this mask is refused.
    pub fn max_mode(self) -> u32 {
        match self {
            FileRole::Config | FileRole::Ranktable | FileRole::Cert | FileRole::Crl => 0o640,
            FileRole::ModelConfig | FileRole::SecurityDir => 0o750,
            FileRole::Key | FileRole::Password => 0o600,
        }
    }

    /// Whether this role is a folder rather than a regular file.
    pub fn is_dir(self) -> bool {
        matches!(self, FileRole::SecurityDir)
    }

    /// Words for messages ("private key", "ranktable", ...).
    pub fn describe(self) -> &'static str {
        match self {
            FileRole::Config => "config file",
            FileRole::ModelConfig => "model config file",
            FileRole::Ranktable => "ranktable",
            FileRole::Cert => "certificate",
            FileRole::Crl => "CRL",
            FileRole::Key => "private key",
            FileRole::Password => "key password file",
            FileRole::SecurityDir => "security folder",
        }
    }
}

/// What was wrong with a refused file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermProblem {
    /// The file does not exist (always an error).
    Missing,
    /// Its metadata could not be read (always an error).
    Unreadable,
    /// A folder where a file is expected, or the reverse (always an error).
    WrongType,
    /// The path is a symlink.
    Symlink,
    /// Owned by another user than the daemon's.
    Owner,
    /// Mode more open than the role allows.
    Mode,
}

impl PermProblem {
    /// Whether `MINDIE_CHECK_INPUTFILES_PERMISSION=0` turns this problem into a warning.
    pub fn can_be_waived(self) -> bool {
        matches!(
            self,
            PermProblem::Symlink | PermProblem::Owner | PermProblem::Mode
        )
    }
}

/// A refused file.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct PermError {
    pub path: PathBuf,
    pub message: String,
    /// Every problem found with the file (at least one).
    pub problems: Vec<PermProblem>,
}

/// Checks files against their role's rules, either refusing or warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermChecker {
    /// Refuse (true) or only warn (false) on symlink/owner/mode findings.
    pub enforce: bool,
    /// Findings waived because `enforce` is false, in the order found (already logged).
    pub warnings: Vec<String>,
}

/// One finding: the problem and its sentence (found, allowed, fix).
struct Finding {
    problem: PermProblem,
    text: String,
}

impl PermChecker {
    /// A checker; `enforce` is false when `MINDIE_CHECK_INPUTFILES_PERMISSION=0`.
    pub fn new(enforce: bool) -> Self {
        PermChecker {
            enforce,
            warnings: Vec::new(),
        }
    }

    /// Whether the environment asks for enforcement: anything but `0` in
    /// [`PERMISSION_CHECK_ENV`] (unset included) enforces.
    pub fn enforce_from_env_value(value: Option<&str>) -> bool {
        value.map(str::trim) != Some("0")
    }

    /// Checks one file (or folder, for [`FileRole::SecurityDir`]).
    ///
    /// Missing files and files of the wrong type are always errors; symlink, owner and mode
    /// findings are errors when enforcing, else pushed to [`Self::warnings`], logged, and
    /// `Ok(())` is returned.
    pub fn check(&mut self, path: &Path, role: FileRole) -> Result<(), PermError> {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let shown = abs.display().to_string();
        let mut findings = Vec::new();

        let link_meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => return Err(self.io_error(path, &shown, role, e)),
        };
        if link_meta.file_type().is_symlink() {
            let target = std::fs::read_link(path)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "(unreadable link)".into());
            findings.push(Finding {
                problem: PermProblem::Symlink,
                text: format!(
                    "it is a symlink (to {target}), symlinks are not allowed; fix: replace \
                     the symlink with the file it points to: {target}"
                ),
            });
        }
        // The rest is judged on what the path leads to (the file itself when not a link).
        let meta = if link_meta.file_type().is_symlink() {
            match std::fs::metadata(path) {
                Ok(m) => m,
                Err(e) => return Err(self.io_error(path, &shown, role, e)),
            }
        } else {
            link_meta
        };

        if let Some(err) = wrong_type(&meta, role, path, &shown) {
            return Err(err);
        }
        findings.extend(owner_finding(&meta, &shown));
        findings.extend(mode_finding(&meta, role, &shown));

        if findings.is_empty() {
            return Ok(());
        }
        let body = findings
            .iter()
            .map(|f| f.text.as_str())
            .collect::<Vec<_>>()
            .join("; and ");
        if self.enforce {
            Err(PermError {
                path: path.to_path_buf(),
                message: format!(
                    "refusing {} {shown}: {body}. (To turn owner/mode/symlink refusals into \
                     warnings, set {PERMISSION_CHECK_ENV}=0.)",
                    role.describe()
                ),
                problems: findings.iter().map(|f| f.problem).collect(),
            })
        } else {
            let msg = format!(
                "{} {shown} would be refused, allowed because {PERMISSION_CHECK_ENV}=0: {body}",
                role.describe()
            );
            tracing::warn!("{msg}");
            self.warnings.push(msg);
            Ok(())
        }
    }

    /// Checks the folder holding `file` as a [`FileRole::SecurityDir`] (≤ 750, own user).
    pub fn check_parent_dir(&mut self, file: &Path) -> Result<(), PermError> {
        let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        match abs.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => {
                let dir = dir.to_path_buf();
                self.check(&dir, FileRole::SecurityDir)
            }
            _ => Ok(()),
        }
    }

    fn io_error(&self, path: &Path, shown: &str, role: FileRole, e: std::io::Error) -> PermError {
        let (problem, what) = if e.kind() == std::io::ErrorKind::NotFound {
            (PermProblem::Missing, "it does not exist".to_string())
        } else {
            (
                PermProblem::Unreadable,
                format!("it cannot be inspected: {e}"),
            )
        };
        PermError {
            path: path.to_path_buf(),
            message: format!("{} {shown}: {what}", role.describe()),
            problems: vec![problem],
        }
    }
}

fn wrong_type(meta: &Metadata, role: FileRole, path: &Path, shown: &str) -> Option<PermError> {
    let ok = if role.is_dir() {
        meta.is_dir()
    } else {
        meta.is_file()
    };
    if ok {
        return None;
    }
    let expected = if role.is_dir() {
        "a folder"
    } else {
        "a regular file"
    };
    Some(PermError {
        path: path.to_path_buf(),
        message: format!(
            "{} {shown}: it is {}, expected {expected}",
            role.describe(),
            kind_of(meta)
        ),
        problems: vec![PermProblem::WrongType],
    })
}

fn kind_of(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        "a folder"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "a special file (device, socket or fifo)"
    }
}

fn owner_finding(meta: &Metadata, shown: &str) -> Option<Finding> {
    let me = nix::unistd::geteuid().as_raw();
    let owner = meta.uid();
    if owner == me {
        return None;
    }
    Some(Finding {
        problem: PermProblem::Owner,
        text: format!(
            "owner is {}, allowed: owner {} (the daemon's user); fix: chown {me} {shown}",
            UidName(owner),
            UidName(me)
        ),
    })
}

fn mode_finding(meta: &Metadata, role: FileRole, shown: &str) -> Option<Finding> {
    let mode = meta.permissions().mode() & 0o7777;
    let max = role.max_mode();
    if mode & !max == 0 {
        return None;
    }
    let fixed = mode & max;
    Some(Finding {
        problem: PermProblem::Mode,
        text: format!(
            "mode is {mode:04o}, allowed: at most {max:04o}; fix: chmod {fixed:03o} {shown}"
        ),
    })
}

/// "uid 0 (root)", or "uid 1234" when the user has no name.
struct UidName(u32);

impl fmt::Display for UidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uid = nix::unistd::Uid::from_raw(self.0);
        match nix::unistd::User::from_uid(uid) {
            Ok(Some(user)) => write!(f, "uid {} ({})", self.0, user.name),
            _ => write!(f, "uid {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn file_with_mode(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, b"x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn good_files_pass() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = PermChecker::new(true);
        for (role, mode) in [
            (FileRole::Key, 0o600),
            (FileRole::Key, 0o400),
            (FileRole::Password, 0o400),
            (FileRole::Cert, 0o640),
            (FileRole::Crl, 0o600),
            (FileRole::Config, 0o640),
            (FileRole::ModelConfig, 0o750),
            (FileRole::Ranktable, 0o440),
        ] {
            let p = file_with_mode(dir.path(), "f", mode);
            c.check(&p, role).unwrap();
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        c.check(dir.path(), FileRole::SecurityDir).unwrap();
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn too_open_refused_with_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = file_with_mode(dir.path(), "server.key.pem", 0o644);
        let err = PermChecker::new(true).check(&p, FileRole::Key).unwrap_err();
        let abs = std::path::absolute(&p).unwrap();
        let m = &err.message;
        assert!(m.contains("mode is 0644"), "{m}");
        assert!(m.contains("at most 0600"), "{m}");
        assert!(m.contains(&format!("chmod 600 {}", abs.display())), "{m}");
        assert!(m.contains(PERMISSION_CHECK_ENV), "{m}");
        assert_eq!(err.problems, vec![PermProblem::Mode]);

        let p = file_with_mode(dir.path(), "cert.pem", 0o666);
        let err = PermChecker::new(true)
            .check(&p, FileRole::Cert)
            .unwrap_err();
        assert!(err.message.contains("chmod 640"), "{}", err.message);
        // Any bit outside the mask is refused, even when the value is "smaller".
        let p = file_with_mode(dir.path(), "odd.pem", 0o604);
        assert!(PermChecker::new(true).check(&p, FileRole::Key).is_err());
    }

    #[test]
    fn symlink_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = file_with_mode(dir.path(), "real.pem", 0o600);
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = PermChecker::new(true)
            .check(&link, FileRole::Cert)
            .unwrap_err();
        assert!(err.message.contains("symlink"), "{}", err.message);
        assert!(
            err.message.contains(&target.display().to_string()),
            "{}",
            err.message
        );
        assert_eq!(err.problems, vec![PermProblem::Symlink]);
    }

    #[test]
    fn missing_is_always_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.pem");
        let err = PermChecker::new(false)
            .check(&p, FileRole::Cert)
            .unwrap_err();
        assert!(err.message.contains("does not exist"), "{}", err.message);
        // A dangling symlink is missing too.
        let link = dir.path().join("dangling.pem");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(PermChecker::new(false)
            .check(&link, FileRole::Cert)
            .is_err());
        // Wrong type is always an error.
        let err = PermChecker::new(false)
            .check(dir.path(), FileRole::Key)
            .unwrap_err();
        assert_eq!(err.problems, vec![PermProblem::WrongType]);
    }

    #[test]
    fn off_switch_warns() {
        let dir = tempfile::tempdir().unwrap();
        let p = file_with_mode(dir.path(), "k.pem", 0o644);
        let link = dir.path().join("l.pem");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let mut c = PermChecker::new(false);
        c.check(&p, FileRole::Key).unwrap();
        c.check(&link, FileRole::Key).unwrap();
        assert_eq!(c.warnings.len(), 2);
        assert!(c.warnings[0].contains("chmod 600"));
        assert!(c.warnings[1].contains("symlink"));
    }

    #[test]
    fn env_value_parsing() {
        assert!(PermChecker::enforce_from_env_value(None));
        assert!(PermChecker::enforce_from_env_value(Some("1")));
        assert!(!PermChecker::enforce_from_env_value(Some("0")));
    }

    #[test]
    fn wrong_owner_refused() {
        if !nix::unistd::geteuid().is_root() {
            return; // cannot give a file away without root
        }
        let dir = tempfile::tempdir().unwrap();
        let p = file_with_mode(dir.path(), "other.pem", 0o600);
        let nobody = nix::unistd::Uid::from_raw(65534);
        nix::unistd::chown(&p, Some(nobody), None).unwrap();
        let err = PermChecker::new(true).check(&p, FileRole::Key).unwrap_err();
        let m = &err.message;
        assert!(m.contains("owner is uid 65534"), "{m}");
        assert!(m.contains("uid 0 (root)"), "{m}");
        assert!(m.contains("chown 0 "), "{m}");
        assert_eq!(err.problems, vec![PermProblem::Owner]);
    }
}
