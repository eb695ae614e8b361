"""A one-node Kubernetes cluster that runs real Pods, fenced into namespaces of its own.

The API-server test bed (``kube_apiserver``) stores Pods but never runs them. This one
adds kube-scheduler, containerd, the kubelet and kube-proxy, so that the image, the
chart's Deployments, the webhook's TLS, the injected sidecar and its probes run as
they would for a user. The binaries come from the Go module proxy (``testbed/build.sh
node``), containerd, runc, the CNI plugins, iptables and socat from Debian, the
images from ``cluster_images``.

Fenced in: the kubelet and kube-proxy change the machine they run on (sysctls,
iptables chains with DROP rules, mounts under /var/lib/kubelet). So the whole
cluster, control plane included, runs inside one mount and network namespace made
here (``unshare --mount --net``): the three /proc/sys files the kubelet writes are
covered by copies of their own, its state directories are tmpfs, and the network
namespace holds only loopback (with the node's address) and the Pods' bridge: every
address the cluster uses lives in it, and nothing in it routes anywhere else. The
API server is relayed to a 127.0.0.1 port of the host over a unix socket (socat),
for kubectl and helm; whatever must reach a Pod or Service IP runs inside the
namespace (``KubeCluster.in_namespace``).

Containers live in cgroups under a root of the node's own (``/llmquota-node-*`` in
every hierarchy; a cgroup v1 host, which kubelet 1.37 accepts with
``failCgroupV1: false``), outside the test run's own, so stopping the processes this
module started is not enough: on the way out every process in the namespace or in
those cgroups is killed by its pid, and the cgroups are removed. A run that was killed
before it could clean up is swept at the next start (or by ``python -m
tests.support.kube_node cleanup``), from the state file it left in the cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .cluster_images import ClusterImages
from .kube_apiserver import (
    REPO_ROOT,
    Binaries,
    KubeAPIServer,
    TestbedUnavailableError,
    _free_port,
    _openssl,
    _Process,
    _started,
    cache_dir,
    testbed_version,
)

__all__ = [
    "NODE_IP",
    "NODE_NAME",
    "POD_CIDR",
    "KubeCluster",
    "NodeBinaries",
    "build_node",
    "find_node_binaries",
    "missing_host_tools",
    "run_kube_cluster",
    "sweep_leftovers",
]

NODE_NAME = "llmquota-node"
NODE_IP = "10.77.0.1"
POD_CIDR = "10.88.0.0/16"
_POD_GATEWAY = "10.88.0.1"
_SERVICE_CIDR = "10.96.0.0/16"
_API_PORT = 6443
_ADMIN_USER = "llmquota-admin"
_CGROUP_PREFIX = "llmquota-node-"
_CGROUP_MOUNT = Path("/sys/fs/cgroup")
_CNI_BIN = Path("/usr/lib/cni")
_HOST_TOOLS = (
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
    "socat",
    "iptables",
    "nsenter",
    "unshare",
    "ip",
    "mmdebstrap",
    "gcc",
)
_TMPFS_DIRS = (
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/run/containerd",
    "/run/netns",
    "/var/lib/cni",
)
# The kubelet sets these machine-wide sysctls; in the namespace it writes into copies.
_FENCED_SYSCTLS = (
    "/proc/sys/vm/overcommit_memory",
    "/proc/sys/kernel/panic",
    "/proc/sys/kernel/panic_on_oops",
)
_FENCE_SCRIPT = textwrap.dedent(
    f"""\
    set -eu
    for dir in {" ".join(_TMPFS_DIRS)}; do
      mkdir -p "$dir"
      mount -t tmpfs -o mode=0755 llmquota-node "$dir"
    done
    # The kubelet insists on writing these machine-wide sysctls (a read-only file makes
    # it fail to start): it writes into copies instead, bound over them.
    decoys="$(dirname "$1")/sysctl-decoys"
    mkdir -p "$decoys"
    for file in {" ".join(_FENCED_SYSCTLS)}; do
      decoy="$decoys/$(echo "${{file#/proc/sys/}}" | tr / .)"
      cat "$file" > "$decoy"
      mount --bind "$decoy" "$file"
    done
    ip link set lo up
    # The node's address, on loopback: no device leads out of this namespace.
    ip addr add {NODE_IP}/32 dev lo
    sysctl -qw net.ipv4.ip_forward=1
    touch "$1"
    exec sleep infinity
    """
)
_STOP_TIMEOUT_S = 20.0


class _UnavailableError(TestbedUnavailableError):
    """The cluster cannot run on this machine (not root, a tool missing)."""


@dataclass(frozen=True)
class NodeBinaries:
    """The node's own executables, built by ``testbed/build.sh node``."""

    kubelet: Path
    kube_scheduler: Path
    kube_proxy: Path


def _node_bin_dir() -> Path:
    return cache_dir() / "testbed" / testbed_version() / "node"


def find_node_binaries() -> NodeBinaries | None:
    """The cached kubelet, kube-scheduler and kube-proxy, or None if any is missing."""
    bindir = _node_bin_dir()
    found = NodeBinaries(bindir / "kubelet", bindir / "kube-scheduler", bindir / "kube-proxy")
    if all(os.access(path, os.X_OK) for path in vars(found).values()):
        return found
    return None


def build_node() -> None:
    """``testbed/build.sh node``; a no-op when the binaries are cached."""
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "testbed" / "build.sh"), "node"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        msg = f"testbed/build.sh node failed (exit {result.returncode}):\n{output}"
        raise TestbedUnavailableError(msg)


def missing_host_tools() -> list[str]:
    """What this machine lacks to run the node (root, Debian packages); [] when nothing."""
    missing = [tool for tool in _HOST_TOOLS if shutil.which(tool) is None]
    if not (_CNI_BIN / "bridge").exists():
        missing.append(f"{_CNI_BIN}/bridge (containernetworking-plugins)")
    if os.geteuid() != 0:
        missing.append("root (namespaces, mounts and cgroups)")
    return missing


@dataclass(frozen=True)
class KubeCluster:
    """The running cluster: its API server as seen from the host, and its namespace."""

    api: KubeAPIServer
    images: ClusterImages
    namespace_pid: int
    """The process holding the mount and network namespace."""
    workdir: Path

    def in_namespace(
        self, *argv: str, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the cluster's network namespace (to reach Pod/Service IPs)."""
        return subprocess.run(
            ["nsenter", f"--target={self.namespace_pid}", "--net", "--", *argv],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def http_get(self, url: str, timeout: float = 10.0) -> tuple[int, str]:
        """GET ``url`` from inside the namespace: (status, body); status 0 when unreachable."""
        script = textwrap.dedent(
            """\
            import sys, urllib.error, urllib.request
            try:
                with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:
                    status, body = r.status, r.read()
            except urllib.error.HTTPError as error:
                status, body = error.code, error.read()
            except OSError as error:
                status, body = 0, repr(error).encode()
            sys.stdout.write(f"{status}\\n" + body.decode(errors="replace"))
            """
        )
        result = self.in_namespace(
            sys.executable, "-c", script, url, str(timeout), timeout=timeout + 30
        )
        status, _, body = result.stdout.partition("\n")
        return (int(status) if status.isdigit() else 0), body or result.stderr


# Cleaning up -----------------------------------------------------------------------------


def _state_dir() -> Path:
    return cache_dir() / "cluster" / "running"


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _netns_pids(holder: int) -> list[int]:
    """Every process in the holder's network namespace, the holder excluded."""
    try:
        namespace = os.stat(f"/proc/{holder}/ns/net")
    except OSError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == holder:
            continue
        with contextlib.suppress(OSError):
            found = os.stat(entry / "ns" / "net")
            if (found.st_dev, found.st_ino) == (namespace.st_dev, namespace.st_ino):
                pids.append(int(entry.name))
    return pids


def _cgroup_dirs(root_name: str) -> list[Path]:
    """The node's cgroup directories in every hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in _CGROUP_MOUNT.iterdir():
        top = hierarchy / root_name
        if top.is_dir():
            found += [Path(d) for d, _, _ in os.walk(top)]
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def _cgroup_pids(root_name: str) -> set[int]:
    pids: set[int] = set()
    for directory in _cgroup_dirs(root_name):
        with contextlib.suppress(OSError):
            pids |= {int(line) for line in (directory / "cgroup.procs").read_text().split()}
    return pids


def _kill(pids: set[int] | list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _sweep(holder: int | None, root_name: str) -> None:
    """Kill what runs in the namespace and the cgroups (by pid), then remove the cgroups."""
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while True:
        left = set(_netns_pids(holder) if holder else []) | _cgroup_pids(root_name)
        if not left:
            break
        if time.monotonic() > deadline:
            msg = f"processes of the test node did not exit: {sorted(left)}"
            raise RuntimeError(msg)
        _kill(left)
        time.sleep(0.1)
    if holder:
        _kill([holder])
    while True:
        remaining = []
        for directory in _cgroup_dirs(root_name):
            try:
                directory.rmdir()
            except OSError:
                remaining.append(directory)
        if not remaining:
            return
        if time.monotonic() > deadline:
            msg = f"cgroups of the test node could not be removed: {remaining[:5]}"
            raise RuntimeError(msg)
        time.sleep(0.1)


def sweep_leftovers() -> None:
    """Clean up after runs that were killed before their own cleanup ran."""
    for state_file in sorted(_state_dir().glob("*.json")):
        state = json.loads(state_file.read_text())
        holder = state["holder"]
        alive = _start_time(holder) == state["start_time"]
        _sweep(holder if alive else None, state["cgroup"])
        state_file.unlink()
    for hierarchy in _CGROUP_MOUNT.iterdir():
        for stale in hierarchy.glob(f"{_CGROUP_PREFIX}*"):
            _sweep(None, stale.name)


# Starting --------------------------------------------------------------------------------


def _make_cgroup_root(root_name: str) -> None:
    """The kubelet's ``cgroupRoot`` in every hierarchy (cpuset needs its cpus and mems)."""
    for hierarchy in _CGROUP_MOUNT.iterdir():
        if not (hierarchy / "cgroup.procs").exists():
            continue
        top = hierarchy / root_name
        top.mkdir(exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():
            for field in ("cpuset.cpus", "cpuset.mems"):
                (top / field).write_text((hierarchy / field).read_text())


def _wait_for(
    check: Callable[[], bool], what: str, deadline: float, process: _Process | None = None
) -> None:
    """Poll ``check()`` until true; fail at ``deadline`` or when ``process`` died."""
    while not check():
        if process is not None and process.popen.poll() is not None:
            raise process.failure(f"exited with code {process.popen.returncode}")
        if time.monotonic() > deadline:
            if process is not None:
                raise process.failure(f"{what}: not in time")
            msg = f"{what}: not in time"
            raise RuntimeError(msg)
        time.sleep(0.25)


def _kubeconfig(path: Path, server: str, ca_file: Path, token: str) -> None:
    # `tls-server-name`: the host reaches the server through a relay on another address.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "llmquota-cluster",
                "cluster": {
                    "server": server,
                    "certificate-authority": str(ca_file),
                    "tls-server-name": "kubernetes.default.svc",
                },
            }
        ],
        "users": [{"name": _ADMIN_USER, "user": {"token": token}}],
        "contexts": [
            {
                "name": "llmquota-cluster",
                "context": {
                    "cluster": "llmquota-cluster",
                    "user": _ADMIN_USER,
                    "namespace": "default",
                },
            }
        ],
        "current-context": "llmquota-cluster",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


def _containerd_config(workdir: Path, images: ClusterImages) -> Path:
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    config = textwrap.dedent(
        f"""\
        version = 2
        root = "{workdir}/containerd/root"
        state = "{workdir}/containerd/state"
        disabled_plugins = ["io.containerd.snapshotter.v1.btrfs",
          "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
          "io.containerd.snapshotter.v1.aufs",
          "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
        [grpc]
          address = "{workdir}/containerd.sock"
        [plugins."io.containerd.internal.v1.opt"]
          path = "{workdir}/containerd/opt"
        {cri}]
          sandbox_image = "{images.pause}"
          # The machine withholds CAP_SYS_RESOURCE: without this runc fails every sandbox
          # ("can't get final child's PID from pipe").
          restrict_oom_score_adj = true
          disable_apparmor = true
        {cri}.containerd]
          snapshotter = "overlayfs"
          default_runtime_name = "runc"
        {cri}.containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
        {cri}.containerd.runtimes.runc.options]
          SystemdCgroup = false
        {cri}.cni]
          bin_dir = "{_CNI_BIN}"
          conf_dir = "{workdir}/cni"
        """
    )
    (workdir / "cni").mkdir()
    (workdir / "cni" / "10-llmquota.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "llmquota",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": "cni0",
                        "isGateway": True,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_CIDR, "gateway": _POD_GATEWAY}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                        },
                    }
                ],
            }
        )
    )
    path = workdir / "containerd.toml"
    path.write_text(config)
    return path


