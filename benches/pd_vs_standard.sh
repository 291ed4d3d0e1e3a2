#!/usr/bin/env bash
# PD against one standard instance on the bench model, both on this machine (they share its
# cores: the PD numbers include P and D competing for them).
#
# PD: a prefill and a decode instance (`inferMode: "dmi"`, P on 127.0.0.1, D on 127.0.0.3,
# interComm as plain h2c) behind `vllm-router --vllm-pd-disaggregation` (vLLM's protocol;
# MindIE's needs the Coordinator, not built yet); standard: `loadgen --serve`. Both get the
# same schedule limits (maxBatchSize 16, cpuMemSize 4) and the same load: `--concurrency`
# workers, token-id prompts of PROMPT tokens, OUT output tokens, greedy, ignore_eos.
#
#   cargo build --release && benches/pd_vs_standard.sh
#   MODEL=target/bench-models/qwen2-0.5b-bf16 CONC=16 PROMPT=128 OUT=64 REQUESTS=48 \
#       VLLM_ROUTER=target/pd-venv/bin/vllm-router benches/pd_vs_standard.sh
#
# The bench model comes from `cargo bench --bench decode -- model`; the router from
# `python3 -m venv target/pd-venv && target/pd-venv/bin/pip install vllm-router==0.1.17`.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-target/bench-models/qwen2-0.5b-bf16}
ROUTER=${VLLM_ROUTER:-target/pd-venv/bin/vllm-router}
BIN=${BIN:-target/release/mindieservice_daemon}
CONC=${CONC:-16}
PROMPT=${PROMPT:-128}
OUT=${OUT:-64}
REQUESTS=${REQUESTS:-48}
WORK=$(mktemp -d /tmp/pd-bench-XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

python3 - "$WORK" "$MODEL" <<'PY'
import json, os, socket, sys
work, model = sys.argv[1], os.path.abspath(sys.argv[2])
base = json.load(open("conf/config.json"))
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
inter = port()
for name, ip in (("p", "127.0.0.1"), ("d", "127.0.0.3")):
    c = json.loads(json.dumps(base))
    sc = c["ServerConfig"]
    sc.update(ipAddress=ip, managementIpAddress=ip, port=port(), managementPort=port(),
              metricsPort=port(), httpsEnabled=False, inferMode="dmi",
              interCommTLSEnabled=False, interCommPort=inter)
    d = c["BackendConfig"]["ModelDeployConfig"]
    d.update(maxSeqLen=2560, maxInputTokenLen=2048)
    d["ModelConfig"][0].update(modelInstanceType="Standard", modelName="bench",
                               modelWeightPath=model, cpuMemSize=4)
    c["BackendConfig"]["ScheduleConfig"].update(maxBatchSize=16, maxPrefillBatchSize=16,
                                                maxPrefillTokens=8192, maxIterTimes=512, maxN=16)
    os.makedirs(f"{work}/{name}/conf")
    path = f"{work}/{name}/conf/config.json"
    json.dump(c, open(path, "w"), indent=1)
    os.chmod(path, 0o640)
    open(f"{work}/{name}.url", "w").write(f"http://{ip}:{sc['port']}")
PY

for n in p d; do
    MIES_CONFIG_JSON_PATH="$WORK/$n/conf/config.json" MIES_INSTALL_PATH="$WORK/$n" \
        "$BIN" >"$WORK/$n.log" 2>&1 &
    PIDS+=($!)
done
for n in p d; do
    for _ in $(seq 600); do grep -q "Daemon start success" "$WORK/$n.log" && break; sleep 0.2; done
    grep -q "Daemon start success" "$WORK/$n.log" || { cat "$WORK/$n.log"; exit 1; }
done
RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$ROUTER" --host 127.0.0.1 --port "$RPORT" --vllm-pd-disaggregation \
    --prefill "$(cat "$WORK/p.url")" --decode "$(cat "$WORK/d.url")" \
    --log-level warning >"$WORK/router.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $RPORT), 1)" 2>/dev/null && break
    sleep 0.2
done

LOAD=(--concurrency "$CONC" --prompt-tokens "$PROMPT" --output-tokens "$OUT"
      --requests "$REQUESTS" --tokenizer "$MODEL/tokenizer.json" --model bench)
echo "== PD (P + D + vllm-router on this machine)"
cargo bench -q --bench loadgen -- --url "http://127.0.0.1:$RPORT" "${LOAD[@]}" --json "$WORK/pd.json" ||
    echo "(some PD requests failed: see above and $WORK/*.log)"
cleanup
PIDS=()
echo "== one standard instance"
cargo bench -q --bench loadgen -- --serve "$MODEL" "${LOAD[@]}" --json "$WORK/standard.json"
echo "results: $WORK/pd.json $WORK/standard.json (logs in $WORK)"
