"""A real Kubernetes API server (etcd + kube-apiserver) for integration tests.

Why real and not a fake: the behaviour llmquota relies on most — CRD OpenAPI and CEL
validation, the status subresource, RBAC, server-side apply, watches — lives in the API
server itself, and no fake reproduces it faithfully. The binaries are compiled from the
Go module proxy by ``testbed/build.sh`` into a cache outside the checkout (see
docs/testbed.md); this module only finds them, starts them on free loopback ports in a
temporary directory, and tears them down again.

The cluster has no nodes and no scheduler: objects are stored and validated, Pods are
never run. kube-controller-manager is started as well when it was built, so that
ownerReference garbage collection, namespace deletion and the ``default``
ServiceAccount in new namespaces behave as in a real cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .waiting import WaitTimeoutError, wait_until_sync

__all__ = [
    "REPO_ROOT",
    "Binaries",
    "KubeAPIServer",
    "TestbedUnavailableError",
    "build_testbed",
    "cache_dir",
    "find_binaries",
    "kubectl_path",
    "run_kube_apiserver",
    "testbed_version",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout: ``tests/support/`` is two levels below it."""

_BUILD_SCRIPT = REPO_ROOT / "testbed" / "build.sh"
_GO_MOD = REPO_ROOT / "testbed" / "go.mod"
_ADMIN_USER = "llmquota-admin"
_SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
_LOG_TAIL_BYTES = 4000


class TestbedUnavailableError(RuntimeError):
    """The test bed cannot run here: binaries missing and not buildable, or no openssl."""

    __test__ = False  # not a test class, despite the name pytest would collect


@dataclass(frozen=True)
class Binaries:
    """Paths of the executables the test bed runs."""

    kube_apiserver: Path
    etcd: Path
    kube_controller_manager: Path | None
    kubectl: Path


