#!/usr/bin/env bash
# What the Coordinator costs (issue 12): the same streamed load, back to back,
#   1. straight to one standard StandardMock instance S;
#   2. through `coordinator` in single-node mode to that same S (the proxy's cost alone);
#   3. through `coordinator` (deploy_mode pd_separate) to a dmi P/D pair of StandardMock
#      instances (P on 127.0.0.1, D on 127.0.0.3, interComm plain h2c, linked by role POSTs
#      as the Controller does, listed by POST /v1/instances/refresh);
# then the highest streamed tokens/s through the Coordinator (MAX_OUT output tokens at
# MAX_CONC workers), direct and through both Coordinators.
#
# The Coordinators are pinned to core COORD_CPU (the goal is stated per core); instances and
# the load generator to REST_CPUS (default: every other core), so the Coordinator's core is
# its own and every case gives the instance and the generator the same cores. The mock
# engine sleeps STEP_MS per step (16 sequences per step → 16,000 tok/s at 1 ms, above the
# 5,000 tok/s asked of the Coordinator) and needs next to no CPU, so the model is not the
# bottleneck. Besides the generator's numbers the table gives the Coordinator's CPU time per
# streamed token (from /proc/PID/stat, measured run only) and the tokens/s one core would
# carry at that cost. Goal stated by the issue: < 1 ms added at p50 and ≥ 5,000 streamed
# tokens/s on one core; reported, not asserted.
#
#   CARGO_TARGET_DIR=/work/target-helpers cargo build --release &&
#       BIN=/work/target-helpers/release/mindieservice_daemon benches/coordinator_overhead.sh
#   CONC=16 PROMPT=128 OUT=64 REQUESTS=1000 ROUNDS=3 MAX_OUT=512 MAX_CONC=16,64 PERF=1 \
#       benches/coordinator_overhead.sh
#
# Each round also runs the three cases with 1 worker (OUT1 tokens, REQUESTS1 requests): the
# hop without queueing. LOADGEN=path skips building the load generator (e.g. a copy of that
# bench binary; otherwise `cargo bench --no-run --bench loadgen`, under CARGO_TARGET_DIR when
# set). PERF=1 profiles the single-node Coordinator during its last max-throughput level
# (`perf record -g`; flat report in $WORK/perf.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/mindieservice_daemon}
CONC=${CONC:-16}
PROMPT=${PROMPT:-128}
OUT=${OUT:-64}
REQUESTS=${REQUESTS:-1000}
ROUNDS=${ROUNDS:-3}
OUT1=${OUT1:-16}
REQUESTS1=${REQUESTS1:-100}
WARMUP=${WARMUP:-64}
MAX_OUT=${MAX_OUT:-512}
MAX_CONC=${MAX_CONC:-16,64}
MAX_REQUESTS=${MAX_REQUESTS:-256}
STEP_MS=${STEP_MS:-1}
TOKEN_US=${TOKEN_US:-0}
PERF=${PERF:-0}
NCPU=$(nproc)
COORD_CPU=${COORD_CPU:-0}
if ((NCPU > 1)); then REST_CPUS=${REST_CPUS:-1-$((NCPU - 1))}; else REST_CPUS=${REST_CPUS:-0}; fi
# Every process of the bench runs at this niceness when allowed (root), ahead of whatever else
# shares the machine; all alike, so no case is favoured.
NICE=${NICE:--10}
nice -n "$NICE" true 2>/dev/null || NICE=0
MODEL_DIR=tests/fixtures/models/tiny-llama
WORK=$(mktemp -d /tmp/coord-bench-XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

[[ -x $BIN ]] || { echo "no daemon binary at $BIN (cargo build --release, or set BIN)"; exit 1; }
if [[ -z ${LOADGEN:-} ]]; then
echo "building the load generator (cargo bench --bench loadgen)"
LOADGEN=$(cargo bench --no-run --bench loadgen --message-format=json 2>"$WORK/loadgen-build.log" |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "loadgen" and m.get("executable"):
        print(m["executable"])')
fi
[[ -x $LOADGEN ]] || { cat "$WORK/loadgen-build.log"; exit 1; }

# Configs: S (standard), P and D (dmi, same interCommPort on two loopback hosts), the
# Coordinators C1 (single_node) and C2 (pd_separate); the role and refresh bodies.
python3 - "$WORK" "$MODEL_DIR" "$MAX_CONC,$CONC" "$((PROMPT + (OUT > MAX_OUT ? OUT : MAX_OUT)))" <<'PY'
import json, os, socket, sys
work, model, concs, seq = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3], int(sys.argv[4])
batch = max(16, max(int(c) for c in concs.split(",") if c))
base = json.load(open("conf/config.json"))
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def write(path, doc):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    json.dump(doc, open(path, "w"), indent=1)
    os.chmod(path, 0o640)
inter = port()
inst = {}
for name, ip, mode in (("s", "127.0.0.1", "standard"), ("p", "127.0.0.1", "dmi"), ("d", "127.0.0.3", "dmi")):
    c = json.loads(json.dumps(base))
    sc = c["ServerConfig"]
    sc.update(ipAddress=ip, managementIpAddress=ip, port=port(), managementPort=port(),
              metricsPort=port(), httpsEnabled=False, inferMode=mode,
              interCommTLSEnabled=False, interCommPort=inter)
    d = c["BackendConfig"]["ModelDeployConfig"]
    d.update(maxSeqLen=max(2560, seq), maxInputTokenLen=2048)
    d["ModelConfig"][0].update(modelInstanceType="StandardMock", modelName="mock-model",
                               modelWeightPath=model, cpuMemSize=2)
    c["BackendConfig"]["ScheduleConfig"].update(maxBatchSize=batch, maxPrefillBatchSize=batch,
                                                maxPrefillTokens=8192, maxIterTimes=max(512, seq),
                                                maxN=batch)
    write(f"{work}/{name}/conf/config.json", c)
    inst[name] = dict(ip=ip, port=sc["port"], mgmt=sc["managementPort"], metrics=sc["metricsPort"])
    open(f"{work}/{name}.url", "w").write(f"http://{ip}:{sc['port']}")
    open(f"{work}/{name}.mgmt", "w").write(f"http://{ip}:{sc['managementPort']}")
def role_entry(name, id):
    ip = inst[name]["ip"]
    return {"id": id, "server_ip": ip, "host_ip": ip,
            "device": [{"device_id": "0", "device_ip": ip, "device_logical_id": "0", "rank_id": "0"}]}
write(f"{work}/role-p.json", {"local": role_entry("p", 1), "peers": [role_entry("d", 2)]})
write(f"{work}/role-d.json", {"local": role_entry("d", 2), "peers": [role_entry("p", 1)]})
def refresh_entry(name, id, role, peers):
    i = inst[name]
    return {"id": id, "ip": i["ip"], "port": str(i["port"]), "metric_port": str(i["metrics"]),
            "inter_comm_port": str(inter), "model_name": "mock-model",
            "static_info": {"group_id": 0, "max_seq_len": max(2560, seq), "max_output_len": max(512, seq),
                            "total_slots_num": 200, "total_block_num": 1024, "block_size": 128,
                            "label": 0, "role": ord(role), "p_percentage": 0, "virtual_id": 0},
            "dynamic_info": {"peers": peers, "avail_slots_num": 200, "avail_block_num": 1024,
                             "waiting_request_num": 0, "running_request_num": 0}}
def refresh(entries):
    return {"ids": [e["id"] for e in entries], "instances": entries}
write(f"{work}/refresh-c1.json", refresh([refresh_entry("s", 0, "U", [])]))
write(f"{work}/refresh-c2.json", refresh([refresh_entry("p", 0, "P", [1]), refresh_entry("d", 1, "D", [0])]))
for name, mode in (("c1", "single_node"), ("c2", "pd_separate")):
    ports = dict(predict=port(), manage=port(), status=port(), external=port())
    ip = "127.0.0.1"
    write(f"{work}/{name}/ms_coordinator.json", {
        "http_config": {"allow_all_zero_ip_listening": False, "predict_ip": ip,
            "predict_port": str(ports["predict"]), "manage_ip": ip, "manage_port": str(ports["manage"]),
            "alarm_port": "1027", "external_port": str(ports["external"]),
            "status_port": str(ports["status"]), "server_thread_num": 10, "client_thread_num": 10,
            "http_timeout_seconds": 600, "keep_alive_seconds": 180, "server_name": "MindIE-MS",
            "user_agent": "Coordinator/1.0"},
        "request_limit": {"single_node_max_requests": 1000, "max_requests": 10000, "body_limit": 1},
        "metrics_config": {"enable": False, "trigger_size": 100},
        "exception_config": {"max_retry": 2, "schedule_timeout": 600, "first_token_timeout": 600,
            "infer_timeout": 600, "tokenizer_timeout": 300},
        "log_info": {"log_level": "INFO", "to_file": False, "to_stdout": True},
        "digs_scheduler_config": {"deploy_mode": mode, "scheduler_type": "digs_scheduler",
            "algorithm_type": "load_balance", "cache_size": "100", "slots_thresh": "0.05",
            "block_thresh": "0.05"},
        "string_token_rate": 4.02,
        "tls_config": {k: False for k in ("controller_server_tls_enable", "request_server_tls_enable",
            "mindie_client_tls_enable", "mindie_mangment_tls_enable", "external_tls_enable",
            "status_tls_enable")}})
    open(f"{work}/{name}.url", "w").write(f"http://{ip}:{ports['predict']}")
    open(f"{work}/{name}.mgmt", "w").write(f"http://{ip}:{ports['manage']}")
    open(f"{work}/{name}.status", "w").write(f"http://{ip}:{ports['status']}")
PY

# Small HTTP and /proc helpers (python3's standard library only).
cat >"$WORK/tool.py" <<'PY'
import json, os, sys, time, urllib.request, urllib.error
def call(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)
cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "post":  # post URL FILE: fails unless 200
    status, text = call("POST", args[0], open(args[1], "rb").read())
    if status != 200:
        sys.exit(f"POST {args[0]}: {status} {text}")
elif cmd == "wait-role":  # wait-role MGMT_URL: until /v1/status says RoleReady (60 s)
    for _ in range(600):
        status, text = call("GET", args[0] + "/v1/status")
        if status == 200 and json.loads(text).get("service", {}).get("roleStatus") == "RoleReady":
            break
        time.sleep(0.1)
    else:
        sys.exit(f"{args[0]}: not RoleReady after 60 s: {text}")
elif cmd == "wait-200":  # wait-200 URL: until GET answers 200 (30 s)
    for _ in range(300):
        status, text = call("GET", args[0])
        if status == 200:
            break
        time.sleep(0.1)
    else:
        sys.exit(f"{args[0]}: {status} {text}")
elif cmd == "cpu":  # cpu PID...: user+system CPU seconds, summed ("-": none)
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in args:
        if pid == "-":
            continue
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(f[11]) + int(f[12])
    print(total / tck)
PY
tool() { python3 "$WORK/tool.py" "$@"; }

declare -A PID
wait_log() { # wait_log NAME TEXT: until the log shows TEXT (60 s), while NAME runs
    for _ in $(seq 600); do
        grep -q "$2" "$WORK/$1.log" && return
        kill -0 "${PID[$1]}" 2>/dev/null || break
        sleep 0.1
    done
    cat "$WORK/$1.log"; echo "$1 did not start"; exit 1
}
for n in s p d; do
    MIES_CONFIG_JSON_PATH="$WORK/$n/conf/config.json" MIES_INSTALL_PATH="$WORK/$n" \
        MIES_MOCK_STEP_TIME_MS="$STEP_MS" MIES_MOCK_TOKEN_TIME_US="$TOKEN_US" \
        nice -n "$NICE" taskset -c "$REST_CPUS" "$BIN" >"$WORK/$n.log" 2>&1 &
    PIDS+=($!); PID[$n]=$!
done
for n in s p d; do wait_log "$n" "Daemon start success"; done
tool post "$(cat "$WORK/p.mgmt")/v1/role/prefill" "$WORK/role-p.json"
tool post "$(cat "$WORK/d.mgmt")/v1/role/decode" "$WORK/role-d.json"
tool wait-role "$(cat "$WORK/p.mgmt")"
tool wait-role "$(cat "$WORK/d.mgmt")"
for c in c1 c2; do
    MINDIE_MS_COORDINATOR_CONFIG_FILE_PATH="$WORK/$c/ms_coordinator.json" \
        nice -n "$NICE" taskset -c "$COORD_CPU" "$BIN" coordinator >"$WORK/$c.log" 2>&1 &
    PIDS+=($!); PID[$c]=$!
    wait_log "$c" "mindieservice_daemon coordinator: predict"
    tool post "$(cat "$WORK/$c.mgmt")/v1/instances/refresh" "$WORK/refresh-$c.json"
    tool wait-200 "$(cat "$WORK/$c.status")/v1/readiness"
done

# load NAME URL_FILE OUT CONC REQUESTS COORD_PIDS INSTANCE_PIDS: warm-up, then the measured
# run; the named processes' CPU seconds during the measured run go to NAME.cpu.
FAILED=0
load() {
    local name=$1 url; url=$(cat "$WORK/$2")
    local args=(--url "$url" --model mock-model --tokenizer "$MODEL_DIR/tokenizer.json"
        --prompt-tokens "$PROMPT" --output-tokens "$3" --concurrency "$4")
    nice -n "$NICE" taskset -c "$REST_CPUS" "$LOADGEN" "${args[@]}" --requests "$WARMUP" >/dev/null 2>&1 || true
    local c0 i0 c1 i1
    c0=$(tool cpu $6); i0=$(tool cpu $7)
    if ! nice -n "$NICE" taskset -c "$REST_CPUS" "$LOADGEN" "${args[@]}" --requests "$5" --json "$WORK/$name.json" \
        >"$WORK/$name.txt" 2>&1; then
        FAILED=1; echo "!! $name: some requests failed (see $WORK/$name.txt and the logs)"
    fi
    c1=$(tool cpu $6); i1=$(tool cpu $7)
    echo "{\"coord\": $(python3 -c "print($c1 - $c0)"), \"inst\": $(python3 -c "print($i1 - $i0)")}" \
        >"$WORK/$name.cpu"
    printf '   %-22s done\n' "$name"
}
NONE=- # no Coordinator

echo "== latency: $CONC workers, $PROMPT prompt + $OUT output tokens streamed, $REQUESTS requests"
echo "   Coordinators on CPU $COORD_CPU, instances and loadgen on CPUs $REST_CPUS, nice $NICE; mock step ${STEP_MS} ms"
echo "   and with 1 worker, $OUT1 output tokens, $REQUESTS1 requests (the hop without queueing)"
echo "   $ROUNDS rounds of 1, 2, 3 (the table gives each case's median over the rounds); $(uptime)"
for r in $(seq "$ROUNDS"); do
    load "r$r-1-direct" s.url "$OUT" "$CONC" "$REQUESTS" "$NONE" "${PID[s]}"
    load "r$r-2-coord-single" c1.url "$OUT" "$CONC" "$REQUESTS" "${PID[c1]}" "${PID[s]}"
    load "r$r-3-coord-pd" c2.url "$OUT" "$CONC" "$REQUESTS" "${PID[c2]}" "${PID[p]} ${PID[d]}"
    load "r$r-4-direct-1w" s.url "$OUT1" 1 "$REQUESTS1" "$NONE" "${PID[s]}"
    load "r$r-5-coord-single-1w" c1.url "$OUT1" 1 "$REQUESTS1" "${PID[c1]}" "${PID[s]}"
    load "r$r-6-coord-pd-1w" c2.url "$OUT1" 1 "$REQUESTS1" "${PID[c2]}" "${PID[p]} ${PID[d]}"
done

echo "== throughput: $MAX_OUT output tokens streamed, workers $MAX_CONC, $MAX_REQUESTS requests"
IFS=, read -ra LEVELS <<<"$MAX_CONC"
for conc in "${LEVELS[@]}"; do
    load "max-c$conc-1-direct" s.url "$MAX_OUT" "$conc" "$MAX_REQUESTS" "$NONE" "${PID[s]}"
    if [[ $PERF == 1 && $conc == "${LEVELS[-1]}" ]] && command -v perf >/dev/null; then
        perf record -F 999 -g -o "$WORK/perf.data" -p "${PID[c1]}" >"$WORK/perf.log" 2>&1 &
        PERF_PID=$!
    fi
    load "max-c$conc-2-coord-single" c1.url "$MAX_OUT" "$conc" "$MAX_REQUESTS" "${PID[c1]}" "${PID[s]}"
    if [[ -n ${PERF_PID:-} ]]; then
        kill -INT "$PERF_PID"; wait "$PERF_PID" || true; unset PERF_PID
        { perf report -i "$WORK/perf.data" --no-children --sort dso -g none --stdio
          perf report -i "$WORK/perf.data" --no-children --sort dso,symbol -g none \
              --percent-limit 0.7 --stdio; } 2>/dev/null | grep -v '^$' >"$WORK/perf.txt" || true
    fi
    load "max-c$conc-3-coord-pd" c2.url "$MAX_OUT" "$conc" "$MAX_REQUESTS" "${PID[c2]}" "${PID[p]} ${PID[d]}"
done

echo "   $(uptime)"
python3 - "$WORK" "$CONC" "$MAX_CONC" "$ROUNDS" <<'PY'
import json, statistics, sys
work, conc, max_conc, rounds = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
def one(name):
    lv = json.load(open(f"{work}/{name}.json"))["levels"][0]
    cpu = json.load(open(f"{work}/{name}.cpu"))
    toks = lv["completion_tokens"] or 1
    lv["coord_us_tok"] = cpu["coord"] * 1e6 / toks
    lv["inst_us_tok"] = cpu["inst"] * 1e6 / toks
    lv["coord_busy"] = cpu["coord"] / lv["wall_s"]
    return lv
def median_of(runs):
    """Each number's median over the runs (errors: the sum)."""
    m = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, dict) and "p50" in v:
            m[k] = {q: statistics.median(r[k][q] for r in runs) for q in ("p50", "p99")}
        elif isinstance(v, (int, float)):
            m[k] = statistics.median(r[k] for r in runs)
    m["errors"] = sum(r["errors"] for r in runs)
    return m
