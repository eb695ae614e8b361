#!/usr/bin/env bash
# Install LiteLLM's proxy into its own venv, outside the checkout, so its large and
# pinned dependency tree never meets llmquota's. A second run is free: a stamp file
# written after a successful install names the version, and a matching stamp skips
# everything (importing the proxy to check it takes ~10 s on this machine).
#
#   bash bench/litellm/install.sh          # prints the venv's python on its last line
#
# LITELLM_VERSION pins the version measured (the comparison doc names it).
set -euo pipefail

CACHE="${LLMQUOTA_CACHE:-$HOME/.cache/llmquota}"
VENV="$CACHE/bench/litellm-venv"
LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"
PYTHON="${PYTHON:-python3}"

STAMP="$VENV/.llmquota-bench-installed"

if [ "$(cat "$STAMP" 2>/dev/null)" != "$LITELLM_VERSION" ]; then
  echo "installing litellm[proxy]==$LITELLM_VERSION into $VENV" >&2
  rm -f "$STAMP"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"
  # The [proxy] extra is what the bench needs; fail here, not at the first request.
  "$VENV/bin/python" -c "import litellm.proxy.proxy_server" ||
    { echo "litellm.proxy.proxy_server does not import after install" >&2; exit 1; }
  echo "$LITELLM_VERSION" >"$STAMP"
fi
echo "$VENV/bin/python"
