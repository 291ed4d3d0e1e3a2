#!/usr/bin/env bash
# What the multi-node pipeline split costs per step (issue 13): the same streamed load on the
# bench model, run back to back and alternated (A B A B …, ROUNDS times) since the shared
# machine drifts:
#   A. one ordinary node (multiNodesInferEnabled false);
#   B. a master (127.0.0.1: HTTP, embedding, the first layers, final norm, LM head) and one
#      slave (127.0.0.3: the other layers), MINDIE_PIPELINE_LAYERS=LAYERS (default: an even
#      split of the model's layers), the interNode link plain gRPC (interNodeTLSEnabled false,
#      so no PKI is needed: TLS's cost is not measured here).
# Both nodes of B run on this machine and share its cores with each other and with the load
# generator: B's numbers include the two processes competing for the cores, not only the gRPC
# hop (every step goes master → slave → master, hidden states as f32 each way).
#
# Load: `loadgen --url` with each level of CONC (workers) and REQUESTS (requests per level,
# one number or one per level), token-id prompts of PROMPT tokens, OUT output tokens, greedy,
# ignore_eos; one small warm-up before the levels of each run. Both cases get the same config
# otherwise (maxBatchSize 16, cpuMemSize 4) and MINDIE_LOG_LEVEL=debug, whose `engine step`
# lines give the engine's own step times (on B's master: its layers plus the slave's stage).
#
# Per run and level: output tok/s and TPOT p50 (loadgen); the median decode step time and
# the mean sequences per decode step (the master's `engine step` lines); the CPU seconds the
# node processes used; and for B the master's `/v1/status` multiNode.traffic over the level:
# stages, activation bytes sent and received per stage (prefill and decode steps together)
# and per decode step (measured bytes per token × measured tokens per decode step).
# Then the B/A ratios per round and of the means.
#
#   CARGO_TARGET_DIR=/work/target-helpers cargo build --release &&
#       BIN=/work/target-helpers/release/mindieservice_daemon benches/multinode_overhead.sh
#   MODEL=target/bench-models/qwen2-0.5b-bf16 CONC=1,16 REQUESTS=4,16 PROMPT=128 OUT=64 \
#       ROUNDS=2 LAYERS=12,12 benches/multinode_overhead.sh
#
# The bench model comes from `cargo bench --bench decode -- model`. LOADGEN=path skips
# building the load generator (otherwise `cargo bench --no-run --bench loadgen`, under
# CARGO_TARGET_DIR when set). KEEP=1 keeps the work folder (configs, logs, JSON) after the run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/mindieservice_daemon}
MODEL=${MODEL:-target/bench-models/qwen2-0.5b-bf16}
CONC=${CONC:-1,16}
REQUESTS=${REQUESTS:-4,16}
PROMPT=${PROMPT:-128}
OUT=${OUT:-64}
ROUNDS=${ROUNDS:-2}
KEEP=${KEEP:-0}
MASTER=127.0.0.1
SLAVE=127.0.0.3
WORK=$(mktemp -d /tmp/mn-bench-XXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap 'cleanup; [[ $KEEP == 1 ]] || rm -rf "$WORK"' EXIT

[[ -x $BIN ]] || { echo "no daemon binary at $BIN (cargo build --release, or set BIN)"; exit 1; }
[[ -f $MODEL/config.json ]] || { echo "no model at $MODEL (cargo bench --bench decode -- model)"; exit 1; }
IFS=, read -r -a LEVELS <<<"$CONC"
IFS=, read -r -a REQS <<<"$REQUESTS"
((${#REQS[@]} == 1 || ${#REQS[@]} == ${#LEVELS[@]})) ||
    { echo "REQUESTS ($REQUESTS): one number or one per CONC level ($CONC)"; exit 1; }
NLAYERS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["num_hidden_layers"])' "$MODEL/config.json")
LAYERS=${LAYERS:-$((NLAYERS / 2)),$((NLAYERS - NLAYERS / 2))}

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

# Configs: a/ (one ordinary node) and b/ (the multi-node instance: one config for both nodes,
# told apart by MIES_CONTAINER_IP as MindIE's are) and b/ranktable.json.
python3 - "$WORK" "$MODEL" "$MASTER" "$SLAVE" "$CONC" "$((PROMPT + OUT))" <<'PY'
import json, os, socket, sys
work, model, master, slave, concs, seq = sys.argv[1:7]
model, seq = os.path.abspath(model), int(seq)
batch = max([16] + [int(c) for c in concs.split(",") if c])
base = json.load(open("conf/config.json"))
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def write(path, obj):
    json.dump(obj, open(path, "w"), indent=1)
    os.chmod(path, 0o640)
for name in ("a", "b"):
    c = json.loads(json.dumps(base))
    sc = c["ServerConfig"]
    sc.update(ipAddress=master, managementIpAddress=master, port=port(), managementPort=port(),
              metricsPort=port(), httpsEnabled=False)
    be = c["BackendConfig"]
    if name == "b":
        be.update(multiNodesInferEnabled=True, multiNodesInferPort=port(),
                  interNodeTLSEnabled=False)
    d = be["ModelDeployConfig"]
    d.update(maxSeqLen=max(2560, seq), maxInputTokenLen=2048)
    d["ModelConfig"][0].update(modelInstanceType="Standard", modelName="bench",
                               modelWeightPath=model, cpuMemSize=4)
    be["ScheduleConfig"].update(maxBatchSize=batch, maxPrefillBatchSize=batch,
                                maxPrefillTokens=8192, maxIterTimes=max(512, seq), maxN=16)
    os.makedirs(f"{work}/{name}/conf")
    write(f"{work}/{name}/conf/config.json", c)
    open(f"{work}/{name}.url", "w").write(f"http://{master}:{sc['port']}")
    open(f"{work}/{name}.mgmt", "w").write(f"http://{master}:{sc['managementPort']}")
servers = [{"server_id": ip, "container_ip": ip,
            "device": [{"device_id": "0", "device_ip": ip, "rank_id": str(i)}]}
           for i, ip in enumerate((master, slave))]
write(f"{work}/b/ranktable.json", {"version": "1.0", "status": "completed", "server_count": "2",
                                   "server_list": servers})
PY

# Starts node $2 of case $1 (a, b-master, b-slave) in the background, log in $WORK/$1-$2.log.
spawn() {
    local case=$1 node=$2 ip=$3 log="$WORK/$1-$2.log"
    local env=(HOME="$WORK/$case" MIES_INSTALL_PATH="$WORK/$case"
        MIES_CONFIG_JSON_PATH="$WORK/$case/conf/config.json"
        MINDIE_LOG_TO_STDOUT=1 MINDIE_LOG_TO_FILE=0 MINDIE_LOG_LEVEL=debug)
    if [[ $case == b ]]; then
        env+=(RANK_TABLE_FILE="$WORK/b/ranktable.json" MIES_CONTAINER_IP="$ip"
            MIES_CONTAINER_MANAGEMENT_IP="$ip" MINDIE_PIPELINE_LAYERS="$LAYERS")
    fi
    env "${env[@]}" "$BIN" >"$log" 2>&1 &
    PIDS+=($!)
    echo $! >"$WORK/$case-$node.pid"
}
wait_up() {
    local log="$WORK/$1.log"
    for _ in $(seq 900); do grep -qs "Daemon start success" "$log" && return 0; sleep 0.2; done
    tail -50 "$log"
    exit 1
}
cpu_s() { # utime + stime of the given pids, seconds
    python3 -c '
import os, sys
t = 0
for p in sys.argv[1:]:
    f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    t += int(f[11]) + int(f[12])
print(t / os.sysconf("SC_CLK_TCK"))' "$@"
}
traffic() { # the master's multiNode.traffic as JSON ({} for A)
    python3 -c '
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(sys.argv[1] + "/v1/status", timeout=10))
print(json.dumps((s.get("multiNode") or {}).get("traffic") or {}))' "$1"
}

# One run of case $1 in round $2: start, warm up, each level measured, stop.
run_case() {
    local case=$1 round=$2 pids main
    cleanup
    rm -f "$WORK"/"$case"-*.log
    if [[ $case == a ]]; then
        spawn a node "$MASTER"
        wait_up a-node
        main=a-node
    else
        spawn b slave "$SLAVE"
        spawn b master "$MASTER"
        wait_up b-slave
        wait_up b-master
        main=b-master
    fi
    pids=("${PIDS[@]}")
    local url mgmt
    url=$(cat "$WORK/$case.url")
    mgmt=$(cat "$WORK/$case.mgmt")
    "$LOADGEN" --url "$url" --model bench --tokenizer "$MODEL/tokenizer.json" \
        --concurrency 1 --requests 2 --prompt-tokens "$PROMPT" --output-tokens 8 >/dev/null
    local i
    for i in "${!LEVELS[@]}"; do
        local c=${LEVELS[$i]} n=${REQS[$i]:-${REQS[0]}} tag="$case-r$round-c${LEVELS[$i]}"
        echo "== round $round, case ${case^^}, concurrency $c, $n requests"
        traffic "$mgmt" >"$WORK/$tag.t0"
        cpu_s "${pids[@]}" >"$WORK/$tag.cpu0"
        wc -l <"$WORK/$main.log" >"$WORK/$tag.line0"
        "$LOADGEN" --url "$url" --model bench --tokenizer "$MODEL/tokenizer.json" \
            --concurrency "$c" --requests "$n" --prompt-tokens "$PROMPT" --output-tokens "$OUT" \
            --json "$WORK/$tag.json" | grep -A1 "^ *conc " || true
        traffic "$mgmt" >"$WORK/$tag.t1"
        cpu_s "${pids[@]}" >"$WORK/$tag.cpu1"
        tail -n +"$(($(cat "$WORK/$tag.line0") + 1))" "$WORK/$main.log" | grep "engine step" \
            >"$WORK/$tag.steps" || true
    done
    cleanup
}

echo "model $MODEL ($NLAYERS layers), B split $LAYERS; CONC $CONC, REQUESTS $REQUESTS, prompt $PROMPT, output $OUT, $ROUNDS rounds, $(nproc) cores"
for r in $(seq "$ROUNDS"); do
    run_case a "$r"
    run_case b "$r"
done

python3 - "$WORK" "$CONC" "$ROUNDS" "$PROMPT" "$OUT" <<'PY'
import json, re, statistics as st, sys
work, concs, rounds = sys.argv[1], [int(c) for c in sys.argv[2].split(",")], int(sys.argv[3])
def steps(path):
    out = []
    for line in open(path):
        kv = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
        try:
            out.append((kv["kind"].strip('"'), int(kv["seqs"]), int(kv["tokens"]), float(kv["ms"])))
        except (KeyError, ValueError):
            pass
    return out
rows = {}
for r in range(1, rounds + 1):
    for case in "ab":
        for c in concs:
            tag = f"{work}/{case}-r{r}-c{c}"
            lv = json.load(open(tag + ".json"))["levels"][0]
            s = steps(tag + ".steps")
            dec = [x for x in s if x[0] == "Decode"]
            row = {
                "tok_s": lv["output_tok_per_s"], "tpot": lv["tpot_ms"]["p50"],
                "ttft": lv["ttft_ms"]["p50"] / 1e3,
                "err": lv["errors"] + lv["short"],
                "step_ms": st.median(x[3] for x in dec) if dec else float("nan"),
                "seqs": st.mean(x[1] for x in dec) if dec else float("nan"),
                "cpu": float(open(tag + ".cpu1").read()) - float(open(tag + ".cpu0").read()),
                "nsteps": len(s),
            }
            t0, t1 = json.load(open(tag + ".t0")), json.load(open(tag + ".t1"))
            if t1:
                stages = t1["stages"] - t0["stages"]
                sent = t1["bytes_sent"] - t0["bytes_sent"]
                recv = t1["bytes_received"] - t0["bytes_received"]
                tokens = sum(x[2] for x in s)
                per_tok = sent / tokens if tokens else float("nan")
                dtok = sum(x[2] for x in dec)
                row.update(stages=stages, sent_stage=sent / max(stages, 1),
                           recv_stage=recv / max(stages, 1), per_tok=per_tok,
                           dec_step=per_tok * dtok / len(dec) if dec else float("nan"))
            rows[(r, case, c)] = row
print()
print("run    conc  out tok/s  TTFT p50 s  TPOT p50 ms  decode step ms  seqs/step  node CPU s  "
      "stages  sent B/stage  recv B/stage  B/token  B/decode step")
for (r, case, c), x in sorted(rows.items(), key=lambda k: (k[0][2], k[0][0], k[0][1])):
    line = (f"{case.upper()}{r:<5} {c:>4} {x['tok_s']:>10.2f} {x['ttft']:>11.2f} {x['tpot']:>12.1f} "
            f"{x['step_ms']:>15.1f} {x['seqs']:>10.1f} {x['cpu']:>11.1f}")
    if "stages" in x:
        line += (f" {x['stages']:>7} {x['sent_stage']:>13.0f} {x['recv_stage']:>13.0f} "
                 f"{x['per_tok']:>8.0f} {x['dec_step']:>14.0f}")
        if x["stages"] != x["nsteps"]:
            line += f"  (stages {x['stages']} != engine steps {x['nsteps']})"
    if x["err"]:
        line += f"  ({x['err']} failed or short)"
    print(line)
print()
print("B/A    conc  out tok/s  TTFT p50  TPOT p50  decode step")
for c in concs:
    for r in list(range(1, rounds + 1)) + ["mean"]:
        if r == "mean":
            a = {k: st.mean(rows[(i, "a", c)][k] for i in range(1, rounds + 1)) for k in ("tok_s", "ttft", "tpot", "step_ms")}
            b = {k: st.mean(rows[(i, "b", c)][k] for i in range(1, rounds + 1)) for k in ("tok_s", "ttft", "tpot", "step_ms")}
        else:
            a, b = rows[(r, "a", c)], rows[(r, "b", c)]
        print(f"{str(r):<6} {c:>4} {b['tok_s'] / a['tok_s']:>10.3f} {b['ttft'] / a['ttft']:>9.3f} "
              f"{b['tpot'] / a['tpot']:>9.3f} "
              f"{b['step_ms'] / a['step_ms']:>12.3f}")
PY
echo "took ${SECONDS} s; work folder: $WORK$([[ $KEEP == 1 ]] || echo ' (removed; KEEP=1 keeps it)')"