rounds_of = {}
def get(name):
    if name[0].isdigit():
        runs = [one(f"r{r}-{name}") for r in range(1, rounds + 1)]
        rounds_of[name] = runs
        return median_of(runs)
    return one(name)
def row(label, lv, base=None):
    e, t = lv["e2e_ms"], lv["ttft_ms"]
    cells = [f"{label:<24}", f"{lv['req_per_s']:>8.1f}", f"{lv['output_tok_per_s']:>9.0f}",
             f"{t['p50']:>7.2f}", f"{t['p99']:>7.2f}", f"{e['p50']:>7.2f}", f"{e['p99']:>7.2f}"]
    if base is None:
        cells += [f"{'-':>7}", f"{'-':>7}", f"{'-':>7}"]
    else:
        cells += [f"{e['p50'] - base['e2e_ms']['p50']:>+7.2f}", f"{e['p99'] - base['e2e_ms']['p99']:>+7.2f}",
                  f"{t['p50'] - base['ttft_ms']['p50']:>+7.2f}"]
    if lv["coord_us_tok"] > 0.001:
        cells += [f"{lv['coord_us_tok']:>7.1f}", f"{100 * lv['coord_busy']:>5.0f}%",
                  f"{1e6 / lv['coord_us_tok']:>9.0f}"]
    else:
        cells += [f"{'-':>7}", f"{'-':>6}", f"{'-':>9}"]
    cells += [f"{lv['inst_us_tok']:>7.1f}", f"{lv['errors']:>4}"]
    print(" ".join(cells))
