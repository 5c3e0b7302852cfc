#!/usr/bin/env bash
# Audit cost: the same reads with a patient token (auth.mode = "required",
# RS384 token from a JWKS file), audit off and on, wrk 2 threads / 16
# connections, one sitting, one database:
#   GET /fhir/Patient/{id}
#   GET /fhir/MedicationRequest?patient={id}   (3 per patient)
# With audit on it reports the writer's batch size and commit latency from
# /metrics (fhirbridge_audit_batch_size, fhirbridge_audit_commit_seconds).
# Usage: benches/audit.sh [PATIENTS=1000] [DURATION=10s]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
DURATION="${2:-10s}"
PORT="${PORT:-18082}"
BASE="http://127.0.0.1:$PORT"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
if [ -z "${FHIRBRIDGE_BIN:-}" ]; then cargo build --release --quiet; fi
BIN="${FHIRBRIDGE_BIN:-${CARGO_TARGET_DIR:-target}/release/fhirbridge}"
WORK=$(mktemp -d)
SERVER=
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
DB="sqlite://$WORK/audit.db"

start() {
  RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --database "$DB" "$@" &
  SERVER=$!
  for _ in $(seq 1 100); do curl -sf "$BASE/health/ready" >/dev/null && break; sleep 0.1; done
}
stop() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; }

# Keys and the issuer's JWKS (RSA 2048, RS384).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/key.pem" 2>/dev/null
MOD=$(openssl rsa -in "$WORK/key.pem" -noout -modulus | cut -d= -f2)
python3 - "$MOD" > "$WORK/jwks.json" <<'PY'
import base64, json, sys
n = bytes.fromhex(sys.argv[1])
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS384", "use": "sig", "n": b(n), "e": "AQAB"}]}))
PY
cat > "$WORK/auth.toml" <<TOML
[auth]
mode = "required"
audience = "https://bench.test/fhir"
[[auth.issuers]]
issuer = "https://login.bench.test"
jwks_file = "$WORK/jwks.json"
patient_claim = "patient"
TOML
{ cat "$WORK/auth.toml"; printf '[audit]\nenabled = false\n'; } > "$WORK/off.toml"
{ cat "$WORK/auth.toml"; printf '[audit]\nenabled = true\n'; } > "$WORK/on.toml"

printf '[audit]\nenabled = false\n' > "$WORK/seed.toml"
start --config "$WORK/seed.toml"
python3 - "$BASE" "$N" > "$WORK/id" <<'PY'
import json, sys, http.client, urllib.parse
base, n = sys.argv[1], int(sys.argv[2])
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port)
p = json.load(open("fixtures/patient-typical.json"))
MR = open("fixtures/ukcore/medicationrequest-acute-order-amoxicillin.json").read()
for i in range(n):
    pid = f"p{i}"
    p["id"] = pid
    p["identifier"] = [{"system": "urn:bench", "value": f"bench-{i}"}]
    entries = [{"resource": dict(p), "request": {"method": "PUT", "url": f"Patient/{pid}"}}]
    for k in range(3):
        mr = json.loads(MR)
        mr.pop("id", None)
        mr["subject"] = {"reference": f"Patient/{pid}"}
        mr["authoredOn"] = "2026-01-0%d" % (k + 1)
        entries.append({"resource": mr, "request": {"method": "POST", "url": "MedicationRequest"}})
    conn.request("POST", "/fhir", json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
                 {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"})
    r = conn.getresponse(); body = r.read()
    assert r.status == 200, (r.status, body[:600])
print(f"p{n // 2}")
PY
ID=$(cat "$WORK/id")

b64() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
NOW=$(date +%s)
HEADER=$(printf '{"alg":"RS384","kid":"bench","typ":"JWT"}' | b64)
CLAIMS=$(printf '{"iss":"https://login.bench.test","aud":"https://bench.test/fhir","sub":"bench","iat":%d,"exp":%d,"scope":"patient/*.rs","patient":"%s"}' "$NOW" $((NOW + 3600)) "$ID" | b64)
SIG=$(printf '%s.%s' "$HEADER" "$CLAIMS" | openssl dgst -sha384 -sign "$WORK/key.pem" -binary | b64)
TOKEN="$HEADER.$CLAIMS.$SIG"

run() {
  echo "### $1"
  shift
  wrk -t2 -c16 -d"$DURATION" --latency "$@" | grep -E "Requests/sec|^ +(50|99)%|Non-2xx|Socket errors"
}
stop
echo "$N patients, 3 MedicationRequests each; machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
for mode in off on; do
  start --config "$WORK/$mode.toml"
  test "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$BASE/fhir/Patient/$ID")" = 200
  echo "## auth required, patient token, audit $mode"
  run "GET /fhir/Patient/{id}" -H "Authorization: Bearer $TOKEN" "$BASE/fhir/Patient/$ID"
  run "GET /fhir/MedicationRequest?patient={id}" -H "Authorization: Bearer $TOKEN" "$BASE/fhir/MedicationRequest?patient=$ID"
  if [ "$mode" = on ]; then
    curl -s "$BASE/metrics" | python3 -c '
import sys
m = {}
for line in sys.stdin:
    if line.startswith("fhirbridge_audit_") and not line.startswith("#"):
        k, v = line.rsplit(" ", 1)
        m[k] = float(v)
n = m.get("fhirbridge_audit_batch_size_count", 0)
if n:
    print("audit commits: %d, events: %d, mean batch %.1f events, mean commit %.2f ms" % (
        n, m.get("fhirbridge_audit_events_total", 0),
        m["fhirbridge_audit_batch_size_sum"] / n,
        1000 * m["fhirbridge_audit_commit_seconds_sum"] / n))
for k, v in sorted(m.items()):
    if "batch_size_bucket" in k or "commit_seconds_bucket" in k:
        print(" ", k, int(v))
'
  fi
  stop
done
