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
namespace holds only loopback, a bridge with no ports (the node's address) and the
Pods' bridge: every
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
from .node_config import (
    ADMIN_USER,
    API_PORT,
    CLUSTER_DOMAIN,
    CNI_BIN,
    KUBERNETES_ENDPOINTS,
    NODE_IP,
    NODE_NAME,
    POD_CIDR,
    SERVICE_CIDR,
    containerd_config,
    kube_proxy_config,
    kubeconfig,
    kubelet_config,
    serving_certificate,
)
from .node_dns import ServiceRecords
from .node_sweep import CGROUP_PREFIX, forget_run, make_cgroup_root, record_run, sweep_leftovers
from .waiting import WaitTimeoutError, wait_until_sync

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

_HOST_TOOLS = (
    "dnsmasq",
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
    # The node's "uplink": a bridge with no ports, so nothing sent there goes anywhere.
    # The default route through it lets the node's processes connect to Service IPs
    # (routed first, then rewritten by kube-proxy's rules).
    ip link add node0 type bridge
    ip addr add {NODE_IP}/32 dev node0
    ip link set node0 up
    ip route add default dev node0
    sysctl -qw net.ipv4.ip_forward=1
    touch "$1"
    exec sleep infinity
    """
)


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
    if not (CNI_BIN / "bridge").exists():
        missing.append(f"{CNI_BIN}/bridge (containernetworking-plugins)")
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


def _wait_for(
    check: Callable[[], bool], what: str, deadline: float, process: _Process | None = None
) -> None:
    """Poll ``check()`` until true; fail at ``deadline`` or when ``process`` died."""

    def checked() -> bool:
        if check():
            return True
        if process is not None and process.popen.poll() is not None:
            raise process.failure(f"exited with code {process.popen.returncode}")
        return False

    try:
        wait_until_sync(checked, deadline - time.monotonic(), poll_s=0.25, what=what)
    except WaitTimeoutError as timeout:
        if process is not None:
            raise process.failure(str(timeout)) from None
        raise


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
    cgroup_root = f"{CGROUP_PREFIX}{os.urandom(4).hex()}"
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
        record_run(holder_pid, cgroup_root)
        # Registered before anything runs in the namespace, so it runs after all stopped.
        stack.callback(forget_run, holder_pid, cgroup_root)
        _wait_for(ready_file.exists, "the node's namespaces", deadline, holder)
        make_cgroup_root(cgroup_root)

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
        tokens.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
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
        ca_file, serving_key = serving_certificate(workdir)
        apiserver = inside(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                "--etcd-servers=http://127.0.0.1:2379",
                f"--tls-cert-file={ca_file}",
                f"--tls-private-key-file={serving_key}",
                "--bind-address=0.0.0.0",
                f"--advertise-address={NODE_IP}",
                f"--secure-port={API_PORT}",
                "--endpoint-reconciler-type=none",
                # The node's name resolves nowhere: the API server calls the kubelet by IP.
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
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
            ["socat", f"UNIX-LISTEN:{api_socket},fork,unlink-early", f"TCP:127.0.0.1:{API_PORT}"],
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
        server = f"https://127.0.0.1:{host_port}"
        host_kubeconfig, inner_kubeconfig = workdir / "kubeconfig", workdir / "kubeconfig-inside"
        kubeconfig(host_kubeconfig, server, ca_file, token)
        kubeconfig(inner_kubeconfig, f"https://127.0.0.1:{API_PORT}", ca_file, token)
        api = KubeAPIServer(
            server=server,
            kubeconfig=host_kubeconfig,
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
                f"--service-cluster-ip-range={SERVICE_CIDR}",
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
        api.kubectl("apply", "-f", "-", input=json.dumps(KUBERNETES_ENDPOINTS), check=True)

        # The node.
        containerd_socket = workdir / "containerd.sock"
        containerd = inside(
            "containerd",
            ["containerd", f"--config={containerd_config(workdir, images)}", "--log-level=info"],
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
                f"--config={kubelet_config(workdir, cgroup_root)}",
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
        dns_dir = workdir / "dns"
        dns_dir.mkdir()
        records = ServiceRecords(api, dns_dir / "services")
        first = records.records()
        assert first is not None
        (dns_dir / "services").write_text(first)
        inside(
            "dnsmasq",
            [
                "dnsmasq",
                "--keep-in-foreground",
                "--log-facility=-",
                f"--pid-file={workdir / 'dnsmasq.pid'}",
                "--user=root",
                "--no-resolv",
                "--no-hosts",
                f"--hostsdir={dns_dir}",
                f"--local=/{CLUSTER_DOMAIN}/",
                f"--listen-address={NODE_IP}",
                "--bind-interfaces",
            ],
        )
        records.start()
        stack.callback(records.stop)
        kube_proxy = inside(
            "kube-proxy",
            [
                str(node.kube_proxy),
                f"--config={kube_proxy_config(workdir, inner_kubeconfig)}",
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
