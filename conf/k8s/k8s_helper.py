#!/usr/bin/env python3
"""Pod-side helper for the Kubernetes layouts (conf/k8s/README.md). Python 3 standard library only.

  k8s_helper.py role RANKTABLE
      Finds $POD_IP in the global ranktable's server_group_list and exits with the role's
      code, as MindIE-Motor's get_group_id.py: 0 coordinator (group "0"), 1 controller
      (group "1"), 2 server (group >= "2"); prints the role's name on stdout. Waits while the
      ranktable's status is not "completed" ($RANKTABLE_WAIT_SECONDS, default 0 = forever).
      Any failure (no POD_IP, bad JSON, IP not listed, wait ran out) exits 255 with a message
      on stderr naming the file, the field and the value.

  k8s_helper.py cert-info SRC DST
      Copies gen-cert's cert_info.json from SRC to DST (mode 0640) with a fresh random
      serial_number, so that no two pods' certificates from one CA share a serial.

  k8s_helper.py probe [--host HOST] PORT PATH [PORT PATH ...]
      GET https://HOST:PORT/PATH for each pair with mutual TLS: the pod's own certificate
      (made by gen-cert at boot) as client certificate, the cluster CA as trust root, the
      host name checked against the certificate's IP SANs. HOST defaults to $POD_IP. Exits 0
      when every answer is 200, else 1 naming the failing URL. Used by the exec probes,
      because Kubernetes' httpGet probes cannot present a client certificate.
"""

import ipaddress
import json
import os
import secrets
import ssl
import sys
import time
import http.client

ROLE_NAMES = {0: "coordinator", 1: "controller", 2: "server"}
EXIT_ERROR = 255
MAX_RANKTABLE_BYTES = 100 * 1024 * 1024


class Refusal(Exception):
    """A reason to exit 255, already worded for the operator."""


def read_ranktable(path):
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise Refusal(f"ranktable {path}: cannot be read ({e.strerror})") from None
    if size > MAX_RANKTABLE_BYTES:
        raise Refusal(f"ranktable {path}: {size} bytes, at most {MAX_RANKTABLE_BYTES} allowed")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise Refusal(f"ranktable {path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise Refusal(f"ranktable {path}: the top level must be a JSON object")
    return doc


def wait_completed(path):
    """The ranktable once its status is "completed"; polls every second meanwhile."""
    limit = float(os.environ.get("RANKTABLE_WAIT_SECONDS", "0") or "0")
    start = time.monotonic()
    told = False
    while True:
        doc = read_ranktable(path)
        status = doc.get("status")
        if status == "completed":
            return doc
        if limit > 0 and time.monotonic() - start >= limit:
            raise Refusal(
                f'ranktable {path}: status is {json.dumps(status)}, still not "completed" '
                f"after {limit:g} s (fill in the pod IPs and set status to \"completed\")"
            )
        if not told:
            print(
                f'ranktable {path}: status is {json.dumps(status)}; waiting for "completed"',
                file=sys.stderr,
                flush=True,
            )
            told = True
        time.sleep(1)


def group_number(path, i, group):
    raw = group.get("group_id")
    try:
        n = int(str(raw))
    except ValueError:
        n = -1
    if n < 0:
        raise Refusal(
            f"ranktable {path}: server_group_list[{i}].group_id is {json.dumps(raw)}, "
            'expected a whole number as a string ("0" coordinator, "1" controller, "2".. servers)'
        )
    return n


def find_role(path, doc, pod_ip):
    groups = doc.get("server_group_list")
    if not isinstance(groups, list):
        raise Refusal(f"ranktable {path}: server_group_list is missing or not a list")
    for i, group in enumerate(groups):
        if not isinstance(group, dict):
            raise Refusal(f"ranktable {path}: server_group_list[{i}] is not an object")
        n = group_number(path, i, group)
        servers = group.get("server_list")
        if not isinstance(servers, list):
            raise Refusal(f"ranktable {path}: server_group_list[{i}].server_list is not a list")
        for server in servers:
            if isinstance(server, dict) and server.get("server_ip") == pod_ip:
                return min(n, 2)
    raise Refusal(
        f"ranktable {path}: POD_IP {pod_ip} is in no server_list of server_group_list; "
        "add this pod's IP to the ranktable (group \"0\" coordinator, \"1\" controller, "
        '"2" and up servers)'
    )


def role_main(args):
    if len(args) != 1:
        raise Refusal("usage: k8s_helper.py role RANKTABLE")
    pod_ip = os.environ.get("POD_IP", "")
    if not pod_ip:
        raise Refusal("POD_IP is not set (give it from the downward API: status.podIP)")
    try:
        ipaddress.ip_address(pod_ip)
    except ValueError:
        raise Refusal(f"POD_IP {json.dumps(pod_ip)} is not an IP address") from None
    doc = wait_completed(args[0])
    code = find_role(args[0], doc, pod_ip)
    print(ROLE_NAMES[code], flush=True)
    return code


def cert_info_main(args):
    if len(args) != 2:
        raise Refusal("usage: k8s_helper.py cert-info SRC DST")
    src, dst = args
    try:
        with open(src, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise Refusal(f"cert_info {src}: cannot be read as JSON ({e})") from None
    if not isinstance(doc, dict):
        raise Refusal(f"cert_info {src}: the top level must be a JSON object")
    doc["serial_number"] = secrets.randbelow(2**31 - 2) + 1
    if os.path.lexists(dst):
        os.remove(dst)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=4)
        f.write("\n")
    os.chmod(dst, 0o640)
    return 0


def tls_context(tls_dir):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.path.join(tls_dir, "ca.pem"))
    with open(os.path.join(tls_dir, "cert_passwd.txt"), encoding="utf-8") as f:
        password = f.read()
    if password.endswith("\n"):
        password = password[:-1]
    ctx.load_cert_chain(
        os.path.join(tls_dir, "cert.pem"),
        os.path.join(tls_dir, "cert.key.pem"),
        password=password,
    )
    return ctx


