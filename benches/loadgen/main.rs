//! Serving load generator for `mindieservice_daemon` (or any OpenAI-compatible server):
//! sweeps concurrency levels of streaming completions and reports TTFT, TPOT, end-to-end
//! latency (mean / p50 / p90 / p99), requests/s, output tokens/s and errors by kind.
//!
//! Usage (`cargo bench --bench loadgen -- <args>`; `--help` lists every flag):
//!
//! ```text
//! # an already running server; the model name comes from GET /v1/models unless --model
//! cargo bench --bench loadgen -- --url http://127.0.0.1:1025 \
//!     --tokenizer /models/qwen/tokenizer.json --concurrency 1,4,16 --json out.json
//! # start the daemon on a model folder (free ports, temp config), sweep, stop it
//! cargo bench --bench loadgen -- --serve /models/qwen --prompt-tokens 128 --output-tokens 64
//! # HTTPS with a client certificate
//! cargo bench --bench loadgen -- --url https://localhost:1025 --cacert ca.pem \
//!     --cert client.pem --key client.key.pem
//! # a fake OpenAI server to try the generator against by hand (serves 120 s; see --help)
//! cargo bench --bench loadgen -- --fake --fake-port 18080
//! cargo bench --bench loadgen -- --url http://127.0.0.1:18080   # in another shell
//! ```
//!
//! Each level runs `--concurrency` workers that send requests back to back until `--requests`
//! (default 4 per worker, at least 8) are done or `--duration` seconds have passed. Requests
//! are `POST /v1/completions` with a token-id prompt of exactly `--prompt-tokens` ids drawn
//! (seeded, different per request) from the tokenizer's ordinary vocabulary (ids 1000..20000
//! without `--tokenizer`), `max_tokens = --output-tokens`, `ignore_eos`, `temperature 0` and
//! `stream_options.include_usage`; `--chat` sends the decoded text to `/v1/chat/completions`.
//! TTFT is request start to the first chunk with text; TPOT is (e2e − TTFT) / (tokens − 1)
//! with the usage's completion_tokens; tokens/s divides by the level's wall time. Replies of
//! another length than requested count as "short", not as errors. Human-readable tables go to
//! stdout (stderr with `--json -`, which prints the JSON to stdout). The exit status is 1 when
//! any request failed.
//!
//! Files: `sse` (event parser), `record` (one request's timing), `stats` (percentiles,
//! level summary), `report` (text, JSON), `workload` (prompts, bodies), `client` (HTTP),
//! `runner` (one level), `serve` (the daemon under test), `fake` (the fake server of `--fake`
//! and the tests), `limits` (`--limits`: the machine's ceilings and the fraction reached), this
//! file (flags, the sweep).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod client;
mod fake;
mod limits;
mod record;
mod report;
mod runner;
mod serve;
mod sse;
mod stats;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use client::Endpoint;
use runner::{default_requests, run_level, Level};
use serve::{Daemon, ServeOptions};
use stats::LevelSummary;
use workload::{vocab_from_tokenizer, Workload, FALLBACK_IDS};

