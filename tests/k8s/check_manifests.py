"""Structural checks of conf/k8s/{multi,single} that a schema cannot make (tests/k8s_manifests.rs).

  check_manifests.py check K8S_DIR          every promise of conf/k8s/README.md; exit 1 listing
                                            each broken one
  check_manifests.py extract K8S_DIR OUT    writes every ConfigMap key to OUT/<layout>/<name>/<key>

Needs PyYAML (from the test's venv, installed with kubernetes-validate).
"""

import json
import os
import re
import sys

import yaml

LAYOUTS = ("multi", "single")
TLS = "/run/mindie/tls"
GENERATED = {
    "ca_cert": f"{TLS}/ca.pem",
    "tls_cert": f"{TLS}/cert.pem",
    "tls_key": f"{TLS}/cert.key.pem",
    "tls_passwd": f"{TLS}/cert_passwd.txt",
}
HELPER_ARGS = ["python3", "/opt/mindie/k8s/k8s_helper.py", "probe"]
SERVER_TLS_KEYS = {
    # (ServerConfig | BackendConfig, key) -> what it must be
    ("ServerConfig", "httpsEnabled"): True,
    ("ServerConfig", "interCommTLSEnabled"): True,
    ("BackendConfig", "interNodeTLSEnabled"): True,
    ("ServerConfig", "tlsCaPath"): TLS + "/",
    ("ServerConfig", "tlsCaFile"): ["ca.pem"],
    ("ServerConfig", "tlsCert"): GENERATED["tls_cert"],
    ("ServerConfig", "tlsPk"): GENERATED["tls_key"],
    ("ServerConfig", "tlsPkPwd"): GENERATED["tls_passwd"],
    ("ServerConfig", "managementTlsCaFile"): ["ca.pem"],
    ("ServerConfig", "managementTlsCert"): GENERATED["tls_cert"],
    ("ServerConfig", "managementTlsPk"): GENERATED["tls_key"],
    ("ServerConfig", "managementTlsPkPwd"): GENERATED["tls_passwd"],
    ("ServerConfig", "interCommTlsCaPath"): TLS + "/",
    ("ServerConfig", "interCommTlsCaFiles"): ["ca.pem"],
    ("ServerConfig", "interCommTlsCert"): GENERATED["tls_cert"],
    ("ServerConfig", "interCommPk"): GENERATED["tls_key"],
    ("ServerConfig", "interCommPkPwd"): GENERATED["tls_passwd"],
    ("BackendConfig", "interNodeTlsCaPath"): TLS + "/",
    ("BackendConfig", "interNodeTlsCaFiles"): ["ca.pem"],
    ("BackendConfig", "interNodeTlsCert"): GENERATED["tls_cert"],
    ("BackendConfig", "interNodeTlsPk"): GENERATED["tls_key"],
    ("BackendConfig", "interNodeTlsPkPwd"): GENERATED["tls_passwd"],
}


