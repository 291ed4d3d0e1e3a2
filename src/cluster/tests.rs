//! Tests of the cluster gRPC layer over real sockets on 127.0.0.1 and real TLS: a test PKI
//! made with the `openssl` CLI (EC P-256 keys, so it takes well under a second), configs from
//! [`crate::security::tls`] exactly as the daemon builds them, and in-memory
//! [`KvSource`]/[`DecodeHandler`]s.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::kv::{
    self, ChunkAssembler, DecodeHandler, KvLayout, KvSource, KvSourceError, MAX_CHUNK_BYTES,
};
use super::proto::kv::{KvChunkMsg, KvHello, PullBlocksRequest};
use super::proto::pd::{DecodeParameters, DecodeRequestResponse};
use super::transport::{self, LinkError};
use crate::backend::KvChunk;
use crate::engine::handoff::KvExport;
use crate::security::perms::PermChecker;
use crate::security::reload::{Live, LiveServer, Reloader};
use crate::security::{tls, TlsFiles};

// ---------------------------------------------------------------------------------------
// Test PKI
// ---------------------------------------------------------------------------------------

/// A CA; a node certificate (SAN IP:127.0.0.1, serverAuth + clientAuth: instances are both
/// server and client); a revoked node certificate and the CA's CRL listing it; a foreign CA
/// and a node certificate it signed. Deleted when dropped.
struct Pki {
    dir: tempfile::TempDir,
}

const CNF: &str = r#"[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[node_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca]
default_ca = test_ca
[test_ca]
dir = .
database = ./index.txt
new_certs_dir = ./newcerts
certificate = ./ca.pem
private_key = ./ca.key
serial = ./serial
crlnumber = ./crlnumber
default_md = sha256
default_days = 365
default_crl_days = 30
unique_subject = no
policy = policy_any
copy_extensions = none
[policy_any]
commonName = supplied
"#;

