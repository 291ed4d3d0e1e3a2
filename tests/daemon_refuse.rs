//! The real binary refuses bad configurations and unsafe files with one clear message, and the
//! `check` subcommand reports every finding without starting.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::daemon::Home;
use std::os::unix::fs::PermissionsExt;

fn chmod(p: &std::path::Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn invalid_config_names_every_path() {
    let mut home = Home::new();
    home.set("/BackendConfig/ScheduleConfig/maxBatchSize", 0)
        .set("/ServerConfig/maxLinkNum", 5000)
        .set("/BackendConfig/ScheduleConfig/maxPrefillTokens", 100);
    home.write();
    let (st, out, err) = home.run_to_exit(&[], &[]);
    assert!(!st.success());
    assert!(!out.contains("Daemon start success!"));
    for path in [
        "ScheduleConfig.maxBatchSize",
        "ServerConfig.maxLinkNum",
        "ScheduleConfig.maxPrefillTokens",
    ] {
        assert!(err.contains(path), "{path} not named in: {err}");
    }
    assert!(err.contains("5000"), "value shown: {err}");
}

#[test]
fn malformed_json_and_missing_file() {
    let home = Home::new();
    std::fs::write(home.config_path(), b"{ \"ServerConfig\": ").unwrap();
    chmod(&home.config_path(), 0o640);
    let (st, _, err) = home.run_to_exit(&[], &[]);
    assert!(!st.success());
    assert!(err.contains("not valid JSON"), "{err}");

    let home = Home::new();
    let (st, _, err) = home.run_to_exit(&["--config-file", "/nonexistent/config.json"], &[]);
    assert!(!st.success());
    assert!(err.contains("/nonexistent/config.json"), "{err}");
}

#[test]
fn too_open_config_is_refused_with_the_fix() {
    let home = Home::new();
    let p = home.write();
    chmod(&p, 0o644);
    let (st, out, err) = home.run_to_exit(&[], &[]);
    assert!(!st.success());
    assert!(!out.contains("Daemon start success!"));
    assert!(err.contains(&p.display().to_string()), "{err}");
    assert!(err.contains("chmod 640"), "fix shown: {err}");

    // The off switch turns the refusal into a warning.
    let mut d = home.start_without_write(&[("MINDIE_CHECK_INPUTFILES_PERMISSION", "0")]);
    assert!(d.stdout().contains("WARN"), "{}", d.stdout());
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d
        .wait_exit(std::time::Duration::from_secs(15))
        .is_some_and(|s| s.success()));
}

#[test]
fn symlinked_config_is_refused() {
    let home = Home::new();
    let real = home.write();
    let link = home.path().join("conf/link.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (st, _, err) = home.run_to_exit(&["--config-file", link.to_str().unwrap()], &[]);
    assert!(!st.success());
    assert!(err.contains("symlink"), "{err}");
}

#[test]
fn config_owned_by_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: chown to another user is not possible here; owner check covered by unit tests");
        return;
    }
    let home = Home::new();
    let p = home.write();
    nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let (st, _, err) = home.run_to_exit(&[], &[]);
    assert!(!st.success());
    assert!(err.contains("chown"), "fix shown: {err}");
}

#[test]
fn model_folder_config_is_checked() {
    let mut home = Home::new();
    let model = home.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("config.json"),
        b"{\"architectures\":[\"LlamaForCausalLM\"]}",
    )
    .unwrap();
    chmod(&model.join("config.json"), 0o666);
    home.set(
        "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelInstanceType",
        "Standard",
    )
    .set(
        "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelWeightPath",
        model.to_str().unwrap(),
    );
    home.write();
    let (st, _, err) = home.run_to_exit(&[], &[]);
    assert!(!st.success());
    assert!(
        err.contains("model/config.json") && err.contains("chmod 640") && err.contains("0750"),
        "{err}"
    );

    home.set(
        "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelWeightPath",
        "/nonexistent/model",
    );
    home.write();
    let (st, _, err) = home.run_to_exit(&[], &[]);
    assert!(!st.success());
    assert!(err.contains("modelWeightPath"), "{err}");
}

#[test]
fn check_subcommand_reports_without_starting() {
    let home = Home::new();
    home.write();
    let (st, out, _) = home.run_to_exit(&["check"], &[]);
    assert!(st.success(), "{out}");
    assert!(out.contains("0 error(s)"), "{out}");
    assert!(out.contains("httpsEnabled"), "plain HTTP is flagged: {out}");

    let mut bad = Home::new();
    bad.set("/BackendConfig/ScheduleConfig/cacheBlockSize", 512);
    bad.write();
    let (st, out, _) = bad.run_to_exit(&["check"], &[]);
    assert!(!st.success());
    assert!(
        out.contains("cacheBlockSize") && out.contains("[ERROR]"),
        "{out}"
    );
}

#[test]
fn ascend_backend_without_its_runtime_is_refused_with_the_alternative() {
    let mut home = Home::new();
    home.use_fixture_model("tiny-llama");
    home.set(
        "/BackendConfig/ModelDeployConfig/ModelConfig/0/backendType",
        "atb",
    );
    home.write();
    let (st, out, err) = home.run_to_exit(&[], &[]);
    assert!(!st.success());
    assert!(!out.contains("Daemon start success!"));
    assert!(
        err.contains("libascendcl.so") && err.contains("\"backendType\": \"cpu\""),
        "{err}"
    );
}

#[test]
fn unreadable_mock_reply_file_is_refused_with_its_path() {
    let home = Home::new();
    home.write();
    let (st, out, err) =
        home.run_to_exit(&[], &[("MIES_MOCK_REPLY_FILE", "/nonexistent/reply.txt")]);
    assert!(!st.success());
    assert!(!out.contains("Daemon start success!"));
    assert!(
        err.contains("MIES_MOCK_REPLY_FILE") && err.contains("/nonexistent/reply.txt"),
        "{err}"
    );
}
