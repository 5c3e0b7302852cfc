#!/usr/bin/env python3
"""Hostile-input mixed run against a running fhirbridge (loopback only).

Sends N requests drawn from the inputs that once crashed, stalled or 500'd the
server (deep XML, NUL characters, 5 MB index values, 100,000-character
:contains, bad bundle verbs, undecodable Content-Encoding, JSON Patch doubling,
a 3 MB Observation with thousands of components, garbage bodies and headers,
slow bodies) mixed with ordinary traffic, from several threads, and reports:
the status histogram, 5xx count, connection failures, stalls (> STALL_S), the
slowest kinds, and the server's RSS (peak sampled from /proc, when --pid is given).

Usage: benches/hostile.py SERVER_ROOT_URL (e.g. http://127.0.0.1:18081) [--requests 20000] [--threads 8] [--pid PID]
Exit status 1 when any 5xx, connection failure or stall was seen.
"""

import argparse
import collections
import http.client
import json
import random
import socket
import threading
import time
import urllib.parse

STALL_S = 10.0
NHS = "https://fhir.nhs.uk/Id/nhs-number"


def nhs_number(n):
    base = 900_000_000 + n * 7
    while True:
        digits = [int(c) for c in f"{base:09d}"]
        check = (11 - sum(d * w for d, w in zip(digits, range(10, 1, -1))) % 11) % 11
        if check != 10:
            return f"{base:09d}{check}"
        base += 1


def patient(n):
    return {
        "resourceType": "Patient",
        "identifier": [{"system": NHS, "value": nhs_number(n)}],
        "name": [{"family": f"Hostile{n % 97}", "given": ["Test"]}],
        "gender": "female",
        "birthDate": "1980-05-17",
    }


JSON = {"Content-Type": "application/fhir+json"}


def deep_xml(tag, n):
    if tag == "extension":
        open_ = '<extension url="http://x">' * n
        close = "</extension>" * n
    else:
        open_ = "<a>" * n
        close = "</a>" * n
    return f'<Patient xmlns="http://hl7.org/fhir">{open_}{close}</Patient>'.encode()


def big_observation(components):
    comp = [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": f"{1000 + i}-0"}], "text": "x" * 200},
            "valueQuantity": {"value": i, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        }
        for i in range(components)
    ]
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": comp,
    }


def kinds(seed):
    """(name, weight, function returning (method, path, headers, body))."""
    big_obs = json.dumps(big_observation(3000)).encode()
    doubling = json.dumps([{"op": "copy", "from": "", "path": "/contained"}] + [
        {"op": "copy", "from": "/name", "path": f"/name/{i}"} for i in range(40)
    ]).encode()

    def n():
        return random.randint(1, 10_000_000)

    return [
        ("create", 30, lambda: ("POST", "/fhir/Patient", JSON, json.dumps(patient(n())).encode())),
        ("search", 20, lambda: ("GET", f"/fhir/Patient?family=hostile{n() % 97}", {}, None)),
        ("read-missing", 10, lambda: ("GET", f"/fhir/Patient/missing-{n()}", {}, None)),
        ("deep-xml-extension", 2, lambda: ("POST", "/fhir/Patient", {"Content-Type": "application/fhir+xml"}, deep_xml("extension", 10_000))),
        ("deep-xml-unknown", 2, lambda: ("POST", "/fhir/Patient", {"Content-Type": "application/fhir+xml"}, deep_xml("a", 10_000))),
        ("deep-json", 2, lambda: ("POST", "/fhir/Patient", JSON, ('{"resourceType":"Patient","extension":' + "[" * 5000 + "]" * 5000 + "}").encode())),
        ("nul-string", 4, lambda: ("POST", "/fhir/Patient", JSON, json.dumps({**patient(n()), "gender": "\u0000"}).encode())),
        ("nul-search", 3, lambda: ("GET", "/fhir/Patient?family=%00x", {}, None)),
        ("huge-system", 1, lambda: ("POST", "/fhir/Patient", JSON, json.dumps({**patient(n()), "identifier": [{"system": "urn:" + "s" * 5_000_000, "value": "1"}]}).encode())),
        ("long-contains", 2, lambda: ("POST", "/fhir/Patient/_search", {"Content-Type": "application/x-www-form-urlencoded"}, ("name:contains=" + "a" * 100_000).encode())),
        ("bundle-bad-verb", 3, lambda: ("POST", "/fhir", JSON, json.dumps({"resourceType": "Bundle", "type": random.choice(["transaction", "batch"]), "entry": [{"resource": patient(n()), "request": {"method": random.choice(["FOO", "get", ""]), "url": "Patient"}}]}).encode())),
        ("content-encoding", 3, lambda: ("POST", "/fhir/Patient", {**JSON, "Content-Encoding": random.choice(["br", "zstd", "compress", "garbage"])}, json.dumps(patient(n())).encode())),
        ("garbage-body", 4, lambda: ("POST", random.choice(["/fhir/Patient", "/fhir", "/fhir/Observation"]), random.choice([JSON, {"Content-Type": "application/fhir+xml"}]), bytes(random.getrandbits(8) for _ in range(random.randint(1, 2000))))),
        ("json-patch-doubling", 2, "patch"),
        ("big-observation", 1, lambda: ("POST", "/fhir/Observation", JSON, big_obs)),
        ("bad-params", 3, lambda: ("GET", random.choice(["/fhir/Patient?_count=-1", "/fhir/Patient?birthdate=xx2020", "/fhir/Patient?_sort=nope", "/fhir/Patient?name:nope=x", "/fhir/Patient?_include=Nope:nope"]), {}, None)),
        ("bad-headers", 2, lambda: ("GET", "/fhir/metadata?_summary=true", random.choice([{"If-Match": "garbage"}, {"Prefer": "return=whatever"}, {"Accept": "text/plain"}, {"If-None-Exist": "x"}]), None)),
    ], doubling


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.status = collections.Counter()
        self.by_kind = collections.defaultdict(collections.Counter)
        self.slowest = collections.defaultdict(float)
        self.conn_errors = collections.Counter()
        self.stalls = 0

    def record(self, kind, status, elapsed):
        with self.lock:
            self.status[status] += 1
            self.by_kind[kind][status] += 1
            self.slowest[kind] = max(self.slowest[kind], elapsed)
            if elapsed > STALL_S:
                self.stalls += 1


