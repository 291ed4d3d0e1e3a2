//! The PD KV pull over loopback (plain `std::time`, `harness = false`): how fast D can pull a
//! prefilled request's KV from P with [`mindie::cluster::kv::pull`], over mutual TLS (our
//! rustls/ring configs with a CRL, exactly as the daemon builds them) and over plain h2c, both
//! on 127.0.0.1, and which layer under it bounds the rate. The goal is ≥ 2 GB/s.
//!
//! What it measures:
//! 1. **Pulls.** For each prompt length (default 128, 512, 1024, 2048, 4096 tokens) a
//!    [`KvSource`] serves a `KvExport` of the bench model's KV size (Qwen2-0.5B on the CPU
//!    backend: 24 layers × K and V × 2 KV heads × head_dim 64 × f32 = 24,576 B per token,
//!    blocks of 128 tokens), cloned per export from a pre-built buffer as the engine would copy
//!    it out; D pulls it with `cluster::kv::pull` (≤ 4 MiB chunks, reassembled and validated)
//!    over one channel per transport. Each size is pulled once to warm up (and checked
//!    byte-exact), then repeated for at least `--min-pulls` pulls and `--min-secs` seconds;
//!    the table shows median and p90 time, GB/s (bytes / median; GB = 10⁹ B), chunks, and the
//!    median time P spent cloning the export inside those pulls (with the rate net of it).
//! 2. **The layers under it**, each alone: (i) cloning the export buffer (a fresh allocation,
//!    page faults included) and a memcpy into a warm buffer; chunking an export and
//!    reassembling it with `ChunkAssembler` in memory (D's copy, no gRPC); (ii) rustls alone
//!    in memory (encrypt on one side, decrypt on the other, same configs and cipher suite) and
//!    a tokio-rustls stream over a loopback TCP pair; (iii) a plain TCP loopback stream. A
//!    budget then puts each next to the mTLS pull of the largest size. The clone and
//!    reassembly rows include first-touch page faults of their fresh buffers (glibc serves
//!    allocations above its mmap threshold, at most 32 MiB, from a fresh mapping every time),
//!    which the warm memcpy row leaves out.
//! 3. A one-line summary: the goal and the mTLS rate at 4096 tokens (the largest size asked).
//!
//! Run: `cargo bench --bench kv_pull` (about 20 s). Flags (after `--`):
//! `--layers 24 --kv-heads 2 --head-dim 64 --block-size 128` (the geometry; f32 KV),
//! `--tokens 128,512,1024,2048,4096`, `--min-pulls 5 --min-secs 1 --max-pulls 200`,
//! `--stream-mib 256` (bytes each stream probe moves), `--threads 2` (worker threads of P's
//! and of D's runtime each: they are separate runtimes, as the two are separate processes in
//! a deployment), `--pulls-only` (skip part 2, e.g. under a profiler), `--json <file>` (also
//! write every number as JSON).
//!
//! The PKI (EC P-256 CA, a node certificate for IP 127.0.0.1 with serverAuth + clientAuth, the
//! CA's CRL) is made with the `openssl` CLI in a temporary directory, as in the cluster
//! tests. Numbers depend on the machine: on a small shared host, P's and D's work compete for
//! the same cores, which a real pair of instances does not.
#![allow(clippy::unwrap_used)] // bench code: a failed unwrap is a failed run

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use mindie::backend::KvChunk;
use mindie::cluster::kv::{
    self, ChunkAssembler, DecodeHandler, KvLayout, KvSource, KvSourceError, MAX_CHUNK_BYTES,
};
use mindie::cluster::proto::kv::PullBlocksRequest;
use mindie::cluster::proto::pd::{DecodeParameters, DecodeRequestResponse};
use mindie::cluster::transport;
use mindie::engine::handoff::KvExport;
use mindie::security::perms::PermChecker;
use mindie::security::{tls, TlsFiles};
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "PD KV pull over loopback: mutual TLS vs h2c, and the layers under it")]
struct Args {
    /// Model layers (Qwen2-0.5B: 24).
    #[arg(long, default_value_t = 24)]
    layers: usize,
    /// KV heads (Qwen2-0.5B: 2).
    #[arg(long, default_value_t = 2)]
    kv_heads: usize,
    /// Head dimension (Qwen2-0.5B: 64).
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 128)]
    block_size: usize,
    /// Prompt lengths to pull, in tokens.
    #[arg(long, value_delimiter = ',', default_values_t = [128, 512, 1024, 2048, 4096])]
    tokens: Vec<usize>,
    /// Pull each size at least this many times.
    #[arg(long, default_value_t = 5)]
    min_pulls: usize,
    /// ... and for at least this many seconds.
    #[arg(long, default_value_t = 1.0)]
    min_secs: f64,
    /// ... but never more than this many times.
    #[arg(long, default_value_t = 200)]
    max_pulls: usize,
    /// MiB each stream probe (rustls in memory, TLS over TCP, plain TCP) moves per run.
    #[arg(long, default_value_t = 256)]
    stream_mib: usize,
    /// Worker threads of P's runtime and of D's runtime (each).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Also write every number to this file as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Only the pulls (part 1) and the summary, e.g. under a profiler.
    #[arg(long)]
    pulls_only: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The goal for a pull, in GB/s.
