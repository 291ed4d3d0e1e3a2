//! Runs a README shell block verbatim: a temporary copy of the install layout (`bin/` with a
//! link to the binary under test, the folders the block needs), the block run by `bash -eu`
//! in it, and the processes it starts found by their command line and killed on drop.
#![allow(dead_code)]

use super::daemon::BIN;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The README's first `sh` block after `<!-- marker -->`.
pub fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let after = readme
        .split(&format!("<!-- {marker} -->"))
        .nth(1)
        .unwrap_or_else(|| panic!("README has the {marker} marker"));
    let start = after.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = after[start..].find("```").expect("block end");
    after[start..start + end].to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// A copy of the repository's layout a README block runs in, and the processes it starts
/// (killed when dropped).
pub struct Install {
    dir: tempfile::TempDir,
    /// Command-line fragments naming the processes the block starts.
    needles: Vec<String>,
}

impl Install {
    /// `dirs`: repository folders to copy; `needles`: how to find the started processes.
    pub fn new(dirs: &[&str], needles: &[&str]) -> Install {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path();
        std::fs::create_dir_all(home.join("bin")).expect("mkdir bin");
        let bin = home.join("bin/mindieservice_daemon");
        if std::fs::hard_link(BIN, &bin).is_err() {
            std::fs::copy(BIN, &bin).expect("copy bin");
        }
        for d in dirs {
            copy_dir(&repo().join(d), &home.join(d));
        }
        Install {
            dir,
            needles: needles.iter().map(|n| n.to_string()).collect(),
        }
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `script` with `bash -euc` in the install (clean environment).
    pub fn bash(&self, script: &str) {
        let st = Command::new("bash")
            .args(["-euc", script])
            .current_dir(self.home())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .status()
            .expect("bash");
        assert!(st.success(), "script failed: {script}");
    }

    /// The pid of the process whose command line contains `needle` (and this install's path).
    pub fn pid_of(&self, needle: &str) -> Option<i32> {
        let out = Command::new("pgrep").args(["-f", needle]).output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .find(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .map(|cwd| cwd == self.home())
                    .unwrap_or(false)
            })
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.home().join(name)).unwrap_or_default()
    }

    /// The named logs, each under a `--- name` line.
    pub fn logs(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|n| format!("--- {n}\n{}", self.log(n)))
            .collect()
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        for needle in &self.needles {
            while let Some(pid) = self.pid_of(needle) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