head = (f"{'':<24} {'req/s':>8} {'out tok/s':>9} {'TTFT50':>7} {'TTFT99':>7} {'e2e50':>7} {'e2e99':>7} "
        f"{'+e2e50':>7} {'+e2e99':>7} {'+TTFT50':>7} {'C us/tk':>7} {'C busy':>6} {'C tok/s':>9} "
        f"{'I us/tk':>7} {'err':>4}")
print()
print(f"latency, {conc} workers, median of {rounds} rounds (ms; + = added vs 1; C = the Coordinator process, I = the instance(s):")
print("CPU µs per streamed token, share of its one core, tokens/s one core carries at that cost)")
print(head)
base = get("1-direct")
row("1 direct to S", base)
single = get("2-coord-single")
row("2 Coordinator 1-node", single, base)
pd = get("3-coord-pd")
row("3 Coordinator P/D", pd, base)
base1 = get("4-direct-1w")
row("1 direct, 1 worker", base1)
single1 = get("5-coord-single-1w")
row("2 Coord 1-node, 1 worker", single1, base1)
pd1 = get("6-coord-pd-1w")
row("3 Coord P/D, 1 worker", pd1, base1)
for name, b, label in (("2-coord-single", "1-direct", f"single-node, {conc} workers"),
                       ("3-coord-pd", "1-direct", f"P/D, {conc} workers"),
                       ("5-coord-single-1w", "4-direct-1w", "single-node, 1 worker"),
                       ("6-coord-pd-1w", "4-direct-1w", "P/D, 1 worker")):
    adds = [f"{r['e2e_ms']['p50'] - b['e2e_ms']['p50']:+.2f}" for r, b in zip(rounds_of[name], rounds_of[b])]
    ttft = [f"{r['ttft_ms']['p50'] - b['ttft_ms']['p50']:+.2f}" for r, b in zip(rounds_of[name], rounds_of[b])]
    print(f"added p50 by round, {label}: e2e {' '.join(adds)} ms; TTFT {' '.join(ttft)} ms")
