//! Writing `gen-cert`'s three files into `output_path`: `cert.pem`, `cert.key.pem` and
//! `cert_passwd.txt`, each mode 0400 from the moment it exists.
//!
//! Each file is first written to a hidden temporary name in the same folder (created new,
//! mode 0400, flushed to disk), and only when all three are written are they renamed over the
//! final names. A rename replaces an existing file whatever its mode, so earlier outputs (MindIE
//! leaves them 0400) are replaced, each atomically; on any failure the temporaries are removed
//! and the earlier files stay as they were.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::CertGenError;

/// The certificate's file name in `output_path`.
pub const CERT_FILE: &str = "cert.pem";
/// The encrypted key's file name.
pub const KEY_FILE: &str = "cert.key.pem";
/// The key password's file name.
pub const PASSWORD_FILE: &str = "cert_passwd.txt";
/// Mode of every output file.
pub const MODE: u32 = 0o400;

/// Writes `files` (name, contents) into `dir`, replacing files of the same names.
pub fn write_all(dir: &Path, files: &[(&str, &[u8])]) -> Result<Vec<PathBuf>, CertGenError> {
    let mut temps: Vec<(PathBuf, PathBuf)> = Vec::new();
    let result = (|| {
        for (name, contents) in files {
            let final_path = dir.join(name);
            let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
            let _ = std::fs::remove_file(&temp);
            temps.push((temp.clone(), final_path.clone()));
            write_new(&temp, contents).map_err(|source| CertGenError::Write {
                path: final_path,
                source,
            })?;
        }
        for (temp, final_path) in &temps {
            std::fs::rename(temp, final_path).map_err(|source| CertGenError::Write {
                path: final_path.clone(),
                source,
            })?;
        }
        Ok(temps.iter().map(|(_, f)| f.clone()).collect())
    })();
    if result.is_err() {
        for (temp, _) in &temps {
            let _ = std::fs::remove_file(temp);
        }
    }
    result
}

fn write_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .open(path)?;
    // The umask may have taken bits away; set exactly MODE.
    f.set_permissions(std::fs::Permissions::from_mode(MODE))?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_read_only_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        for round in [b"one".as_slice(), b"two".as_slice()] {
            let written =
                write_all(dir.path(), &[(CERT_FILE, round), (KEY_FILE, round)]).expect("write");
            assert_eq!(written.len(), 2);
            for p in written {
                assert_eq!(std::fs::read(&p).expect("read"), round);
                let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
                assert_eq!(mode & 0o777, MODE);
            }
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporaries left: {names:?}");
    }
}
