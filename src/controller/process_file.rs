//! `process_manager {to_file, file_path}`: the role decisions, written after every decision
//! and read at start. When the file exists its decisions (instance id, address, role) are
//! recovered instead of deciding again, so a restarted Controller keeps the cluster as it
//! was. The file is this project's own JSON (`{"instances":[{"id", "server_ip",
//! "mgmt_port", "role"}]}`), written with mode 0640 through a temporary file and a rename.

use super::roles::Role;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// One remembered decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub id: u64,
    pub server_ip: IpAddr,
    pub mgmt_port: u16,
    pub role: Role,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    instances: Vec<Decision>,
}

/// A process file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProcessFileError {
    #[error(transparent)]
    Read(crate::motor::files::FileError),
    #[error("process_manager.file_path {path}: not this Controller's decisions: {source}")]
    Format {
        path: String,
        source: serde_json::Error,
    },
    #[error("process_manager.file_path {path}: cannot write: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The decisions in `path`; `None` when there is no such file.
pub fn read(path: &Path) -> Result<Option<Vec<Decision>>, ProcessFileError> {
    if !path.exists() {
        return Ok(None);
    }
    let shown = path.display().to_string();
    let v = crate::motor::files::read_json(path, "process_manager.file_path")
        .map_err(ProcessFileError::Read)?;
    let f: File = serde_json::from_value(v).map_err(|source| ProcessFileError::Format {
        path: shown,
        source,
    })?;
    Ok(Some(f.instances))
}

/// Writes `decisions` to `path` (creating its folder).
pub fn write(path: &Path, decisions: &[Decision]) -> Result<(), ProcessFileError> {
    let err = |source| ProcessFileError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let body = serde_json::to_vec_pretty(&File {
        instances: decisions.to_vec(),
    })
    .map_err(|e| err(std::io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&body).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
