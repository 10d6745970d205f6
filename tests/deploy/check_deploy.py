#!/usr/bin/env python3
"""Checks that deploy/ is consistent with itself and with the code it deploys.

Every Kubernetes manifest parses and is part of the kustomization; the CSI driver name, the
plugin's socket paths (plugin, sidecars, kubelet registration, host directories) and the images
agree; every image is built by a Dockerfile here (tagged with the CMake project version) or is a
pinned upstream sidecar; volume mounts name declared volumes; the node plugin is privileged with
/dev, /run/unbd, /lib/modules and the kubelet directory (Bidirectional); unbd-server's flags and
ports match backend/server_main.cc, the Service and the frontends' --backends; unbd-csi's flags
exist in csi/; the systemd units run binaries that CMake installs where the units look, and pass
`systemd-analyze verify`; the module named at boot is the one DKMS builds.

Usage: check_deploy.py [REPO_ROOT]   (exit 0: consistent; 1: the problems are listed)
"""
import configparser
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

DRIVER = "csi.unbd.io"
KUBELET_DIR = "/var/lib/kubelet"
PLUGIN_DIR = f"{KUBELET_DIR}/plugins/{DRIVER}/"
REGISTRATION_DIR = f"{KUBELET_DIR}/plugins_registry/"
# Upstream sidecars must come from here, pinned to a release (never :latest).
SIDECAR_REPO = "registry.k8s.io/sig-storage/"
SIDECARS = {"csi-node-driver-registrar", "csi-provisioner", "livenessprobe"}


