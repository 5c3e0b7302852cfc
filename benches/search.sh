#!/usr/bin/env bash
# Search latency vs. population size. For each size in SIZES (default "1000 100000"):
# generates a deterministic population (benches/gen_population.py: N Patients, one
# Appointment and one MedicationRequest each, plus practices, GPs and their sites; see
# PRACTICES below), imports it into a fresh database with the release binary
# (profile validation off, structural checks on), starts the server on it and runs a
# mix of typical searches from a sequential keep-alive python3 client: WARMUP untimed
# requests, then REQUESTS timed requests per kind (the kinds of the ratio interleaved
# round-robin, then the kinds outside it the same way; parameter values drawn at
# random from the population). Latency is client-side
# (request sent to body read); a kind that has used 90 s of request time stops early
# and says so (its percentiles then rest on fewer samples). Prints p50/p95/p99 per kind and size, then the
# p50 ratio largest/smallest size per kind and its geometric mean over the mix, and
# checks two targets:
#   (a) Patient?identifier=nhs-number|... p50 <= 2 ms at the largest size;
#   (b) geometric-mean p50 ratio over the mix <= 1.5.
# Responses must be 200, and searches that target one patient must match exactly
# what the generator wrote (1 match); any violation is listed and fails the run.
# PRACTICES=scaled (default) sizes the practices and GPs with the population as England
# has them (one practice per 5,000 patients, one GP per 2,000: a practice's list and a
# GP's diary are the same size at every N, and 100,000 patients get 20 practices and 50
# GPs); PRACTICES=fixed always makes 20 practices and 50 GPs, so at 1,000 patients
# practice and practitioner searches return 50x fewer matches than at 100,000.
# On PostgreSQL with FHIRBRIDGE_BENCH_POSTGRES_URL (as for ingest.sh, e.g.
# postgres://postgres@127.0.0.1:5432/test; the user must be allowed to create
# databases): each size gets its own database on that server,
# fhirbridge_bench_<N>_<practices>, created afresh unless BENCH_DIR reuses it.
# BENCH_DIR=dir keeps the generated populations and databases there and reuses them on
# the next run (skipping generation and import), for iterating on query speed.
# Usage: [SIZES="1000 100000"] [REQUESTS=300] [WARMUP=50] [PORT=18090] [PRACTICES=scaled|fixed]
#        [BENCH_DIR=dir] benches/search.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES="${SIZES:-1000 100000}"
REQUESTS="${REQUESTS:-300}"
WARMUP="${WARMUP:-50}"
PORT="${PORT:-18090}"
PRACTICES="${PRACTICES:-scaled}"
BASE="http://127.0.0.1:$PORT"
cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/fhirbridge"
KEEP="${BENCH_DIR:-}"
if [ -n "$KEEP" ]; then mkdir -p "$KEEP"; WORK=$(cd "$KEEP" && pwd); else WORK=$(mktemp -d); fi
SERVER=""
stop_server() {
  if [ -n "$SERVER" ]; then
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    SERVER=""
  fi
}
trap 'stop_server; [ -n "$KEEP" ] || rm -rf "$WORK"' EXIT
printf '[validation]\nenabled = false\n' > "$WORK/bench.toml"

if curl -sf "$BASE/health/live" >/dev/null 2>&1; then
  echo "something already answers on port $PORT; set PORT" >&2
  exit 1
fi

cat > "$WORK/client.py" <<'PY'
import http.client, json, math, os, random, sys, time, urllib.parse

NHS = "https://fhir.nhs.uk/Id/nhs-number"
HEADERS = {"Accept": "application/fhir+json"}
KIND_BUDGET_S = 90.0  # stop timing a kind once it has used this much wall time


