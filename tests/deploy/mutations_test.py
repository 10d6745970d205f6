#!/usr/bin/env python3
"""check_deploy.py must catch inconsistencies: each case breaks one thing in a copy of the
repository (sources only) and expects the checker to report it; the unbroken copy must pass.

Usage: mutations_test.py [REPO_ROOT]
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_deploy import Checker  # noqa: E402

K = "deploy/kubernetes/"
S = "deploy/systemd/"
# (what, file, text, replacement, a substring the report must contain)
CASES = [
    ("driver name in the StorageClass", K + "storageclass.yaml",
     "provisioner: csi.unbd.io", "provisioner: csi.unbd.example", "provisioner csi.unbd.example"),
    ("driver name in the CSIDriver", K + "csi-driver.yaml",
     "name: csi.unbd.io", "name: unbd.csi", "one CSIDriver named csi.unbd.io"),
    ("registration path", K + "node.yaml",
     "--kubelet-registration-path=/var/lib/kubelet/plugins/csi.unbd.io/csi.sock",
     "--kubelet-registration-path=/var/lib/kubelet/plugins/unbd/csi.sock", "--kubelet-registration-path"),
    ("plugin directory on the host", K + "node.yaml",
     "path: /var/lib/kubelet/plugins/csi.unbd.io/", "path: /var/lib/kubelet/plugins/unbd/", "hostPath"),
    ("sidecar socket", K + "controller.yaml",
     "            - --csi-address=/csi/csi.sock\n            - --leader-election",
     "            - --csi-address=/csi/plugin.sock\n            - --leader-election", "not the plugin's socket"),
    ("plugin endpoint", K + "node.yaml", "value: unix:///csi/csi.sock", "value: unix:///tmp/csi.sock",
     "not on a shared volume"),
    ("image without a Dockerfile", K + "backend.yaml", "image: unbd/unbd-server:0.1.0",
     "image: unbd/unbd-backend:0.1.0", "no deploy/docker/unbd-backend.Dockerfile"),
    ("image tag not the project version", K + "node.yaml", "image: unbd/unbd-csi:0.1.0",
     "image: unbd/unbd-csi:0.2.0", "not tagged with the project version"),
    ("unpinned sidecar", K + "node.yaml", "livenessprobe:v2.12.0", "livenessprobe:latest", "not pinned"),
    ("mount of an undeclared volume", K + "node.yaml", "            - name: run-unbd\n              mountPath: /run/unbd",
     "            - name: run-ubd\n              mountPath: /run/unbd", "does not declare"),
    ("plugin not privileged", K + "node.yaml",
     "          securityContext:\n            privileged: true\n          ports:",
     "          securityContext:\n            privileged: false\n          ports:", "must be privileged"),
    ("no Bidirectional propagation", K + "node.yaml", "mountPropagation: Bidirectional",
     "mountPropagation: HostToContainer", "Bidirectional"),
    ("no /dev", K + "node.yaml", "              mountPath: /dev\n", "              mountPath: /host-dev\n",
     "does not mount /dev"),
    ("server port vs containerPort", K + "backend.yaml", "            - 0.0.0.0:7420", "            - 0.0.0.0:7421",
     "is not its containerPort"),
    ("server flag that does not exist", K + "backend.yaml", "            - --metrics-listen",
     "            - --metrics-address", "has no flag --metrics-address"),
    ("backends not the StatefulSet's", K + "controller.yaml",
     "unbd-server-2.unbd-server.unbd-system.svc.cluster.local:7420\n",
     "unbd-server-3.unbd-server.unbd-system.svc.cluster.local:7420\n", "not the StatefulSet's servers"),
    ("unknown unbd-csi flag", K + "node.yaml", "            - --state-dir", "            - --state-directory",
     "has no flag --state-directory"),
    ("manifest not in the kustomization", K + "kustomization.yaml", "  - storageclass.yaml\n", "",
     "does not list storageclass.yaml"),
    ("YAML that does not parse", K + "rbac.yaml", "kind: ClusterRole\n", "kind: [ClusterRole\n", "does not parse"),
    ("unit runs a binary CMake does not install", S + "unbd-recover.service",
     "ExecStart=/usr/local/sbin/unbd recover", "ExecStart=/usr/local/bin/unbd recover", "CMake installs unbd to"),
    ("unit runs a target without an install rule", "cli/CMakeLists.txt",
     "install(TARGETS unbd RUNTIME DESTINATION sbin)", "", "no install(TARGETS unbd"),
    ("systemd-analyze rejects a value", S + "unbd-server.service", "ProtectHome=yes", "ProtectHome=sometimes",
     "systemd-analyze verify"),
    ("module name", S + "unbd-ublk.conf", "\nunbd_ublk", "\nublk_drv", "loads module ublk_drv"),
    ("server port differs between systemd and the cluster", S + "unbd-server.service",
     "UNBD_LISTEN=0.0.0.0:7420", "UNBD_LISTEN=0.0.0.0:7000", "not on the port the cluster uses"),
    ("Dockerfile not Debian 12", "deploy/docker/unbd-server.Dockerfile", "FROM debian:12 AS build",
     "FROM ubuntu:24.04 AS build", "Debian 12"),
    ("Dockerfile builds an unknown target", "deploy/docker/unbd-csi.Dockerfile", "--target unbd unbd-csi",
     "--target unbd unbd-csi-plugin", "unbd-csi-plugin"),
]


def copy_repo(root, dest):
    shutil.copytree(root, dest, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n.startswith(("build", ".git"))])


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "repo")
        copy_repo(root, base)
        clean = Checker(base).run()
        if clean:
            failures.append("the unmodified tree does not pass:\n  " + "\n  ".join(clean))
        for what, rel, old, new, expect in CASES:
            path = os.path.join(base, rel)
            original = open(path).read()
            if old not in original:
                failures.append(f"{what}: {rel} no longer contains {old!r} (update the case)")
                continue
            with open(path, "w") as f:
                f.write(original.replace(old, new, 1))
            try:
                errors = Checker(base).run()
            finally:
                with open(path, "w") as f:
                    f.write(original)
            if not any(expect in e for e in errors):
                failures.append(f"{what}: not caught (expected {expect!r}; got {errors})")
            else:
                print(f"caught: {what}: {next(e for e in errors if expect in e)}")
    for f in failures:
        print(f"FAIL {f}")
    print(f"{len(CASES)} broken copies, {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
