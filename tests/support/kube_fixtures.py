"""pytest plugin: one real Kubernetes API server per test session.

Fixtures:

``kube_apiserver`` (session)
    A :class:`~tests.support.kube_apiserver.KubeAPIServer` with ``.server`` (URL),
    ``.kubeconfig`` (path), ``.token`` (admin bearer token), ``.ca_file`` and
    ``.kubectl(*args, input=None, check=False, token=None)``. The project's CRDs from
    ``crds/*.yaml`` are applied and Established before the first test runs.
``kube_namespace`` (function)
    A fresh namespace name on that server, deleted (without waiting) afterwards.

Where the server comes from:

* ``LLMQUOTA_KUBECONFIG=/path/to/kubeconfig`` — an existing cluster (kind, a CI
  cluster); nothing is started. Its current context is used.
* otherwise etcd + kube-apiserver (+ kube-controller-manager) from
  ``KUBEBUILDER_ASSETS`` or from the cache filled by ``testbed/build.sh``. When the
  binaries are missing, the plugin runs ``testbed/build.sh`` once after collection
  (outside any test, so pytest-timeout does not cut the 10-25 minute first build).

When nothing can be had, tests that use the fixtures fail — or are skipped, but only
when ``LLMQUOTA_ALLOW_NO_TESTBED=1``: a missing test bed must never turn a CI run green
by accident.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kube_apiserver import (
    REPO_ROOT,
    Binaries,
    KubeAPIServer,
    TestbedUnavailableError,
    build_testbed,
    find_binaries,
    kubectl_path,
    run_kube_apiserver,
)

__all__ = ["kube_apiserver", "kube_namespace"]

_FIXTURES = frozenset({"kube_apiserver", "kube_namespace"})
_PREPARED = pytest.StashKey["Binaries | Path | str"]()
"""Binaries, or only kubectl (external cluster), or why neither could be had."""
_CRD_DIR = REPO_ROOT / "crds"
_EXTERNAL_ADMIN_SA = "llmquota-test-admin"


def _external_kubeconfig() -> Path | None:
    value = os.environ.get("LLMQUOTA_KUBECONFIG")
    return Path(value) if value else None


def _build(config: pytest.Config, what: str) -> str | None:
    """Run testbed/build.sh WHAT, telling the user why the session pauses; None on success."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"kube test bed: running testbed/build.sh {what} "
            "(a first build compiles kube-apiserver and etcd: 10-25 minutes)",
            yellow=True,
        )
    try:
        build_testbed(what)
    except TestbedUnavailableError as error:
        return str(error)
    return None