def pct(xs, q):
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def load_population(path):
    patients, orgs, pracs = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            head = line[:48]
            if '"Patient"' in head:
                r = json.loads(line)
                patients.append((r["id"], r["identifier"][0]["value"], r["name"][0]["family"],
                                 r["name"][0]["given"], r["birthDate"]))
            elif '"Organization"' in head:
                orgs.append(json.loads(line)["id"])
            elif '"Practitioner"' in head:
                pracs.append(json.loads(line)["id"])
    return patients, orgs, pracs


def day(s, plus=0):
    import datetime as dt
    return (dt.date.fromisoformat(s) + dt.timedelta(days=plus)).isoformat()


def kinds(patients, orgs, pracs):
    """(label, in_ratio, expectation, path maker). Expectation: 'one' = exactly 1 match
    (and 1 include for the _include kind), 'some' = at least 1, 'any' = no check."""
    P = lambda r: r.choice(patients)  # noqa: E731
    q = lambda path, pairs: f"/fhir/{path}?{urllib.parse.urlencode(pairs)}"  # noqa: E731

    def family_birthdate(r):
        _, _, fam, _, bd = P(r)
        return q("Patient", [("family", fam[: r.choice((3, 4))]), ("birthdate", bd)])

    def birth_range(r):
        d = f"{r.randint(1930, 2020)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
        return q("Patient", [("birthdate", "ge" + d), ("birthdate", "lt" + day(d, 7)), ("_count", "20")])

    def actor_week(r):
        w = day("2026-01-01", r.randrange(358))
        return q("Appointment", [("actor", "Practitioner/" + r.choice(pracs)), ("date", "ge" + w),
                                 ("date", "lt" + day(w, 7)), ("_count", "50")])

    gp = lambda r: [("general-practitioner", "Organization/" + r.choice(orgs)), ("_count", "20")]  # noqa: E731
    return [
        ("identifier", True, "one", lambda r: q("Patient", [("identifier", f"{NHS}|{P(r)[1]}")])),
        ("family+birthdate", True, "some", family_birthdate),
        ("name&_count=20", True, "some", lambda r: q("Patient", [("name", r.choice(P(r)[3])), ("_count", "20")])),
        ("birthdate-week&_count=20", True, "any", birth_range),
        ("Appt?patient", True, "one", lambda r: q("Appointment", [("patient", "Patient/" + P(r)[0])])),
        ("Appt?actor+date-week", True, "any", actor_week),
        ("MedReq?subject+status", True, "one",
         lambda r: q("MedicationRequest", [("subject", "Patient/" + P(r)[0]), ("status", "active")])),
        ("MedReq?patient&_include", True, "one",
         lambda r: q("MedicationRequest", [("patient", P(r)[0]), ("_include", "MedicationRequest:requester")])),
        ("Patient/x/MedReq", True, "one", lambda r: f"/fhir/Patient/{P(r)[0]}/MedicationRequest"),
        ("gp&_count=20", True, "some", lambda r: q("Patient", gp(r))),
        ("gp&_total=accurate", False, "some", lambda r: q("Patient", gp(r) + [("_total", "accurate")])),
        ("gp&_total=none", False, "some", lambda r: q("Patient", gp(r) + [("_total", "none")])),
        ("family&_sort=birthdate", False, "some",
         lambda r: q("Patient", [("family", P(r)[2]), ("_sort", "birthdate"), ("_count", "20")])),
        ("_sort=-birthdate (all)", False, "some",
         lambda r: q("Patient", [("_sort", "-birthdate"), ("_count", "20"), ("_total", "none")])),
    ]


class Client:
    def __init__(self, base):
        u = urllib.parse.urlparse(base)
        self.host, self.port = u.hostname, u.port
        self.conn = None

    def get(self, path):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                t0 = time.perf_counter()
                self.conn.request("GET", path, headers=HEADERS)
                resp = self.conn.getresponse()
                body = resp.read()
                dt = time.perf_counter() - t0
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return resp.status, body, dt
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


