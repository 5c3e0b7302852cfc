#!/usr/bin/env bash
# HTTP load harness: starts the release server on a fresh SQLite database, preloads
# N Patients, then runs wrk (2 threads, 16 connections, 10 s each) on:
#   GET /fhir/Patient/{id}, GET /fhir/Patient?identifier=system|value, POST /fhir/Patient
# and prints req/s, latency percentiles and the server's RSS.
# Usage: benches/load.sh [PRELOAD=1000] [DURATION=10s]
set -euo pipefail
cd "$(dirname "$0")/.."
PRELOAD="${1:-1000}"
DURATION="${2:-10s}"
PORT="${PORT:-18080}"
BASE="http://127.0.0.1:$PORT"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
# FHIRBRIDGE_BIN runs another build (e.g. the base commit's, for before/after figures).
if [ -z "${FHIRBRIDGE_BIN:-}" ]; then cargo build --release --quiet; fi
BIN="${FHIRBRIDGE_BIN:-${CARGO_TARGET_DIR:-target}/release/fhirbridge}"
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT

RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --database "sqlite://$WORK/load.db" &
SERVER=$!
for _ in $(seq 1 100); do curl -sf "$BASE/health/ready" >/dev/null && break; sleep 0.1; done

BODY=$(python3 -c 'import json;p=json.load(open("fixtures/patient-typical.json"));p["identifier"]=[{"system":"urn:bench","value":"bench-0"}];print(json.dumps(p))')
python3 - "$BASE" "$PRELOAD" <<'PY' > "$WORK/id"
import json, sys, http.client, urllib.parse
base, n = sys.argv[1], int(sys.argv[2])
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port)
p = json.load(open("fixtures/patient-typical.json"))
mid = None
for i in range(n):
    p["identifier"] = [{"system": "urn:bench", "value": f"bench-{i}"}]
    conn.request("POST", "/fhir/Patient", json.dumps(p), {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"})
    r = conn.getresponse(); r.read()
    assert r.status == 201, r.status
    if i == n // 2:
        mid = r.getheader("Location").split("/_history")[0].rsplit("/", 1)[1]
print(mid)
PY
ID=$(cat "$WORK/id")
MID=$((PRELOAD / 2))
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.body = [[$BODY]]
LUA

run() {
  echo "### $1"
  shift
  wrk -t2 -c16 -d"$DURATION" --latency "$@" | grep -E "Requests/sec|^ +(50|90|99)%|Non-2xx|Socket errors"
  grep -E "VmRSS|VmHWM" "/proc/$SERVER/status" | tr -s ' ' | tr '\n' ' '; echo
}
echo "preloaded $PRELOAD Patients; machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
run "GET /fhir/Patient/{id}" "$BASE/fhir/Patient/$ID"
run "GET /fhir/Patient?identifier=urn:bench|bench-$MID" "$BASE/fhir/Patient?identifier=urn:bench%7Cbench-$MID"
run "POST /fhir/Patient (durable, WAL synchronous=NORMAL)" -s "$WORK/post.lua" "$BASE/fhir/Patient"
