//! The emulated CANN (`tests/emuacl/`, issue 14): `build.sh` must produce the four library
//! names as ONE object plus a CANN-like `set_env.sh`, and the C self-test (`selftest.c`, run
//! here) must pass: registry and provenance checks, executors, every operator against a
//! reference, the FIA pitfalls, HCCL driven by one thread and by two, fault injection, f32
//! mode, deferred streams and the JSONL trace. Needs only a C compiler (`cc`) and bash.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

/// `<target dir>/emuacl-selftest` (CARGO_TARGET_TMPDIR is `<target dir>/tmp`).
fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("emuacl-selftest")
}

#[test]
fn emulated_cann_builds_and_passes_its_selftest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = out_dir();
    let build = Command::new("bash")
        .arg(root.join("tests/emuacl/build.sh"))
        .arg(&out)
        .output()
        .expect("run bash");
    assert!(
        build.status.success(),
        "build.sh failed:\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );

    // The layout CANN has: lib64/ with the four libraries; three are links to the first, so a
    // process that opens all four gets one loaded object and one emulator state.
    let lib64 = out.join("lib64");
    assert!(lib64.join("libascendcl.so").is_file());
    for name in ["libnnopbase.so", "libopapi.so", "libhccl.so"] {
        let link = std::fs::read_link(lib64.join(name))
            .unwrap_or_else(|e| panic!("{name} is not a symlink: {e}"));
        assert_eq!(link, Path::new("libascendcl.so"), "{name} points elsewhere");
    }
    let env = std::fs::read_to_string(out.join("set_env.sh")).unwrap();
    for var in [
        "ASCEND_TOOLKIT_HOME=",
        "ASCEND_HOME_PATH=",
        "LD_LIBRARY_PATH=",
    ] {
        assert!(
            env.contains(&format!("export {var}")),
            "set_env.sh lacks {var}:\n{env}"
        );
    }

    let exe = out.join("selftest");
    let cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-std=gnu11",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pthread",
            "-o",
        ])
        .arg(&exe)
        .arg(root.join("tests/emuacl/selftest.c"))
        .args(["-ldl", "-lm"])
        .output()
        .expect("run cc");
    assert!(
        cc.status.success(),
        "compiling selftest.c failed:\n{}",
        String::from_utf8_lossy(&cc.stderr)
    );

    let run = Command::new(&exe).arg(&out).output().expect("run selftest");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "emuacl selftest failed:\n{stdout}");
    for scenario in ["main", "fault", "f32off", "defer", "nocompute"] {
        assert!(
            stdout.contains(&format!("{scenario}: ok")),
            "scenario {scenario} did not pass:\n{stdout}"
        );
    }
}
