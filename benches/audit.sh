#!/usr/bin/env bash
# Audit cost: the same reads with a patient token (auth.mode = "required",
# RS384 token from a JWKS file), audit off and on, wrk 2 threads / 16
# connections, one sitting, one database:
#   GET /fhir/Patient/{id}
#   GET /fhir/MedicationRequest?patient={id}   (3 per patient)
# With audit on it reports the writer's batch size and commit latency from
# /metrics (fhirbridge_audit_batch_size, fhirbridge_audit_commit_seconds).
# Usage: benches/audit.sh [PATIENTS=1000] [DURATION=10s]
PORT="${PORT:-18082}"
source "$(dirname "$0")/lib.sh"
{ cat "$WORK/auth.toml"; printf '[audit]\nenabled = false\n'; } > "$WORK/off.toml"
{ cat "$WORK/auth.toml"; printf '[audit]\nenabled = true\n'; } > "$WORK/on.toml"

printf '[audit]\nenabled = false\n' > "$WORK/seed.toml"
start --config "$WORK/seed.toml"
seed
TOKEN=$(token "$ID")
stop
echo "$N patients, 3 MedicationRequests each; $(machine)"
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