def _kubelet_config(workdir: Path, cgroup_root: str) -> Path:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # A cgroup v1 host: kubelet 1.37 refuses it unless told not to.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cgroup_root}",
        "containerRuntimeEndpoint": f"unix://{workdir}/containerd.sock",
        "failSwapOn": False,
        "address": NODE_IP,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        # No registry: images are imported, and must never be collected.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        # The development machine's disk is often fuller than the default thresholds.
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "0%",
            "nodefs.inodesFree": "0%",
            "imagefs.available": "0%",
        },
        "resolvConf": "",
        "oomScoreAdj": 0,
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "maxPods": 40,
    }
    path = workdir / "kubelet.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _kube_proxy_config(workdir: Path, kubeconfig: Path) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # A Pod reaching a Service on its own bridge: masquerade, so the answer returns.
        "iptables": {"masqueradeAll": True},
        # Conntrack limits are machine-wide settings: leave them alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "oomScoreAdj": 0,
    }
    path = workdir / "kube-proxy.json"
    path.write_text(json.dumps(config, indent=2))
    return path


_KUBERNETES_ENDPOINTS = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {
        "name": "kubernetes",
        "namespace": "default",
        "labels": {
            "kubernetes.io/service-name": "kubernetes",
            "endpointslice.kubernetes.io/managed-by": "llmquota-testbed",
        },
    },
    "addressType": "IPv4",
    "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
    "ports": [{"name": "https", "port": _API_PORT, "protocol": "TCP"}],
}
"""`--endpoint-reconciler-type=none` leaves the kubernetes Service without endpoints."""