def check(expect, status, body):
    """(matches, includes, total, problem or None)"""
    if status != 200:
        return 0, 0, None, f"HTTP {status}"
    b = json.loads(body)
    modes = [e.get("search", {}).get("mode") for e in b.get("entry", [])]
    m, inc = modes.count("match"), modes.count("include")
    outcome = [e["resource"] for e in b.get("entry", []) if e.get("search", {}).get("mode") == "outcome"]
    if outcome:
        return m, inc, b.get("total"), "OperationOutcome in searchset: " + json.dumps(outcome)[:300]
    if expect == "one" and m != 1:
        return m, inc, b.get("total"), f"expected exactly 1 match, got {m}"
    if expect == "some" and m < 1:
        return m, inc, b.get("total"), "expected at least 1 match, got 0"
    return m, inc, b.get("total"), None


def run(base, data, size, out, requests, warmup):
    t0 = time.perf_counter()
    patients, orgs, pracs = load_population(data)
    print(f"  client: {len(patients)} patients, {len(orgs)} organizations, {len(pracs)} practitioners "
          f"read from the generated file in {time.perf_counter() - t0:.1f} s")
    c = Client(base)
    st, _, _ = c.get(f"/fhir/Patient/{patients[0][0]}")
    assert st == 200, f"GET Patient/{patients[0][0]} gave {st}: ids were not preserved by the import"
    ks = kinds(patients, orgs, pracs)
    rngs = [random.Random(f"{size}-{i}") for i in range(len(ks))]
    wr = random.Random(f"warmup-{size}")
    for i in range(warmup):
        c.get(ks[i % len(ks)][3](wr))
    lat = {k[0]: [] for k in ks}
    used = {k[0]: 0.0 for k in ks}
    stats = {k[0]: {"matches": 0, "includes": 0, "total": 0, "totals": 0} for k in ks}
    failures = []
    # The kinds in the ratio run interleaved first; the others (heavier ones
    # among them) afterwards, so they cannot push the mix's pages out of cache.
    rounds = [(True, i) for i in range(requests)] + [(False, i) for i in range(requests)]
    for phase, _ in rounds:
        for (label, in_ratio, expect, make), r in zip(ks, rngs):
            if in_ratio != phase or used[label] > KIND_BUDGET_S:
                continue
            path = make(r)
            status, body, dt = c.get(path)
            used[label] += dt
            lat[label].append(dt * 1000.0)
            m, inc, total, problem = check(expect, status, body)
            s = stats[label]
            s["matches"] += m
            s["includes"] += inc
            if total is not None:
                s["total"] += total
                s["totals"] += 1
            if label.startswith("MedReq?patient&_include") and problem is None and inc != 1:
                problem = f"expected 1 included Practitioner, got {inc}"
            if problem:
                failures.append({"kind": label, "path": path, "status": status, "problem": problem,
                                 "body": body[:600].decode("utf-8", "replace"), "ms": round(dt * 1000, 2)})
    res = {"size": size, "kinds": []}
    print(f"  {'kind':<26}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'matches/req':>13}{'total/req':>11}")
    for label, in_ratio, expect, _ in ks:
        xs = lat[label]
        s = stats[label]
        row = {"kind": label, "in_ratio": in_ratio, "n": len(xs), "p50": pct(xs, .5), "p95": pct(xs, .95),
               "p99": pct(xs, .99), "max": max(xs), "matches": s["matches"] / len(xs),
               "total": (s["total"] / s["totals"]) if s["totals"] else None,
               "truncated": len(xs) < requests}
        res["kinds"].append(row)
        tot = "-" if row["total"] is None else f"{row['total']:.1f}"
        note = "" if in_ratio else "   (not in ratio)"
        if row["truncated"]:
            note += f"   (stopped: {KIND_BUDGET_S:.0f} s budget used)"
        print(f"  {label:<26}{row['n']:>5}{row['p50']:>9.2f}{row['p95']:>9.2f}{row['p99']:>9.2f}"
              f"{row['max']:>9.1f}{row['matches']:>13.2f}{tot:>11}{note}")
    res["failures"] = failures
    if failures:
        by = {}
        for f in failures:
            by.setdefault(f["kind"], []).append(f)
        for k, fs in by.items():
            f = fs[0]
            print(f"  !! {k}: {len(fs)} bad responses; first: {f['problem']} ({f['ms']} ms)\n"
                  f"     GET {f['path']}\n     {f['body'][:400]}")
    with open(out, "w") as fh:
        json.dump(res, fh)