/// Serving load generator: concurrency sweep of streaming completions.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// Base URL of a running OpenAI-compatible server, e.g. http://127.0.0.1:1025.
    #[arg(long, conflicts_with = "serve")]
    url: Option<String>,
    /// Start mindieservice_daemon on this model folder for the sweep.
    #[arg(long, value_name = "MODEL_DIR")]
    serve: Option<PathBuf>,
    /// Model name to request (default: GET /v1/models data[0].id; "bench" with --serve).
    #[arg(long)]
    model: Option<String>,
    /// tokenizer.json prompts are drawn from (default with --serve: <MODEL_DIR>/tokenizer.json).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    concurrency: Vec<usize>,
    /// Requests per level (default: 4 x concurrency, at least 8).
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds after which a level starts no new request.
    #[arg(long)]
    duration: Option<f64>,
    /// Prompt length in tokens (exact with token-id prompts).
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// max_tokens of every request (exact output length with ignore_eos).
    #[arg(long, default_value_t = 64)]
    output_tokens: u64,
    /// Seed of the prompt generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use /v1/chat/completions with a text prompt.
    #[arg(long)]
    chat: bool,
    /// Do not send ignore_eos (replies may then be shorter; "short" is not checked).
    #[arg(long)]
    allow_eos: bool,
    /// Requests sent (at the highest concurrency, at most that many at once) before measuring.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Seconds one request may take.
    #[arg(long, default_value_t = 600.0)]
    request_timeout: f64,
    /// Write the results as JSON to this file ("-": stdout).
    #[arg(long)]
    json: Option<String>,
    /// CA certificate (PEM) the https server must chain to.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// File holding the client key's password (encrypted keys).
    #[arg(long, requires = "key")]
    key_password_file: Option<PathBuf>,
    /// Name the server certificate is checked against (default: the URL's host).
    #[arg(long)]
    tls_server_name: Option<String>,
    /// --serve: the daemon binary.
    #[arg(long, default_value = env!("CARGO_BIN_EXE_mindieservice_daemon"))]
    daemon_bin: PathBuf,
    /// --serve: the config file the daemon's config is derived from.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/config.json"))]
    base_config: PathBuf,
    /// --serve: ModelConfig cpuMemSize (GB of KV cache).
    #[arg(long, default_value_t = 4)]
    cpu_mem_size: u64,
    /// --serve: ScheduleConfig.maxBatchSize (default: max(16, highest concurrency)).
    #[arg(long)]
    max_batch_size: Option<u64>,
    /// --serve: ScheduleConfig.maxPrefillBatchSize (default: maxBatchSize).
    #[arg(long)]
    max_prefill_batch_size: Option<u64>,
    /// --serve: ScheduleConfig.maxPrefillTokens (default: max(8192, maxInputTokenLen)).
    #[arg(long)]
    max_prefill_tokens: Option<u64>,
    /// --serve: ScheduleConfig.maxIterTimes (default: max(512, output tokens)).
    #[arg(long)]
    max_iter_times: Option<u64>,
    /// --serve: ModelDeployConfig.maxSeqLen (default: max(2560, prompt + output)).
    #[arg(long)]
    max_seq_len: Option<u64>,
    /// --serve: ScheduleConfig.templateType, "Standard" or "Mix" (default: the base config's).
    #[arg(long)]
    template: Option<String>,
    /// --serve: ScheduleConfig.prefillChunkSize, tokens in one Mix step (decodes included).
    #[arg(long)]
    chunk_tokens: Option<u64>,
    /// --serve: seconds to wait for /v2/health/ready.
    #[arg(long, default_value_t = 600)]
    ready_timeout: u64,
    /// Serve the fake OpenAI server (`fake`: odd SSE splits, by default every request served
    /// well) instead of sweeping, to try the generator against by hand with --url.
    #[arg(long, conflicts_with_all = ["url", "serve"])]
    fake: bool,
    /// --fake: port on 127.0.0.1 (0: any free one; the address is printed).
    #[arg(long, default_value_t = 0)]
    fake_port: u16,
    /// --fake: seconds to serve.
    #[arg(long, default_value_t = 120)]
    fake_secs: u64,
    /// --fake: fail requests by arrival order in every way the generator counts (the
    /// pattern of tests/loadgen.rs).
    #[arg(long)]
    fake_faults: bool,
    /// --fake: milliseconds of pause after every fourth piece of a reply.
    #[arg(long, default_value_t = 5)]
    fake_pause_ms: u64,
    /// Passed by `cargo bench`; ignored.
    /// Measure this machine's ceilings (DRAM bandwidth, kernel peak) first and print each
    /// level's output tok/s as a fraction of the ceiling (needs the model folder: --serve, or
    /// --limits-model for --url).
    #[arg(long)]
    limits: bool,
    /// --limits with --url: the folder of the model the server runs (safetensors, config.json).
    #[arg(long, value_name = "MODEL_DIR", requires = "limits")]
    limits_model: Option<PathBuf>,
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    if args.url.is_none() && args.serve.is_none() && !args.fake {
        eprintln!(
            "loadgen: nothing to do; give --url <URL>, --serve <MODEL_DIR> or --fake (see --help)"
        );
        return;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("tokio runtime: {e}")),
    };
    if args.fake {
        rt.block_on(serve_fake(&args));
        return;
    }
    match rt.block_on(run(args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(2)
}

/// `--fake`: serves the fake OpenAI server for `--fake-secs`.
async fn serve_fake(args: &Args) {
    let fake = fake::Fake {
        no_faults: !args.fake_faults,
        pause: Some(Duration::from_millis(args.fake_pause_ms)),
        ..fake::Fake::default()
    };
    let (addr, _) = fake::start_fake_with(fake, args.fake_port).await;
    println!(
        "fake OpenAI server on http://{addr} for {} s",
        args.fake_secs
    );
    tokio::time::sleep(Duration::from_secs(args.fake_secs)).await;
}

/// Runs the whole sweep; `Ok(false)` when some request failed.
async fn run(args: Args) -> Result<bool, String> {
    let daemon = match &args.serve {
        None => None,
        Some(dir) => {
            let batch = args
                .max_batch_size
                .unwrap_or(max_conc(&args).max(16) as u64);
            let o = ServeOptions {
                model_dir: dir.clone(),
                model_name: args.model.clone().unwrap_or_else(|| "bench".into()),
                base_config: args.base_config.clone(),
                daemon_bin: args.daemon_bin.clone(),
                cpu_mem_gb: args.cpu_mem_size,
                max_batch_size: batch,
                max_prefill_batch_size: args.max_prefill_batch_size.unwrap_or(batch),
                max_prefill_tokens: args.max_prefill_tokens,
                max_iter_times: args.max_iter_times,
                max_seq_len: args.max_seq_len,
                template: args.template.clone(),
                chunk_tokens: args.chunk_tokens,
                prompt_tokens: args.prompt_tokens as u64,
                output_tokens: args.output_tokens,
                ready_timeout: Duration::from_secs(args.ready_timeout),
            };
            Some(Daemon::start(&o).await?)
        }
    };
    let result = sweep(&args, daemon.as_ref()).await;
    let Some(mut d) = daemon else {
        return result;
    };
    match result {
        Ok(ok) => {
            let log = d.log.clone();
            // LOADGEN_KEEP: keep the daemon's folder (config, log) after a clean run too.
            let keep = !ok || std::env::var_os("LOADGEN_KEEP").is_some();
            if let Some(st) = d.finish(keep) {
                eprintln!("loadgen: daemon stopped: {st}");
            }
            if keep && ok {
                eprintln!("loadgen: daemon log kept: {}", log.display());
            }
            if !ok {
                eprintln!(
                    "loadgen: some requests failed; daemon log: {}",
                    log.display()
                );
            }
            Ok(ok)
        }
        Err(e) => {
            d.stop();
            Err(format!("{e}; daemon log: {}", d.log.display()))
        }
    }
}

async fn sweep(args: &Args, daemon: Option<&Daemon>) -> Result<bool, String> {
    let url = match (daemon, &args.url) {
        (Some(d), _) => d.url(),
        (None, Some(u)) => u.clone(),
        (None, None) => return Err("no --url".into()),
    };
    let tls = match &args.cacert {
        None => None,
        Some(ca) => {
            let identity = args
                .cert
                .as_deref()
                .zip(args.key.as_deref())
                .map(|(c, k)| (c, k, args.key_password_file.as_deref()));
            Some(
                mindie::security::tls::client_config(std::slice::from_ref(ca), identity)
                    .map_err(|e| e.to_string())?,
            )
        }
    };
    let endpoint = Endpoint::parse(&url, tls, args.tls_server_name.as_deref())?;
    let model = match (&args.model, daemon) {
        (Some(m), _) => m.clone(),
        (None, Some(_)) => "bench".into(),
        (None, None) => model_from_server(&endpoint).await?,
    };
    let tokenizer = args.tokenizer.clone().or_else(|| {
        let p = args.serve.as_ref()?.join("tokenizer.json");
        p.is_file().then_some(p)
    });
    let (vocab, pieces) = match &tokenizer {
        Some(p) => vocab_from_tokenizer(p, args.chat)?,
        None => (FALLBACK_IDS.collect(), None),
    };
    let workload = Arc::new(Workload {
        model: model.clone(),
        prompt_tokens: args.prompt_tokens,
        output_tokens: args.output_tokens,
        chat: args.chat,
        ignore_eos: !args.allow_eos,
        seed: args.seed,
        vocab,
        pieces,
    });
    let json_stdout = args.json.as_deref() == Some("-");
    let say = |s: &str| {
        if json_stdout {
            eprint!("{s}");
        } else {
            print!("{s}");
        }
    };
    say(&format!(
        "loadgen: {url} model {model}, {} prompt + {} output tokens{}, levels {:?}\n",
        args.prompt_tokens,
        args.output_tokens,
        if args.chat { " (chat)" } else { "" },
        args.concurrency
    ));
    let limits = if args.limits {
        let dir = args
            .limits_model
            .as_ref()
            .or(args.serve.as_ref())
            .ok_or("--limits needs the model folder: --serve DIR or --limits-model DIR")?;
        let l = limits::Limits::measure(dir)?;
        say(&l.text());
        Some(l)
    } else {
        None
    };
    let timeout = Duration::from_secs_f64(args.request_timeout.max(0.001));
    let mut next_index = 0u64;
    if args.warmup > 0 {
        let level = Level {
            concurrency: max_conc(args).min(args.warmup as usize),
            requests: args.warmup,
            duration: None,
            request_timeout: timeout,
            first_index: u64::MAX / 2,
        };
        let (recs, wall) = run_level(&endpoint, &workload, level).await;
        let s = LevelSummary::new(level.concurrency, &recs, wall);
        say(&format!(
            "warm-up: {} requests, {} errors in {:.2} s\n",
            s.requests,
            s.errors,
            wall.as_secs_f64()
        ));
    }
    let mut levels = Vec::new();
    for &c in &args.concurrency {
        let requests = args.requests.unwrap_or_else(|| default_requests(c));
        let level = Level {
            concurrency: c.max(1),
            requests,
            duration: args.duration.map(|d| Duration::from_secs_f64(d.max(0.0))),
            request_timeout: timeout,
            first_index: next_index,
        };
        next_index += requests;
        let (recs, wall) = run_level(&endpoint, &workload, level).await;
        let s = LevelSummary::new(level.concurrency, &recs, wall);
        say(&report::level_text(&s));
        if let Some(l) = &limits {
            say(&l.level_text(&s, args.prompt_tokens, args.output_tokens));
        }
        levels.push(s);
    }
    say(&report::summary_table(&levels));
    let run = json!({
        "url": url,
        "served": args.serve,
        "model": model,
        "route": workload.path(),
        "prompt_tokens": args.prompt_tokens,
        "output_tokens": args.output_tokens,
        "ignore_eos": workload.ignore_eos,
        "seed": args.seed,
        "tokenizer": tokenizer,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "duration_s": args.duration,
        "warmup": args.warmup,
    });
    let mut doc = report::json_doc(run, &levels);
    if let Some(l) = &limits {
        doc["limits"] = l.json(&levels, args.prompt_tokens, args.output_tokens);
    }
    match args.json.as_deref() {
        None => {}
        Some("-") => println!("{doc:#}"),
        Some(p) => {
            let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
            std::fs::write(p, text + "\n").map_err(|e| format!("write {p}: {e}"))?;
        }
    }
    Ok(levels.iter().all(|l| l.errors == 0))
}

fn max_conc(args: &Args) -> usize {
    args.concurrency.iter().copied().max().unwrap_or(1).max(1)
}

/// `data[0].id` of GET /v1/models.
async fn model_from_server(endpoint: &Endpoint) -> Result<String, String> {
    let (status, v) = endpoint.get_json("/v1/models").await?;
    if status != 200 {
        return Err(format!("GET /v1/models: {status} {v}; give --model"));
    }
    v.pointer("/data/0/id")
        .and_then(|id| id.as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("GET /v1/models: no data[0].id in {v}; give --model"))
}
