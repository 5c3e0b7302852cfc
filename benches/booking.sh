#!/usr/bin/env bash
# Booking journeys on the demo practice (`fhirbridge demo seed`: 3 clinicians,
# 15-minute slots 08:00-18:00 on the weekdays of the next two weeks), release
# build, SQLite, auth required, audit on (the default):
#   1. free-slot search by the practice's ODS code with _include=Slot:schedule,
#      one connection (latency) and 16 (throughput), patient and system tokens;
#   2. booking latency: N sequential bookings of different free slots (system
#      token, so the practice's per-patient maximum does not stop the run).
# Usage: benches/booking.sh [BOOKINGS] [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
BOOKINGS="${1:-300}"
DURATION="${2:-10s}"
PORT="${PORT:-18190}"
BASE="http://127.0.0.1:$PORT"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
if [ -z "${FHIRBRIDGE_BIN:-}" ]; then cargo build --release --quiet --bin fhirbridge; fi
BIN="${FHIRBRIDGE_BIN:-${CARGO_TARGET_DIR:-target}/release/fhirbridge}"
WORK=$(mktemp -d)
SERVER=
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
DB="sqlite://$WORK/bench.db"
printf '[auth]\nmode = "required"\n' > "$WORK/settings.toml"
export FHIRBRIDGE_CONFIG="$WORK/settings.toml" FHIRBRIDGE_DATABASE_URL="$DB" FHIRBRIDGE_LISTEN="127.0.0.1:$PORT"

"$BIN" demo seed > "$WORK/seed.txt"; head -1 "$WORK/seed.txt"
PATIENT=$("$BIN" demo token --patient demo-patient-1 | tail -1)
SYSTEM=$("$BIN" demo token --system | tail -1)
RUST_LOG=warn "$BIN" serve &
SERVER=$!
for _ in $(seq 1 100); do curl -sf "$BASE/health/ready" >/dev/null && break; sleep 0.1; done

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(curl -s -H "Authorization: Bearer $SYSTEM" "$BASE/fhir/Slot?_summary=count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])') slots"
FROM=$(date -u -d '+1 day' +%Y-%m-%d)
TO=$(date -u -d '+14 day' +%Y-%m-%d)
URL="$BASE/fhir/Slot?status=free&start=ge$FROM&start=le$TO&schedule.actor:Location.organization.identifier=https://fhir.nhs.uk/Id/ods-organization-code%7CA81001&_include=Slot:schedule"
for who in PATIENT SYSTEM; do
  for conns in 1 16; do
    printf '%-8s free-slot search, %2s connection(s): ' "$who" "$conns"
    wrk -t"$(( conns > 1 ? 2 : 1 ))" -c"$conns" -d"$DURATION" --latency -H "Authorization: Bearer ${!who}" "$URL" \
      | awk '/^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Requests\/sec/ {rps=$2} END {printf "p50 %s  p99 %s  %s req/s\n", p50, p99, rps}'
  done
done

python3 - "$BASE" "$SYSTEM" "$BOOKINGS" "$FROM" "$TO" <<'PY'
import json, sys, time, http.client, urllib.parse
base, token, n, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
u = urllib.parse.urlparse(base)
c = http.client.HTTPConnection(u.hostname, u.port)
h = {"Authorization": "Bearer " + token, "Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
c.request("GET", f"/fhir/Slot?status=free&start=ge{start}&start=le{end}&_count={n}", headers=h)
slots = [e["resource"] for e in json.loads(c.getresponse().read()).get("entry", [])]
times = []
for s in slots[:n]:
    a = {"resourceType": "Appointment", "status": "booked", "slot": [{"reference": "Slot/" + s["id"]}],
         "start": s["start"], "end": s["end"],
         "participant": [{"actor": {"reference": "Patient/demo-patient-1"}, "status": "accepted"}]}
    t = time.perf_counter()
    c.request("POST", "/fhir/Appointment", json.dumps(a), h)
    r = c.getresponse(); r.read()
    times.append(time.perf_counter() - t)
    assert r.status == 201, r.status
times.sort()
print("booking (system, sequential, %d slots): p50 %.2f ms  p99 %.2f ms" % (
    len(times), times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000))
PY
