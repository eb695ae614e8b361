"""The images the cluster test bed runs, built without Docker and without a registry.

There is no registry to pull from, so every image a test Pod uses is built here and
imported into the node's containerd (``ctr images import`` of a docker-save-style tar):

* ``pause``: the Pod sandbox, a few lines of static C (``testbed/images/pause.c``);
* ``llmquota``: Debian's python3 (``mmdebstrap --variant=essential``) with the project's
  dependencies, the ``openai`` client and the project itself on top, one layer each.
  It runs the operator, the sidecar, the fake upstream and the test apps;
* ``redis``: the same Debian base (it includes ``redis-server``), for the chart's Redis.

Each layer is cached under ``$LLMQUOTA_CACHE/cluster/layers`` by a key over its inputs,
so a code change rebuilds only the project layer (seconds) and the Debian base (about
a minute, 150 MB) is made once. The Dockerfile stays the way to build the image for a
registry; this is its equivalent for a machine with neither Docker nor a registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .kube_apiserver import REPO_ROOT, cache_dir

__all__ = [
    "IMAGE_REGISTRY",
    "ClusterImages",
    "build_images",
]

IMAGE_REGISTRY = "llmquota.test"
"""Image names start with this made-up registry: nothing can ever be pulled for them."""
_DEBIAN_SUITE = "bookworm"
_DEBIAN_MIRROR = "http://deb.debian.org/debian"
_BASE_PACKAGES = ("python3", "redis-server")
# Documentation and translations are a third of the base and nothing reads them.
_DPKG_EXCLUDES = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/locale/*",
    "/usr/share/info/*",
)
# Debian bookworm's python3, for the wheels' tags. pip evaluates requirement markers for
# the Python running it, though: redis-py's `async-timeout; python_full_version <
# "3.11.3"` must be asked for by hand.
_IMAGE_PYTHON = "3.11.2"
_IMAGE_PYTHON_NEEDS = ("async-timeout>=4.0.3",)
_SITE = "opt/llmquota/lib"
_PROJECT_SOURCES = ("core", "operator", "sidecar")
_NONROOT = "65532:65532"
_NONROOT_NAME = "nonroot"
_LAUNCHER = f"""#!/usr/bin/python3
# `llmquota`, as the console script of a pip install would be (pip --target writes none).
import sys

sys.path.insert(0, "/{_SITE}")
from llmquota.cli import main

sys.exit(main())
"""


@dataclass(frozen=True)
class ClusterImages:
    """Where the images are and what they are called inside the cluster."""

    archive: Path
    """A docker-save-style tar holding all three images."""
    pause: str
    llmquota: str
    redis: str


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(hashlib.sha256(part).digest())
    return hasher.hexdigest()[:16]


def _tree_digest(roots: Iterable[Path]) -> str:
    """A key over every file under `roots` (paths and contents), caches excluded."""
    parts: list[bytes] = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                parts += [str(path.relative_to(REPO_ROOT)).encode(), path.read_bytes()]
    return _digest(*parts)


def _run(argv: list[str], what: str, cwd: Path | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    if result.returncode != 0:
        msg = (
            f"{what} failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-4000:]}"
        )
        raise RuntimeError(msg)


def _cached_layer(name: str, key: str, build: Callable[[Path], None]) -> Path:
    """The layer tar `name-key.tar`, made by `build(directory)` unless it exists."""
    layers = cache_dir() / "cluster" / "layers"
    layers.mkdir(parents=True, exist_ok=True)
    layer = layers / f"{name}-{key}.tar"
    if layer.exists():
        return layer
    for stale in layers.glob(f"{name}-*.tar"):
        stale.unlink()
    with tempfile.TemporaryDirectory(dir=layers, prefix=f".{name}-") as scratch:
        partial = Path(scratch) / "layer.tar"
        build(partial)
        partial.rename(layer)
    return layer


def _tar_directory(directory: Path, layer: Path) -> None:
    """A layer tar of `directory`'s contents, owned by root, world-readable."""

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(layer, "w") as tar:
        for entry in sorted(directory.iterdir()):
            tar.add(entry, arcname=entry.name, filter=owned_by_root)


def _base_layer(layer: Path) -> None:
    """Debian's essential set plus python3 and redis-server, as one rootfs tar."""
    if shutil.which("mmdebstrap") is None:
        msg = "mmdebstrap is needed to build the cluster images (apt-get install mmdebstrap)"
        raise RuntimeError(msg)
    _run(
        [
            "mmdebstrap",
            "--variant=essential",
            "--mode=root",
            "--format=tar",
            f"--include={','.join(_BASE_PACKAGES)}",
            *(f"--dpkgopt=path-exclude={pattern}" for pattern in _DPKG_EXCLUDES),
            _DEBIAN_SUITE,
            str(layer),
            _DEBIAN_MIRROR,
        ],
        "mmdebstrap of the image base",
    )


