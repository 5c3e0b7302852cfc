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
PORT="${PORT:-18081}"
source "$(dirname "$0")/lib.sh"
{ printf '[audit]\nenabled = false\n'; cat "$WORK/auth.toml"; } > "$WORK/auth-alone.toml"

start
seed bench-app
TOKEN=$(token "$ID" bench-app)
# The same patient's token from another app, which no Consent names.
ALONE=$(token "$ID" other-app)
stop

reads() {
  run "GET /fhir/Patient/{id}" -H "Authorization: Bearer $1" "$BASE/fhir/Patient/$ID"
  run "GET /fhir/MedicationRequest?patient={id}" -H "Authorization: Bearer $1" "$BASE/fhir/MedicationRequest?patient=$ID"
}
echo "$N patients, 3 MedicationRequests each, $((N / 100)) deny the token's client; $(machine)"
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