def probe_main(args):
    host = os.environ.get("POD_IP", "")
    if args[:1] == ["--host"]:
        if len(args) < 2:
            raise Refusal("probe: --host needs a value")
        host, args = args[1], args[2:]
    if not args or len(args) % 2:
        raise Refusal("usage: k8s_helper.py probe [--host HOST] PORT PATH [PORT PATH ...]")
    if not host:
        raise Refusal("probe: POD_IP is not set and no --host given")
    tls_dir = os.path.join(os.environ.get("MINDIE_RUN_DIR", "/run/mindie"), "tls")
    timeout = float(os.environ.get("PROBE_TIMEOUT_SECONDS", "3"))
    try:
        ctx = tls_context(tls_dir)
    except (OSError, ssl.SSLError) as e:
        print(f"probe: TLS files in {tls_dir} unusable: {e}", file=sys.stderr)
        return 1
    for port, path in zip(args[0::2], args[1::2]):
        if not port.isdigit() or not 0 < int(port) < 65536 or not path.startswith("/"):
            raise Refusal(f"probe: {port} {path}: expected a port in 1..65535 and a path from /")
        url = f"https://{host}:{port}{path}"
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=ctx)
        try:
            conn.request("GET", path)
            status = conn.getresponse().status
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            print(f"probe: {url}: {e}", file=sys.stderr)
            return 1
        finally:
            conn.close()
        if status != 200:
            print(f"probe: {url}: HTTP {status}", file=sys.stderr)
            return 1
    return 0


def main(argv):
    commands = {
        "role": (role_main, EXIT_ERROR),
        "cert-info": (cert_info_main, 1),
        "probe": (probe_main, 1),
    }
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return EXIT_ERROR
    run, failure = commands[argv[0]]
    try:
        return run(argv[1:])
    except Refusal as e:
        print(f"k8s_helper.py {argv[0]}: {e}", file=sys.stderr)
        return failure


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
