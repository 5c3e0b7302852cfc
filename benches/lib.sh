# Shared by the wrk scripts benches/{auth,audit,consent}.sh (sourced, not run):
# the release binary, a scratch SQLite database, one server at a time, an
# RS384 issuer key with its JWKS and [auth] config, the seeded population and
# patient tokens. Each script sets PORT's default before sourcing.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
DURATION="${2:-10s}"
BASE="http://127.0.0.1:$PORT"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
if [ -z "${FHIRBRIDGE_BIN:-}" ]; then cargo build --release --quiet; fi
BIN="${FHIRBRIDGE_BIN:-${CARGO_TARGET_DIR:-target}/release/fhirbridge}"
WORK=$(mktemp -d)
SERVER=
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
DB="sqlite://$WORK/bench.db"

start() {
  RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --database "$DB" "$@" &
  SERVER=$!
  for _ in $(seq 1 100); do curl -sf "$BASE/health/ready" >/dev/null && break; sleep 0.1; done
}
stop() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; }

# Keys and the issuer's JWKS (RSA 2048, RS384); $WORK/auth.toml trusts it.
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

# seed [DENY_CLIENT]: N patients with 3 MedicationRequests each, through the
# running server; with DENY_CLIENT, every 100th patient (p7, p107, ...) has a
# data-sharing Consent denying that client. Sets ID to the middle patient.
seed() {
  python3 - "$BASE" "$N" "${1:-}" > "$WORK/id" <<'PY'
import json, sys, http.client, urllib.parse
base, n, deny_client = sys.argv[1], int(sys.argv[2]), sys.argv[3]
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
                "reference": {"identifier": {"system": "https://fhir.nhs.uk/Id/client-id", "value": deny_client}}}]}]}}
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
    if deny_client and i % 100 == 7:
        conn.request("POST", "/fhir/Consent", json.dumps(deny(pid)), {"Content-Type": "application/fhir+json"})
        r = conn.getresponse(); body = r.read()
        assert r.status == 201, (r.status, body[:600])
print(f"p{n // 2}")
PY
  ID=$(cat "$WORK/id")
}

# token PATIENT [CLIENT]: a patient/*.rs token of the bench issuer, valid 1 h.
b64() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
token() {
  local now header claims sig client=""
  now=$(date +%s)
  [ -n "${2:-}" ] && client=$(printf ',"client_id":"%s"' "$2")
  header=$(printf '{"alg":"RS384","kid":"bench","typ":"JWT"}' | b64)
  claims=$(printf '{"iss":"https://login.bench.test","aud":"https://bench.test/fhir","sub":"bench","iat":%d,"exp":%d,"scope":"patient/*.rs","patient":"%s"%s}' "$now" $((now + 3600)) "$1" "$client" | b64)
  sig=$(printf '%s.%s' "$header" "$claims" | openssl dgst -sha384 -sign "$WORK/key.pem" -binary | b64)
  echo "$header.$claims.$sig"
}

run() {
  echo "### $1"
  shift
  wrk -t2 -c16 -d"$DURATION" --latency "$@" | grep -E "Requests/sec|^ +(50|99)%|Non-2xx|Socket errors"
}
machine() { echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"; }
