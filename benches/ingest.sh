#!/usr/bin/env bash
# Ingest benchmark: loads the Synthea transaction bundles (98 bundles, 12,096
# resources; FHIRBRIDGE_SYNTHEA_DIR or ../shared/synthea) into a fresh database
# with the release binary, through the same code as POST /fhir, and prints
# resources/s. Runs on SQLite, and on PostgreSQL when FHIRBRIDGE_BENCH_POSTGRES_URL
# is set (a scratch database: its tables are dropped first).
# Profile validation is off here (Synthea patients are US Core, not UK Core, and
# carry extensions the UK Core policy rejects); structural checks stay on.
# Usage: benches/ingest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SYN="${FHIRBRIDGE_SYNTHEA_DIR:-../shared/synthea}"
[ -d "$SYN/R4" ] && SYN="$SYN/R4"
# FHIRBRIDGE_BIN runs another build (e.g. the base commit's, for before/after figures).
if [ -z "${FHIRBRIDGE_BIN:-}" ]; then cargo build --release --quiet; fi
BIN="${FHIRBRIDGE_BIN:-${CARGO_TARGET_DIR:-target}/release/fhirbridge}"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
printf '[validation]\nenabled = false\n' > "$WORK/bench.toml"

echo "== SQLite ($(nproc) cores)"
"$BIN" import --quiet --config "$WORK/bench.toml" --database "sqlite://$WORK/ingest.db" "$SYN"

if [ -n "${FHIRBRIDGE_BENCH_POSTGRES_URL:-}" ]; then
  echo "== PostgreSQL"
  psql -q "$FHIRBRIDGE_BENCH_POSTGRES_URL" -c 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;' >/dev/null
  "$BIN" import --quiet --config "$WORK/bench.toml" --database "$FHIRBRIDGE_BENCH_POSTGRES_URL" "$SYN"
fi
