//! Unit tests of [`super`]: every key form OpenSSL writes, made with the openssl CLI.

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_pw(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn secret_der(key: &PrivateKeyDer<'_>) -> Vec<u8> {
    key.secret_der().to_vec()
}

#[test]
fn evp_bytes_to_key_matches_openssl() {
    // `openssl enc -aes-256-cbc -P -md md5 -S 0011223344556677 -pass pass:secret`
    let salt = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];
    let key = bytes_to_key(b"secret", &salt, 32);
    assert_eq!(
        decode_hex("6C634F48357975117B982645F825E6E69BAEF03EB9B45A39B409BEFD557EB185").unwrap(),
        *key
    );
    let key = bytes_to_key(b"secret", &salt, 24);
    assert_eq!(
        decode_hex("6C634F48357975117B982645F825E6E69BAEF03EB9B45A39").unwrap(),
        *key
    );
}

#[test]
fn der_sequence_check() {
    assert!(is_single_der_sequence(&[0x30, 0x00]));
    assert!(is_single_der_sequence(&[0x30, 0x02, 1, 2]));
    assert!(!is_single_der_sequence(&[0x30, 0x03, 1, 2]));
    assert!(!is_single_der_sequence(&[0x31, 0x00]));
    assert!(!is_single_der_sequence(&[0x30]));
    let mut long = vec![0x30, 0x81, 0x80];
    long.extend(std::iter::repeat_n(0u8, 0x80));
    assert!(is_single_der_sequence(&long));
    assert!(!is_single_der_sequence(&[0x30, 0x85, 1, 1, 1, 1, 1]));
}

#[test]
fn clear_forms_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(d, &["genrsa", "-traditional", "-out", "rsa1.pem", "2048"]);
    openssl(
        d,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "rsa1.pem", "-out", "rsa8.pem",
        ],
    );
    openssl(
        d,
        &[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-out",
            "ec.pem",
        ],
    );
    let k1 = load_private_key(&d.join("rsa1.pem"), None).unwrap();
    assert!(matches!(k1, PrivateKeyDer::Pkcs1(_)));
    let k8 = load_private_key(&d.join("rsa8.pem"), None).unwrap();
    assert!(matches!(k8, PrivateKeyDer::Pkcs8(_)));
    assert_eq!(public_key_spki(&k1), public_key_spki(&k8));
    let ec = load_private_key(&d.join("ec.pem"), None).unwrap();
    assert!(matches!(ec, PrivateKeyDer::Sec1(_)));
    assert!(public_key_spki(&ec).is_some());
}

#[test]
fn encrypted_pkcs8_loads_and_wrong_password_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-aes256",
            "-pass",
            "pass:right pass",
            "-out",
            "enc.pem",
        ],
    );
    let good = write_pw(d, "pw", "right pass\n");
    let key = load_private_key(&d.join("enc.pem"), Some(&good)).unwrap();
    assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));

    let bad = write_pw(d, "bad", "wrong\n");
    let err = load_private_key(&d.join("enc.pem"), Some(&bad)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{msg}");
    assert!(msg.contains("wrong passphrase"), "{msg}");
    assert!(msg.contains("enc.pem") && msg.contains("/bad"), "{msg}");
    assert!(
        !msg.contains("right pass") && !msg.contains("wrong\n"),
        "{msg}"
    );

    let err = load_private_key(&d.join("enc.pem"), None).unwrap_err();
    assert!(err.to_string().contains("tlsPkPwd"), "{err}");
}

#[test]
fn traditional_encrypted_all_ciphers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(d, &["genrsa", "-traditional", "-out", "clear.pem", "2048"]);
    let clear = load_private_key(&d.join("clear.pem"), None).unwrap();
    let pw = write_pw(d, "pw", "s3cret pass \r\n");
    for cipher in ["-aes128", "-aes192", "-aes256", "-des3"] {
        let out = format!("t{cipher}.pem");
        openssl(
            d,
            &[
                "rsa",
                "-traditional",
                "-in",
                "clear.pem",
                cipher,
                "-passout",
                "pass:s3cret pass",
                "-out",
                &out,
            ],
        );
        let text = std::fs::read_to_string(d.join(&out)).unwrap();
        assert!(text.contains("Proc-Type: 4,ENCRYPTED"), "{text}");
        let key = load_private_key(&d.join(&out), Some(&pw)).unwrap();
        assert_eq!(secret_der(&key), secret_der(&clear), "{cipher}");
        let bad = write_pw(d, "bad", "nope");
        let err = load_private_key(&d.join(&out), Some(&bad)).unwrap_err();
        assert!(
            matches!(err, KeyError::WrongPassphrase { .. }),
            "{cipher}: {err}"
        );
    }
    // Traditional encrypted EC key.
    openssl(
        d,
        &[
            "ecparam",
            "-genkey",
            "-name",
            "secp384r1",
            "-noout",
            "-out",
            "ec.pem",
        ],
    );
    openssl(
        d,
        &[
            "ec",
            "-in",
            "ec.pem",
            "-aes256",
            "-passout",
            "pass:s3cret pass",
            "-out",
            "ece.pem",
        ],
    );
    let key = load_private_key(&d.join("ece.pem"), Some(&pw)).unwrap();
    assert!(matches!(key, PrivateKeyDer::Sec1(_)));
}

#[test]
fn bad_files_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: &[(&str, &[u8])] = &[
        ("empty.pem", b""),
        ("binary.pem", b"\x00\xff\x30\x82garbage"),
        ("cert.pem", b"-----BEGIN CERTIFICATE-----\nZm9v\n-----END CERTIFICATE-----\n"),
        ("trunc.pem", b"-----BEGIN PRIVATE KEY-----\nZm9v\n"),
        ("junk8.pem", b"-----BEGIN PRIVATE KEY-----\nZm9v\n-----END PRIVATE KEY-----\n"),
        (
            "junkenc.pem",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nZm9v\n-----END ENCRYPTED PRIVATE KEY-----\n",
        ),
        (
            "nodek.pem",
            b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nZm9v\n-----END RSA PRIVATE KEY-----\n",
        ),
        (
            "badiv.pem",
            b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,XYZ\n\nZm9v\n-----END RSA PRIVATE KEY-----\n",
        ),
        (
            "cipher.pem",
            b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: BF-CBC,0011223344556677\n\nZm9v\n-----END RSA PRIVATE KEY-----\n",
        ),
        (
            "shortct.pem",
            b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nZm9v\n-----END RSA PRIVATE KEY-----\n",
        ),
    ];
    let pw = write_pw(d, "pw", "x");
    for (name, body) in cases {
        let p = d.join(name);
        std::fs::write(&p, body).unwrap();
        let err = load_private_key(&p, Some(&pw)).unwrap_err();
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
    let err = load_private_key(&d.join("cert.pem"), None).unwrap_err();
    assert!(err.to_string().contains("found: CERTIFICATE"), "{err}");
    let err = load_private_key(&d.join("missing.pem"), None).unwrap_err();
    assert!(matches!(err, KeyError::Read { .. }));
    let empty = write_pw(d, "emptypw", "\n");
    std::fs::copy(d.join("junkenc.pem"), d.join("e2.pem")).unwrap();
    let err = load_private_key(&d.join("e2.pem"), Some(&empty)).unwrap_err();
    assert!(matches!(err, KeyError::EmptyPassword { .. }), "{err}");
}
