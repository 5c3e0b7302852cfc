#!/usr/bin/env bash
# Consent enforcement and audit cost: the same reads with a patient token
# (auth.mode = "required", RS384 token from a JWKS file) under
#   1. auth alone (no Consents, audit off), and
#   2. auth + data-sharing denies in force + audit on: 1% of the patients deny
#      the token's client (so every request carries a non-empty denied set),
#      every request durably audited before its response;
# wrk 2 threads / 16 connections, one sitting, one database:
#   GET /fhir/Patient/{id}
#   GET /fhir/MedicationRequest?patient={id}   (3 per patient)
# Usage: benches/consent.sh [PATIENTS=1000] [DURATION=10s]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
DURATION="${2:-10s}"
PORT="${PORT:-18081}"
BASE="http://127.0.0.1:$PORT"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
if [ -z "${FHIRBRIDGE_BIN:-}" ]; then cargo build --release --quiet; fi
BIN="${FHIRBRIDGE_BIN:-${CARGO_TARGET_DIR:-target}/release/fhirbridge}"
WORK=$(mktemp -d)
SERVER=
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
DB="sqlite://$WORK/consent.db"

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
cat > "$WORK/auth-alone.toml" <<TOML
[audit]
enabled = false
[auth]
mode = "required"
audience = "https://bench.test/fhir"
[[auth.issuers]]
issuer = "https://login.bench.test"
jwks_file = "$WORK/jwks.json"
patient_claim = "patient"
TOML
cat > "$WORK/auth.toml" <<TOML
[auth]
mode = "required"
audience = "https://bench.test/fhir"
[[auth.issuers]]
issuer = "https://login.bench.test"
jwks_file = "$WORK/jwks.json"
patient_claim = "patient"
TOML

start
python3 - "$BASE" "$N" > "$WORK/id" <<'PY'
import json, sys, http.client, urllib.parse
base, n = sys.argv[1], int(sys.argv[2])
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port)
p = json.load(open("fixtures/patient-typical.json"))
MR = open("fixtures/ukcore/medicationrequest-acute-order-amoxicillin.json").read()
def deny(pid):
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "INFA"}]}],
            "patient": {"reference": f"Patient/{pid}"}, "policyRule": {"text": "bench"},
            "provision": {"type": "permit", "provision": [{"type": "deny", "actor": [{"role": {"text": "app"},
                "reference": {"identifier": {"system": "https://fhir.nhs.uk/Id/client-id", "value": "bench-app"}}}]}]}}
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
    if i % 100 == 7:
        conn.request("POST", "/fhir/Consent", json.dumps(deny(pid)), {"Content-Type": "application/fhir+json"})
        r = conn.getresponse(); body = r.read()
        assert r.status == 201, (r.status, body[:600])
print(f"p{n // 2}")
PY
ID=$(cat "$WORK/id")

b64() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
NOW=$(date +%s)
HEADER=$(printf '{"alg":"RS384","kid":"bench","typ":"JWT"}' | b64)
CLAIMS=$(printf '{"iss":"https://login.bench.test","aud":"https://bench.test/fhir","sub":"bench","iat":%d,"exp":%d,"scope":"patient/*.rs","patient":"%s","client_id":"bench-app"}' "$NOW" $((NOW + 3600)) "$ID" | b64)
SIG=$(printf '%s.%s' "$HEADER" "$CLAIMS" | openssl dgst -sha384 -sign "$WORK/key.pem" -binary | b64)
TOKEN="$HEADER.$CLAIMS.$SIG"
# The same patient's token from another app, which no Consent names.
CLAIMS=$(printf '{"iss":"https://login.bench.test","aud":"https://bench.test/fhir","sub":"bench","iat":%d,"exp":%d,"scope":"patient/*.rs","patient":"%s","client_id":"other-app"}' "$NOW" $((NOW + 3600)) "$ID" | b64)
SIG=$(printf '%s.%s' "$HEADER" "$CLAIMS" | openssl dgst -sha384 -sign "$WORK/key.pem" -binary | b64)
ALONE="$HEADER.$CLAIMS.$SIG"
stop

run() {
  echo "### $1"
  shift
  wrk -t2 -c16 -d"$DURATION" --latency "$@" | grep -E "Requests/sec|^ +(50|99)%|Non-2xx|Socket errors"
}
reads() {
  run "GET /fhir/Patient/{id}" -H "Authorization: Bearer $1" "$BASE/fhir/Patient/$ID"
  run "GET /fhir/MedicationRequest?patient={id}" -H "Authorization: Bearer $1" "$BASE/fhir/MedicationRequest?patient=$ID"
}
echo "$N patients, 3 MedicationRequests each, $((N / 100)) deny the token's client; machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
echo "## 1. auth alone (audit off; a token of an app no Consent names)"
start --config "$WORK/auth-alone.toml"
test "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ALONE" "$BASE/fhir/Patient/$ID")" = 200
reads "$ALONE"
stop
echo "## 2. auth + denies in force + audit on"
start --config "$WORK/auth.toml"
test "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$BASE/fhir/Patient/$ID")" = 200
reads "$TOKEN"
curl -s "$BASE/metrics" | grep -E "^fhirbridge_audit_(batch_size|commit_seconds)_(sum|count)" || true
stop