fn openssl(dir: &Path, line: &str) {
    let out = Command::new("openssl")
        .args(line.split_whitespace())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    fn make() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("mindie-cluster-pki-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        fs::write(d.join("pki.cnf"), CNF).unwrap();
        fs::create_dir(d.join("newcerts")).unwrap();
        fs::write(d.join("index.txt"), "").unwrap();
        fs::write(d.join("serial"), "1000\n").unwrap();
        fs::write(d.join("crlnumber"), "1000\n").unwrap();
        for key in ["ca", "node", "revoked", "foreign_ca", "foreign"] {
            openssl(
                d,
                &format!("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {key}.key"),
            );
        }
        for (ca, cn) in [("ca", "PD-Test-CA"), ("foreign_ca", "Foreign-CA")] {
            openssl(
                d,
                &format!(
                    "req -new -x509 -config pki.cnf -extensions v3_ca -key {ca}.key \
                     -subj /CN={cn} -days 3650 -sha256 -out {ca}.pem"
                ),
            );
        }
        for (leaf, ca) in [("node", "ca"), ("revoked", "ca"), ("foreign", "foreign_ca")] {
            openssl(
                d,
                &format!(
                    "req -new -config pki.cnf -key {leaf}.key -subj /CN={leaf} -out {leaf}.csr"
                ),
            );
            openssl(
                d,
                &format!(
                    "x509 -req -in {leaf}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial \
                     -days 365 -sha256 -extfile pki.cnf -extensions node_ext -out {leaf}.pem"
                ),
            );
        }
        openssl(d, "ca -config pki.cnf -revoke revoked.pem");
        openssl(d, "ca -config pki.cnf -gencrl -out crl.pem");
        for entry in fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            let mode = if path.is_dir() {
                0o700
            } else if path.extension().is_some_and(|e| e == "pem") {
                0o640
            } else {
                0o600
            };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A plane's files with `leaf`'s identity, trusting `ca` and its CRL (when it has one).
    fn files(&self, leaf: &str, ca: &str) -> TlsFiles {
        TlsFiles {
            ca_files: vec![self.path(&format!("{ca}.pem"))],
            cert: self.path(&format!("{leaf}.pem")),
            key: self.path(&format!("{leaf}.key")),
            key_password: None,
            crl_files: if ca == "ca" {
                vec![self.path("crl.pem")]
            } else {
                Vec::new()
            },
        }
    }

    /// The daemon's interComm server config: `node`, mutual TLS against `ca` with the CRL.
    fn server(&self) -> Arc<rustls::ServerConfig> {
        tls::server_config(&self.files("node", "ca"), &mut PermChecker::new(true)).unwrap()
    }

    /// A client presenting `leaf` and trusting `ca` (with its CRL).
    fn client(&self, leaf: &str, ca: &str) -> Arc<rustls::ClientConfig> {
        tls::client_config_for(&self.files(leaf, ca), &mut PermChecker::new(true)).unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// In-memory services
// ---------------------------------------------------------------------------------------

fn layout() -> KvLayout {
    KvLayout {
        model_name: "llama-test".into(),
        num_layers: 2,
        num_kv_heads: 4,
        head_dim: 64,
        dtype: "float32".into(),
        block_size: 16,
        tp_size: 1,
        layout: "cpu-f32-kt/l2/h4/d64/b16".into(),
        bytes_per_block: 1 << 20,
    }
}

/// Held exports by request id, with the block ids they were published under.
#[derive(Default)]
struct MemSource {
    held: Mutex<HashMap<String, (Vec<i64>, KvExport)>>,
    released: Mutex<Vec<String>>,
}

impl MemSource {
    fn hold(&self, req_id: &str, blocks: Vec<i64>, export: KvExport) {
        self.held
            .lock()
            .unwrap()
            .insert(req_id.into(), (blocks, export));
    }
}

impl KvSource for MemSource {
    fn layout(&self) -> KvLayout {
        layout()
    }

    fn instance_id(&self) -> u32 {
        7
    }

    fn export(
        &self,
        req_id: &str,
        src_block_ids: &[i64],
        _num_tokens: u64,
    ) -> BoxFuture<'static, Result<KvExport, KvSourceError>> {
        let r = match self.held.lock().unwrap().get(req_id) {
            None => Err(KvSourceError::NotFound(format!(
                "request {req_id} holds no KV"
            ))),
            Some((blocks, _)) if blocks.as_slice() != src_block_ids => {
                Err(KvSourceError::FailedPrecondition(format!(
                    "blocks {src_block_ids:?} are not held for request {req_id}"
                )))
            }
            Some((_, export)) => Ok(export.clone()),
        };
        async move { r }.boxed()
    }

    fn release(&self, req_id: &str) -> BoxFuture<'static, bool> {
        self.released.lock().unwrap().push(req_id.into());
        let had = self.held.lock().unwrap().remove(req_id).is_some();
        async move { had }.boxed()
    }
}

/// Accepts every hand-off with tokens, refuses one without; records what it got.
#[derive(Default)]
struct Recorder {
    got: Mutex<Vec<DecodeParameters>>,
    delay: Option<Duration>,
}

impl DecodeHandler for Recorder {
    fn decode_request(&self, p: DecodeParameters) -> BoxFuture<'static, DecodeRequestResponse> {
        let ok = !p.tokens.is_empty();
        self.got.lock().unwrap().push(p);
        let delay = self.delay;
        async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            DecodeRequestResponse {
                is_valid_decode_parameters: ok,
                error_message: if ok {
                    String::new()
                } else {
                    "no tokens".into()
                },
            }
        }
        .boxed()
    }
}

struct Running {
    addr: SocketAddr,
    source: Arc<MemSource>,
    decode: Arc<Recorder>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), transport::ServeError>>,
}

impl Running {
    async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Running {
        Self::start_with(tls, Recorder::default()).await
    }