const GOAL_GBPS: f64 = 2.0;
/// Deadline of one pull.
const PULL_DEADLINE: Duration = Duration::from_secs(120);
const MIB: f64 = (1u64 << 20) as f64;

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and nearest-rank p90 of `v` (sorted in place).
fn median_p90(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    let n = v.len();
    let p90 = ((n * 9).div_ceil(10)).clamp(1, n) - 1;
    (v[n / 2], v[p90])
}

/// Runs `f` at least `min_runs` times and for at least `min_time`; the median duration.
fn median_of(min_runs: usize, min_time: Duration, mut f: impl FnMut() -> Duration) -> Duration {
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < min_runs || (start.elapsed() < min_time && times.len() < 1000) {
        times.push(f());
    }
    median_p90(&mut times).0
}

/// Bytes that differ from block to block and within each block.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

// ---------------------------------------------------------------------------------------
// PKI (as src/cluster/tests.rs makes it)
// ---------------------------------------------------------------------------------------

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
default_ca = bench_ca
[bench_ca]
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
        .expect("run openssl (the bench makes its PKI with the openssl CLI)");
    assert!(
        out.status.success(),
        "openssl {line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, its (empty) CRL, and one node certificate for IP 127.0.0.1 that both sides use, as
/// two instances of one cluster do. Deleted when dropped.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn make() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("mindie-kv-pull-pki-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        fs::write(d.join("pki.cnf"), CNF).unwrap();
        fs::create_dir(d.join("newcerts")).unwrap();
        fs::write(d.join("index.txt"), "").unwrap();
        fs::write(d.join("serial"), "1000\n").unwrap();
        fs::write(d.join("crlnumber"), "1000\n").unwrap();
        for key in ["ca", "node"] {
            openssl(
                d,
                &format!("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {key}.key"),
            );
        }
        openssl(
            d,
            "req -new -x509 -config pki.cnf -extensions v3_ca -key ca.key -subj /CN=KV-Bench-CA \
             -days 3650 -sha256 -out ca.pem",
        );
        openssl(
            d,
            "req -new -config pki.cnf -key node.key -subj /CN=node -out node.csr",
        );
        openssl(
            d,
            "x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 -sha256 \
             -extfile pki.cnf -extensions node_ext -out node.pem",
        );
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
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
        Pki { dir }
    }

    fn files(&self) -> TlsFiles {
        let p = |n: &str| self.dir.path().join(n);
        TlsFiles {
            ca_files: vec![p("ca.pem")],
            cert: p("node.pem"),
            key: p("node.key"),
            key_password: None,
            crl_files: vec![p("crl.pem")],
        }
    }

    /// The interComm server config: mutual TLS against the CA, with its CRL.
    fn server(&self) -> Arc<rustls::ServerConfig> {
        tls::server_config(&self.files(), &mut PermChecker::new(true)).unwrap()
    }

    /// The interComm client config: presents the node certificate, trusts the CA and CRL.
    fn client(&self) -> Arc<rustls::ClientConfig> {
        tls::client_config_for(&self.files(), &mut PermChecker::new(true)).unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// P's services
// ---------------------------------------------------------------------------------------

/// The KV geometry under test.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
}

