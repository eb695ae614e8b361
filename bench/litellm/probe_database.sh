#!/usr/bin/env bash
# Re-check, on this machine, whether LiteLLM's database layer (PostgreSQL through
# Prisma) can run: it is what /key/generate, per-key budgets with budget_duration and
# the proxy-wide max_budget need. Each step prints PASS or FAIL with the last lines of
# its output; docs/litellm-comparison.md records what this printed here.
#
#   bash bench/litellm/probe_database.sh
#
# Needs the venv from install.sh. Leaves nothing running: the PostgreSQL cluster lives
# in a temporary folder and is stopped at exit.
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="$(bash "$HERE/install.sh" | tail -1)"
VENV="$(dirname "$(dirname "$PYTHON")")"
SITE="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
SCHEMA="$SITE/litellm_proxy_extras/schema.prisma"
WORK="$(mktemp -d /tmp/llmquota-prisma-probe.XXXXXX)"
PG_PORT="${PG_PORT:-55439}"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
export PATH="$VENV/bin:$PATH"

step() {  # step NAME COMMAND...: run, report PASS/FAIL and the output's tail
  local name="$1"; shift
  local log="$WORK/$(echo "$name" | tr ' /' '__').log"
  if timeout 600 "$@" >"$log" 2>&1; then echo "PASS  $name"; else echo "FAIL  $name (exit $?)"; fi
  tail -n 4 "$log" | sed 's/^/      /'
}

stop_postgres() {
  [ -f "$WORK/pg/data/postmaster.pid" ] &&
    su postgres -c "$PG_BIN/pg_ctl -D $WORK/pg/data -m fast stop" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap stop_postgres EXIT

# PostgreSQL from Debian's packages, as the postgres user, on a loopback port.
if [ -z "$PG_BIN" ]; then
  step "apt-get install postgresql" bash -c \
    'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql'
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi
mkdir -p "$WORK/pg" && chown postgres "$WORK" "$WORK/pg"
step "initdb + pg_ctl start (port $PG_PORT)" su postgres -c \
  "$PG_BIN/initdb -D $WORK/pg/data -U litellm --auth=trust -E UTF8 &&
   $PG_BIN/pg_ctl -D $WORK/pg/data -w -l $WORK/pg/log \
     -o '-c listen_addresses=127.0.0.1 -c port=$PG_PORT -k $WORK/pg' start"
step "createdb litellm" psql -h 127.0.0.1 -p "$PG_PORT" -U litellm -c "create database litellm" postgres

# Prisma Client Python (LiteLLM's extra-proxy dependency) and its generator: it
# npm-installs the prisma CLI, which then fetches its engines from Prisma's own CDN.
step "pip install prisma" "$VENV/bin/pip" install -q "prisma>=0.11,<1.0"
step "prisma generate (LiteLLM's schema)" env DATABASE_URL="postgresql://litellm@127.0.0.1:$PG_PORT/litellm" \
  prisma generate --schema "$SCHEMA"

# The same CLI straight from npm, at the version Prisma Client Python pins and at npm's
# newest; npm installs the packages but the engines come at first use.
for version in 5.17.0 latest; do
  mkdir -p "$WORK/npm-$version"
  step "npm install prisma@$version" npm install --prefix "$WORK/npm-$version" "prisma@$version"
  # npm 11 no longer runs install scripts unasked; run @prisma/engines' postinstall by
  # hand. It exits 0 even when its download fails (the error shows only under DEBUG),
  # so the check is whether an engine file is there afterwards.
  step "@prisma/engines@$version postinstall leaves an engine" bash -c \
    "DEBUG='prisma:fetch-engine*' node $WORK/npm-$version/node_modules/@prisma/engines/scripts/postinstall.js;
     ls $WORK/npm-$version/node_modules/@prisma/engines/ | grep -i engine"
  step "npx prisma@$version --version" bash -c "cd $WORK/npm-$version && npx prisma --version"
done

# LiteLLM itself with DATABASE_URL: it prepares the Prisma toolchain and migrates at start.
cat >"$WORK/config.yaml" <<EOF
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:9/v1", api_key: x}
general_settings:
  master_key: sk-probe
  database_url: postgresql://litellm@127.0.0.1:$PG_PORT/litellm
EOF
step "litellm --config (with database_url) starts" env LITELLM_LOCAL_MODEL_COST_MAP=True \
  timeout 300 litellm --config "$WORK/config.yaml" --host 127.0.0.1 --port 4199
