#!/usr/bin/env bash
# Hostile-input mixed run (benches/hostile.py) against the release server on a fresh
# SQLite database, and on PostgreSQL too when FHIRBRIDGE_BENCH_POSTGRES_URL is set
# (one fresh schema). Prints statuses, 5xx, connection failures, stalls and peak RSS.
# Usage: benches/hostile.sh [REQUESTS=20000]
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS="${1:-20000}"
PORT="${PORT:-18081}"
cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/fhirbridge"
WORK=$(mktemp -d)
SERVER=
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT

run() {
  local db=$1
  RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --database "$db" &
  SERVER=$!
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.1; done
  echo "### $(echo "$db" | sed 's/[?].*//') — machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
  local rc=0
  python3 benches/hostile.py "http://127.0.0.1:$PORT" --requests "$REQUESTS" --pid "$SERVER" || rc=$?
  kill -0 "$SERVER" 2>/dev/null || { echo "server died"; rc=1; }
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  return $rc
}

status=0
run "sqlite://$WORK/hostile.db" || status=1
if [ -n "${FHIRBRIDGE_BENCH_POSTGRES_URL:-}" ]; then
  schema="hostile_$$"
  psql "$FHIRBRIDGE_BENCH_POSTGRES_URL" -qc "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema"
  sep='?'; case "$FHIRBRIDGE_BENCH_POSTGRES_URL" in *\?*) sep='&';; esac
  run "${FHIRBRIDGE_BENCH_POSTGRES_URL}${sep}options=-csearch_path%3D$schema" || status=1
  psql "$FHIRBRIDGE_BENCH_POSTGRES_URL" -qc "DROP SCHEMA IF EXISTS $schema CASCADE"
fi
exit $status