impl Geometry {
    /// K and V, every layer, f32.
    fn bytes_per_token(&self) -> usize {
        self.layers * 2 * self.kv_heads * self.head_dim * 4
    }

    fn bytes_per_block(&self) -> usize {
        self.bytes_per_token() * self.block_size
    }

    fn layout(&self) -> KvLayout {
        KvLayout {
            model_name: "qwen2-0.5b-kv-bench".into(),
            num_layers: self.layers,
            num_kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            dtype: "float32".into(),
            block_size: self.block_size,
            tp_size: 1,
            layout: format!(
                "cpu-f32-kt/l{}/h{}/d{}/b{}",
                self.layers, self.kv_heads, self.head_dim, self.block_size
            ),
            bytes_per_block: self.bytes_per_block(),
        }
    }

    fn blocks(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// What P holds for a prompt of `tokens` tokens: whole blocks of KV.
    fn export(&self, tokens: usize) -> KvExport {
        KvExport {
            kv_tokens: tokens,
            block_size: self.block_size,
            kv: KvChunk {
                layout: self.layout().layout,
                bytes_per_block: self.bytes_per_block(),
                data: pattern(self.blocks(tokens) * self.bytes_per_block()),
            },
            rng_state: Some(0x1234_5678_9abc_def0),
        }
    }
}

/// Pre-built exports by request id, cloned per export; records how long each clone took.
struct BenchSource {
    layout: KvLayout,
    held: Mutex<HashMap<String, Arc<KvExport>>>,
    clone_times: Mutex<Vec<Duration>>,
}

impl KvSource for BenchSource {
    fn layout(&self) -> KvLayout {
        self.layout.clone()
    }

    fn instance_id(&self) -> u32 {
        1
    }

    fn export(
        &self,
        req_id: &str,
        _src_block_ids: &[i64],
        _num_tokens: u64,
    ) -> BoxFuture<'static, Result<KvExport, KvSourceError>> {
        let held = self.held.lock().unwrap().get(req_id).cloned();
        let r = match held {
            None => Err(KvSourceError::NotFound(format!(
                "request {req_id} holds no KV"
            ))),
            Some(export) => {
                let t = Instant::now();
                let copy = KvExport::clone(&export);
                self.clone_times.lock().unwrap().push(t.elapsed());
                Ok(copy)
            }
        };
        async move { r }.boxed()
    }

    fn release(&self, _req_id: &str) -> BoxFuture<'static, bool> {
        async { true }.boxed()
    }
}

/// Never called by the bench; `routes` needs one.
struct NoDecode;

impl DecodeHandler for NoDecode {
    fn decode_request(&self, _p: DecodeParameters) -> BoxFuture<'static, DecodeRequestResponse> {
        async {
            DecodeRequestResponse {
                is_valid_decode_parameters: false,
                error_message: "the KV bench decodes nothing".into(),
            }
        }
        .boxed()
    }
}

// ---------------------------------------------------------------------------------------
// 1. Pulls
// ---------------------------------------------------------------------------------------

struct PullRow {
    transport: &'static str,
    tokens: usize,
    bytes: usize,
    chunks: u64,
    pulls: usize,
    median: Duration,
    p90: Duration,
    /// Median time P spent cloning the export, over the same pulls.
    clone_median: Duration,
}

impl PullRow {
    fn gbps(&self) -> f64 {
        gbps(self.bytes, self.median)
    }

    fn net_gbps(&self) -> f64 {
        gbps(self.bytes, self.median.saturating_sub(self.clone_median))
    }