def summary(files):
    runs = []
    for f in files:
        with open(f) as fh:
            r = json.load(fh)
        meta = {}
        mp = os.path.join(os.path.dirname(f), "meta.json")
        if os.path.exists(mp):
            with open(mp) as fh:
                meta = json.load(fh)
        runs.append((r, meta))
    runs.sort(key=lambda x: x[0]["size"])
    print("\n== Summary")
    print(f"  {'patients':>9}{'resources':>11}{'load s':>8}{'res/s':>8}{'DB MiB':>8}{'RSS MiB':>9}")
    for r, m in runs:
        print(f"  {r['size']:>9}{m.get('resources', 0):>11}{m.get('load_s', 0):>8.1f}"
              f"{m.get('rate', 0):>8.0f}{m.get('db_bytes', 0) / 2**20:>8.1f}{m.get('rss_kib', 0) / 1024:>9.0f}")
    sizes = [r["size"] for r, _ in runs]
    lo, hi = runs[0][0], runs[-1][0]
    p50 = {r["size"]: {k["kind"]: k["p50"] for k in r["kinds"]} for r, _ in runs}
    hdr = "".join(f"{'p50@' + str(s):>12}" for s in sizes)
    print(f"\n  {'kind':<26}{hdr}{'ratio':>8}")
    ratios = []
    for k in lo["kinds"]:
        name = k["kind"]
        ratio = p50[hi["size"]][name] / p50[lo["size"]][name]
        if k["in_ratio"]:
            ratios.append(ratio)
        cells = "".join(f"{p50[s][name]:>12.2f}" for s in sizes)
        flag = "" if k["in_ratio"] else "   excluded"
        if k["in_ratio"] and ratio > 1.5:
            flag = "   > 1.5"
        print(f"  {name:<26}{cells}{ratio:>8.2f}{flag}")
    ok = True
    if len(runs) > 1:
        gm = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        print(f"\n  geometric mean p50 ratio {hi['size']}/{lo['size']} over {len(ratios)} kinds: {gm:.2f}")
    ident = p50[hi["size"]]["identifier"]
    ta = ident <= 2.0
    print(f"  target (a) identifier p50 <= 2 ms at {hi['size']} patients: {ident:.2f} ms -> "
          f"{'PASS' if ta else 'FAIL'}")
    if len(runs) > 1:
        tb = gm <= 1.5
        print(f"  target (b) mix p50 ratio {hi['size']}/{lo['size']} <= 1.5: {gm:.2f} -> "
              f"{'PASS' if tb else 'FAIL'}")
    plain = next((k for k in hi["kinds"] if k["kind"] == "gp&_count=20"), None)
    if plain and plain["total"] is not None:
        print("  note: searches without _total returned Bundle.total, i.e. the server counts every match "
              "by default;\n        compare gp&_count=20 with gp&_total=none for the cost of that count")
    bad = sum(len(r["failures"]) for r, _ in runs)
    if bad:
        ok = False
        print(f"\n  !! {bad} responses failed their checks (see the per-size output above)")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), int(sys.argv[7]))
    else:
        sys.exit(summary(sys.argv[2:]))
PY

echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/{printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
PG="${FHIRBRIDGE_BENCH_POSTGRES_URL:-}"
PG="${PG%/}"
# The server: the URL without its database.
case "${PG#*://}" in */*) PG="${PG%/*}" ;; esac
BACKEND=SQLite
[ -z "$PG" ] || BACKEND=PostgreSQL
echo "sizes: $SIZES; practices $PRACTICES; $REQUESTS timed requests per kind after $WARMUP warm-up requests; sequential keep-alive client; $BACKEND"
RESULTS=()
for N in $SIZES; do
  if [ -n "$PG" ]; then
    D="$WORK/n$N-$PRACTICES-pg"
    DBNAME="fhirbridge_bench_${N}_$PRACTICES"
    URL="$PG/$DBNAME"
  else
    D="$WORK/n$N-$PRACTICES"
    URL="sqlite://$D/fhir.db"
  fi
  mkdir -p "$D"
  echo
  echo "== $N patients"
  if [ -n "$KEEP" ] && [ -f "$D/meta.json" ] && { [ -n "$PG" ] || [ -f "$D/fhir.db" ]; }; then
    echo "  reusing $D (generated and imported by an earlier run)"
  else
  rm -f "$D"/fhir.db*
  if [ -n "$PG" ]; then
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DBNAME" -c "CREATE DATABASE $DBNAME" >/dev/null
  fi
  python3 benches/gen_population.py "$N" "$D/population.ndjson" --practices "$PRACTICES"
  RESOURCES=$(wc -l < "$D/population.ndjson")
  T0=$(date +%s.%N)
  "$BIN" import --quiet --config "$WORK/bench.toml" --database "$URL" "$D/population.ndjson" \
    | tee "$D/import.txt"
  T1=$(date +%s.%N)
  LOAD_S=$(echo "$T1 $T0" | awk '{printf "%.2f", $1 - $2}')
  RATE=$(echo "$RESOURCES $LOAD_S" | awk '{printf "%.0f", $1 / $2}')
  if [ -n "$PG" ]; then
    psql -q "$URL" -c "VACUUM ANALYZE" >/dev/null
    DB_BYTES=$(psql -qtA "$URL" -c "SELECT pg_database_size(current_database())")
  else
    DB_BYTES=$(du -cb "$D"/fhir.db* | tail -1 | cut -f1)
  fi
  echo "  loaded $RESOURCES resources ($(du -h "$D/population.ndjson" | cut -f1) NDJSON) in $LOAD_S s wall ($RATE resources/s); database $(awk -v b="$DB_BYTES" 'BEGIN{printf "%.1f MiB", b/1048576}')"
  printf '{"resources": %s, "load_s": %s, "rate": %s, "db_bytes": %s, "rss_kib": 0}\n' \
    "$RESOURCES" "$LOAD_S" "$RATE" "$DB_BYTES" > "$D/meta.json"
  fi

  RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --database "$URL" --config "$WORK/bench.toml" &
  SERVER=$!
  for _ in $(seq 1 300); do
    curl -sf "$BASE/health/ready" >/dev/null 2>&1 && break
    kill -0 "$SERVER" 2>/dev/null || { echo "server exited" >&2; exit 1; }
    sleep 0.1
  done
  curl -sf "$BASE/health/ready" >/dev/null || { echo "server not ready after 30 s" >&2; exit 1; }

  python3 "$WORK/client.py" run "$BASE" "$D/population.ndjson" "$N" "$D/result.json" "$REQUESTS" "$WARMUP"
  RSS_KIB=$(awk '/VmHWM/{print $2}' "/proc/$SERVER/status")
  echo "  server peak RSS $((RSS_KIB / 1024)) MiB"
  stop_server
  python3 - "$D/meta.json" "$RSS_KIB" <<'PY2'
import json, sys
m = json.load(open(sys.argv[1])); m["rss_kib"] = int(sys.argv[2]); json.dump(m, open(sys.argv[1], "w"))
PY2
  [ -n "$KEEP" ] || rm -f "$D"/fhir.db* "$D/population.ndjson"
  RESULTS+=("$D/result.json")
done

python3 "$WORK/client.py" summary "${RESULTS[@]}"