@dataclass(frozen=True)
class KubeAPIServer:
    """A reachable API server with an all-powerful identity and a kubeconfig for it."""

    server: str
    """``https://127.0.0.1:PORT``."""
    kubeconfig: Path
    token: str
    """Bearer token of a ``system:masters`` user."""
    ca_file: Path | None
    """CA bundle that verifies the server, or None to skip verification."""
    kubectl_path: Path
    version: str | None = None
    """The Kubernetes version started by the test bed; None for an external cluster."""
    controllers: bool = True
    """Whether kube-controller-manager runs (garbage collection, namespace deletion)."""
    env: dict[str, str] = field(default_factory=dict)

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = False,
        token: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the cached kubectl against this server; ``token`` acts as another identity."""
        command = [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}"]
        if token is not None:
            command.append(f"--token={token}")
        command.extend(args)
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env=env,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this server (for raw HTTP in tests)."""
        if self.ca_file is None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=str(self.ca_file))

    def request(
        self,
        method: str,
        path: str,
        body: object | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, object]:
        """One raw API call; returns (HTTP status, decoded JSON body or text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {token or self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(
                req, timeout=timeout, context=self.ssl_context()
            ) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
            error.close()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text


def cache_dir() -> Path:
    """``$LLMQUOTA_CACHE``, by default ``~/.cache/llmquota`` (shared with build.sh)."""
    value = os.environ.get("LLMQUOTA_CACHE")
    return Path(value) if value else Path.home() / ".cache" / "llmquota"


def testbed_version() -> str:
    """The k8s.io/kubernetes version pinned in testbed/go.mod, e.g. ``v1.37.2``."""
    match = re.search(r"^\s*k8s\.io/kubernetes\s+(v\S+)", _GO_MOD.read_text(), re.MULTILINE)
    if match is None:
        msg = f"no k8s.io/kubernetes requirement in {_GO_MOD}"
        raise RuntimeError(msg)
    return match.group(1)


def kubectl_path() -> Path:
    """``$LLMQUOTA_KUBECTL`` or the kubectl that build.sh installs into the cache.

    Never the ``kubectl`` on PATH: on developer machines it is often a cloud SDK
    dispatcher or several minor versions away from the test bed.
    """
    value = os.environ.get("LLMQUOTA_KUBECTL")
    return Path(value) if value else cache_dir() / "bin" / "kubectl"


def find_binaries() -> Binaries | None:
    """The test bed's executables, or None when any required one is missing.

    ``$KUBEBUILDER_ASSETS`` (a directory with kube-apiserver and etcd, as used by
    controller-runtime's envtest) wins over the build cache.
    """
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    bindir = Path(assets) if assets else cache_dir() / "testbed" / testbed_version() / "bin"
    apiserver, etcd, kcm = (
        bindir / "kube-apiserver",
        bindir / "etcd",
        bindir / "kube-controller-manager",
    )
    kubectl = kubectl_path()
    if not all(os.access(p, os.X_OK) for p in (apiserver, etcd, kubectl)):
        return None
    return Binaries(
        kube_apiserver=apiserver,
        etcd=etcd,
        kube_controller_manager=kcm if os.access(kcm, os.X_OK) else None,
        kubectl=kubectl,
    )


def build_testbed(what: str = "all") -> None:
    """Run ``testbed/build.sh [all|servers|tools]``; a no-op when everything is cached.

    Raises TestbedUnavailableError with the script's output when it fails.
    """
    bash = shutil.which("bash")
    if bash is None:
        msg = "bash is needed to run testbed/build.sh"
        raise TestbedUnavailableError(msg)
    result = subprocess.run(
        [bash, str(_BUILD_SCRIPT), what],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-_LOG_TAIL_BYTES:]
        msg = f"testbed/build.sh {what} failed (exit {result.returncode}):\n{output}"
        raise TestbedUnavailableError(msg)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _LOG_TAIL_BYTES))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        msg = "openssl is needed to create the service-account signing key"
        raise TestbedUnavailableError(msg)
    subprocess.run([openssl, *args], check=True, capture_output=True)


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def failure(self, what: str) -> RuntimeError:
        return RuntimeError(f"{self.name} {what}; last log lines:\n{_tail(self.log_path)}")

    def stop(self, grace: float = 10.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
        try:
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGTERM)
                try:
                    self.popen.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.popen.pid, signal.SIGKILL)
                    self.popen.wait(timeout=grace)
            else:
                # The leader is gone; make sure nothing it started lingers.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
        finally:
            self.log_file.close()


@contextlib.contextmanager
def _started(name: str, argv: Sequence[str], workdir: Path) -> Iterator[_Process]:
    """Start ``argv`` in its own process group, logging to ``workdir/NAME.log``."""
    log_path = workdir / f"{name}.log"
    log_file = log_path.open("wb")
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
    except BaseException:
        log_file.close()
        raise
    process = _Process(name, popen, log_path, log_file)
    try:
        yield process
    finally:
        process.stop()


def _wait_http_ok(
    process: _Process,
    url: str,
    deadline: float,
    context: ssl.SSLContext | None = None,
    token: str | None = None,
    ca_file: Path | None = None,
) -> None:
    """Poll ``url`` until it answers 200, the process dies, or ``deadline`` passes."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    last = "no answer yet"

    def answers_ok() -> bool:
        nonlocal context, last
        if process.popen.poll() is not None:
            raise process.failure(f"exited with code {process.popen.returncode} while starting")
        if ca_file is not None and ca_file.exists():
            # Re-read every time: the server may still be writing the file.
            with contextlib.suppress(ssl.SSLError, OSError):
                context = ssl.create_default_context(cafile=str(ca_file))
        if ca_file is None or context is not None:
            req = urllib.request.Request(url, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=2, context=context) as response:
                    if response.status == 200:
                        return True
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as error:
                last = f"HTTP {error.code}: {error.read()[:300]!r}"
                error.close()
            except (OSError, ssl.SSLError) as error:
                last = repr(error)
        return False

    try:
        wait_until_sync(answers_ok, deadline - time.monotonic(), poll_s=0.2, what=url)
    except WaitTimeoutError:
        raise process.failure(f"not ready at {url} in time (last: {last})") from None


def _write_kubeconfig(path: Path, server: str, ca_file: Path, token: str) -> None:
    # JSON is YAML, so kubectl, kopf and kubernetes_asyncio all read this file.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "llmquota-testbed",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": _ADMIN_USER, "user": {"token": token}}],
        "contexts": [
            {
                "name": "llmquota-testbed",
                "context": {
                    "cluster": "llmquota-testbed",
                    "user": _ADMIN_USER,
                    "namespace": "default",
                },
            }
        ],
        "current-context": "llmquota-testbed",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


@contextlib.contextmanager
def run_kube_apiserver(
    binaries: Binaries,
    *,
    workdir: Path | None = None,
    controller_manager: bool = True,
    startup_timeout: float = 90.0,
    extra_apiserver_args: Sequence[str] = (),
) -> Iterator[KubeAPIServer]:
    """Start etcd, kube-apiserver (and kube-controller-manager) and yield the server.

    Everything lives in ``workdir`` (a fresh temporary directory by default, removed
    afterwards) and listens on free 127.0.0.1 ports. Each process runs in its own
    process group, which is killed on the way out whether the body raised or not.
    ``startup_timeout`` bounds the wait for ``/readyz``; on failure the error carries
    the tail of the failing process's log.
    """
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kube-")))
        workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + startup_timeout
        version = None if os.environ.get("KUBEBUILDER_ASSETS") else testbed_version()

        # Service-account tokens (kubectl create token, the TokenRequest API) are signed
        # with this key; the API server needs it at start.
        sa_key, sa_pub = workdir / "sa.key", workdir / "sa.pub"
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", str(sa_key))  # fmt: skip
        _openssl("pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))

        token = secrets.token_urlsafe(32)
        tokens_csv = workdir / "tokens.csv"
        tokens_csv.write_text(f'{token},{_ADMIN_USER},{_ADMIN_USER},"system:masters"\n')
        tokens_csv.chmod(0o600)

        etcd_port, etcd_peer_port, api_port = _free_port(), _free_port(), _free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd = stack.enter_context(
            _started(
                "etcd",
                [
                    str(binaries.etcd),
                    "--name=testbed",
                    f"--data-dir={workdir / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                    f"--initial-cluster=testbed=http://127.0.0.1:{etcd_peer_port}",
                    # Test data is thrown away: skip fsync, it is most of etcd's latency.
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
                workdir,
            )
        )
        _wait_http_ok(etcd, f"{etcd_url}/health", deadline)

        cert_dir = workdir / "certs"
        server = f"https://127.0.0.1:{api_port}"
        apiserver = stack.enter_context(
            _started(
                "kube-apiserver",
                [
                    str(binaries.kube_apiserver),
                    f"--etcd-servers={etcd_url}",
                    f"--cert-dir={cert_dir}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    # The endpoint reconciler refuses a loopback advertise address; no
                    # pod needs the `kubernetes` Service's endpoints here anyway.
                    "--endpoint-reconciler-type=none",
                    f"--secure-port={api_port}",
                    f"--service-cluster-ip-range={_SERVICE_CLUSTER_IP_RANGE}",
                    f"--token-auth-file={tokens_csv}",
                    "--authorization-mode=RBAC",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={sa_pub}",
                    f"--service-account-signing-key-file={sa_key}",
                    "--allow-privileged=true",
                    "--v=1",
                    *extra_apiserver_args,
                ],
                workdir,
            )
        )
        # With no --tls-cert-file the API server writes a self-signed CA and serving
        # certificate (for 127.0.0.1) into --cert-dir; that bundle is our CA file.
        ca_file = cert_dir / "apiserver.crt"
        _wait_http_ok(apiserver, f"{server}/readyz", deadline, token=token, ca_file=ca_file)

        kubeconfig = workdir / "kubeconfig"
        _write_kubeconfig(kubeconfig, server, ca_file, token)

        controllers = controller_manager and binaries.kube_controller_manager is not None
        if controllers:
            assert binaries.kube_controller_manager is not None
            kcm_port = _free_port()
            kcm = stack.enter_context(
                _started(
                    "kube-controller-manager",
                    [
                        str(binaries.kube_controller_manager),
                        f"--kubeconfig={kubeconfig}",
                        f"--authentication-kubeconfig={kubeconfig}",
                        f"--authorization-kubeconfig={kubeconfig}",
                        "--bind-address=127.0.0.1",
                        f"--secure-port={kcm_port}",
                        f"--cert-dir={workdir / 'kcm-certs'}",
                        "--leader-elect=false",
                        f"--service-account-private-key-file={sa_key}",
                        f"--root-ca-file={ca_file}",
                        f"--service-cluster-ip-range={_SERVICE_CLUSTER_IP_RANGE}",
                        "--use-service-account-credentials=false",
                        "--v=1",
                    ],
                    workdir,
                )
            )
            insecure = ssl.create_default_context()
            insecure.check_hostname = False
            insecure.verify_mode = ssl.CERT_NONE
            _wait_http_ok(kcm, f"https://127.0.0.1:{kcm_port}/healthz", deadline, insecure)

        yield KubeAPIServer(
            server=server,
            kubeconfig=kubeconfig,
            token=token,
            ca_file=ca_file,
            kubectl_path=binaries.kubectl,
            version=version,
            controllers=controllers,
        )