    fn json(&self) -> Value {
        json!({
            "transport": self.transport,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "chunks": self.chunks,
            "pulls": self.pulls,
            "median_ms": ms(self.median),
            "p90_ms": ms(self.p90),
            "gbps": self.gbps(),
            "clone_median_ms": ms(self.clone_median),
            "gbps_net_of_clone": self.net_gbps(),
        })
    }
}

fn pull_request(g: &Geometry, tokens: usize) -> PullBlocksRequest {
    PullBlocksRequest {
        req_id: format!("bench-{tokens}"),
        p_instance_id: 1,
        dp_rank: 0,
        src_block_ids: (0..g.blocks(tokens) as i64).collect(),
        num_tokens: tokens as u64,
    }
}

/// One pull, run as a task on D's runtime (as the daemon's pull is), not on this thread.
fn pull_once(
    rt: &Runtime,
    ch: &Channel,
    g: &Geometry,
    tokens: usize,
) -> Result<(KvExport, kv::PullStats), transport::LinkError> {
    let pull = kv::pull(ch.clone(), pull_request(g, tokens), PULL_DEADLINE);
    rt.block_on(rt.spawn(pull)).unwrap()
}

fn pull_size(
    rt: &Runtime,
    ch: &Channel,
    source: &BenchSource,
    transport: &'static str,
    g: &Geometry,
    tokens: usize,
    args: &Args,
) -> PullRow {
    let want = source
        .held
        .lock()
        .unwrap()
        .get(&format!("bench-{tokens}"))
        .cloned()
        .unwrap();
    // Warm-up, checked byte-exact.
    let (got, stats) = pull_once(rt, ch, g, tokens)
        .unwrap_or_else(|e| panic!("{transport} pull of {tokens} tokens: {e}"));
    assert!(got == *want, "{transport}: the pulled KV differs");
    let chunks = stats.chunks;
    drop(got);
    source.clone_times.lock().unwrap().clear();

    let min_time = Duration::from_secs_f64(args.min_secs);
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < args.min_pulls.max(1)
        || (start.elapsed() < min_time && times.len() < args.max_pulls)
    {
        let t = Instant::now();
        let (got, stats) = pull_once(rt, ch, g, tokens).unwrap();
        let el = t.elapsed();
        assert_eq!(
            (got.kv.data.len(), stats.chunks),
            (want.kv.data.len(), chunks)
        );
        drop(got);
        times.push(el);
    }
    let (median, p90) = median_p90(&mut times);
    let mut clones = std::mem::take(&mut *source.clone_times.lock().unwrap());
    let (clone_median, _) = median_p90(&mut clones);
    PullRow {
        transport,
        tokens,
        bytes: want.kv.data.len(),
        chunks,
        pulls: times.len(),
        median,
        p90,
        clone_median,
    }
}

// ---------------------------------------------------------------------------------------
// 2. The layers
// ---------------------------------------------------------------------------------------

/// (i) P's clone of the export (a fresh buffer) and a memcpy into a warm one.
fn copy_rates(export: &KvExport) -> (Duration, Duration) {
    let warm = Duration::from_millis(300);
    let clone = median_of(5, warm, || {
        let t = Instant::now();
        let c = export.clone();
        let el = t.elapsed();
        drop(std::hint::black_box(c));
        el
    });
    let mut dst = vec![0u8; export.kv.data.len()];
    let memcpy = median_of(5, warm, || {
        let t = Instant::now();
        dst.copy_from_slice(&export.kv.data);
        std::hint::black_box(&mut dst);
        t.elapsed()
    });
    (clone, memcpy)
}

/// (i) D's side without the network: `chunk_messages` then `ChunkAssembler` (one copy into a
/// fresh buffer; the export handed to `chunk_messages` is moved in, not timed).
fn reassembly_time(export: &KvExport) -> Duration {
    median_of(5, Duration::from_millis(300), || {
        let e = export.clone();
        let t = Instant::now();
        let mut asm = ChunkAssembler::default();
        for msg in kv::chunk_messages(e) {
            asm.push(msg).unwrap();
        }
        let out = asm.finish(0).unwrap();
        let el = t.elapsed();
        drop(std::hint::black_box(out));
        el
    })
}

