#!/usr/bin/env bash
# Access-control cost: the same reads with access control off and with a
# patient token (auth.mode = "required", RS384 token from a JWKS file),
# wrk 2 threads / 16 connections, one sitting, one database:
#   GET /fhir/Patient/{id}
#   GET /fhir/MedicationRequest?patient={id}   (3 per patient)
# Usage: benches/auth.sh [PATIENTS=1000] [DURATION=10s]
PORT="${PORT:-18081}"
source "$(dirname "$0")/lib.sh"

start
seed
TOKEN=$(token "$ID")
echo "$N patients, 3 MedicationRequests each; $(machine)"
echo "## access control off"
run "GET /fhir/Patient/{id}" "$BASE/fhir/Patient/$ID"
run "GET /fhir/MedicationRequest?patient={id}" "$BASE/fhir/MedicationRequest?patient=$ID"
stop
start --config "$WORK/auth.toml"
test "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/fhir/Patient/$ID")" = 401
test "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$BASE/fhir/Patient/$ID")" = 200
echo "## access control required, patient token (patient/*.rs)"
run "GET /fhir/Patient/{id}" -H "Authorization: Bearer $TOKEN" "$BASE/fhir/Patient/$ID"
run "GET /fhir/MedicationRequest?patient={id}" -H "Authorization: Bearer $TOKEN" "$BASE/fhir/MedicationRequest?patient=$ID"
stop
