//! Python tools from PyPI for tests that drive real third-party clients: one venv per tool
//! under `target/`, made with `python3 -m venv` + `pip install` when `probe` (a file inside
//! the venv) is missing. `.ci/run` makes the same venvs first.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<name>`, with `spec` (e.g. `openai==1.109.1`) installed unless `probe` exists.
pub fn venv(name: &str, spec: &str, probe: &str) -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(name);
    if venv.join(probe).exists() {
        return venv;
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 -m venv {} failed (install python3-venv)",
        venv.display()
    );
    let ok = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", spec])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "pip install {spec} into {} failed", venv.display());
    venv
}