/// Feeds the records in `wire` to `to` and drains the plaintext they carry into `sink`;
/// the plaintext bytes received.
fn receive(to: &mut rustls::Connection, wire: &[u8], sink: &mut [u8]) -> usize {
    let mut rd = wire;
    let mut got = 0;
    loop {
        if !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
        }
        let mut left = to.process_new_packets().unwrap().plaintext_bytes_to_read();
        if left == 0 && rd.is_empty() {
            return got;
        }
        while left > 0 {
            let take = left.min(sink.len());
            let n = to.reader().read(&mut sink[..take]).unwrap();
            left -= n;
            got += n;
        }
    }
}

/// Moves everything `from` has to send into `to` (`wire` is scratch space).
fn transfer(
    from: &mut rustls::Connection,
    to: &mut rustls::Connection,
    wire: &mut Vec<u8>,
    sink: &mut [u8],
) {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire).unwrap();
    }
    receive(to, wire, sink);
}

struct RustlsMemory {
    suite: String,
    encrypt: Duration,
    decrypt: Duration,
    bytes: usize,
}

/// (ii) rustls alone, no sockets: P's side encrypts `bytes` of application data (plaintext
/// into records in P's buffer, then out to a byte vector), D's side decrypts them (in, in
/// place, out to the reader); each timed on its own, one core each.
fn rustls_in_memory(pki: &Pki, bytes: usize) -> RustlsMemory {
    let ip = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let mut d = rustls::Connection::Client(
        rustls::ClientConnection::new(pki.client(), ip.to_owned()).unwrap(),
    );
    let mut p = rustls::Connection::Server(rustls::ServerConnection::new(pki.server()).unwrap());
    let mut wire = Vec::new();
    let mut sink = vec![0u8; 64 << 10];
    for _ in 0..10 {
        if !d.is_handshaking() && !p.is_handshaking() {
            break;
        }
        transfer(&mut d, &mut p, &mut wire, &mut sink);
        transfer(&mut p, &mut d, &mut wire, &mut sink);
    }
    assert!(
        !d.is_handshaking() && !p.is_handshaking(),
        "in-memory handshake"
    );
    let suite = format!("{:?}", p.negotiated_cipher_suite().unwrap().suite());
    p.set_buffer_limit(None);

    let batch = 4 << 20;
    let plain = pattern(batch);
    let (mut encrypt, mut decrypt) = (Duration::ZERO, Duration::ZERO);
    let mut sent = 0;
    // One untimed batch first (buffers grow to size).
    for timed in std::iter::once(false).chain(std::iter::repeat(true)) {
        if timed && sent >= bytes {
            break;
        }
        let t = Instant::now();
        p.writer().write_all(&plain).unwrap();
        wire.clear();
        while p.wants_write() {
            p.write_tls(&mut wire).unwrap();
        }
        let enc = t.elapsed();
        let t = Instant::now();
        let got = receive(&mut d, &wire, &mut sink);
        let dec = t.elapsed();
        assert_eq!(got, batch);
        if timed {
            encrypt += enc;
            decrypt += dec;
            sent += batch;
        }
    }
    RustlsMemory {
        suite,
        encrypt,
        decrypt,
        bytes: sent,
    }
}

/// Writes `total` bytes into `w` (P's side) while reading them from `r` (D's side) on another
/// task; the time until the reader has them all.
async fn stream_through<W, R>(mut w: W, mut r: R, total: usize) -> (Duration, W, R)
where
    W: AsyncWrite + Unpin + Send + 'static,
    R: AsyncRead + Unpin + Send + 'static,
{
    let piece = pattern(256 << 10);
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let mut left = total;
        while left > 0 {
            let n = left.min(piece.len());
            w.write_all(&piece[..n]).await.unwrap();
            left -= n;
        }
        w.flush().await.unwrap();
        w
    });
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0;
    while got < total {
        let n = r.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream ended after {got} of {total} bytes");
        got += n;
    }
    let el = start.elapsed();
    let w = writer.await.unwrap();
    (el, w, r)
}