class Checker:
    def __init__(self, root):
        self.root = root
        self.errors = []

    def error(self, where, msg):
        self.errors.append(f"{where}: {msg}")

    def read(self, rel):
        with open(os.path.join(self.root, rel)) as f:
            return f.read()

    # ---------------------------------------------------------------- the code being deployed
    def project_version(self):
        m = re.search(r"project\(\s*unbd\s+VERSION\s+([0-9.]+)", self.read("CMakeLists.txt"))
        return m.group(1) if m else None

    def cmake_files(self):
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(("build", ".git"))]
            if "CMakeLists.txt" in filenames:
                out.append(os.path.join(dirpath, "CMakeLists.txt"))
        return out

    def cmake_targets(self):
        """Executable targets, and where `install(TARGETS ...)` puts each (relative DESTINATION)."""
        executables, installed = set(), {}
        for path in self.cmake_files():
            text = re.sub(r"#[^\n]*", "", open(path).read())
            executables |= set(re.findall(r"add_executable\(\s*([\w.-]+)", text))
            for body in re.findall(r"install\(\s*TARGETS\s+([^)]*)\)", text):
                words = body.split()
                dest = words[words.index("DESTINATION") + 1] if "DESTINATION" in words else "bin"
                for w in words:
                    if w in ("RUNTIME", "LIBRARY", "ARCHIVE", "DESTINATION") or w == dest:
                        break
                    installed[w] = dest
        return executables, installed

    def cmake_installed_files(self):
        """deploy/ files installed by `install(FILES ...)`: source path -> DESTINATION."""
        out = {}
        path = os.path.join(self.root, "deploy", "CMakeLists.txt")
        if not os.path.exists(path):
            return out
        text = re.sub(r"#[^\n]*", "", open(path).read())
        for body in re.findall(r"install\(\s*FILES\s+([^)]*)\)", text):
            words = body.split()
            dest = words[words.index("DESTINATION") + 1]
            for w in words[: words.index("DESTINATION")]:
                out[os.path.normpath(os.path.join("deploy", w))] = dest
        return out

    def server_flags(self):
        return set(re.findall(r'add_option\("(--[\w-]+)"', self.read("backend/server_main.cc")))

    def csi_sources(self):
        files = glob.glob(os.path.join(self.root, "csi", "**", "*.cc"), recursive=True)
        return "".join(open(f).read() for f in files)

    # ---------------------------------------------------------------- Kubernetes
    def load_manifests(self):
        docs = []
        kdir = os.path.join(self.root, "deploy", "kubernetes")
        for path in sorted(glob.glob(os.path.join(kdir, "**", "*.yaml"), recursive=True)):
            rel = os.path.relpath(path, self.root)
            try:
                loaded = [d for d in yaml.safe_load_all(open(path)) if d is not None]
            except yaml.YAMLError as e:
                self.error(rel, f"does not parse: {e}")
                continue
            for d in loaded:
                if not isinstance(d, dict) or not {"apiVersion", "kind"} <= d.keys():
                    self.error(rel, "a document without apiVersion/kind")
                    continue
                if d["kind"] != "Kustomization" and not d.get("metadata", {}).get("name"):
                    self.error(rel, f"a {d['kind']} without metadata.name")
                    continue
                docs.append((rel, d))
        if not docs:
            self.error("deploy/kubernetes", "no manifests")
        return docs

    def check_kustomization(self, docs):
        kust = [d for rel, d in docs if d["kind"] == "Kustomization"]
        if len(kust) != 1:
            self.error("deploy/kubernetes", "expected one kustomization.yaml")
            return
        listed = set(kust[0].get("resources", []))
        present = {os.path.basename(rel) for rel, d in docs
                   if os.path.dirname(rel) == "deploy/kubernetes" and d["kind"] != "Kustomization"}
        for missing in sorted(present - listed):
            self.error("deploy/kubernetes/kustomization.yaml", f"does not list {missing}")
        for extra in sorted(listed - present):
            self.error("deploy/kubernetes/kustomization.yaml", f"lists {extra}, which does not exist")

    @staticmethod
    def pod_spec(d):
        if d["kind"] == "Pod":
            return d.get("spec", {})
        if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
            return d.get("spec", {}).get("template", {}).get("spec", {})
        return None

    @staticmethod
    def containers(spec):
        return spec.get("initContainers", []) + spec.get("containers", [])

    @staticmethod
    def arg_value(args, flag):
        """--flag=value or --flag value."""
        for i, a in enumerate(args):
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
            if a == flag and i + 1 < len(args):
                return args[i + 1]
        return None

    @staticmethod
    def expand(value, container):
        """$(VAR) from the container's literal env."""
        env = {e["name"]: e.get("value") for e in container.get("env", []) if "value" in e}
        return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1)) or m.group(0), value or "")

    @staticmethod
    def resolve(container, path):
        """The (volume, path inside it) that a container path lands in, by the longest mount."""
        best = None
        for m in container.get("volumeMounts", []):
            mp = m["mountPath"].rstrip("/") or "/"
            if path == mp or path.startswith(mp + "/"):
                if best is None or len(mp) > len(best[1]):
                    best = (m["name"], mp)
        if best is None:
            return None
        return best[0], os.path.relpath(path, best[1])

    @staticmethod
    def host_path(spec, volume):
        for v in spec.get("volumes", []):
            if v["name"] == volume and "hostPath" in v:
                return v["hostPath"]["path"]
        return None

    def check_volumes(self, rel, d, spec):
        declared = {v["name"] for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in d.get("spec", {}).get("volumeClaimTemplates", [])}
        used = set()
        for c in self.containers(spec):
            for m in c.get("volumeMounts", []) + c.get("volumeDevices", []):
                used.add(m["name"])
                if m["name"] not in declared | claims:
                    self.error(rel, f"container {c['name']} mounts volume {m['name']}, which the pod does not declare")
        for unused in sorted(declared - used):
            self.error(rel, f"volume {unused} is declared but mounted by no container")

    def check_image(self, rel, c, version, dockerfiles):
        image = c.get("image", "")
        name, _, tag = image.rpartition(":")
        if not name or not tag or tag == "latest" or "/" in tag:
            self.error(rel, f"container {c['name']}: image {image!r} is not pinned to a tag")
            return
        if name.startswith("unbd/"):
            base = name[len("unbd/"):]
            if base not in dockerfiles:
                self.error(rel, f"container {c['name']}: image {image} has no deploy/docker/{base}.Dockerfile")
            if tag != version:
                self.error(rel, f"container {c['name']}: image {image} is not tagged with the project version {version}")
        elif name.startswith(SIDECAR_REPO):
            if name[len(SIDECAR_REPO):] not in SIDECARS or not re.fullmatch(r"v\d+\.\d+\.\d+", tag):
                self.error(rel, f"container {c['name']}: {image} is not a known sidecar at a release tag")
        elif not rel.startswith("deploy/kubernetes/examples/"):
            self.error(rel, f"container {c['name']}: image {image} is neither ours nor a pinned sidecar")

    def check_kustomize_build(self):
        """kustomize (in kubectl, offline) renders the whole installation, when kubectl is here."""
        if not shutil.which("kubectl"):
            return
        r = subprocess.run(["kubectl", "kustomize", os.path.join(self.root, "deploy", "kubernetes")],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            self.error("deploy/kubernetes", f"kubectl kustomize failed: {r.stderr.strip()}")

    def check_kubernetes(self, docs, version, dockerfiles, installed_in_image):
        self.check_kustomization(docs)
        self.check_kustomize_build()
        kinds = {}
        for rel, d in docs:
            kinds.setdefault(d["kind"], []).append((rel, d))

        drivers = [d["metadata"]["name"] for _, d in kinds.get("CSIDriver", [])]
        if drivers != [DRIVER]:
            self.error("deploy/kubernetes", f"expected one CSIDriver named {DRIVER}, found {drivers}")
        for rel, d in kinds.get("CSIDriver", []):
            if d["spec"].get("attachRequired") is not False:
                self.error(rel, "attachRequired must be false: unbd-csi has no ControllerPublishVolume")
        if not kinds.get("StorageClass"):
            self.error("deploy/kubernetes", "no StorageClass")
        for rel, d in kinds.get("StorageClass", []):
            if d.get("provisioner") != DRIVER:
                self.error(rel, f"StorageClass {d['metadata']['name']}: provisioner {d.get('provisioner')} is not {DRIVER}")
            params = d.get("parameters", {})
            r = params.get("replicas")
            if r is None or not str(r).isdigit() or not 1 <= int(r) <= 5:
                self.error(rel, f"StorageClass {d['metadata']['name']}: parameter replicas {r!r} is not 1 to 5")
            if params.get("csi.storage.k8s.io/fstype") not in ("ext4", "xfs"):
                self.error(rel, f"StorageClass {d['metadata']['name']}: csi.storage.k8s.io/fstype must be ext4 or xfs")
        classes = {d["metadata"]["name"] for _, d in kinds.get("StorageClass", [])}
        for rel, d in kinds.get("PersistentVolumeClaim", []):
            if d["spec"].get("storageClassName") not in classes:
                self.error(rel, f"claim {d['metadata']['name']} names StorageClass {d['spec'].get('storageClassName')}, which is not defined")
        claims = {d["metadata"]["name"] for _, d in kinds.get("PersistentVolumeClaim", [])}

        # The backend: flags, ports, Service, and the names the plugins use to reach it.
        server_flags = self.server_flags()
        backends_expected = None
        grpc_port = None
        statefulsets = [(rel, d) for rel, d in kinds.get("StatefulSet", [])
                        if any(c.get("image", "").startswith("unbd/unbd-server:")
                               for c in self.containers(self.pod_spec(d)))]
        if len(statefulsets) != 1:
            self.error("deploy/kubernetes", "expected one StatefulSet running unbd/unbd-server")
        for rel, d in statefulsets:
            spec = self.pod_spec(d)
            c = next(c for c in spec["containers"] if c["image"].startswith("unbd/unbd-server:"))
            args = c.get("args", [])
            for a in args:
                if a.startswith("--") and a.split("=")[0] not in server_flags:
                    self.error(rel, f"unbd-server has no flag {a} (backend/server_main.cc)")
            listen = self.arg_value(args, "--listen") or ""
            metrics = self.arg_value(args, "--metrics-listen") or ""
            data_dir = self.arg_value(args, "--data-dir")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for what, addr, pname in (("--listen", listen, "grpc"), ("--metrics-listen", metrics, "metrics")):
                port = addr.rpartition(":")[2]
                if not addr.startswith("0.0.0.0:") or not port.isdigit():
                    self.error(rel, f"unbd-server {what} {addr!r} must listen on 0.0.0.0:PORT in a pod")
                elif ports.get(pname) != int(port):
                    self.error(rel, f"unbd-server {what} port {port} is not its containerPort {pname} ({ports.get(pname)})")
            grpc_port = ports.get("grpc")
            if not data_dir or not self.resolve(c, data_dir):
                self.error(rel, f"unbd-server --data-dir {data_dir} is not on a mounted volume")
            for probe in ("readinessProbe", "livenessProbe"):
                p = c.get(probe, {})
                port = (p.get("tcpSocket") or p.get("httpGet") or {}).get("port")
                if port is None or (port not in ports and port not in ports.values()):
                    self.error(rel, f"unbd-server {probe} port {port} is not a container port")
            svc_name = d["spec"].get("serviceName")
            ns = d["metadata"].get("namespace", "default")
            svcs = [s for _, s in kinds.get("Service", []) if s["metadata"]["name"] == svc_name]
            if not svcs:
                self.error(rel, f"serviceName {svc_name} has no Service")
            for s in svcs:
                if s["spec"].get("clusterIP") != "None":
                    self.error(rel, f"Service {svc_name} must be headless (clusterIP: None)")
                if s["spec"].get("selector", {}).items() - d["spec"]["template"]["metadata"]["labels"].items():
                    self.error(rel, f"Service {svc_name} selector does not match the StatefulSet's pods")
                for p in s["spec"].get("ports", []):
                    target = p.get("targetPort", p["port"])
                    if p["port"] != ports.get(p.get("name")) or (target not in ports and target not in ports.values()):
                        self.error(rel, f"Service {svc_name} port {p.get('name')} {p['port']} does not match the container's")
            n = d["spec"].get("replicas", 1)
            backends_expected = [f"{d['metadata']['name']}-{i}.{svc_name}.{ns}.svc.cluster.local:{grpc_port}"
                                 for i in range(n)]

        # The CSI plugin pods: node DaemonSet and controller Deployment.
        csi_src = self.csi_sources()
        modes = {}
        for rel, d in docs:
            spec = self.pod_spec(d)
            if spec is None:
                continue
            self.check_volumes(rel, d, spec)
            for c in self.containers(spec):
                self.check_image(rel, c, version, dockerfiles)
            if d["kind"] == "Pod":
                for v in spec.get("volumes", []):
                    claim = v.get("persistentVolumeClaim", {}).get("claimName")
                    if claim and claim not in claims:
                        self.error(rel, f"pod {d['metadata']['name']} uses claim {claim}, which is not defined")
            plugin = [c for c in spec.get("containers", []) if c.get("image", "").startswith("unbd/unbd-csi:")]
            if not plugin:
                continue
            c = plugin[0]
            where = f"{rel} ({d['kind']} {d['metadata']['name']})"
            args = c.get("args", [])
            mode = self.arg_value(args, "--mode")
            modes.setdefault(mode, []).append(d["kind"])
            for a in args:
                flag = a.split("=")[0]
                if flag.startswith("--") and csi_src and f'"{flag}"' not in csi_src and f'"{flag[2:]}"' not in csi_src:
                    self.error(where, f"unbd-csi has no flag {flag} (csi/)")
            for flag in ("--mode", "--endpoint", "--node-id", "--backends", "--unbd"):
                if self.arg_value(args, flag) is None:
                    self.error(where, f"unbd-csi is not given {flag}")
            unbd_path = self.arg_value(args, "--unbd")
            if unbd_path and unbd_path not in installed_in_image.get("unbd-csi", set()):
                self.error(where, f"--unbd {unbd_path}: the unbd-csi image does not install unbd there")
            backends = (self.arg_value(args, "--backends") or "").split(",")
            if backends_expected is not None and backends != backends_expected:
                self.error(where, f"--backends {','.join(backends)} are not the StatefulSet's servers {','.join(backends_expected)}")
            endpoint = self.expand(self.arg_value(args, "--endpoint"), c)
            env = {e["name"]: e for e in c.get("env", [])}
            if env.get("NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
                self.error(where, "NODE_ID must come from spec.nodeName")
            if not endpoint.startswith("unix:///") or not endpoint.endswith("/csi.sock"):
                self.error(where, f"endpoint {endpoint!r} is not unix:///.../csi.sock")
                continue
            sock = endpoint[len("unix://"):]
            sock_at = self.resolve(c, sock)
            if sock_at is None:
                self.error(where, f"the plugin's socket {sock} is not on a shared volume")
                continue
            # Every sidecar must reach the same socket through the same volume.
            sidecars = [s for s in spec.get("containers", []) if s is not c]
            for s in sidecars:
                addr = self.arg_value(s.get("args", []), "--csi-address")
                if addr is None:
                    self.error(where, f"sidecar {s['name']} has no --csi-address")
                elif self.resolve(s, addr) != sock_at:
                    self.error(where, f"sidecar {s['name']} --csi-address {addr} is not the plugin's socket {sock}")
            # A liveness probe on the plugin, served by the livenessprobe sidecar's port.
            probe_port = c.get("livenessProbe", {}).get("httpGet", {}).get("port")
            cports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            probe_port = cports.get(probe_port, probe_port)
            lp = [s for s in sidecars if "/livenessprobe:" in s.get("image", "")]
            lp_port = None
            if lp:
                ep = self.arg_value(lp[0].get("args", []), "--http-endpoint") or ""
                lp_port = int(ep.rpartition(":")[2]) if ep.rpartition(":")[2].isdigit() else 9808
            if probe_port is None or probe_port != lp_port:
                self.error(where, f"the plugin's livenessProbe port {probe_port} is not the livenessprobe sidecar's ({lp_port})")

            if mode == "node":
                self.check_node_plugin(where, spec, c, sock_at, sidecars)
            elif mode == "controller":
                if not any(f"{SIDECAR_REPO}csi-provisioner:" in s.get("image", "") for s in sidecars):
                    self.error(where, "the controller has no csi-provisioner sidecar")
                if d["kind"] != "Deployment":
                    self.error(where, "the controller should be a Deployment")
            else:
                self.error(where, f"--mode {mode} is neither node nor controller")
        if modes.get("node") != ["DaemonSet"]:
            self.error("deploy/kubernetes", f"expected one DaemonSet with unbd-csi --mode node, found {modes.get('node')}")
        if modes.get("controller") != ["Deployment"]:
            self.error("deploy/kubernetes", f"expected one Deployment with unbd-csi --mode controller, found {modes.get('controller')}")

        # Service accounts and RBAC for the sidecars.
        accounts = {d["metadata"]["name"] for _, d in kinds.get("ServiceAccount", [])}
        for rel, d in docs:
            spec = self.pod_spec(d)
            if spec and spec.get("serviceAccountName") and spec["serviceAccountName"] not in accounts:
                self.error(rel, f"serviceAccountName {spec['serviceAccountName']} is not defined")
        roles = {(d["kind"], d["metadata"]["name"]) for _, d in kinds.get("ClusterRole", []) + kinds.get("Role", [])}
        bound = set()
        for rel, d in kinds.get("ClusterRoleBinding", []) + kinds.get("RoleBinding", []):
            if (d["roleRef"]["kind"], d["roleRef"]["name"]) not in roles:
                self.error(rel, f"{d['metadata']['name']} binds {d['roleRef']['name']}, which is not defined")
            for s in d.get("subjects", []):
                if s["kind"] == "ServiceAccount" and s["name"] not in accounts:
                    self.error(rel, f"{d['metadata']['name']} binds service account {s['name']}, which is not defined")
                bound.add(s["name"])
        for rel, d in kinds.get("Deployment", []):
            spec = self.pod_spec(d)
            if any("csi-provisioner:" in c.get("image", "") for c in spec.get("containers", [])):
                if spec.get("serviceAccountName") not in bound:
                    self.error(rel, "csi-provisioner runs under a service account with no role")

    def check_node_plugin(self, where, spec, c, sock_at, sidecars):
        if not c.get("securityContext", {}).get("privileged"):
            self.error(where, "unbd-csi must be privileged (ublk devices, mounts)")
        sock_host = self.host_path(spec, sock_at[0])
        if sock_host is None or sock_host.rstrip("/") + "/" != PLUGIN_DIR:
            self.error(where, f"the plugin socket's volume is hostPath {sock_host}, not {PLUGIN_DIR}")
        host_socket = os.path.normpath(os.path.join(sock_host or "?", sock_at[1]))
        regs = [s for s in sidecars if "/csi-node-driver-registrar:" in s.get("image", "")]
        if len(regs) != 1:
            self.error(where, "expected one node-driver-registrar sidecar")
        for s in regs:
            path = self.arg_value(s.get("args", []), "--kubelet-registration-path")
            if path != host_socket:
                self.error(where, f"registrar --kubelet-registration-path {path} is not the plugin's socket on the host ({host_socket})")
            reg = [m for m in s.get("volumeMounts", []) if m["mountPath"] == "/registration"]
            if not reg or (self.host_path(spec, reg[0]["name"]) or "").rstrip("/") + "/" != REGISTRATION_DIR:
                self.error(where, f"the registrar must mount {REGISTRATION_DIR} at /registration")
        mounts = {m["mountPath"].rstrip("/"): m for m in c.get("volumeMounts", [])}
        for path in (KUBELET_DIR, "/dev", "/run/unbd", "/lib/modules"):
            m = mounts.get(path)
            if m is None:
                self.error(where, f"unbd-csi does not mount {path}")
            elif (self.host_path(spec, m["name"]) or "").rstrip("/") != path:
                self.error(where, f"unbd-csi's {path} is not the host's {path}")
        kubelet = mounts.get(KUBELET_DIR)
        if kubelet is not None and kubelet.get("mountPropagation") != "Bidirectional":
            self.error(where, f"unbd-csi's {KUBELET_DIR} mount must have mountPropagation Bidirectional")
        for other in spec.get("containers", []):
            if other is not c:
                for m in other.get("volumeMounts", []):
                    if m.get("mountPropagation") == "Bidirectional" and not other.get("securityContext", {}).get("privileged"):
                        self.error(where, f"{other['name']}: Bidirectional propagation needs a privileged container")
        state_dir = self.arg_value(c.get("args", []), "--state-dir")
        if state_dir is None or self.host_path(spec, (self.resolve(c, state_dir) or ("?",))[0]) is None:
            self.error(where, f"--state-dir {state_dir} must be on a hostPath volume (it outlives the pod)")

    # ---------------------------------------------------------------- Dockerfiles
    def check_dockerfiles(self, executables):
        """Image name -> the absolute paths it installs binaries at."""
        images = {}
        for path in sorted(glob.glob(os.path.join(self.root, "deploy", "docker", "*.Dockerfile"))):
            rel = os.path.relpath(path, self.root)
            name = os.path.basename(path)[: -len(".Dockerfile")]
            text = open(path).read()
            logical = re.sub(r"\\\n", " ", text)
            froms = re.findall(r"^FROM\s+(\S+)", logical, re.M)
            if len(froms) < 2:
                self.error(rel, "not a multi-stage build")
            for f in froms:
                if f not in ("debian:12", "debian:bookworm", "debian:12-slim", "debian:bookworm-slim"):
                    self.error(rel, f"FROM {f}: images are Debian 12 based")
            for targets in re.findall(r"--target\s+([\w .-]+?)(?:\s*&&|\s*$)", logical, re.M):
                for t in targets.split():
                    if t not in executables:
                        self.error(rel, f"builds target {t}, which no CMakeLists.txt defines")
            installed = set()
            for dest in re.findall(r"install\s+-D\s+-m\s*\d+\s+\S+\s+/out(/\S+)", logical):
                installed.add(dest)
            copied = re.findall(r"^COPY\s+--from=\S+\s+(.+)$", logical, re.M)
            final = set()
            for line in copied:
                parts = line.split()
                srcs, dest = parts[:-1], parts[-1]
                for s in srcs:
                    if s.startswith("/out/"):
                        target = dest + os.path.basename(s) if dest.endswith("/") else dest
                        if s[len("/out"):] in installed:
                            final.add(target)
            entry = re.search(r'^ENTRYPOINT\s+\["([^"]+)"', logical, re.M)
            if not entry:
                self.error(rel, "no ENTRYPOINT")
            elif entry.group(1) not in final:
                self.error(rel, f"ENTRYPOINT {entry.group(1)} is not a binary the image installs ({sorted(final)})")
            ignore = path + ".dockerignore"
            if not os.path.exists(ignore) or "build*" not in open(ignore).read():
                self.error(rel, "needs a .dockerignore keeping build directories out of the context")
            images[name] = final
        if not images:
            self.error("deploy/docker", "no Dockerfiles")
        return images

    # ---------------------------------------------------------------- systemd
    def check_systemd(self, installed_targets, k8s_grpc_port):
        sdir = os.path.join(self.root, "deploy", "systemd")
        units = sorted(glob.glob(os.path.join(sdir, "*.service")))
        names = {os.path.basename(u) for u in units}
        for needed in ("unbd-server.service", "unbd-recover.service"):
            if needed not in names:
                self.error("deploy/systemd", f"no {needed}")
        installed_files = self.cmake_installed_files()
        prefix = "/usr/local"  # CMake's default CMAKE_INSTALL_PREFIX
        binaries = []
        for u in units:
            rel = os.path.relpath(u, self.root)
            if installed_files.get(rel) != "lib/systemd/system":
                self.error(rel, "deploy/CMakeLists.txt does not install it to lib/systemd/system")
            p = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
            p.optionxform = str
            try:
                p.read_string(open(u).read().replace("\\\n", " "))
            except configparser.Error as e:
                self.error(rel, f"does not parse: {e}")
                continue
            svc = p["Service"] if p.has_section("Service") else {}
            for key in ("ExecStartPre", "ExecStart"):
                cmd = svc.get(key)
                if not cmd:
                    continue
                argv = cmd.lstrip("-@+!:").split()
                binaries.append(argv[0])
                base = os.path.basename(argv[0])
                if argv[0].startswith(prefix + "/"):
                    dest = installed_targets.get(base)
                    if dest is None:
                        self.error(rel, f"{key} runs {argv[0]}, but no install(TARGETS {base} ...) rule installs it")
                    elif f"{prefix}/{dest}/{base}" != argv[0]:
                        self.error(rel, f"{key} runs {argv[0]}, but CMake installs {base} to {prefix}/{dest}/")
                elif not os.path.exists(argv[0]):
                    self.error(rel, f"{key} runs {argv[0]}, which Debian 12 does not have there")
                if base == "unbd-server":
                    flags = self.server_flags()
                    for a in argv[1:]:
                        if a.startswith("--") and a not in flags:
                            self.error(rel, f"unbd-server has no flag {a}")
                    env = dict(e.split("=", 1) for e in re.findall(r"^Environment=(\S+)", open(u).read(), re.M))
                    listen = env.get("UNBD_LISTEN", "")
                    if "${UNBD_LISTEN}" not in cmd or not listen.endswith(f":{k8s_grpc_port}"):
                        self.error(rel, f"--listen {listen} is not on the port the cluster uses ({k8s_grpc_port})")
                if base == "unbd" and argv[1:3] != ["recover", "--all"]:
                    self.error(rel, "must run `unbd recover --all`")
                if base == "modprobe":
                    self.check_module_name(rel, argv[-1])
        for conf in glob.glob(os.path.join(sdir, "*.conf")):
            rel = os.path.relpath(conf, self.root)
            if installed_files.get(rel) != "lib/modules-load.d":
                self.error(rel, "deploy/CMakeLists.txt does not install it to lib/modules-load.d")
            for line in open(conf):
                line = line.strip()
                if line and not line.startswith("#"):
                    self.check_module_name(rel, line)
        if units and shutil.which("systemd-analyze"):
            self.verify_units(units, binaries)

    def check_module_name(self, where, module):
        kbuild = self.read("kmod/Kbuild")
        dkms = self.read("deploy/dkms/dkms.conf")
        built = re.findall(r"obj-m\s*\+?=\s*(\w+)\.o", kbuild)
        dkms_name = re.findall(r'BUILT_MODULE_NAME\[0\]="(\w+)"', dkms)
        if [module] != built or [module] != dkms_name:
            self.error(where, f"loads module {module}; kmod/Kbuild builds {built}, DKMS installs {dkms_name}")

    def verify_units(self, units, binaries):
        """systemd-analyze verify in a scratch root holding the system's units, the units under
        test, and stand-ins for the binaries they run (their install paths are checked above)."""
        with tempfile.TemporaryDirectory() as root:
            os.makedirs(os.path.join(root, "lib", "systemd"))
            shutil.copytree("/lib/systemd/system", os.path.join(root, "lib", "systemd", "system"), symlinks=True)
            etc = os.path.join(root, "etc", "systemd", "system")
            os.makedirs(etc)
            for u in units:
                shutil.copy(u, etc)
            for b in binaries:
                dest = root + b
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                if not os.path.exists(dest):
                    shutil.copy("/bin/true", dest)
            r = subprocess.run(["systemd-analyze", "verify", f"--root={root}"] +
                               [os.path.basename(u) for u in units],
                               capture_output=True, text=True, timeout=60)
            out = (r.stdout + r.stderr).strip()
            # Warnings (an unknown value, a bad directive) leave the status 0: any output fails.
            if r.returncode != 0 or out:
                self.error("deploy/systemd", f"systemd-analyze verify (status {r.returncode}): {out.replace(root, '')}")

    # ---------------------------------------------------------------- DKMS
    def check_dkms(self, version):
        conf = self.read("deploy/dkms/dkms.conf")
        v = re.findall(r'PACKAGE_VERSION="([^"]+)"', conf)
        if v != [version]:
            self.error("deploy/dkms/dkms.conf", f"PACKAGE_VERSION {v} is not the project version {version}")
        if "KDIR=" not in conf or "KDIR ?=" not in self.read("kmod/Makefile"):
            self.error("deploy/dkms/dkms.conf", "MAKE must pass KDIR, which kmod/Makefile takes")

    def run(self):
        version = self.project_version()
        if not version:
            self.error("CMakeLists.txt", "no project VERSION")
        executables, installed = self.cmake_targets()
        images = self.check_dockerfiles(executables)
        docs = self.load_manifests()
        grpc_ports = [int(a.rpartition(":")[2]) for _, d in docs for c in self.containers(self.pod_spec(d) or {})
                      if c.get("image", "").startswith("unbd/unbd-server:")
                      for a in [self.arg_value(c.get("args", []), "--listen") or ":0"]]
        self.check_kubernetes(docs, version, set(images), images)
        self.check_systemd(installed, grpc_ports[0] if grpc_ports else None)
        self.check_dkms(version)
        return self.errors


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
    errors = Checker(root).run()
    for e in errors:
        print(f"FAIL {e}")
    if errors:
        print(f"{len(errors)} problem(s) in deploy/")
        return 1
    print("deploy/: manifests, Dockerfiles, systemd units and DKMS are consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
