#!/usr/bin/env bash
# Pod entry point for the Kubernetes layouts of mindieservice_daemon (see conf/k8s/README.md).
#
#   boot.sh [multi]   multi-machine pod: find $POD_IP in the global ranktable (group "0"
#                     coordinator, "1" controller, "2".. server), make this pod's certificate,
#                     then exec that part of mindieservice_daemon.
#   boot.sh single    single-machine pod: N servers (one per config<i>.json), the Coordinator
#                     and the Controller, all supervised by this script.
#   boot.sh role      only print the role this pod would take (exit 0/1/2 as MindIE-Motor's
#                     get_group_id.py; 255 with a message when the pod is not in the ranktable).
#
# Needs bash, python3 (standard library; JSON parsing and probes live in k8s_helper.py next to
# this file), cp/chmod/mkdir/rm/env. Everything it writes goes to $MINDIE_RUN_DIR (a memory
# emptyDir), so the root file system can stay read-only.
set -euo pipefail

BIN="${MINDIE_DAEMON_BIN:-mindieservice_daemon}"
PYTHON="${MINDIE_PYTHON:-python3}"
HELPER="${MINDIE_K8S_HELPER:-$(cd "$(dirname "$0")" && pwd)/k8s_helper.py}"
RUN="${MINDIE_RUN_DIR:-/run/mindie}"
CA_DIR="${MINDIE_CA_DIR:-/etc/mindie/ca}"
CONF_DIR="${MINDIE_CONF_DIR:-/etc/mindie/conf}"
CERT_INFO="${MINDIE_CERT_INFO:-/etc/mindie/cert-info/cert_info.json}"
RANKTABLE="${MINDIE_RANKTABLE:-/etc/mindie/ranktable/global_ranktable.json}"
# The Controller re-reads its ranktable; this script copies the mounted one over the private
# copy when it changes (ConfigMap updates reach a directory mount within a minute or so).
RANKTABLE_SYNC_SECONDS="${RANKTABLE_SYNC_SECONDS:-5}"
export PYTHONDONTWRITEBYTECODE=1

fail() {
    echo "boot.sh: $*" >&2
    exit 1
}

# copy_private SRC DST MODE: a regular file owned by this user (mounted ConfigMap and Secret
# files are root-owned symlinks, which the daemon's permission checks refuse).
copy_private() {
    [ -r "$1" ] || fail "$1 is missing or unreadable"
    rm -f "$2"
    cp "$1" "$2" || fail "cannot copy $1 to $2"
    chmod "$3" "$2" || fail "cannot chmod $3 $2"
}

require_pod_ip() {
    [ -n "${POD_IP:-}" ] || fail "POD_IP is not set (give it from the downward API: status.podIP)"
}

prepare_run_dir() {
    umask 077
    mkdir -p "$RUN/conf" "$RUN/ca" "$RUN/logs"
    rm -rf "$RUN/tls"
    mkdir -p "$RUN/tls"
}

# gen_certs SANS: this pod's certificate (cert.pem, encrypted cert.key.pem, cert_passwd.txt)
# signed by the CA from the Secret, with the comma-separated IP SANS, into $RUN/tls with the
# CA certificate beside it. The CA key and its password are removed again afterwards.
gen_certs() {
    case "$RUN" in *'"'* | *'\'*) fail "MINDIE_RUN_DIR must not contain quotes or backslashes" ;; esac
    copy_private "$CA_DIR/ca.pem" "$RUN/ca/ca.pem" 0400
    copy_private "$CA_DIR/ca.key.pem" "$RUN/ca/ca.key.pem" 0400
    copy_private "$CA_DIR/ca_passwd.txt" "$RUN/ca/ca_passwd.txt" 0400
    "$PYTHON" "$HELPER" cert-info "$CERT_INFO" "$RUN/conf/cert_info.json" || fail "cannot prepare $CERT_INFO"
    rm -f "$RUN/conf/gen_cert.json"
    cat >"$RUN/conf/gen_cert.json" <<EOF
{
    "ca_cert": "$RUN/ca/ca.pem",
    "ca_key": "$RUN/ca/ca.key.pem",
    "ca_key_pwd": "$RUN/ca/ca_passwd.txt",
    "cert_config": "$RUN/conf/cert_info.json",
    "output_path": "$RUN/tls"
}
EOF
    chmod 0640 "$RUN/conf/gen_cert.json"
    "$BIN" gen-cert "$RUN/conf/gen_cert.json" --ip="$1" || fail "gen-cert --ip=$1 failed"
    copy_private "$RUN/ca/ca.pem" "$RUN/tls/ca.pem" 0400
    rm -f "$RUN/ca/ca.key.pem" "$RUN/ca/ca_passwd.txt"
}

pick_role() {
    local code=0
    "$PYTHON" "$HELPER" role "$RANKTABLE" >/dev/null || code=$?
    case "$code" in
        0) echo coordinator ;;
        1) echo controller ;;
        2) echo server ;;
        *) fail "no role for POD_IP ${POD_IP:-} in $RANKTABLE (see the message above)" ;;
    esac
}

