#!/usr/bin/env bash
# The GP-supplier bridge against a local sandbox supplier (release builds,
# SQLite, audit on, access control off on loopback):
#   1. latency, one sequential client, N requests each: a bridged patient's
#      record (MedicationRequest?patient=) and a free-slot search (7 days, one
#      practice, _include=Slot:schedule), each straight to the sandbox (the
#      GP Connect call the bridge makes) and through the bridge, uncached
#      (cache TTL 0) and cached (the default TTLs);
#   2. the outage: the supplier down for OUTAGE seconds while 200 repeat
#      requests are made, then up: time to drain, lost, duplicated.
# Usage: benches/bridge.sh [N] [OUTAGE]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-500}"
OUTAGE="${2:-60}"
PORT="${PORT:-18191}"
SB_PORT="${SB_PORT:-18192}"
if [ -z "${FHIRBRIDGE_BIN:-}" ]; then cargo build --release --quiet --bin fhirbridge; fi
BIN="${FHIRBRIDGE_BIN:-${CARGO_TARGET_DIR:-target}/release/fhirbridge}"
WORK=$(mktemp -d)
SERVER=
SANDBOX=
trap 'kill $SERVER $SANDBOX 2>/dev/null || true; rm -rf "$WORK"' EXIT

sandbox() { # $1: repeat plans per patient
  [ -n "$SANDBOX" ] && { kill "$SANDBOX"; wait "$SANDBOX" 2>/dev/null || true; }
  RUST_LOG=warn "$BIN" sandbox-supplier --listen "127.0.0.1:$SB_PORT" --repeat-plans "$1" > "$WORK/sandbox.log" 2>&1 &
  SANDBOX=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$SB_PORT/admin/stats" >/dev/null && return; sleep 0.1; done
}
# Latency: 3 repeat plans per patient (a record of 3 plans, 3 issues, 3 statements, 3 medications, 1 allergy).
sandbox 3

