//! Permission checks as `server_config` applies them to a plane's TLS files.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::pki::Pki;
use mindie::security::perms::{PermChecker, PermProblem, PERMISSION_CHECK_ENV};
use mindie::security::tls::{self, TlsError};
use mindie::security::TlsFiles;

/// Copies the server's mTLS files into a fresh folder (same modes), so tests can spoil them.
fn private_copy(pki: &Pki) -> (tempfile::TempDir, TlsFiles) {
    let dir = tempfile::tempdir().unwrap();
    let copy = |p: &Path| -> PathBuf {
        let to = dir.path().join(p.file_name().unwrap());
        fs::copy(p, &to).unwrap();
        to
    };
    let src = pki.server_files(true);
    let files = TlsFiles {
        ca_files: src.ca_files.iter().map(|p| copy(p)).collect(),
        cert: copy(&src.cert),
        key: copy(&src.key),
        key_password: src.key_password.as_deref().map(copy),
        crl_files: src.crl_files.iter().map(|p| copy(p)).collect(),
    };
    (dir, files)
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn copied_files_pass() {
    let (_dir, files) = private_copy(Pki::shared());
    let mut checker = PermChecker::new(true);
    tls::server_config(&files, &mut checker).unwrap();
    assert!(checker.warnings.is_empty(), "{:?}", checker.warnings);
}

#[test]
fn too_open_key_refused_with_chmod_600() {
    let (_dir, files) = private_copy(Pki::shared());
    chmod(&files.key, 0o644);
    let err = tls::server_config(&files, &mut PermChecker::new(true)).unwrap_err();
    let TlsError::Perm(perm) = &err else {
        panic!("expected a permission error, got {err}");
    };
    assert_eq!(perm.problems, vec![PermProblem::Mode]);
    let msg = err.to_string();
    let abs = std::path::absolute(&files.key).unwrap();
    assert!(
        msg.contains(&format!("chmod 600 {}", abs.display())),
        "{msg}"
    );
    assert!(msg.contains("0644") && msg.contains("0600"), "{msg}");
    assert!(msg.contains(PERMISSION_CHECK_ENV), "{msg}");
}

#[test]
fn too_open_password_file_and_crl_refused() {
    let (_dir, files) = private_copy(Pki::shared());
    chmod(files.key_password.as_ref().unwrap(), 0o640);
    let msg = tls::server_config(&files, &mut PermChecker::new(true))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("key password file") && msg.contains("chmod 600"),
        "{msg}"
    );

    let (_dir, files) = private_copy(Pki::shared());
    chmod(&files.crl_files[0], 0o666);
    let msg = tls::server_config(&files, &mut PermChecker::new(true))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("CRL") && msg.contains("chmod 640"), "{msg}");
}

#[test]
fn symlinked_cert_refused() {
    let (dir, mut files) = private_copy(Pki::shared());
    let link = dir.path().join("server-link.pem");
    std::os::unix::fs::symlink(&files.cert, &link).unwrap();
    let target = files.cert.clone();
    files.cert = link;
    let err = tls::server_config(&files, &mut PermChecker::new(true)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("symlink"), "{msg}");
    assert!(
        msg.contains(&format!(
            "replace the symlink with the file it points to: {}",
            target.display()
        )),
        "{msg}"
    );
}

#[test]
fn off_switch_turns_refusals_into_warnings() {
    let (dir, mut files) = private_copy(Pki::shared());
    chmod(&files.key, 0o644);
    let link = dir.path().join("ca-link.pem");
    std::os::unix::fs::symlink(&files.ca_files[0], &link).unwrap();
    files.ca_files = vec![link];
    let mut checker = PermChecker::new(PermChecker::enforce_from_env_value(Some("0")));
    tls::server_config(&files, &mut checker).unwrap();
    assert_eq!(checker.warnings.len(), 2, "{:?}", checker.warnings);
    assert!(checker.warnings.iter().any(|w| w.contains("symlink")));
    assert!(checker.warnings.iter().any(|w| w.contains("chmod 600")));
}

#[test]
fn missing_file_is_an_error_even_with_the_off_switch() {
    let (dir, mut files) = private_copy(Pki::shared());
    files.crl_files = vec![dir.path().join("no-such.crl")];
    let msg = tls::server_config(&files, &mut PermChecker::new(false))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no-such.crl") && msg.contains("does not exist"),
        "{msg}"
    );
}
