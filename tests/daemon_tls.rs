//! HTTPS with mutual TLS on the real binary: certificates made by the openssl CLI as MindIE's
//! docs do (tests/common/pki.rs); good clients pass, missing/foreign/revoked client
//! certificates, plain HTTP and TLS 1.1 are refused, on every plane; unsafe key files stop the
//! start; `check` reports weak keys.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::send;
use common::pki::Pki;
use mindie::security::tls::client_config;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

fn client(pki: &Pki, cert: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let pwd = pki.client_key_pwd_file.as_path();
    client_config(
        std::slice::from_ref(&pki.ca),
        cert.map(|(c, k)| {
            (
                c,
                k,
                if k == pki.client_key.as_path() {
                    Some(pwd)
                } else {
                    None
                },
            )
        }),
    )
    .expect("client config")
}

#[tokio::test]
async fn mutual_tls_on_every_plane() {
    let pki = Pki::shared();
    let home = pki.mtls_home();
    let d = home.start(&[]);
    let out = d.stdout();
    assert!(out.contains("https://"), "{out}");

    let good = client(pki, Some((&pki.client_cert, &pki.client_key)));
    for (addr, path) in [
        (home.business(), "/v1/models"),
        (home.mgmt(), "/v1/config"),
        (home.metrics(), "/metrics"),
    ] {
        let r = send(addr, Some(good.clone()), "GET", path, None)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(r.status, 200, "{path}");
    }

    let no_cert = client(pki, None);
    let foreign = client(
        pki,
        Some((&pki.other_ca_client_cert, &pki.other_ca_client_key)),
    );
    let revoked = client(
        pki,
        Some((&pki.revoked_client_cert, &pki.revoked_client_key)),
    );
    for (what, cfg) in [
        ("no client certificate", no_cert),
        ("another CA", foreign),
        ("revoked", revoked),
    ] {
        for addr in [home.business(), home.mgmt(), home.metrics()] {
            let r = send(addr, Some(cfg.clone()), "GET", "/v1/models", None).await;
            assert!(
                r.is_err(),
                "{what} must be refused on {addr}: {:?}",
                r.map(|r| r.status)
            );
        }
    }

    // Plain HTTP to a TLS port gets no HTTP answer.
    let plain = send(home.business(), None, "GET", "/v1/models", None).await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status >= 400));

    // TLS 1.1 is refused; TLS 1.2 with a good client certificate works (openssl s_client).
    let s_client = |version: &str| {
        std::process::Command::new("openssl")
            // SECLEVEL=0 so OpenSSL 3 offers TLS 1.1 at all; the daemon must refuse it.
            .args([
                "s_client",
                version,
                "-cipher",
                "DEFAULT@SECLEVEL=0",
                "-connect",
                &home.business().to_string(),
                "-CAfile",
            ])
            .arg(&pki.ca)
            .args(["-cert"])
            .arg(&pki.client_cert)
            .args(["-key"])
            .arg(&pki.client_key)
            .args(["-pass"])
            .arg(format!("file:{}", pki.client_key_pwd_file.display()))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl s_client")
    };
    let v11 = s_client("-tls1_1");
    let text =
        String::from_utf8_lossy(&v11.stdout).to_string() + &String::from_utf8_lossy(&v11.stderr);
    assert!(
        text.contains("Cipher is (NONE)") && !text.contains("New, TLSv1.1"),
        "TLS 1.1 accepted:\n{text}"
    );
    let v12 = s_client("-tls1_2");
    let text = String::from_utf8_lossy(&v12.stdout).to_string();
    assert!(
        text.contains("New, TLSv1.2") && !text.contains("Cipher is (NONE)"),
        "TLS 1.2 refused:\n{text}"
    );
}

#[test]
fn too_open_password_file_stops_the_start() {
    let pki = Pki::shared();
    let mut home = pki.mtls_home();
    let pwd = home.path().join("key_pwd.txt");
    std::fs::copy(&pki.server_key_pwd_file, &pwd).unwrap();
    std::fs::set_permissions(&pwd, std::fs::Permissions::from_mode(0o644)).unwrap();
    home.set("/ServerConfig/tlsPkPwd", pwd.to_str().unwrap());
    home.write();
    let (st, out, err) = home.run_to_exit(&[], &[]);
    assert!(!st.success());
    assert!(!out.contains("Daemon start success!"));
    assert!(
        err.contains("key_pwd.txt") && err.contains("chmod 600"),
        "{err}"
    );
}

#[test]
fn check_reports_weak_rsa_keys() {
    let pki = Pki::shared();
    let mut home = pki.mtls_home();
    home.set("/ServerConfig/tlsCert", pki.weak_cert.to_str().unwrap())
        .set("/ServerConfig/tlsPk", pki.weak_key.to_str().unwrap())
        .set("/ServerConfig/tlsPkPwd", "");
    home.write();
    let (st, out, _) = home.run_to_exit(&["check"], &[]);
    assert!(!st.success(), "{out}");
    assert!(out.contains("[ERROR]") && out.contains("3072"), "{out}");
    let (st, _, err) = home.run_to_exit(&[], &[]);
    assert!(!st.success());
    assert!(err.contains("3072"), "{err}");
}
