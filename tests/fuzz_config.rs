//! Fuzzes the file loaders: `config.json` ([`config::load`] on the bytes written to a file),
//! the multi-node ranktable (`RANK_TABLE_FILE`: parse, then locate this node), the PD
//! cluster's global ranktable (the Controller's parser), and the PEM, certificate, private
//! key (clear, PKCS#8-encrypted, traditional-encrypted) and CRL loaders of the TLS setup, on
//! files written with the permissions the daemon demands. Seeds: `tests/fuzz/{config,
//! ranktable,global_ranktable,pem}/`, mutated (see `tests/fuzz/mod.rs`) and random.
//!
//! Invariant: `Ok` or a typed error, never a panic (proptest catches it and prints the shrunk
//! input). `MINDIE_FUZZ_CASES` scales the case count (see the README's "Fuzzing").
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod fuzz;

use fuzz::Input;
use mindie::config::{self, Env};
use mindie::controller::ranktable::{self as global, DefaultPorts};
use mindie::multinode::ranktable;
use mindie::security::{certinfo, keys, pem, tls};
use proptest::strategy::Strategy;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// [`fuzz::run`] over `target`'s committed seeds.
fn fuzz<S: Strategy<Value = Input>>(
    target: &str,
    weight: f64,
    strategy: impl Fn(usize) -> S,
    check: impl Fn(&[u8]),
) {
    fuzz::run(
        target,
        file!(),
        fuzz::seeds(target),
        weight,
        strategy,
        check,
    );
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn config_json() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("config.json");
    fuzz("config", 2.0, fuzz::input, |bytes| {
        write(&path, bytes, 0o640);
        // Ok or a typed error with every problem; the result itself is not judged.
        let _ = config::load(&path, home.path(), &Env::default());
    });
}

#[test]
fn multinode_ranktable() {
    let envs = [
        Env::from_pairs([("MIES_CONTAINER_IP", "127.0.0.1")]),
        Env::from_pairs([("HOST_IP", "127.0.0.2")]),
        Env::default(),
    ];
    fuzz("ranktable", 2.0, fuzz::input, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        if let Ok(table) = ranktable::parse(&text) {
            for env in &envs {
                if let Ok(p) = ranktable::locate(table.clone(), env) {
                    let _ = (p.world_size(), p.slaves(), p.local_device_ids());
                }
            }
        }
    });
}

#[test]
fn global_ranktable() {
    let ports = DefaultPorts {
        predict: 1025,
        mgmt: 1026,
        metric: 1027,
    };
    fuzz("global_ranktable", 2.0, fuzz::input, |bytes| {
        if let Ok(doc) = serde_json::from_slice(bytes) {
            let _ = global::parse(&doc, "global_rank_table_file.json", ports);
        }
    });
}

fn pem_dir() -> PathBuf {
    fuzz::dir("pem")
}

/// Every PEM/DER loader on the mutated file: the block parser, certificates, CRLs, private
/// keys (with the passphrase file), and the identity check with a good partner file.
#[test]
fn pem_cert_key_crl() {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let fuzzed = home.path().join("fuzzed.pem");
    let password = home.path().join("key.pwd");
    write(&password, b"fuzzpass", 0o400);
    let good_cert = pem_dir().join("cert.pem");
    let good_key = home.path().join("good_key.pem");
    write(
        &good_key,
        &std::fs::read(pem_dir().join("key_pkcs8.pem")).unwrap(),
        0o400,
    );
    fuzz("pem", 3.0, fuzz::byte_input, |bytes| {
        let _ = pem::parse(bytes);
        write(&fuzzed, bytes, 0o400);
        if let Ok(certs) = certinfo::read_certs(&fuzzed) {
            for c in &certs {
                let _ = certinfo::cert_facts(c).map(|f| certinfo::validity_at(&f, 0));
                let _ = certinfo::signed_by(c, c);
            }
        }
        let _ = certinfo::read_crls(&fuzzed);
        let _ = keys::load_private_key(&fuzzed, Some(&password));
        let _ = keys::load_private_key(&fuzzed, None);
        let _ = tls::load_identity(&fuzzed, &good_key, None);
        let _ = tls::load_identity(&good_cert, &fuzzed, Some(&password));
    });
}

/// The seeds are what they claim: the stock configs load, the ranktables parse, and each key
/// and certificate loads (so the fuzzer starts from inputs that reach deep into the loaders).
#[test]
fn seeds_load() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("config.json");
    write(
        &path,
        &std::fs::read(fuzz::dir("config").join("stock.json")).unwrap(),
        0o640,
    );
    config::load(&path, home.path(), &Env::default()).expect("stock config");
    for seed in fuzz::seeds("ranktable") {
        ranktable::parse(&String::from_utf8_lossy(&seed)).expect("ranktable seed");
    }
    let ports = DefaultPorts {
        predict: 1025,
        mgmt: 1026,
        metric: 1027,
    };
    for seed in fuzz::seeds("global_ranktable") {
        let doc = serde_json::from_slice(&seed).unwrap();
        global::parse(&doc, "global", ports).expect("global ranktable seed");
    }
    let password = home.path().join("key.pwd");
    write(&password, b"fuzzpass", 0o400);
    for key in [
        "key_pkcs8.pem",
        "key_pkcs8_enc.pem",
        "key_rsa_trad_enc.pem",
        "key_rsa_pkcs1.pem",
        "key_ec_sec1.pem",
    ] {
        keys::load_private_key(&pem_dir().join(key), Some(&password))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    tls::load_identity(
        &pem_dir().join("chain.pem"),
        &pem_dir().join("key_pkcs8.pem"),
        None,
    )
    .expect("identity");
    assert!(!certinfo::read_crls(&pem_dir().join("crl.pem"))
        .expect("crl")
        .is_empty());
    assert!(!certinfo::read_crls(&pem_dir().join("crl.der"))
        .expect("crl der")
        .is_empty());
}