def _prepare(config: pytest.Config) -> Binaries | Path | str:
    """Find (building if needed) what the fixtures need; a string says why it failed."""
    external = _external_kubeconfig()
    if external is not None:
        if not external.is_file():
            return f"LLMQUOTA_KUBECONFIG={external} is not a file"
        # An existing cluster needs only kubectl.
        kubectl = kubectl_path()
        if not os.access(kubectl, os.X_OK):
            error = _build(config, "tools")
            if error is not None:
                return error
        return kubectl
    binaries = find_binaries()
    if binaries is None:
        error = _build(config, "all")
        if error is not None:
            return error
        binaries = find_binaries()
    if binaries is None:
        return (
            "testbed/build.sh ran but kube-apiserver, etcd or kubectl is still missing "
            "(is KUBEBUILDER_ASSETS pointing at an incomplete directory?)"
        )
    return binaries


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the test bed before the first test if any collected test needs it."""
    if session.config.option.collectonly:
        return
    if any(_FIXTURES.intersection(getattr(item, "fixturenames", ())) for item in session.items):
        session.config.stash[_PREPARED] = _prepare(session.config)


def _unavailable(reason: str) -> None:
    if os.environ.get("LLMQUOTA_ALLOW_NO_TESTBED") == "1":
        pytest.skip(f"no Kubernetes test bed (LLMQUOTA_ALLOW_NO_TESTBED=1): {reason}")
    pytest.fail(
        f"no Kubernetes test bed: {reason}\n"
        "Run `make testbed`, point LLMQUOTA_KUBECONFIG at a cluster, or set "
        "LLMQUOTA_ALLOW_NO_TESTBED=1 to skip these tests.",
        pytrace=False,
    )


def _apply_crds(kube: KubeAPIServer) -> None:
    files = sorted(p for p in _CRD_DIR.glob("*.y*ml") if p.is_file())
    if not files:
        return
    args = [arg for path in files for arg in ("-f", str(path))]
    # Server-side: big CRDs overflow the last-applied annotation of client-side apply.
    for command in (
        ["apply", "--server-side", "--force-conflicts", *args],
        ["wait", "--for=condition=Established", "--timeout=60s", *args],
    ):
        result = kube.kubectl(*command, timeout=90)
        if result.returncode != 0:
            msg = f"kubectl {' '.join(command[:1])} of crds/ failed:\n{result.stderr}"
            raise RuntimeError(msg)


def _config_value(kubectl: Path, kubeconfig: Path, jsonpath: str) -> str:
    probe = KubeAPIServer("", kubeconfig, "", None, kubectl)
    return probe.kubectl(
        "config", "view", "--minify", "--raw", "-o", f"jsonpath={jsonpath}", check=True
    ).stdout.strip()


def _external(kubeconfig: Path, kubectl: Path, workdir: Path) -> KubeAPIServer:
    """Describe an existing cluster the way the fixtures describe the test bed."""
    server = _config_value(kubectl, kubeconfig, "{.clusters[0].cluster.server}")
    ca_data = _config_value(
        kubectl, kubeconfig, "{.clusters[0].cluster.certificate-authority-data}"
    )
    ca_path = _config_value(kubectl, kubeconfig, "{.clusters[0].cluster.certificate-authority}")
    ca_file: Path | None = None
    if ca_data:
        ca_file = workdir / "external-ca.crt"
        ca_file.write_bytes(base64.b64decode(ca_data))
    elif ca_path:
        ca_file = (kubeconfig.parent / ca_path).resolve()
    token = _config_value(kubectl, kubeconfig, "{.users[0].user.token}")
    kube = KubeAPIServer(server, kubeconfig, token, ca_file, kubectl)
    ready = kube.kubectl("get", "--raw", "/readyz")
    if ready.returncode != 0:
        msg = f"LLMQUOTA_KUBECONFIG={kubeconfig}: {server} is not ready:\n{ready.stderr}"
        raise RuntimeError(msg)
    if not token:
        # Client certificates or an exec plugin: mint a bearer token so that tests
        # can rely on `.token` everywhere.
        for args in (
            ["create", "serviceaccount", "-n", "kube-system", _EXTERNAL_ADMIN_SA],
            ["create", "clusterrolebinding", _EXTERNAL_ADMIN_SA, "--clusterrole=cluster-admin",
             f"--serviceaccount=kube-system:{_EXTERNAL_ADMIN_SA}"],
        ):  # fmt: skip
            result = kube.kubectl(*args)
            if result.returncode != 0 and "AlreadyExists" not in result.stderr:
                raise RuntimeError(result.stderr)
        token = kube.kubectl(
            "create", "token", "-n", "kube-system", _EXTERNAL_ADMIN_SA, "--duration=4h",
            check=True,
        ).stdout.strip()  # fmt: skip
        kube = KubeAPIServer(server, kubeconfig, token, ca_file, kubectl)
    return kube


@pytest.fixture(scope="session")
def kube_apiserver(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeAPIServer]:
    """A real API server for the whole session, with the project's CRDs installed."""
    prepared = request.config.stash.get(_PREPARED, None)
    if prepared is None:
        prepared = _prepare(request.config)
        request.config.stash[_PREPARED] = prepared
    if isinstance(prepared, str):
        _unavailable(prepared)
        return
    external = _external_kubeconfig()
    if external is not None:
        with tempfile.TemporaryDirectory(prefix="kube-external-") as tmp:
            kubectl = prepared.kubectl if isinstance(prepared, Binaries) else prepared
            kube = _external(external, kubectl, Path(tmp))
            _apply_crds(kube)
            yield kube
        return
    # Under pytest's basetemp, so logs (workdir/*.log) survive a failed run.
    workdir = tmp_path_factory.mktemp("kube-apiserver")
    assert isinstance(prepared, Binaries)
    with run_kube_apiserver(prepared, workdir=workdir) as kube:
        _apply_crds(kube)
        yield kube


@pytest.fixture
def kube_namespace(kube_apiserver: KubeAPIServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty namespace for one test; deleted afterwards (not waited for)."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    name = f"t-{base[:48].strip('-')}-{secrets.token_hex(3)}"
    kube_apiserver.kubectl("create", "namespace", name, check=True)
    yield name
    kube_apiserver.kubectl("delete", "namespace", name, "--wait=false")