def _dependencies() -> list[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return [
        *project["dependencies"],
        *project["optional-dependencies"]["demo"],
        *_IMAGE_PYTHON_NEEDS,
    ]


def _pip_target(layer: Path, *requirements: str, no_deps: bool = False) -> None:
    """`pip install --target` into /opt/llmquota/lib of a fresh layer."""
    with tempfile.TemporaryDirectory(dir=layer.parent) as root:
        target = Path(root) / _SITE
        argv = [sys.executable, "-m", "pip", "install", "--quiet",
                "--disable-pip-version-check", "--target", str(target)]  # fmt: skip
        argv += (
            ["--no-deps"]
            if no_deps
            else ["--only-binary=:all:", f"--python-version={_IMAGE_PYTHON}"]
        )
        _run([*argv, *requirements], f"pip install --target ({', '.join(requirements)[:80]})")
        # pip writes console scripts for this machine's interpreter: not for the image.
        shutil.rmtree(target / "bin", ignore_errors=True)
        if no_deps:
            launcher = Path(root) / "usr" / "local" / "bin" / "llmquota"
            launcher.parent.mkdir(parents=True)
            launcher.write_text(_LAUNCHER)
            launcher.chmod(0o755)
        _tar_directory(Path(root), layer)


def _user_layer(base: Path, layer: Path) -> None:
    """The base's /etc/passwd and /etc/group with the image's user, 65532 `nonroot`.

    Without an entry for its uid, `getpass.getuser()` raises, and kopf asks it for the
    operator's peering identity.
    """
    name, uid = _NONROOT_NAME, _NONROOT.partition(":")[0]
    entries = {"passwd": f"{name}:x:{uid}:{uid}:{name}:/tmp:/usr/sbin/nologin\n",
               "group": f"{name}:x:{uid}:\n"}  # fmt: skip
    with tempfile.TemporaryDirectory(dir=layer.parent) as root, tarfile.open(base) as tar:
        etc = Path(root) / "etc"
        etc.mkdir()
        for file, entry in entries.items():
            member = tar.extractfile(f"./etc/{file}")
            assert member is not None, f"no /etc/{file} in {base}"
            (etc / file).write_bytes(member.read() + entry.encode())
            (etc / file).chmod(0o644)
        _tar_directory(Path(root), layer)


def _pause_layer(layer: Path) -> None:
    with tempfile.TemporaryDirectory(dir=layer.parent) as root:
        binary = Path(root) / "pause"
        _run(["gcc", "-static", "-O2", "-s", "-o", str(binary),
              str(REPO_ROOT / "testbed" / "images" / "pause.c")], "gcc of pause.c")  # fmt: skip
        _tar_directory(Path(root), layer)


@dataclass(frozen=True)
class _Image:
    name: str
    layers: tuple[Path, ...]
    config: dict[str, object]


def _file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _write_archive(archive: Path, images: list[_Image]) -> None:
    """A docker-save tar: manifest.json, one config per image, each layer once."""
    digests: dict[Path, str] = {}
    manifest = []
    with tarfile.open(archive, "w") as tar:

        def add_bytes(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for image in images:
            for layer in image.layers:
                if layer not in digests:
                    digests[layer] = _file_digest(layer)
                    tar.add(layer, arcname=f"{digests[layer]}/layer.tar")
            config = {
                "architecture": "amd64",
                "os": "linux",
                "config": image.config,
                "rootfs": {
                    "type": "layers",
                    "diff_ids": [f"sha256:{digests[layer]}" for layer in image.layers],
                },
            }
            config_bytes = json.dumps(config, sort_keys=True).encode()
            config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
            add_bytes(config_name, config_bytes)
            manifest.append(
                {
                    "Config": config_name,
                    "RepoTags": [image.name],
                    "Layers": [f"{digests[layer]}/layer.tar" for layer in image.layers],
                }
            )
        add_bytes("manifest.json", json.dumps(manifest).encode())


def build_images() -> ClusterImages:
    """Build (or reuse) the three images; the archive's name changes with any input."""
    base_key = _digest(repr((_DEBIAN_SUITE, _BASE_PACKAGES, _DPKG_EXCLUDES)).encode())
    base = _cached_layer("base", base_key, _base_layer)
    user = _cached_layer("user", base_key, lambda layer: _user_layer(base, layer))
    requirements = _dependencies()
    deps_key = _digest(repr(requirements).encode(), _IMAGE_PYTHON.encode())
    deps = _cached_layer("deps", deps_key, lambda layer: _pip_target(layer, *requirements))
    project_key = _tree_digest(
        [REPO_ROOT / "pyproject.toml", *(REPO_ROOT / s for s in _PROJECT_SOURCES)]
    )
    project = _cached_layer(
        "project", project_key, lambda layer: _pip_target(layer, str(REPO_ROOT), no_deps=True)
    )
    pause_source = REPO_ROOT / "testbed" / "images" / "pause.c"
    pause = _cached_layer("pause", _digest(pause_source.read_bytes()), _pause_layer)

    llmquota = (base, user, deps, project)
    pause_name = f"{IMAGE_REGISTRY}/pause:{pause.stem.removeprefix('pause-')}"
    llmquota_name = f"{IMAGE_REGISTRY}/llmquota:{_digest(*(p.name.encode() for p in llmquota))}"
    redis_name = f"{IMAGE_REGISTRY}/redis:{base_key}"
    # The names say which layers (and so which inputs) went in: the archive is theirs.
    archive_key = _digest(pause_name.encode(), llmquota_name.encode(), redis_name.encode())
    names = ClusterImages(
        archive=cache_dir() / "cluster" / f"images-{archive_key}.tar",
        pause=pause_name,
        llmquota=llmquota_name,
        redis=redis_name,
    )
    if names.archive.exists():
        return names
    for stale in names.archive.parent.glob("images-*.tar"):
        stale.unlink()
    python_env = [
        "PATH=/usr/local/bin:/usr/bin:/bin",
        f"PYTHONPATH=/{_SITE}",
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONUNBUFFERED=1",
        "HOME=/tmp",
    ]
    images = [
        _Image(names.pause, (pause,), {"Entrypoint": ["/pause"], "User": _NONROOT}),
        _Image(
            names.llmquota,
            llmquota,
            {"Env": python_env, "Entrypoint": ["llmquota"], "Cmd": ["--help"], "User": _NONROOT},
        ),
        _Image(names.redis, (base,), {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["redis-server"]}),
    ]
    partial = names.archive.with_suffix(f".{os.getpid()}.partial")
    _write_archive(partial, images)
    partial.rename(names.archive)
    return names