def worker(base, count, stats, kinds_, doubling, patch_target, seed):
    random.seed(seed)
    u = urllib.parse.urlparse(base)
    weights = [k[1] for k in kinds_]
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    for _ in range(count):
        name, _, make = random.choices(kinds_, weights)[0]
        if make == "patch":
            method, path, headers, body = ("PATCH", f"/fhir/Patient/{patch_target}", {"Content-Type": "application/json-patch+json"}, doubling)
        else:
            method, path, headers, body = make()
        started = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            status = r.status
            if r.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        except (OSError, http.client.HTTPException) as e:
            with stats.lock:
                stats.conn_errors[f"{name}: {type(e).__name__}"] += 1
            conn.close()
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
            status = "conn-error"
        stats.record(name, status, time.monotonic() - started)


def slow_clients(base, stats, stop):
    """A few clients that trickle a body at 1 byte/s: must get 408, not hold the server."""
    u = urllib.parse.urlparse(base)
    while not stop.is_set():
        started = time.monotonic()
        try:
            s = socket.create_connection((u.hostname, u.port), timeout=120)
            s.sendall(b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\nContent-Length: 1000\r\n\r\n")
            data = b""
            s.settimeout(1.5)
            while not stop.is_set():
                try:
                    s.sendall(b" ")
                except OSError:
                    break
                try:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    if b"\r\n\r\n" in data:
                        break
                except socket.timeout:
                    continue
            s.close()
            status = int(data[9:12]) if data.startswith(b"HTTP/1.1") else "conn-closed"
        except OSError:
            status = "conn-error"
        stats.record("slow-body", status, 0.0)


def rss_sampler(pid, peak, stop):
    """peak[0]: VmRSS; peak[2]: RssAnon (the heap; VmRSS also counts the SQLite
    database pages mapped with mmap, which the kernel can drop at will)."""
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
                    if line.startswith("RssAnon:"):
                        peak[2] = max(peak[2], int(line.split()[1]))
        except OSError:
            peak[1] = "server process gone"
            return
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--pid", type=int)
    ap.add_argument("--only", help="comma-separated kinds (to find what costs memory or time)")
    ap.add_argument("--no-slow", action="store_true", help="without the slow-body clients")
    args = ap.parse_args()
    base = args.base.rstrip("/")
    u = urllib.parse.urlparse(base)
    assert u.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"
    kinds_, doubling = kinds(1)
    if args.only:
        wanted = args.only.split(",")
        kinds_ = [k for k in kinds_ if k[0] in wanted]
        assert kinds_, f"no such kinds: {args.only}"
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.request("POST", "/fhir/Patient", json.dumps(patient(1)), JSON)
    r = c.getresponse()
    r.read()
    assert r.status == 201, r.status
    patch_target = r.getheader("Location").split("/_history")[0].rsplit("/", 1)[1]
    stats = Stats()
    stop = threading.Event()
    peak = [0, None, 0]
    side = [] if args.no_slow else [threading.Thread(target=slow_clients, args=(base, stats, stop), daemon=True) for _ in range(2)]
    if args.pid:
        side.append(threading.Thread(target=rss_sampler, args=(args.pid, peak, stop), daemon=True))
    for t in side:
        t.start()
    per = args.requests // args.threads
    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(base, per, stats, kinds_, doubling, patch_target, i)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    elapsed = time.monotonic() - started
    # the server still answers
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", "/health/ready")
    alive = c.getresponse().status == 200
    five = sum(v for k, v in stats.status.items() if isinstance(k, int) and k >= 500)
    print(f"requests: {sum(stats.status.values())} in {elapsed:.1f} s, {args.threads} threads")
    print("status:", dict(sorted(stats.status.items(), key=str)))
    for kind, counter in sorted(stats.by_kind.items()):
        print(f"  {kind:22} {dict(counter)}  slowest {stats.slowest[kind]:.2f} s")
    print(f"5xx: {five}; connection failures: {sum(stats.conn_errors.values())} {dict(stats.conn_errors)}; stalls (> {STALL_S:.0f} s): {stats.stalls}; server alive after: {alive}")
    if args.pid:
        print(f"peak RSS: {peak[0] / 1024:.0f} MiB, of it anonymous (heap) at most {peak[2] / 1024:.0f} MiB{' (' + peak[1] + ')' if peak[1] else ''}")
    bad = five or stats.conn_errors or stats.stalls or not alive
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
