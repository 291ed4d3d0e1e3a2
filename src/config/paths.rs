//! Where the config file and the install home are (SPEC §4), and resolution of relative paths
//! in the config against the home.
//!
//! Home: `$MINDIE_LLM_HOME_PATH` when that folder holds `__init__.py` (it is MindIE's Python
//! package folder), else `$MIES_INSTALL_PATH`, else the binary's folder's parent.
//! Config: `--config-file`, else `$MIES_CONFIG_JSON_PATH`, else `{home}/conf/config.json`.

use super::{ConfigError, Env};
use std::path::{Path, PathBuf};

/// The config file to read and the home its relative paths resolve against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub config: PathBuf,
    pub home: PathBuf,
}

/// Finds the config file and the install home. `cli` is `--config-file`; `exe` is the path of
/// the running binary (`std::env::current_exe()`).
pub fn locate(cli: Option<&Path>, env: &Env, exe: &Path) -> Result<Located, ConfigError> {
    let home = home(env, exe)?;
    let config = match (cli, env.get("MIES_CONFIG_JSON_PATH")) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => home.join("conf").join("config.json"),
    };
    Ok(Located { config, home })
}

fn home(env: &Env, exe: &Path) -> Result<PathBuf, ConfigError> {
    if let Some(p) = env.get("MINDIE_LLM_HOME_PATH") {
        let p = PathBuf::from(p);
        if p.join("__init__.py").is_file() {
            return Ok(p);
        }
    }
    if let Some(p) = env.get("MIES_INSTALL_PATH") {
        return Ok(PathBuf::from(p));
    }
    let dir = match exe.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => {
            return Err(ConfigError::Home(format!(
                "the binary path {} has no parent folder; set MIES_INSTALL_PATH",
                exe.display()
            )))
        }
    };
    let up = dir.join("..");
    Ok(up.canonicalize().unwrap_or(up))
}

/// A path from the config: absolute stays, relative joins the home.
pub fn resolve(home: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        home.join(path)
    }
}

/// A file of a CA or CRL list: `file` inside `dir`, `dir` resolved against the home. An
/// absolute `file` stays as it is.
pub fn resolve_in(home: &Path, dir: &str, file: &str) -> PathBuf {
    let path = Path::new(file);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        resolve(home, dir).join(path)
    }
}