class Checker:
    def __init__(self, k8s_dir):
        self.k8s_dir = k8s_dir
        self.failures = []
        with open(os.path.join(k8s_dir, "boot.sh"), encoding="utf-8") as f:
            self.boot = f.read()
        with open(os.path.join(k8s_dir, "k8s_helper.py"), encoding="utf-8") as f:
            self.helper = f.read()
        # boot.sh's defaults: NAME="${VAR:-default}"
        self.defaults = dict(re.findall(r'^[A-Z_]+="\$\{([A-Z_]+):-([^}$]+)\}"$', self.boot, re.M))

    def expect(self, ok, where, what):
        if not ok:
            self.failures.append(f"{where}: {what}")
        return ok

    # ---------------------------------------------------------------- loading
    def load(self, layout):
        docs = []
        folder = os.path.join(self.k8s_dir, layout)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".yaml"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    for d in yaml.safe_load_all(f):
                        if d is not None:
                            docs.append((f"{layout}/{name}", d))
        return docs

    def config_json(self, layout, cms, cm, key):
        where = f"{layout}: ConfigMap {cm} key {key}"
        text = cms.get(cm, {}).get(key)
        if not self.expect(text is not None, where, "missing"):
            return None
        try:
            return json.loads(text)
        except ValueError as e:
            self.expect(False, where, f"not valid JSON: {e}")
            return None

    # ---------------------------------------------------------------- whole layout
    def layout(self, layout):
        docs = self.load(layout)
        cms, deps, svcs = {}, {}, []
        for where, d in docs:
            kind, meta = d.get("kind"), d.get("metadata", {})
            self.expect(kind in ("Namespace", "ConfigMap", "Deployment", "Service"), where, f"unexpected kind {kind}")
            if kind == "Namespace":
                self.expect(meta.get("name") == "mindie", where, "namespace must be mindie")
                continue
            self.expect(meta.get("namespace") == "mindie", where, f"{kind} {meta.get('name')} not in namespace mindie")
            if kind == "ConfigMap":
                cms[meta["name"]] = d.get("data", {})
                for key, text in d.get("data", {}).items():
                    if key.endswith(".json"):
                        try:
                            json.loads(text)
                        except ValueError as e:
                            self.expect(False, where, f"ConfigMap {meta['name']} key {key}: not valid JSON: {e}")
            elif kind == "Deployment":
                deps[meta["name"]] = d
            else:
                svcs.append((where, d))
        for name, data in cms.items():
            if "boot.sh" in data or "k8s_helper.py" in data:
                self.expect(data.get("boot.sh") == self.boot, f"{layout}: ConfigMap {name}", "boot.sh differs from conf/k8s/boot.sh")
                self.expect(data.get("k8s_helper.py") == self.helper, f"{layout}: ConfigMap {name}", "k8s_helper.py differs from conf/k8s/k8s_helper.py")
        if layout == "multi":
            self.multi(cms, deps, svcs)
        else:
            self.single(cms, deps, svcs)

    # ---------------------------------------------------------------- one pod
    def pod(self, layout, dep, cms):
        name = dep["metadata"]["name"]
        where = f"{layout}: Deployment {name}"
        spec = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        self.expect(dep["spec"]["selector"].get("matchLabels", {}).items() <= labels.items(), where, "selector does not match the pod labels")
        self.expect(spec.get("automountServiceAccountToken") is False, where, "automountServiceAccountToken must be false")
        self.expect(spec.get("enableServiceLinks") is False, where, "enableServiceLinks must be false")
        psc = spec.get("securityContext", {})
        self.expect(psc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot must be true")
        self.expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where, "pod seccompProfile must be RuntimeDefault")
        self.expect("fsGroup" in psc, where, "pod securityContext.fsGroup is needed to read the Secret and ConfigMaps")
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        self.expect(len(spec.get("containers", [])) == 1, where, "one container per pod")
        self.expect(not spec.get("initContainers"), where, "no init containers")
        for c in spec.get("containers", []):
            self.container(f"{where} container {c['name']}", c, vols, cms)

    def container(self, where, c, vols, cms):
        sc = c.get("securityContext", {})
        self.expect(sc.get("runAsNonRoot") is True, where, "runAsNonRoot must be true")
        self.expect(sc.get("allowPrivilegeEscalation") is False, where, "allowPrivilegeEscalation must be false")
        self.expect(sc.get("readOnlyRootFilesystem") is True, where, "readOnlyRootFilesystem must be true")
        self.expect(sc.get("capabilities") == {"drop": ["ALL"]}, where, "capabilities must be exactly drop [ALL]")
        self.expect(sc.get("seccompProfile") == {"type": "RuntimeDefault"}, where, "seccompProfile must be RuntimeDefault")
        self.expect(not sc.get("privileged"), where, "must not be privileged")
        env = {e["name"]: e for e in c.get("env", [])}
        self.expect(env.get("POD_IP", {}).get("valueFrom") == {"fieldRef": {"fieldPath": "status.podIP"}}, where, "POD_IP must come from status.podIP")
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                self.expect(r in res.get(part, {}), where, f"resources.{part}.{r} missing")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        for m in c.get("volumeMounts", []):
            v = vols.get(m["name"])
            if not self.expect(v is not None, where, f"mount {m['mountPath']} names no volume {m['name']}"):
                continue
            if "configMap" in v:
                self.expect(m.get("readOnly") is True, where, f"ConfigMap mount {m['mountPath']} must be readOnly")
                self.expect(v["configMap"]["name"] in cms, where, f"volume {v['name']}: no ConfigMap {v['configMap']['name']} in this layout")
                self.expect("subPath" not in m, where, f"{m['mountPath']}: no subPath (it would freeze ConfigMap updates)")
            elif "secret" in v:
                self.expect(m.get("readOnly") is True, where, f"Secret mount {m['mountPath']} must be readOnly")
                self.expect(v["secret"].get("defaultMode", 0o644) & 0o137 == 0, where, "Secret defaultMode must be at most 0440")
            elif "emptyDir" in v:
                self.expect(v["emptyDir"].get("medium") == "Memory", where, f"emptyDir {v['name']} must be medium Memory")
                self.expect("sizeLimit" in v["emptyDir"], where, f"emptyDir {v['name']} needs a sizeLimit")
            elif "hostPath" in v:
                self.expect(m.get("readOnly") is True, where, f"hostPath mount {m['mountPath']} must be readOnly")
        shm = mounts.get("/dev/shm")
        self.expect(shm is not None and "emptyDir" in vols.get(shm["name"], {}), where, "/dev/shm must be a memory emptyDir")

        def env_or_default(var):
            e = env.get(var)
            return e["value"] if e and "value" in e else self.defaults.get(var)

        def mounted(var):
            """The ConfigMap/Secret volume behind boot.sh's path variable VAR, and the file name."""
            path = env_or_default(var)
            if not self.expect(path is not None, where, f"boot.sh has no default for {var}"):
                return None, None
            for mp, m in mounts.items():
                if path == mp or path.startswith(mp.rstrip("/") + "/"):
                    return vols.get(m["name"]), path[len(mp):].lstrip("/")
            self.expect(False, where, f"{var}={path} is on no mount")
            return None, None

        ca, _ = mounted("MINDIE_CA_DIR")
        self.expect(ca is not None and ca.get("secret", {}).get("secretName") == "mindie-ca", where, "MINDIE_CA_DIR must be the mindie-ca Secret")
        run, _ = mounted("MINDIE_RUN_DIR")
        self.expect(run is not None and run.get("emptyDir", {}).get("medium") == "Memory", where, "MINDIE_RUN_DIR (generated certificates) must be a memory emptyDir")
        self.expect(env_or_default("MINDIE_RUN_DIR") == "/run/mindie", where, "the configs point at /run/mindie/tls; MINDIE_RUN_DIR must be /run/mindie")
        cmd = c.get("command", [])
        self.expect(cmd[:2] == ["bash", "/opt/mindie/k8s/boot.sh"], where, f"command must run boot.sh, is {cmd}")
        boot_mount = mounts.get("/opt/mindie/k8s")
        if self.expect(boot_mount is not None, where, "boot.sh must be mounted at /opt/mindie/k8s"):
            cm = vols.get(boot_mount["name"], {}).get("configMap", {}).get("name")
            data = cms.get(cm, {})
            self.expect("boot.sh" in data and "k8s_helper.py" in data, where, f"ConfigMap {cm} must hold boot.sh and k8s_helper.py")
        self.c_mounted = mounted

    def cm_file(self, where, var, cms, key=None):
        """The text of the ConfigMap file boot.sh reads through VAR (a file, or a folder + key)."""
        vol, rest = self.c_mounted(var)
        if vol is None:
            return None
        if not self.expect("configMap" in vol, where, f"{var} must be on a ConfigMap volume"):
            return None
        name = key if key is not None else rest
        if key is not None:
            self.expect(rest == "", where, f"{var} must be the ConfigMap's mount folder")
        data = cms.get(vol["configMap"]["name"], {})
        self.expect(name in data, where, f"ConfigMap {vol['configMap']['name']} has no key {name} (boot.sh reads it through {var})")
        return data.get(name)

    # ---------------------------------------------------------------- probes and ports
    def probe_targets(self, where, c, kind, host):
        p = c.get(kind)
        if not self.expect(p is not None, where, f"{kind} missing"):
            return []
        cmd = p.get("exec", {}).get("command", [])
        self.expect(cmd[:3] == HELPER_ARGS, where, f"{kind} must exec the mTLS probe helper, is {cmd}")
        args = cmd[3:]
        if host:
            self.expect(args[:2] == ["--host", host], where, f"{kind} must probe host {host}")
            args = args[2:]
        else:
            self.expect("--host" not in args, where, f"{kind} must probe $POD_IP (no --host)")
        self.expect(len(args) % 2 == 0 and args, where, f"{kind}: PORT PATH pairs expected")
        self.expect(p.get("timeoutSeconds", 1) >= 3, where, f"{kind}: timeoutSeconds below 3 is too short for a TLS handshake")
        return [(int(a), b) for a, b in zip(args[0::2], args[1::2]) if a.isdigit()]

    def ports(self, c):
        return sorted(p["containerPort"] for p in c.get("ports", []))

    def tls_items(self, where, doc):
        t = doc.get("tls_config", {})
        self.expect(t, where, "tls_config missing")
        for k, v in t.items():
            if k.endswith("_tls_enable"):
                self.expect(v is True, where, f"tls_config.{k} must be true")
            elif k.endswith("_tls_items"):
                for item, path in GENERATED.items():
                    self.expect(v.get(item) == path, where, f"tls_config.{k}.{item} must be {path}, is {v.get(item)}")
                self.expect(k.replace("_items", "_enable") in t, where, f"tls_config.{k} has no enable flag")

    def server_tls(self, where, doc):
        for (section, key), want in SERVER_TLS_KEYS.items():
            got = doc.get(section, {}).get(key)
            self.expect(got == want, where, f"{section}.{key} must be {want!r}, is {got!r}")
        self.expect(doc["ServerConfig"].get("inferMode") == "dmi", where, "inferMode must be dmi")

    def server_ports(self, doc):
        s = doc["ServerConfig"]
        return [s["port"], s["managementPort"], s["metricsPort"], s["interCommPort"]]

    def rt_ports(self, server):
        return [int(server[k]) for k in ("predict_port", "mgmt_port", "metric_port", "inter_comm_port")]

    def service(self, layout, svcs, dep, predict_port):
        if not self.expect(len(svcs) == 1, layout, f"exactly one Service expected, found {len(svcs)}"):
            return
        where, s = svcs[0]
        name = s["metadata"]["name"]
        self.expect(name != "mindie-ms-coordinator", where, "the Service must not be named mindie-ms-coordinator")
        self.expect(s["spec"].get("type") == "NodePort", where, "the Service must be a NodePort")
        ports = s["spec"].get("ports", [])
        self.expect(len(ports) == 1 and ports[0].get("port") == 1025 and ports[0].get("targetPort") == predict_port == 1025, where, "the Service must expose the predict port 1025 only")
        labels = dep["spec"]["template"]["metadata"]["labels"]
        self.expect(s["spec"].get("selector", {}).items() <= labels.items() and s["spec"].get("selector"), where, f"selector must pick {dep['metadata']['name']}'s pods")
        return ports[0].get("nodePort") if ports else None

    # ---------------------------------------------------------------- multi-machine
    def multi(self, cms, deps, svcs):
        L = "multi"
        want = {"mindie-ms-controller", "mindie-ms-coordinator", "mindie-server"}
        if not self.expect(set(deps) == want, L, f"Deployments must be {sorted(want)}, are {sorted(deps)}"):
            return
        self.expect(deps["mindie-server"]["spec"].get("replicas", 1) >= 1, L, "mindie-server replicas")
        self.expect(deps["mindie-ms-controller"]["spec"].get("replicas") == 1, L, "one Controller")
        self.expect(deps["mindie-ms-coordinator"]["spec"].get("replicas") == 1, L, "one Coordinator")
        files = {"mindie-server": "config.json", "mindie-ms-controller": "ms_controller.json", "mindie-ms-coordinator": "ms_coordinator.json"}
        docs, rt, cert_info = {}, None, None
        for name, dep in deps.items():
            c = dep["spec"]["template"]["spec"]["containers"][0]
            where = f"{L}: Deployment {name}"
            self.pod(L, dep, cms)  # also sets the context cm_file reads through
            self.expect(c["command"][2:] == [], where, "multi-machine pods run boot.sh without a mode")
            text = self.cm_file(where, "MINDIE_CONF_DIR", cms, files[name])
            rt_text = self.cm_file(where, "MINDIE_RANKTABLE", cms)
            ci_text = self.cm_file(where, "MINDIE_CERT_INFO", cms)
            try:
                docs[name] = json.loads(text) if text else None
                rt = json.loads(rt_text) if rt_text else rt
                cert_info = json.loads(ci_text) if ci_text else cert_info
            except ValueError:
                docs[name] = None
            vol, _ = self.c_mounted("MINDIE_RANKTABLE")
            self.expect(vol is not None and vol.get("configMap", {}).get("name") == "mindie-global-ranktable", where, "the ranktable must be the mindie-global-ranktable ConfigMap")
        server, ctl, coo = docs["mindie-server"], docs["mindie-ms-controller"], docs["mindie-ms-coordinator"]
        if None in (server, ctl, coo, rt):
            return
        self.expect(isinstance(cert_info, dict) and "req_distinguished_name" in cert_info, L, "cert_info.json must hold req_distinguished_name")
        # server
        c = deps["mindie-server"]["spec"]["template"]["spec"]["containers"][0]
        w = f"{L}: mindie-server"
        self.server_tls(w + " config.json", server)
        sp = self.server_ports(server)
        self.expect(self.ports(c) == sorted(sp), w, f"containerPorts {self.ports(c)} must be the config's ports {sorted(sp)}")
        mgmt = server["ServerConfig"]["managementPort"]
        self.expect(self.probe_targets(w, c, "readinessProbe", None) == [(mgmt, "/v2/health/ready")], w, "readiness must be GET /v2/health/ready on the management port")
        self.expect(self.probe_targets(w, c, "livenessProbe", None) == [(mgmt, "/v2/health/live")], w, "liveness must be GET /v2/health/live on the management port")
        self.expect(self.probe_targets(w, c, "startupProbe", None) == [(mgmt, "/v2/health/live")], w, "startup must be GET /v2/health/live on the management port")
        # controller
        c = deps["mindie-ms-controller"]["spec"]["template"]["spec"]["containers"][0]
        w = f"{L}: mindie-ms-controller"
        self.tls_items(w + " ms_controller.json", ctl)
        cp = ctl["http_server"]["port"]
        self.expect(self.ports(c) == [cp], w, f"containerPorts {self.ports(c)} must be http_server.port {cp}")
        self.expect(self.probe_targets(w, c, "startupProbe", None) == [(cp, "/v1/startup")], w, "startup must be /v1/startup on http_server.port")
        self.expect(self.probe_targets(w, c, "readinessProbe", None) == [(cp, "/v1/health")], w, "readiness must be /v1/health on http_server.port")
        self.expect(self.probe_targets(w, c, "livenessProbe", None) == [(cp, "/v1/health")], w, "liveness must be /v1/health on http_server.port")
        self.expect(ctl.get("global_rank_table_file_path", "").startswith("/run/mindie/"), w, "global_rank_table_file_path must be the private copy under /run/mindie")
        # coordinator
        c = deps["mindie-ms-coordinator"]["spec"]["template"]["spec"]["containers"][0]
        w = f"{L}: mindie-ms-coordinator"
        self.tls_items(w + " ms_coordinator.json", coo)
        h = coo["http_config"]
        cports = [int(h[k]) for k in ("predict_port", "manage_port", "external_port", "status_port")]
        self.expect(self.ports(c) == sorted(cports), w, f"containerPorts {self.ports(c)} must be {sorted(cports)}")
        st = int(h["status_port"])
        self.expect(self.probe_targets(w, c, "startupProbe", None) == [(st, "/v1/startup")], w, "startup must be /v1/startup on status_port")
        self.expect(self.probe_targets(w, c, "readinessProbe", None) == [(st, "/v1/readiness")], w, "readiness must be /v1/readiness on status_port")
        self.expect(self.probe_targets(w, c, "livenessProbe", None) == [(st, "/v1/health")], w, "liveness must be /v1/health on status_port")
        self.expect(ctl["mindie_ms_coordinator_port"] == int(h["manage_port"]), L, "ms_controller mindie_ms_coordinator_port must be the Coordinator's manage_port")
        self.expect([ctl["mindie_server_port"], ctl["mindie_server_control_port"], ctl["mindie_server_metric_port"]] == sp[:3], L, "ms_controller's mindie_server_* ports must be the server config's")
        self.service(L, svcs, deps["mindie-ms-coordinator"], int(h["predict_port"]))
        # ranktable
        groups = {g["group_id"]: g for g in rt.get("server_group_list", [])}
        self.expect({"0", "1", "2"} <= set(groups), L, "the ranktable needs groups 0, 1 and 2")
        for gid, g in groups.items():
            for s in g.get("server_list", []):
                if gid not in ("0", "1"):
                    self.expect(self.rt_ports(s) == sp, L, f"ranktable server {s.get('server_ip')}: ports must be the server config's {sp}")

    # ---------------------------------------------------------------- single machine
    def single(self, cms, deps, svcs):
        L = "single"
        if not self.expect(len(deps) == 1, L, "exactly one Deployment"):
            return
        (name, dep), = deps.items()
        w = f"{L}: Deployment {name}"
        self.expect(dep["spec"].get("replicas") == 1, w, "one replica")
        c = dep["spec"]["template"]["spec"]["containers"][0]
        self.pod(L, dep, cms)
        self.expect(c["command"][2:] == ["single"], w, "the pod runs boot.sh single")
        ctl_t = self.cm_file(w, "MINDIE_CONF_DIR", cms, "ms_controller.json")
        coo_t = self.cm_file(w, "MINDIE_CONF_DIR", cms, "ms_coordinator.json")
        rt_t = self.cm_file(w, "MINDIE_CONF_DIR", cms, "global_ranktable.json")
        self.cm_file(w, "MINDIE_CERT_INFO", cms)
        vol, _ = self.c_mounted("MINDIE_CONF_DIR")
        data = cms.get(vol["configMap"]["name"], {}) if vol else {}
        names = sorted((k for k in data if re.fullmatch(r"config[0-9]+\.json", k)), key=lambda k: int(k[6:-5]))
        if not self.expect(names and None not in (ctl_t, coo_t, rt_t), w, "config<i>.json, ms_controller.json, ms_coordinator.json, global_ranktable.json needed"):
            return
        ctl, coo, rt = json.loads(ctl_t), json.loads(coo_t), json.loads(rt_t)
        servers = [json.loads(data[n]) for n in names]
        self.tls_items(w + " ms_controller.json", ctl)
        self.tls_items(w + " ms_coordinator.json", coo)
        for n, s in zip(names, servers):
            self.server_tls(f"{w} {n}", s)
            self.expect(s["ServerConfig"]["ipAddress"] == "127.0.0.1" and s["ServerConfig"]["managementIpAddress"] == "127.0.0.1", w, f"{n}: servers listen on 127.0.0.1")
        h = coo["http_config"]
        listeners = {}
        for what, port in [("coordinator manage", h["manage_port"]), ("coordinator alarm", h["alarm_port"]),
                           ("coordinator external", h["external_port"]), ("coordinator status", h["status_port"]),
                           ("controller http_server", ctl["http_server"]["port"])] + \
                [(f"{n} {k}", p) for n, s in zip(names, servers) for k, p in zip(("port", "management", "metrics", "interComm"), self.server_ports(s))]:
            port = int(port)
            self.expect(port not in listeners, w, f"127.0.0.1:{port} used by both {listeners.get(port)} and {what}")
            listeners[port] = what
        self.expect(self.ports(c) == [int(h["predict_port"])], w, "the only containerPort is the Coordinator's predict port")
        st, cp = int(h["status_port"]), ctl["http_server"]["port"]
        mg = [s["ServerConfig"]["managementPort"] for s in servers]
        self.expect(self.probe_targets(w, c, "readinessProbe", "127.0.0.1") == [(st, "/v1/readiness")], w, "readiness must be the Coordinator's /v1/readiness")
        self.expect(self.probe_targets(w, c, "startupProbe", "127.0.0.1") == [(st, "/v1/startup"), (cp, "/v1/startup")] + [(m, "/v2/health/live") for m in mg], w, "startup must cover the Coordinator, the Controller and every server")
        self.expect(self.probe_targets(w, c, "livenessProbe", "127.0.0.1") == [(st, "/v1/health"), (cp, "/v1/health")] + [(m, "/v2/health/live") for m in mg], w, "liveness must cover the Coordinator, the Controller and every server")
        self.expect(ctl["mindie_ms_coordinator_port"] == int(h["manage_port"]), w, "mindie_ms_coordinator_port must be the Coordinator's manage_port")
        self.expect(ctl.get("deploy_mode") == "pd_disaggregation_single_container", w, "deploy_mode pd_disaggregation_single_container")
        self.expect(rt.get("status") == "completed", w, "the single-machine ranktable is complete as shipped")
        groups = {g["group_id"]: g for g in rt.get("server_group_list", [])}
        for gid in ("0", "1"):
            self.expect([s.get("server_ip") for s in groups.get(gid, {}).get("server_list", [])] == ["127.0.0.1"], w, f"ranktable group {gid} must be 127.0.0.1")
        listed = [s for gid, g in groups.items() if gid not in ("0", "1") for s in g.get("server_list", [])]
        self.expect([self.rt_ports(s) for s in listed] == [self.server_ports(s) for s in servers], w, "ranktable servers must be config1..N's ports, in order")
        self.expect(all(s.get("server_ip") == "127.0.0.1" for s in listed), w, "ranktable servers must be 127.0.0.1")
        self.service(L, svcs, dep, int(h["predict_port"]))

    def run(self):
        for layout in LAYOUTS:
            self.layout(layout)
        self.expect('"$BIN" gen-cert "$RUN/conf/gen_cert.json" --ip="$1"' in self.boot, "boot.sh", "must run gen-cert with --ip")
        self.expect('gen_certs "$POD_IP"' in self.boot, "boot.sh", "multi-machine certificates must carry $POD_IP")
        return self.failures


def extract(k8s_dir, out):
    for layout in LAYOUTS:
        for _, d in Checker(k8s_dir).load(layout):
            if d.get("kind") == "ConfigMap":
                folder = os.path.join(out, layout, d["metadata"]["name"])
                os.makedirs(folder, exist_ok=True)
                for key, text in d.get("data", {}).items():
                    with open(os.path.join(folder, key), "w", encoding="utf-8") as f:
                        f.write(text)


def main(argv):
    if len(argv) == 2 and argv[0] == "check":
        failures = Checker(argv[1]).run()
        for f in failures:
            print(f"FAIL {f}")
        print(f"{len(failures)} broken promise(s)")
        return 1 if failures else 0
    if len(argv) == 3 and argv[0] == "extract":
        extract(argv[1], argv[2])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