@contextlib.contextmanager
def run_kube_cluster(
    binaries: Binaries,
    node: NodeBinaries,
    images: ClusterImages,
    workdir: Path,
    startup_timeout: float = 240.0,
) -> Iterator[KubeCluster]:
    """Start the fenced cluster in ``workdir`` and yield it; everything is gone afterwards."""
    missing = missing_host_tools()
    if missing:
        msg = f"the cluster test bed needs: {', '.join(missing)}"
        raise _UnavailableError(msg)
    if binaries.kube_controller_manager is None:
        msg = "the cluster test bed needs kube-controller-manager (testbed/build.sh servers)"
        raise _UnavailableError(msg)
    sweep_leftovers()
    deadline = time.monotonic() + startup_timeout
    cgroup_root = f"{_CGROUP_PREFIX}{os.urandom(4).hex()}"
    with contextlib.ExitStack() as stack:
        ready_file = workdir / "namespace.ready"
        holder = stack.enter_context(
            _started(
                "namespace",
                [
                    "unshare",
                    "--mount",
                    "--net",
                    "--propagation",
                    "private",
                    "--",
                    "bash",
                    "-c",
                    _FENCE_SCRIPT,
                    "fence",
                    str(ready_file),
                ],
                workdir,
            )
        )
        holder_pid = holder.popen.pid
        state_file = _state_dir() / f"{holder_pid}.json"
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(
            json.dumps(
                {"holder": holder_pid, "start_time": _start_time(holder_pid), "cgroup": cgroup_root}
            )
        )

        def sweep() -> None:
            _sweep(holder_pid, cgroup_root)
            state_file.unlink(missing_ok=True)

        # Registered before anything runs in the namespace, so it runs after all stopped.
        stack.callback(sweep)
        _wait_for(ready_file.exists, "the node's namespaces", deadline, holder)
        _make_cgroup_root(cgroup_root)

        def inside(name: str, argv: Sequence[str]) -> _Process:
            enter = ["nsenter", f"--target={holder_pid}", "--mount", "--net", "--"]
            return stack.enter_context(_started(name, [*enter, *argv], workdir))

        # The control plane, inside the namespace: the API server must reach the
        # webhook's Service, and the Pods the API server.
        sa_key, sa_pub = workdir / "sa.key", workdir / "sa.pub"
        _openssl(
            "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(sa_key)
        )
        _openssl("pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))
        token = os.urandom(24).hex()
        tokens = workdir / "tokens.csv"
        tokens.write_text(f'{token},{_ADMIN_USER},{_ADMIN_USER},"system:masters"\n')
        tokens.chmod(0o600)
        etcd = inside(
            "etcd",
            [
                str(binaries.etcd),
                "--name=node",
                f"--data-dir={workdir / 'etcd'}",
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=node=http://127.0.0.1:2380",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        cert_dir = workdir / "certs"
        apiserver = inside(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                "--etcd-servers=http://127.0.0.1:2379",
                f"--cert-dir={cert_dir}",
                "--bind-address=0.0.0.0",
                f"--advertise-address={NODE_IP}",
                f"--secure-port={_API_PORT}",
                "--endpoint-reconciler-type=none",
                f"--service-cluster-ip-range={_SERVICE_CIDR}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--v=1",
            ],
        )
        api_socket = workdir / "api.sock"
        inside(
            "relay-inside",
            ["socat", f"UNIX-LISTEN:{api_socket},fork,unlink-early", f"TCP:127.0.0.1:{_API_PORT}"],
        )
        host_port = _free_port()
        relay = stack.enter_context(
            _started(
                "relay-host",
                [
                    "socat",
                    f"TCP-LISTEN:{host_port},bind=127.0.0.1,reuseaddr,fork",
                    f"UNIX-CONNECT:{api_socket}",
                ],
                workdir,
            )
        )
        _wait_for(api_socket.exists, "the API relay", deadline, etcd)
        ca_file = cert_dir / "apiserver.crt"
        server = f"https://127.0.0.1:{host_port}"
        kubeconfig, inner_kubeconfig = workdir / "kubeconfig", workdir / "kubeconfig-inside"
        _wait_for(ca_file.exists, "the API server's certificate", deadline, apiserver)
        _kubeconfig(kubeconfig, server, ca_file, token)
        _kubeconfig(inner_kubeconfig, f"https://127.0.0.1:{_API_PORT}", ca_file, token)
        api = KubeAPIServer(
            server=server,
            kubeconfig=kubeconfig,
            token=token,
            ca_file=ca_file,
            kubectl_path=binaries.kubectl,
            version=testbed_version(),
        )
        _wait_for(
            lambda: api.kubectl("get", "--raw", "/readyz", timeout=10).returncode == 0,
            "the API server's /readyz",
            deadline,
            apiserver,
        )
        assert relay.popen.poll() is None
        inside(
            "kube-controller-manager",
            [
                str(binaries.kube_controller_manager),
                f"--kubeconfig={inner_kubeconfig}",
                f"--authentication-kubeconfig={inner_kubeconfig}",
                f"--authorization-kubeconfig={inner_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--cert-dir={workdir / 'kcm-certs'}",
                "--leader-elect=false",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={ca_file}",
                f"--service-cluster-ip-range={_SERVICE_CIDR}",
                "--use-service-account-credentials=false",
                "--v=1",
            ],
        )
        inside(
            "kube-scheduler",
            [
                str(node.kube_scheduler),
                f"--kubeconfig={inner_kubeconfig}",
                f"--authentication-kubeconfig={inner_kubeconfig}",
                f"--authorization-kubeconfig={inner_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--cert-dir={workdir / 'scheduler-certs'}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        api.kubectl("apply", "-f", "-", input=json.dumps(_KUBERNETES_ENDPOINTS), check=True)

        # The node.
        containerd_socket = workdir / "containerd.sock"
        containerd = inside(
            "containerd",
            ["containerd", f"--config={_containerd_config(workdir, images)}", "--log-level=info"],
        )
        _wait_for(containerd_socket.exists, "containerd's socket", deadline, containerd)
        imported = subprocess.run(
            [
                "nsenter",
                f"--target={holder_pid}",
                "--mount",
                "--net",
                "--",
                "ctr",
                f"--address={containerd_socket}",
                "--namespace=k8s.io",
                "images",
                "import",
                str(images.archive),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=max(30.0, deadline - time.monotonic()),
        )
        if imported.returncode != 0:
            raise containerd.failure(f"ctr images import failed: {imported.stderr[-2000:]}")
        kubelet = inside(
            "kubelet",
            [
                str(node.kubelet),
                f"--config={_kubelet_config(workdir, cgroup_root)}",
                f"--kubeconfig={inner_kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--root-dir=/var/lib/kubelet",
                f"--cert-dir={workdir / 'kubelet-pki'}",
                "--v=1",
            ],
        )

        def node_ready() -> bool:
            ready = api.kubectl(
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                timeout=10,
            )
            return ready.stdout.strip() == "True"

        _wait_for(node_ready, "the node Ready", deadline, kubelet)
        kube_proxy = inside(
            "kube-proxy",
            [
                str(node.kube_proxy),
                f"--config={_kube_proxy_config(workdir, inner_kubeconfig)}",
                "--v=1",
            ],
        )
        cluster = KubeCluster(api, images, holder_pid, workdir)
        _wait_for(
            lambda: cluster.http_get("http://127.0.0.1:10256/healthz", timeout=2)[0] == 200,
            "kube-proxy's /healthz",
            deadline,
            kube_proxy,
        )
        yield cluster


def main(argv: Sequence[str]) -> int:
    """``python -m tests.support.kube_node cleanup``: sweep what killed runs left behind."""
    if list(argv) != ["cleanup"]:
        sys.stderr.write("usage: python -m tests.support.kube_node cleanup\n")
        return 2
    sweep_leftovers()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