serve() { # $1: extra supplier TOML lines
  [ -n "$SERVER" ] && { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; }
  cat > "$WORK/settings.toml" <<EOF
[storage]
database_url = "sqlite://$WORK/bench.db"
[jobs]
workers = 4
poll_ms = 100
[[suppliers]]
name = "sandbox"
kind = "sandbox"
base_url = "http://127.0.0.1:$SB_PORT/fhir"
ods_codes = ["A81002", "A81003"]
types = ["Appointment", "Slot", "Schedule", "MedicationRequest", "MedicationStatement", "AllergyIntolerance", "Task"]
timeout_ms = 2000
asid_from = "200000000359"
asid_to = "918999198993"
$1
EOF
  RUST_LOG=warn "$BIN" serve --config "$WORK/settings.toml" --listen "127.0.0.1:$PORT" > "$WORK/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && return; sleep 0.1; done
  echo "server did not start"; cat "$WORK/server.log"; exit 1
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
serve 'cache_ttl_secs = { MedicationRequest = 0, Slot = 0 }'
for p in "p1 9000000009" "p2 9000000017"; do
  set -- $p
  curl -sf -X PUT "http://127.0.0.1:$PORT/fhir/Patient/$1" -H 'Content-Type: application/fhir+json' -d "{\"resourceType\":\"Patient\",\"id\":\"$1\",\"identifier\":[{\"system\":\"https://fhir.nhs.uk/Id/nhs-number\",\"value\":\"$2\"}],\"name\":[{\"family\":\"Bench\",\"given\":[\"Test\"]}],\"gender\":\"female\",\"birthDate\":\"1980-01-01\",\"generalPractitioner\":[{\"identifier\":{\"system\":\"https://fhir.nhs.uk/Id/ods-organization-code\",\"value\":\"A81002\"}}]}" > /dev/null
done

cat > "$WORK/latency.py" <<'PY'
import base64, json, sys, time, uuid, http.client
port, sb, n, label = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
day = lambda d: time.strftime("%Y-%m-%d", time.gmtime(time.time() + d * 86400))
def jwt(scope):
    b = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    t = int(time.time())
    return b({"alg": "none", "typ": "JWT"}) + "." + b({"iss": "bench", "sub": "bench", "aud": f"http://127.0.0.1:{sb}/fhir",
        "exp": t + 300, "iat": t, "reason_for_request": "directcare", "requested_scope": scope,
        "requesting_device": {"resourceType": "Device", "identifier": [{"system": "s", "value": "v"}], "model": "m", "version": "1"},
        "requesting_organization": {"resourceType": "Organization", "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "X"}], "name": "n"},
        "requesting_practitioner": {"resourceType": "Practitioner", "id": "bench", "identifier": [{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "u"}], "name": [{"family": "f", "given": ["g"]}]}}) + "."
def ssp(interaction, scope):
    return {"Ssp-TraceID": str(uuid.uuid4()), "Ssp-From": "200000000359", "Ssp-To": "918999198993",
            "Ssp-InteractionID": "urn:nhs:names:services:gpconnect:fhir:" + interaction,
            "Authorization": "Bearer " + jwt(scope), "Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
record = json.dumps({"resourceType": "Parameters", "parameter": [
    {"name": "patientNHSNumber", "valueIdentifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9000000009"}},
    {"name": "includeAllergies", "part": [{"name": "includeResolvedAllergies", "valueBoolean": True}]},
    {"name": "includeMedication", "part": [{"name": "includePrescriptionIssues", "valueBoolean": True}]}]})
slots_direct = (f"/fhir/Slot?status=free&start=ge{day(1)}T00:00:00%2B00:00&end=le{day(8)}T00:00:00%2B00:00&_include=Slot:schedule"
    "&_include:recurse=Schedule:actor:Practitioner&_include:recurse=Schedule:actor:Location&_include:recurse=Location:managingOrganization"
    "&searchFilter=https://fhir.nhs.uk/Id/ods-organization-code%7CFHIRBRIDGE")
slots_bridge = (f"/fhir/Slot?status=free&start=ge{day(1)}&start=le{day(8)}"
    "&schedule.actor:Location.organization.identifier=https://fhir.nhs.uk/Id/ods-organization-code%7CA81002&_include=Slot:schedule&_count=500")
cases = {
    "direct": [("record", sb, "POST", "/fhir/Patient/$gpc.getstructuredrecord", record, "operation:gpc.getstructuredrecord-1", "patient/*.read"),
               ("free slots", sb, "GET", slots_direct, None, "rest:search:slot-1", "organization/*.read")],
    "bridge": [("record", port, "GET", "/fhir/MedicationRequest?patient=p1", None, None, None),
               ("free slots", port, "GET", slots_bridge, None, None, None)],
}[label.split(",")[0].split()[0]]
for name, p, method, path, body, interaction, scope in cases:
    c = http.client.HTTPConnection("127.0.0.1", p)
    times = []
    for i in range(n + 20):
        h = ssp(interaction, scope) if interaction else {"Accept": "application/fhir+json"}
        t = time.perf_counter()
        c.request(method, path, body, h)
        r = c.getresponse(); r.read()
        assert r.status == 200, (name, r.status)
        if i >= 20:
            times.append(time.perf_counter() - t)
    times.sort()
    print("%-22s %-11s p50 %6.2f ms  p99 %6.2f ms" % (label, name, times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000))
PY
python3 "$WORK/latency.py" "$PORT" "$SB_PORT" "$N" "direct to the sandbox"
python3 "$WORK/latency.py" "$PORT" "$SB_PORT" "$N" "bridge, uncached"
serve ''
python3 "$WORK/latency.py" "$PORT" "$SB_PORT" "$N" "bridge, cached"

# The outage: 100 plans per patient, so 200 requests have a plan each.
sandbox 100
python3 - "$PORT" "$SB_PORT" "$OUTAGE" <<'PY'
import json, sys, time, http.client
port, sb, outage = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def call(p, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", p, timeout=30)
    c.request(method, path, json.dumps(body) if body is not None else None, {"Content-Type": "application/json"})
    r = c.getresponse(); data = r.read()
    return r.status, (json.loads(data) if data else None)
call(sb, "PUT", "/admin/faults", {"down": True})
start = time.time()
ids = []
for n in range(200):
    patient, nhs = ("p1", "9000000009") if n % 2 == 0 else ("p2", "9000000017")
    task = {"resourceType": "Task", "status": "requested", "intent": "order",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "103742009"}]},
            "for": {"reference": "Patient/" + patient},
            "focus": {"reference": "MedicationRequest/sandbox.medreq-%s-%d-plan" % (nhs, n // 2 + 1)}}
    s, t = call(port, "POST", "/fhir/Task", task)
    assert s == 201, (s, t)
    ids.append(t["id"])
    time.sleep(max(0, start + outage * (n + 1) / 200 - time.time()))
time.sleep(max(0, start + outage - time.time()))
call(sb, "PUT", "/admin/faults", {"down": False})
up = time.time()
while call(sb, "GET", "/admin/stats")[1]["tasks_created"] < 200 and time.time() - up < 300:
    time.sleep(0.2)
drained = time.time() - up
stats = call(sb, "GET", "/admin/stats")[1]
delivered = sum(1 for i in ids if call(port, "GET", "/fhir/Task/" + i)[1]["businessStatus"]["coding"][0]["code"] == "delivered")
print("outage %d s, 200 repeat requests: all accepted (201, queued); after recovery %d delivered in %.1f s; at the supplier %d created from %d posts: %d lost, %d duplicated"
      % (outage, delivered, drained, stats["tasks_created"], stats["task_posts"], 200 - stats["tasks_created"], max(0, stats["tasks_created"] - 200)))
PY
