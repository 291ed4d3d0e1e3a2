#!/usr/bin/env python3
"""Soak client for benches/soak.sh (stdlib only): CONC threads send a mix of the business
routes back to back for DURATION seconds, streaming and not, a fraction of them hanging up
mid-stream; every INTERVAL seconds the daemon's management plane is sampled (/v1/process: resident
memory, threads, open fds, live tokio tasks; /v1/status: free KV blocks). At the end it waits for the
daemon to go idle, samples once more, prints the curve as a table and the growth after the
warm-up, and exits 1 when any request failed, a KV block stayed held, or RSS grew past
MAX_GROWTH percent after the warm-up.

usage: soak.py HOST PORT MGMT_HOST MGMT_PORT MODEL DURATION CONC DROP INTERVAL WARMUP MAX_GROWTH
"""
import http.client
import json
import random
import sys
import threading
import time
import urllib.request

(host, port, mhost, mport, model, duration, conc, drop, interval, warmup,
 max_growth) = sys.argv[1:12]
port, mport, conc = int(port), int(mport), int(conc)
duration, drop, interval = float(duration), float(drop), float(interval)
warmup, max_growth = float(warmup), float(max_growth)

PROMPTS = ["hello world", "the quick brown fox", "tell me a story about", "once upon a time"]


def routes(rnd):
    """(name, path, body, streams) for one request of the mix."""
    text = f"{rnd.choice(PROMPTS)} {rnd.randrange(10**6)}"
    n = rnd.randrange(4, 32)
    stream = rnd.random() < 0.7
    mix = [
        ("openai-completions", "/v1/completions",
         {"model": model, "prompt": text, "max_tokens": n, "stream": stream,
          "ignore_eos": True, "temperature": rnd.choice([0, 0.8])}),
        ("openai-chat", "/v1/chat/completions",
         {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": n,
          "stream": stream, "ignore_eos": True}),
        ("tgi", "/generate_stream" if stream else "/generate",
         {"inputs": text, "parameters": {"max_new_tokens": n}}),
        ("vllm", "/generate", {"prompt": text, "max_tokens": n, "stream": stream}),
        ("mindie", "/infer",
         {"inputs": text, "stream": stream, "parameters": {"max_new_tokens": n}}),
        ("triton", f"/v2/models/{model}/generate_stream" if stream
         else f"/v2/models/{model}/generate",
         {"text_input": text, "parameters": {"max_new_tokens": n}}),
        ("tokenizer", "/v1/tokenizer", {"inputs": text}),
    ]
    name, path, body = rnd.choice(mix)
    return name, path, body, stream and name != "tokenizer"


lock = threading.Lock()
counts = {"ok": 0, "hung_up": 0, "failed": 0}
failures = []
stop_at = time.time() + duration


def worker(i):
    rnd = random.Random(i)
    while time.time() < stop_at:
        name, path, body, streams = routes(rnd)
        hang_up = streams and rnd.random() < drop
        kind = "failed"
        try:
            c = http.client.HTTPConnection(host, port, timeout=120)
            c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                why = f"{name} {path}: HTTP {r.status} {r.read()[:200]!r}"
            elif hang_up:
                r.read1(64)  # the first bytes of the stream, then the client vanishes
                kind, why = "hung_up", None
            else:
                r.read()
                kind, why = "ok", None
            c.close()
        except Exception as e:  # a reset, a timeout: a failure of the daemon under test
            why = f"{name} {path}: {type(e).__name__}: {e}"
        with lock:
            counts[kind] += 1
            if why and len(failures) < 20:
                failures.append(why)


def sample():
    get = lambda path: json.load(urllib.request.urlopen(f"http://{mhost}:{mport}{path}", timeout=30))
    p, r = get("/v1/process"), get("/v1/status")["resource"]
    return {"rss_kib": p["residentBytes"] // 1024, "threads": p["threads"], "fds": p["openFds"],
            "tasks": p["aliveTasks"], "free_blocks": r["freeNpuBlockNums"],
            "total_blocks": r["totalNpuBlockNums"]}


rows = []
t0 = time.time()
threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(conc)]
for t in threads:
    t.start()
print(f"{'t_s':>6} {'rss_kib':>10} {'threads':>7} {'fds':>5} {'tasks':>6} {'free_kv':>8} "
      f"{'ok':>8} {'hung_up':>8} {'failed':>6}", flush=True)
while time.time() < stop_at:
    time.sleep(min(interval, max(0.0, stop_at - time.time())))
    row = sample()
    with lock:
        row.update(counts)
    row["t"] = time.time() - t0
    rows.append(row)
    print(f"{row['t']:>6.0f} {row['rss_kib']:>10} {row['threads']:>7} {row['fds']:>5} "
          f"{row['tasks']:>6} {row['free_blocks']:>8} {row['ok']:>8} {row['hung_up']:>8} "
          f"{row['failed']:>6}", flush=True)
for t in threads:
    t.join()
# idle: every hung-up stream's sequence ends and frees its blocks within a few steps
for _ in range(60):
    end = sample()
    if end["free_blocks"] == end["total_blocks"]:
        break
    time.sleep(0.5)
total = sum(counts.values())
print(f"\nidle after the load: rss {end['rss_kib']} KiB, threads {end['threads']}, fds {end['fds']}, "
      f"tasks {end['tasks']}, free KV blocks {end['free_blocks']} of {end['total_blocks']}")
print(f"requests: {total} ({total / duration:.0f}/s): {counts['ok']} ok, "
      f"{counts['hung_up']} hung up mid-stream, {counts['failed']} failed")
for f in failures:
    print("  failure:", f)
after = [r for r in rows if r["t"] >= warmup]
bad = counts["failed"] > 0 or end["free_blocks"] != end["total_blocks"]
if len(after) >= 2:
    first, last = after[0], after[-1]
    growth = 100.0 * (last["rss_kib"] - first["rss_kib"]) / first["rss_kib"]
    # least-squares slope over the samples after the warm-up, KiB per minute
    ts = [r["t"] for r in after]
    ys = [r["rss_kib"] for r in after]
    mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
    slope = sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / max(
        1e-9, sum((t - mt) ** 2 for t in ts)) * 60
    print(f"after the {warmup:.0f} s warm-up: RSS {first['rss_kib']} -> {last['rss_kib']} KiB "
          f"({growth:+.3f} %, trend {slope:+.1f} KiB/min), threads {first['threads']} -> "
          f"{last['threads']}, fds {first['fds']} -> {last['fds']}, tasks {first['tasks']} -> "
          f"{last['tasks']} (limit {max_growth} % RSS)")
    bad = bad or growth > max_growth
else:
    print("run shorter than the warm-up: no growth figure")
    bad = True
sys.exit(1 if bad else 0)