/// A connected loopback TCP pair (P's accepted end, D's dialled end), no Nagle, as the
/// transport sets them.
async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dialled, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), async {
        listener.accept().await.map(|(s, _)| s)
    });
    let (d, p) = (dialled.unwrap(), accepted.unwrap());
    p.set_nodelay(true).unwrap();
    d.set_nodelay(true).unwrap();
    (p, d)
}

/// Median of three streams of `total` bytes after a 16 MiB warm-up.
async fn stream_median<W, R>(mut w: W, mut r: R, total: usize) -> Duration
where
    W: AsyncWrite + Unpin + Send + 'static,
    R: AsyncRead + Unpin + Send + 'static,
{
    (_, w, r) = stream_through(w, r, 16 << 20).await;
    let mut times = Vec::new();
    for _ in 0..3 {
        let el;
        (el, w, r) = stream_through(w, r, total).await;
        times.push(el);
    }
    median_p90(&mut times).0
}

/// (ii) tokio-rustls over loopback TCP, the interComm configs, P writing and D reading.
async fn tls_stream(pki: &Pki, total: usize) -> Duration {
    let (p_tcp, d_tcp) = tcp_pair().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server());
    let connector = tokio_rustls::TlsConnector::from(pki.client());
    let ip = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let (p, d) = tokio::join!(acceptor.accept(p_tcp), connector.connect(ip, d_tcp));
    stream_median(p.unwrap(), d.unwrap(), total).await
}

