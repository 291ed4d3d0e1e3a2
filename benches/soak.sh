#!/usr/bin/env bash
# Soak (issue 16): the shipped tiny-model config under mixed load for DURATION seconds (default
# 1800), CONC clients (32) sending the business routes of every flavour back to back, streaming
# and not, DROP (0.2) of the streams hung up after their first bytes; the daemon's /v1/process
# (resident memory, threads, open fds, live tokio tasks) and free KV blocks sampled every
# INTERVAL seconds (10). Prints the curve and the growth after WARMUP seconds (120); fails when a
# request failed, a KV block stayed held once idle, or RSS grew more than MAX_GROWTH % (1).
#
#   cargo build --release && benches/soak.sh
#   DURATION=300 CONC=64 benches/soak.sh
#
# Ports are free ones on 127.0.0.1 (business) and 127.0.0.2 (management); the model is the
# fixture of conf/config.json, served from a temporary copy of that config. BIN picks the binary
# (default target/release/mindieservice_daemon); the daemon's log is kept in the work folder
# with KEEP=1. Other load on the machine slows the request rate but does not change the check.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/mindieservice_daemon}
DURATION=${DURATION:-1800}
CONC=${CONC:-32}
DROP=${DROP:-0.2}
INTERVAL=${INTERVAL:-10}
WARMUP=${WARMUP:-120}
MAX_GROWTH=${MAX_GROWTH:-1}
KEEP=${KEEP:-0}
[[ -x $BIN ]] || { echo "no daemon binary at $BIN (cargo build --release, or set BIN)"; exit 1; }
WORK=$(mktemp -d /tmp/soak-XXXX)
PID=
trap '[[ -n $PID ]] && kill $PID 2>/dev/null; wait 2>/dev/null; [[ $KEEP == 1 ]] || rm -rf "$WORK"' EXIT

read -r PORT MPORT MODEL < <(python3 - "$WORK" "$CONC" <<'PY'
import json, os, socket, sys
work, conc = sys.argv[1], int(sys.argv[2])
c = json.load(open("conf/config.json"))
def port(ip):
    s = socket.socket(); s.bind((ip, 0)); p = s.getsockname()[1]; s.close(); return p
sc = c["ServerConfig"]
sc.update(port=port(sc["ipAddress"]), managementPort=port(sc["managementIpAddress"]),
          metricsPort=port(sc["managementIpAddress"]), maxLinkNum=max(300, 4 * conc))
m = c["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0]
m["modelWeightPath"] = os.path.abspath(m["modelWeightPath"])
os.makedirs(f"{work}/conf")
path = f"{work}/conf/config.json"
json.dump(c, open(path, "w"), indent=1)
os.chmod(path, 0o640)
print(sc["port"], sc["managementPort"], m["modelName"])
PY
)
chmod 640 tests/fixtures/models/*/config.json
MIES_INSTALL_PATH="$WORK" MIES_CONFIG_JSON_PATH="$WORK/conf/config.json" MINDIE_LOG_TO_FILE=0 \
    MINDIE_LOG_LEVEL=warn "$BIN" >"$WORK/daemon.log" 2>&1 &
PID=$!
for _ in $(seq 300); do grep -qs "Daemon start success" "$WORK/daemon.log" && break; sleep 0.2; done
grep -qs "Daemon start success" "$WORK/daemon.log" || { cat "$WORK/daemon.log"; exit 1; }
echo "soak: $DURATION s, $CONC clients, $DROP hung up, model $MODEL, $(nproc) cores, pid $PID"
python3 benches/soak.py 127.0.0.1 "$PORT" 127.0.0.2 "$MPORT" "$MODEL" "$DURATION" "$CONC" "$DROP" \
    "$INTERVAL" "$WARMUP" "$MAX_GROWTH"
