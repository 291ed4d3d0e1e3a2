//! The emulated CANN for tests: built once per test process with `tests/emuacl/build.sh`
//! into the test target's temporary folder, and the environment CANN's `set_env.sh` would
//! give (the daemon finds it through `ASCEND_TOOLKIT_HOME`, as it finds a real CANN).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The emulator's install folder (`lib64/`, `set_env.sh`), built on first use.
pub fn home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        let name = exe.file_stem().expect("name").to_string_lossy().to_string();
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("emuacl-{name}"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emuacl/build.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg(&out)
            .status()
            .expect("run tests/emuacl/build.sh");
        assert!(status.success(), "building the emulated CANN failed");
        assert!(out.join("lib64/libascendcl.so").is_file());
        out
    })
}

/// What CANN's `set_env.sh` exports, pointing at the emulator.
pub fn cann_env() -> Vec<(String, String)> {
    let home = home().to_string_lossy().to_string();
    let ld = match std::env::var("LD_LIBRARY_PATH") {
        Ok(old) if !old.is_empty() => format!("{home}/lib64:{old}"),
        _ => format!("{home}/lib64"),
    };
    vec![
        ("ASCEND_TOOLKIT_HOME".into(), home.clone()),
        ("ASCEND_HOME_PATH".into(), home),
        ("LD_LIBRARY_PATH".into(), ld),
    ]
}

/// `env` as the `(&str, &str)` pairs the daemon launcher takes.
pub fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The trace lines of `path` naming `api` (`"fn":"<api>"`).
pub fn trace_count(path: &Path, api: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let needle = format!("\"fn\":\"{api}\"");
    text.lines().filter(|l| l.contains(&needle)).count()
}