/// (iii) plain TCP loopback.
async fn tcp_stream(total: usize) -> Duration {
    let (p, d) = tcp_pair().await;
    stream_median(p, d, total).await
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

/// Part 2: each layer under the pull alone, printed as a budget against `mtls` (the mTLS pull
/// of the largest size, `largest` tokens); the numbers as JSON.
fn layers_section(
    args: &Args,
    g: &Geometry,
    pki: &Pki,
    client_rt: &Runtime,
    largest: usize,
    mtls: &PullRow,
    h2c: &PullRow,
) -> Value {
    let big = g.export(largest);
    let big_bytes = big.kv.data.len();
    let (clone, memcpy) = copy_rates(&big);
    let reassemble = reassembly_time(&big);
    drop(big);
    let stream_bytes = args.stream_mib.max(1) << 20;
    let mem = rustls_in_memory(pki, stream_bytes);
    let tls_tcp = client_rt.block_on(tls_stream(pki, stream_bytes));
    let tcp = client_rt.block_on(tcp_stream(stream_bytes));

    struct Layer {
        key: &'static str,
        name: String,
        gbps: f64,
    }
    let layers = [
        Layer {
            key: "clone",
            name: format!(
                "(i)   P: clone of the export ({:.0} MiB, fresh buffer)",
                big_bytes as f64 / MIB
            ),
            gbps: gbps(big_bytes, clone),
        },
        Layer {
            key: "memcpy_warm",
            name: "(i)   memcpy into a warm buffer".into(),
            gbps: gbps(big_bytes, memcpy),
        },
        Layer {
            key: "reassemble",
            name: "(i)   D: chunk + ChunkAssembler in memory".into(),
            gbps: gbps(big_bytes, reassemble),
        },
        Layer {
            key: "rustls_encrypt",
            name: format!("(ii)  rustls encrypt alone, {}", mem.suite),
            gbps: gbps(mem.bytes, mem.encrypt),
        },
        Layer {
            key: "rustls_decrypt",
            name: format!("(ii)  rustls decrypt alone, {}", mem.suite),
            gbps: gbps(mem.bytes, mem.decrypt),
        },
        Layer {
            key: "tls_over_tcp",
            name: format!(
                "(ii)  tokio-rustls over loopback TCP, {} MiB",
                args.stream_mib
            ),
            gbps: gbps(stream_bytes, tls_tcp),
        },
        Layer {
            key: "tcp",
            name: format!("(iii) plain TCP loopback, {} MiB", args.stream_mib),
            gbps: gbps(stream_bytes, tcp),
        },
        Layer {
            key: "h2c_pull",
            name: format!("      h2c pull, {largest} tokens (table above)"),
            gbps: h2c.gbps(),
        },
    ];
    println!();
    println!(
        "Where the time goes: each layer alone, and the time it would take for the {largest}-token \
         KV ({:.1} MiB) against the mTLS pull's median {:.2} ms",
        mtls.bytes as f64 / MIB,
        ms(mtls.median)
    );
    println!("{:<58} {:>7} {:>9} {:>8}", "layer", "GB/s", "ms", "of pull");
    let mut layer_json = Vec::new();
    for l in &layers {
        let t_ms = mtls.bytes as f64 / (l.gbps * 1e9) * 1e3;
        println!(
            "{:<58} {:>7.2} {:>9.2} {:>7.0}%",
            l.name,
            l.gbps,
            t_ms,
            t_ms / ms(mtls.median) * 100.0
        );
        layer_json.push(json!({
            "layer": l.key,
            "label": l.name.trim(),
            "gbps": l.gbps,
            "ms_for_largest": t_ms,
        }));
    }
    let tls_cost = ms(mtls.median) - ms(h2c.median);
    println!(
        "mTLS − h2c at {largest} tokens: {tls_cost:.2} ms ({:.0}% of the mTLS pull)",
        tls_cost / ms(mtls.median) * 100.0
    );

    json!({
    "export_bytes": big_bytes,
    "clone_ms": ms(clone),
    "clone_gbps": gbps(big_bytes, clone),
    "memcpy_warm_ms": ms(memcpy),
    "memcpy_warm_gbps": gbps(big_bytes, memcpy),
    "reassemble_ms": ms(reassemble),
    "reassemble_gbps": gbps(big_bytes, reassemble),
    "rustls_suite": mem.suite,
    "rustls_bytes": mem.bytes,
    "rustls_encrypt_gbps": gbps(mem.bytes, mem.encrypt),
    "rustls_decrypt_gbps": gbps(mem.bytes, mem.decrypt),
    "stream_bytes": stream_bytes,
    "tls_over_tcp_gbps": gbps(stream_bytes, tls_tcp),
    "tcp_gbps": gbps(stream_bytes, tcp),
    "budget": layer_json,
        })
}

fn runtime(threads: usize, name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let args = Args::parse();
    let g = Geometry {
        layers: args.layers,
        kv_heads: args.kv_heads,
        head_dim: args.head_dim,
        block_size: args.block_size,
    };
    let mut sizes = args.tokens.clone();
    sizes.retain(|&t| t > 0);
    assert!(!sizes.is_empty(), "--tokens: give at least one size > 0");
    let largest = sizes.iter().copied().max().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "KV pull over loopback: {} layers × K,V × {} KV heads × head_dim {} × f32 = {} B/token; \
         block {} tokens = {:.2} MiB; chunks ≤ {} MiB; {} cores, {} worker threads each for P and D",
        g.layers,
        g.kv_heads,
        g.head_dim,
        g.bytes_per_token(),
        g.block_size,
        g.bytes_per_block() as f64 / MIB,
        MAX_CHUNK_BYTES >> 20,
        cores,
        args.threads.max(1),
    );

    let pki = Pki::make();
    let server_rt = runtime(args.threads, "kv-bench-p");
    let client_rt = runtime(args.threads, "kv-bench-d");

    // P: one source behind two servers, mutual TLS and h2c.
    let source = Arc::new(BenchSource {
        layout: g.layout(),
        held: Mutex::new(HashMap::new()),
        clone_times: Mutex::new(Vec::new()),
    });
    for &t in &sizes {
        source
            .held
            .lock()
            .unwrap()
            .insert(format!("bench-{t}"), Arc::new(g.export(t)));
    }
    let stop = CancellationToken::new();
    let serve = |tls: Option<Arc<rustls::ServerConfig>>| -> SocketAddr {
        let listener = server_rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = kv::routes(Arc::new(NoDecode), source.clone());
        server_rt.spawn(transport::serve(listener, tls, routes, stop.clone()));
        addr
    };
    let mtls_addr = serve(Some(pki.server()));
    let h2c_addr = serve(None);

    // D: one channel per transport, checked with Hello.
    let dial = |addr, tls| -> Channel {
        client_rt.block_on(async {
            let ch = transport::dial(addr, tls, Duration::from_secs(5))
                .await
                .unwrap();
            kv::hello(ch.clone(), &g.layout(), 2, Duration::from_secs(5))
                .await
                .unwrap();
            ch
        })
    };
    let channels = [
        ("mTLS", dial(mtls_addr, Some(pki.client()))),
        ("h2c", dial(h2c_addr, None)),
    ];

    // 1. Pulls.
    println!();
    println!(
        "{:<5} {:>6} {:>7} {:>6} {:>5} {:>9} {:>8} {:>6} {:>9} {:>10}",
        "link",
        "tokens",
        "MiB",
        "chunks",
        "pulls",
        "median ms",
        "p90 ms",
        "GB/s",
        "clone ms",
        "net GB/s"
    );
    let mut rows = Vec::new();
    for (name, ch) in &channels {
        for &t in &sizes {
            let row = pull_size(&client_rt, ch, &source, name, &g, t, &args);
            println!(
                "{:<5} {:>6} {:>7.1} {:>6} {:>5} {:>9.2} {:>8.2} {:>6.2} {:>9.2} {:>10.2}",
                row.transport,
                row.tokens,
                row.bytes as f64 / MIB,
                row.chunks,
                row.pulls,
                ms(row.median),
                ms(row.p90),
                row.gbps(),
                ms(row.clone_median),
                row.net_gbps(),
            );
            rows.push(row);
        }
    }
    println!(
        "(GB/s = bytes / median, GB = 1e9 B; clone ms = P's median clone of the export inside \
         those pulls; net GB/s = bytes / (median − clone))"
    );
    stop.cancel();

    let find = |link: &str| {
        rows.iter()
            .find(|r| r.transport == link && r.tokens == largest)
            .unwrap()
    };
    let (mtls, h2c) = (find("mTLS"), find("h2c"));
    // 2. Layers (skipped with --pulls-only).
    let layers = if args.pulls_only {
        Value::Null
    } else {
        layers_section(&args, &g, &pki, &client_rt, largest, mtls, h2c)
    };

    // 3. Summary.
    let verdict = if mtls.gbps() >= GOAL_GBPS {
        "meets the goal"
    } else {
        "below the goal"
    };
    let summary = format!(
        "summary: goal ≥ {GOAL_GBPS} GB/s; measured {:.2} GB/s at {largest} tokens with mTLS \
         ({:.2} GB/s h2c) — {verdict}",
        mtls.gbps(),
        h2c.gbps()
    );
    println!();
    println!("{summary}");

    if let Some(path) = &args.json {
        let doc = json!({
            "bench": "kv_pull",
            "geometry": {
                "layers": g.layers,
                "kv_heads": g.kv_heads,
                "head_dim": g.head_dim,
                "block_size": g.block_size,
                "dtype": "float32",
                "bytes_per_token": g.bytes_per_token(),
                "bytes_per_block": g.bytes_per_block(),
            },
            "cores": cores,
            "threads_per_side": args.threads.max(1),
            "max_chunk_bytes": MAX_CHUNK_BYTES,
            "pulls": rows.iter().map(PullRow::json).collect::<Vec<_>>(),
            "layers": layers,
            "summary": {
                "goal_gbps": GOAL_GBPS,
                "tokens": largest,
                "mtls_gbps": mtls.gbps(),
                "h2c_gbps": h2c.gbps(),
                "meets_goal": mtls.gbps() >= GOAL_GBPS,
                "line": summary,
            },
        });
        let text = serde_json::to_string_pretty(&doc).unwrap();
        fs::write(path, text + "\n").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        println!("wrote {}", path.display());
    }
    let _ = io::stdout().flush();
}