# Runs in the background of the exec'd Controller ($$ is then the Controller's PID) and
# ends with it.
sync_ranktable() {
    local src="$1" dst="$2"
    while sleep "$RANKTABLE_SYNC_SECONDS" && kill -0 "$$" 2>/dev/null; do
        if [ -r "$src" ] && [ "$(cat "$src")" != "$(cat "$dst" 2>/dev/null)" ]; then
            cp "$src" "$dst.new" && chmod 0640 "$dst.new" && mv -f "$dst.new" "$dst" &&
                echo "boot.sh: ranktable updated from $src" >&2
        fi
    done
}

run_server() {
    copy_private "$CONF_DIR/config.json" "$RUN/conf/config.json" 0640
    export MIES_INSTALL_PATH="$RUN"
    export MIES_CONTAINER_IP="$POD_IP"
    export MIES_CONTAINER_MANAGEMENT_IP="$POD_IP"
    exec "$BIN" --config-file "$RUN/conf/config.json"
}

run_controller() {
    copy_private "$CONF_DIR/ms_controller.json" "$RUN/conf/ms_controller.json" 0640
    copy_private "$RANKTABLE" "$RUN/conf/global_ranktable.json" 0640
    export MINDIE_MS_CONTROLLER_CONFIG_FILE_PATH="$RUN/conf/ms_controller.json"
    export GLOBAL_RANK_TABLE_FILE_PATH="$RUN/conf/global_ranktable.json"
    sync_ranktable "$RANKTABLE" "$GLOBAL_RANK_TABLE_FILE_PATH" &
    exec "$BIN" controller
}

run_coordinator() {
    copy_private "$CONF_DIR/ms_coordinator.json" "$RUN/conf/ms_coordinator.json" 0640
    export MINDIE_MS_COORDINATOR_CONFIG_FILE_PATH="$RUN/conf/ms_coordinator.json"
    exec "$BIN" coordinator "$POD_IP" "$POD_IP"
}

boot_multi() {
    require_pod_ip
    local role
    role="$(pick_role)"
    echo "boot.sh: POD_IP $POD_IP is the $role" >&2
    prepare_run_dir
    gen_certs "$POD_IP"
    cd "$RUN"
    "run_$role"
}

# Single machine: every part on 127.0.0.1 (servers with their own four ports each, from
# config<i>.json), except the Coordinator's predict port on $POD_IP for the Service. The
# pod lives as long as all of them: the first to exit stops the others and the pod restarts.
boot_single() {
    require_pod_ip
    prepare_run_dir
    gen_certs "$POD_IP,127.0.0.1"
    local f configs=()
    for f in "$CONF_DIR"/config[0-9]*.json; do
        [ -e "$f" ] || continue
        copy_private "$f" "$RUN/conf/$(basename "$f")" 0640
        configs+=("$RUN/conf/$(basename "$f")")
    done
    [ "${#configs[@]}" -gt 0 ] || fail "no config<i>.json in $CONF_DIR: nothing to serve"
    copy_private "$CONF_DIR/ms_coordinator.json" "$RUN/conf/ms_coordinator.json" 0640
    copy_private "$CONF_DIR/ms_controller.json" "$RUN/conf/ms_controller.json" 0640
    copy_private "$CONF_DIR/global_ranktable.json" "$RUN/conf/global_ranktable.json" 0640
    cd "$RUN"

    local pids=() cfg
    for cfg in "${configs[@]}"; do
        env MIES_INSTALL_PATH="$RUN" MIES_CONTAINER_IP=127.0.0.1 \
            MIES_CONTAINER_MANAGEMENT_IP=127.0.0.1 "$BIN" --config-file "$cfg" &
        pids+=("$!")
    done
    env MINDIE_MS_COORDINATOR_CONFIG_FILE_PATH="$RUN/conf/ms_coordinator.json" \
        "$BIN" coordinator "$POD_IP" 127.0.0.1 &
    pids+=("$!")
    env POD_IP=127.0.0.1 MINDIE_MS_CONTROLLER_CONFIG_FILE_PATH="$RUN/conf/ms_controller.json" \
        GLOBAL_RANK_TABLE_FILE_PATH="$RUN/conf/global_ranktable.json" "$BIN" controller &
    pids+=("$!")
    echo "boot.sh: started ${#configs[@]} server(s), the coordinator and the controller: ${pids[*]}" >&2

    trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT
    local rc=0
    wait -n "${pids[@]}" || rc=$?
    echo "boot.sh: a process ended (status $rc); stopping the others" >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    [ "$rc" -ne 0 ] || rc=1
    exit "$rc"
}

case "${1:-multi}" in
    multi) boot_multi ;;
    single) boot_single ;;
    role)
        require_pod_ip
        exec "$PYTHON" "$HELPER" role "$RANKTABLE"
        ;;
    *) fail "unknown mode '$1' (expected multi, single or role)" ;;
esac