print()
print("throughput (max streamed tokens/s)")
print(head)
best = None
for c in max_conc:
    b = get(f"max-c{c}-1-direct")
    row(f"c{c} direct to S", b)
    s = get(f"max-c{c}-2-coord-single")
    row(f"c{c} Coordinator 1-node", s, b)
    row(f"c{c} Coordinator P/D", get(f"max-c{c}-3-coord-pd"), b)
    if best is None or s["output_tok_per_s"] > best["output_tok_per_s"]:
        best = s
print()
for label, (a, b, a1, b1) in (("single-node", (single, base, single1, base1)),
                               ("P/D (also pays the KV pull)", (pd, base, pd1, base1))):
    adds = {f"e2e at {conc} workers": a["e2e_ms"]["p50"] - b["e2e_ms"]["p50"],
            f"TTFT at {conc} workers": a["ttft_ms"]["p50"] - b["ttft_ms"]["p50"],
            "e2e at 1 worker": a1["e2e_ms"]["p50"] - b1["e2e_ms"]["p50"],
            "TTFT at 1 worker": a1["ttft_ms"]["p50"] - b1["ttft_ms"]["p50"]}
    over = [k for k, v in adds.items() if v >= 1]
    text = ", ".join(f"{k} {v:+.2f} ms" for k, v in adds.items())
    print(f"goal < 1 ms added at p50, {label}: {text} → {'met' if not over else 'NOT met (' + ', '.join(over) + ')'}")
per_core = 1e6 / best["coord_us_tok"] if best["coord_us_tok"] > 0 else float("inf")
print(f"goal ≥ 5000 streamed tok/s on one core: measured {best['output_tok_per_s']:.0f} tok/s through the "
      f"single-node Coordinator with it {100 * best['coord_busy']:.0f}% busy; at "
      f"{best['coord_us_tok']:.1f} µs/token one core carries {per_core:.0f} tok/s "
      f"({'met' if max(per_core, best['output_tok_per_s']) >= 5000 else 'NOT met'})")
print(f"results and logs: {work}")
PY
exit "$FAILED"