    async fn start_with(tls: Option<Arc<rustls::ServerConfig>>, rec: Recorder) -> Running {
        Self::start_live(tls.map(Live::new), rec).await
    }

    /// A server whose TLS comes from a swappable holder (as the daemon's interComm plane).
    async fn start_live(tls: Option<LiveServer>, rec: Recorder) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source = Arc::new(MemSource::default());
        let decode = Arc::new(rec);
        let routes = kv::routes(decode.clone(), source.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(transport::serve_live(listener, tls, routes, stop.clone()));
        Running {
            addr,
            source,
            decode,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
}

const SECS5: Duration = Duration::from_secs(5);

/// Bytes that differ from block to block and within each block.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn export_of(blocks: usize, kv_tokens: usize) -> KvExport {
    let l = layout();
    KvExport {
        kv_tokens,
        block_size: l.block_size,
        kv: KvChunk {
            layout: l.layout,
            bytes_per_block: l.bytes_per_block,
            data: pattern(blocks * l.bytes_per_block),
        },
        rng_state: Some(0x1234_5678_9abc_def0),
    }
}

fn params(req_id: &str) -> DecodeParameters {
    DecodeParameters {
        req_id: req_id.into(),
        tokens: vec![1, 2, 3],
        first_token: vec![42],
        mindie_rs_handoff: br#"{"v":1}"#.to_vec(),
        ..Default::default()
    }
}

async fn connect(addr: SocketAddr, tls: Option<Arc<rustls::ClientConfig>>) -> Channel {
    transport::dial(addr, tls, SECS5).await.unwrap()
}

/// Dials and makes one call; the error, wherever it surfaced (a TLS 1.3 server refuses a
/// client certificate after the client's handshake has finished, so the first call fails).
async fn refused(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> LinkError {
    match transport::dial(addr, Some(tls), SECS5).await {
        Err(e) => e,
        Ok(ch) => kv::decode_request(ch, params("r"), SECS5)
            .await
            .expect_err("the call must fail"),
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_over_mutual_tls_with_crl() {
    let pki = Pki::make();
    let srv = Running::start(Some(pki.server())).await;
    let ch = connect(srv.addr, Some(pki.client("node", "ca"))).await;

    // Hello: same layout, the server's instance id comes back.
    let peer = kv::hello(ch.clone(), &layout(), 3, SECS5).await.unwrap();
    assert_eq!((peer.layout, peer.instance_id), (layout(), 7));

    // DecodeRequestChannel, with the project's extension field carried through.
    let reply = kv::decode_request(ch.clone(), params("req-1"), SECS5)
        .await
        .unwrap();
    assert!(reply.is_valid_decode_parameters, "{reply:?}");
    let refused = kv::decode_request(
        ch.clone(),
        DecodeParameters {
            tokens: vec![],
            ..params("req-0")
        },
        SECS5,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            refused.is_valid_decode_parameters,
            refused.error_message.as_str()
        ),
        (false, "no tokens")
    );
    {
        let got = srv.decode.got.lock().unwrap();
        assert_eq!(got[0], params("req-1"));
        assert_eq!(got[0].mindie_rs_handoff, br#"{"v":1}"#);
    }

    // PullBlocks: 9 MiB in three chunks, byte-exact.
    let export = export_of(9, 140);
    srv.source
        .hold("req-1", vec![4, 5, 6, 7, 8, 9, 10, 11, 12], export.clone());
    let req = PullBlocksRequest {
        req_id: "req-1".into(),
        p_instance_id: 7,
        dp_rank: 0,
        src_block_ids: vec![4, 5, 6, 7, 8, 9, 10, 11, 12],
        num_tokens: 140,
    };
    let (got, stats) = kv::pull(ch.clone(), req, SECS5).await.unwrap();
    assert!(got == export, "pulled KV differs from the export");
    assert_eq!((stats.bytes, stats.chunks), (9 << 20, 3));

    // ReleaseKVCacheChannel: the first frees, the second (nothing held) is still OK.
    kv::release(ch.clone(), "req-1", kv::RELEASE_DEADLINE)
        .await
        .unwrap();
    kv::release(ch.clone(), "req-1", kv::RELEASE_DEADLINE)
        .await
        .unwrap();
    assert_eq!(*srv.source.released.lock().unwrap(), ["req-1", "req-1"]);
    assert!(srv.source.held.lock().unwrap().is_empty());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_are_refused_and_the_server_keeps_serving() {
    let pki = Pki::make();
    let srv = Running::start(Some(pki.server())).await;

    let revoked = refused(srv.addr, pki.client("revoked", "ca")).await;
    assert!(
        matches!(&revoked, LinkError::Tls { reason } if reason.contains("CertificateRevoked")),
        "{revoked}"
    );
    // Trusts our CA (so the server passes) but presents a foreign CA's certificate.
    let foreign_files = TlsFiles {
        ca_files: vec![pki.path("ca.pem")],
        ..pki.files("foreign", "foreign_ca")
    };
    let foreign = tls::client_config_for(&foreign_files, &mut PermChecker::new(true)).unwrap();
    let foreign = refused(srv.addr, foreign).await;
    assert!(
        matches!(&foreign, LinkError::Tls { reason } if reason.contains("UnknownCA")),
        "{foreign}"
    );
    let anonymous = tls::client_config(&[pki.path("ca.pem")], None).unwrap();
    let anonymous = refused(srv.addr, anonymous).await;
    assert!(
        matches!(&anonymous, LinkError::Tls { reason } if reason.contains("CertificateRequired")),
        "{anonymous}"
    );
    // A plain-text client gets nowhere either.
    let plain = refused_plain(srv.addr).await;
    assert!(plain.is_err(), "a plain client was served");

    // A connection that never starts its handshake does not hold up others.
    let _silent = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let ch = connect(srv.addr, Some(pki.client("node", "ca"))).await;
    let reply = kv::decode_request(ch, params("after"), SECS5)
        .await
        .unwrap();
    assert!(reply.is_valid_decode_parameters);
    srv.stop().await;
}

async fn refused_plain(addr: SocketAddr) -> Result<DecodeRequestResponse, LinkError> {
    let ch = transport::dial(addr, None, SECS5).await?;
    kv::decode_request(ch, params("plain"), Duration::from_secs(2)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_a_server_outside_its_ca() {
    let pki = Pki::make();
    // The server presents the foreign CA's certificate (valid for 127.0.0.1).
    let server = tls::server_config(
        &TlsFiles {
            ca_files: vec![pki.path("ca.pem")],
            ..pki.files("foreign", "foreign_ca")
        },
        &mut PermChecker::new(true),
    )
    .unwrap();
    let srv = Running::start(Some(server)).await;
    let err = transport::dial(srv.addr, Some(pki.client("node", "ca")), SECS5)
        .await
        .expect_err("an untrusted server");
    match &err {
        LinkError::Tls { reason } => {
            assert!(reason.contains(&srv.addr.to_string()), "{err}");
            assert!(reason.to_lowercase().contains("certificate"), "{err}");
        }
        other => panic!("expected a TLS refusal, got {other}"),
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_mismatch_names_every_field_on_both_sides() {
    let srv = Running::start(None).await;
    let ch = connect(srv.addr, None).await;
    let mine = KvLayout {
        num_layers: 4,
        dtype: "bfloat16".into(),
        ..layout()
    };
    let err = kv::hello(ch.clone(), &mine, 3, SECS5).await.unwrap_err();
    assert_eq!(
        err,
        LinkError::Layout(
            "num_layers: local 4, peer 2; dtype: local \"bfloat16\", peer \"float32\"".into()
        )
    );
    // The server's own verdict, seen with the raw client.
    let reply = super::proto::kv::kv_transfer_client::KvTransferClient::new(ch)
        .hello(mine.to_hello(3))
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.ok);
    assert_eq!(
        reply.reason,
        "num_layers: local 2, peer 4; dtype: local \"float32\", peer \"bfloat16\""
    );
    srv.stop().await;
}

#[test]
fn mismatch_lists_all_fields() {
    let a = layout();
    assert_eq!(a.mismatch(&a.clone()), None);
    let b = KvLayout {
        model_name: "other".into(),
        num_layers: 3,
        num_kv_heads: 8,
        head_dim: 128,
        dtype: "float16".into(),
        block_size: 32,
        tp_size: 2,
        layout: "x".into(),
        bytes_per_block: 5,
    };
    let text = a.mismatch(&b).unwrap();
    for field in [
        "model_name",
        "num_layers: local 2, peer 3",
        "num_kv_heads: local 4, peer 8",
        "head_dim",
        "dtype",
        "block_size",
        "tp_size",
        "layout: local",
        "bytes_per_block: local 1048576, peer 5",
    ] {
        assert!(text.contains(field), "{field} missing from {text}");
    }
    assert_eq!(KvLayout::from_hello(&b.to_hello(1)), b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_errors_map_to_status_codes() {
    let srv = Running::start(None).await;
    let ch = connect(srv.addr, None).await;
    let ask = |req_id: &str, blocks: Vec<i64>| PullBlocksRequest {
        req_id: req_id.into(),
        src_block_ids: blocks,
        ..Default::default()
    };
    let err = kv::pull(ch.clone(), ask("nope", vec![1]), SECS5)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        LinkError::Status {
            code: tonic::Code::NotFound,
            message: "request nope holds no KV".into()
        }
    );
    assert!(
        err.to_string().contains("request nope holds no KV"),
        "{err}"
    );

    srv.source.hold("r2", vec![1, 2], export_of(2, 20));
    let err = kv::pull(ch.clone(), ask("r2", vec![3]), SECS5)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        LinkError::Status {
            code: tonic::Code::FailedPrecondition,
            message: "blocks [3] are not held for request r2".into()
        }
    );
    // The token count D expects is checked against what arrived.
    let err = kv::pull(
        ch,
        PullBlocksRequest {
            num_tokens: 21,
            ..ask("r2", vec![1, 2])
        },
        SECS5,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, LinkError::Protocol(m) if m.contains("20 tokens, 21")),
        "{err}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_h2c_when_tls_is_off() {
    let srv = Running::start(None).await;
    let ch = connect(srv.addr, None).await;
    assert!(
        kv::decode_request(ch.clone(), params("p"), SECS5)
            .await
            .unwrap()
            .is_valid_decode_parameters
    );
    // An empty export still arrives (one chunk, header only).
    srv.source.hold("empty", vec![], export_of(0, 0));
    let (got, stats) = kv::pull(
        ch.clone(),
        PullBlocksRequest {
            req_id: "empty".into(),
            ..Default::default()
        },
        SECS5,
    )
    .await
    .unwrap();
    assert_eq!((got, stats.chunks), (export_of(0, 0), 1));
    kv::release(ch, "empty", SECS5).await.unwrap();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_and_connect_errors() {
    let rec = Recorder {
        delay: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    let srv = Running::start_with(None, rec).await;
    let ch = connect(srv.addr, None).await;
    let d = Duration::from_millis(200);
    assert_eq!(
        kv::decode_request(ch, params("slow"), d).await.unwrap_err(),
        LinkError::Deadline(d)
    );
    srv.stop().await;

    // Nobody listens on a port just freed.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let err = transport::dial(addr, None, SECS5).await.unwrap_err();
    assert!(
        matches!(&err, LinkError::Connect { addr: a, .. } if *a == addr),
        "{err}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

// ---- reassembly, without a network ----

fn msgs(export: KvExport) -> Vec<KvChunkMsg> {
    kv::chunk_messages(export).collect()
}

#[test]
fn chunks_are_at_most_4_mib_and_reassemble() {
    let e = KvExport {
        kv: KvChunk {
            bytes_per_block: 1000,
            data: pattern(9_000 * 1000),
            ..export_of(0, 0).kv
        },
        ..export_of(0, 0)
    };
    let m = msgs(e.clone());
    assert_eq!(m.len(), 3);
    assert!(m.iter().all(|c| c.data.len() <= MAX_CHUNK_BYTES));
    assert!(m[0].header.is_some() && m[1].header.is_none() && m[2].header.is_none());
    let mut asm = ChunkAssembler::default();
    for c in m {
        asm.push(c).unwrap();
    }
    assert!(asm.finish(0).unwrap() == e);
}

#[test]
fn reassembly_refuses_bad_streams() {
    let base = msgs(export_of(9, 140));
    let run = |m: Vec<KvChunkMsg>| -> LinkError {
        let mut asm = ChunkAssembler::default();
        for c in m {
            if let Err(e) = asm.push(c) {
                return e;
            }
        }
        asm.finish(0).unwrap_err()
    };
    let text = |e: LinkError| match e {
        LinkError::Protocol(m) => m,
        other => panic!("expected a protocol error, got {other}"),
    };
    // Out of order.
    let swapped = vec![base[0].clone(), base[2].clone(), base[1].clone()];
    assert!(text(run(swapped)).contains("chunk 2 arrived where chunk 1"));
    // No header.
    let mut headless = base.clone();
    headless[0].header = None;
    assert!(text(run(headless)).contains("no header"));
    // A gap in the offsets.
    let mut gap = base.clone();
    gap[1].offset += 1;
    assert!(text(run(gap)).contains("starts at byte"));
    // Cut short.
    assert!(text(run(base[..2].to_vec())).contains("ended after 8388608 of 9437184"));
    // Nothing at all.
    assert!(text(run(Vec::new())).contains("without a chunk"));
    // A header lying about the size.
    let mut over = base.clone();
    if let Some(h) = over[0].header.as_mut() {
        h.total_bytes = 2 << 20;
    }
    assert!(text(run(over)).contains("past the announced"));
    // A repeated header.
    let mut twice = base;
    twice[1].header = twice[0].header.clone();
    assert!(text(run(twice)).contains("repeats the header"));
}

#[test]
fn hello_round_trips_through_the_wire_form() {
    let h: KvHello = layout().to_hello(9);
    assert_eq!((KvLayout::from_hello(&h), h.instance_id), (layout(), 9));
}

/// The server certificate a TLS handshake with `addr` shows (ALPN `h2`, as a link's).
async fn served_certificate(addr: SocketAddr, client: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let mut cfg = (*client).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The DER of the (first) certificate in `path`.
fn der_of(path: &Path) -> Vec<u8> {
    crate::security::certinfo::read_certs(path).unwrap()[0].to_vec()
}

/// Both halves of an interComm plane registered with a [`Reloader`]: after the plane's files
/// are replaced (identity `node` -> `node2`, a CRL now revoking `node`) and reloaded, the
/// server presents `node2` and refuses `node` on new connections, the link's client dials
/// with `node2` (else the new CRL would refuse it), and a channel opened before the reload
/// keeps working. A broken CRL is then refused, naming the file, and the material in use
/// stays the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_new_link_connections_and_spares_open_ones() {
    let pki = Pki::make();
    let d = pki.dir.path();
    openssl(
        d,
        "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out node2.key",
    );
    openssl(
        d,
        "req -new -config pki.cnf -key node2.key -subj /CN=node2 -out node2.csr",
    );
    openssl(
        d,
        "x509 -req -in node2.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 -sha256 \
         -extfile pki.cnf -extensions node_ext -out node2.pem",
    );
    openssl(d, "ca -config pki.cnf -revoke node.pem");
    openssl(d, "ca -config pki.cnf -gencrl -out crl2.pem");
    fs::set_permissions(d.join("node2.pem"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(d.join("node2.key"), fs::Permissions::from_mode(0o600)).unwrap();

    // The plane's own files, started as `node` with the CRL that revokes only `revoked`.
    let plane = tempfile::tempdir().unwrap();
    let install = |from: &str, to: &str| {
        let (src, dst, tmp) = (
            pki.path(from),
            plane.path().join(to),
            plane.path().join("tmp"),
        );
        fs::copy(src, &tmp).unwrap();
        let mode = if to.ends_with(".key") { 0o600 } else { 0o640 };
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).unwrap();
        fs::rename(&tmp, dst).unwrap();
    };
    for (from, to) in [
        ("ca.pem", "ca.pem"),
        ("node.pem", "plane.pem"),
        ("node.key", "plane.key"),
        ("crl.pem", "crl.pem"),
    ] {
        install(from, to);
    }
    let files = TlsFiles {
        ca_files: vec![plane.path().join("ca.pem")],
        cert: plane.path().join("plane.pem"),
        key: plane.path().join("plane.key"),
        key_password: None,
        crl_files: vec![plane.path().join("crl.pem")],
    };
    let reloader = Reloader::default();
    let mut checker = PermChecker::new(true);
    let (server, client) = reloader.both("interComm", files, &mut checker).unwrap();
    let srv = Running::start_live(Some(server.clone()), Recorder::default()).await;
    let dial = || transport::dial_from_live(srv.addr, None, Some(client.clone()), SECS5);
    let open = dial().await.unwrap();
    assert!(
        kv::decode_request(open.clone(), params("before"), SECS5)
            .await
            .unwrap()
            .is_valid_decode_parameters
    );
    assert_eq!(
        served_certificate(srv.addr, pki.client("node2", "ca")).await,
        der_of(&pki.path("node.pem"))
    );

    // Rotate: identity node2, and a CRL that revokes node.
    install("node2.key", "plane.key");
    install("node2.pem", "plane.pem");
    install("crl2.pem", "crl.pem");
    let outcomes = reloader.reload(&mut checker);
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].plane, "interComm");
    assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);

    // Server half: presents node2; refuses node (revoked by the new CRL) on a new connection.
    assert_eq!(
        served_certificate(srv.addr, pki.client("node2", "ca")).await,
        der_of(&pki.path("node2.pem"))
    );
    let old_identity = refused(srv.addr, pki.client("node", "ca")).await;
    assert!(
        matches!(&old_identity, LinkError::Tls { reason } if reason.contains("CertificateRevoked")),
        "{old_identity}"
    );
    // Client half: a new link presents node2 and is accepted.
    let fresh = dial().await.unwrap();
    assert!(
        kv::decode_request(fresh, params("after"), SECS5)
            .await
            .unwrap()
            .is_valid_decode_parameters
    );
    // The channel opened before the reload (its connection presented node) still works.
    assert!(
        kv::decode_request(open.clone(), params("open"), SECS5)
            .await
            .unwrap()
            .is_valid_decode_parameters
    );

    // A broken CRL: refused, naming the file; the same material stays in use.
    let before = (server.current(), client.current());
    fs::write(plane.path().join("crl.pem"), "not a CRL\n").unwrap();
    let outcomes = reloader.reload(&mut checker);
    let err = outcomes[0].result.as_ref().expect_err("a broken CRL");
    assert!(err.to_string().contains("crl.pem"), "{err}");
    assert!(Arc::ptr_eq(&before.0, &server.current()));
    assert!(Arc::ptr_eq(&before.1, &client.current()));
    let fresh = dial().await.unwrap();
    assert!(
        kv::decode_request(fresh, params("still"), SECS5)
            .await
            .unwrap()
            .is_valid_decode_parameters
    );
    srv.stop().await;
}
