#!/usr/bin/env python3
"""Issue 4: a governed read of a 1,000-row shared dataset over HTTP against the
same read of an open dataset, on a release `citytrust demo` (SQLite).

Both datasets hold the same 1,000 rows; the analyst reads the shared one under
an agreement voted by the demo's three trustees, and the open one with the
same purpose. Reads alternate (so drift hits both alike); medians and p90 of
400 each after a warm-up. Run by bench/governed_read.sh.
"""
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ.get("CITYTRUST_BIN", "target/release/citytrust")
PASSWORD = "demo-password"
N = int(os.environ.get("READS", "400"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(base, method, path, body=None, token=None, content_type="application/json"):
    data = None
    headers = {}
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["content-type"] = content_type
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=60) as res:
        return res.status, res.read()


def main():
    work = tempfile.mkdtemp(prefix="ct-governed-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([BIN, "demo", "--data", os.path.join(work, "demo"), "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, CITYTRUST_LOG="warn"))
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except Exception:
                time.sleep(0.2)
        token = lambda u: json.loads(call(base, "POST", "/api/v1/auth/token", {"username": u, "password": PASSWORD})[1])["token"]
        owner, analyst = token("owner"), token("analyst")
        csv = "id,district,kwh,year\n" + "".join(f"{i},D{i % 10},{1000 + i * 7},{2000 + i % 20}\n" for i in range(1000))
        ids = {}
        for spectrum in ["open", "shared_specific"]:
            _, body = call(base, "POST", "/api/v1/datasets", {
                "title": f"Bench {spectrum}", "description": "1,000 rows.", "owner_organization_id": "city-data-office",
                "spectrum": spectrum}, owner)
            ids[spectrum] = json.loads(body)["id"]
            call(base, "POST", f"/api/v1/datasets/{ids[spectrum]}/versions", csv.encode(), owner, "text/csv")
        today = datetime.date.today()
        checklist = {q: "Answered for the benchmark." for q in
                     ["justified", "benefits_and_risks", "proportionate", "without_personal_data", "power_to_share"]}
        _, body = call(base, "POST", "/api/v1/access-requests", {
            "dataset_ids": [ids["shared_specific"]], "purpose": "research", "level": "identified",
            "starts_on": today.isoformat(), "ends_on": (today + datetime.timedelta(days=30)).isoformat(),
            "benefit": "Benchmark.", "sharing": "systematic", "checklist": checklist}, analyst)
        request_id = json.loads(body)["id"]
        for t in ["trustee1", "trustee2", "trustee3"]:
            call(base, "POST", f"/api/v1/access-requests/{request_id}/votes", {"vote": "approve", "reason": "Benchmark."}, token(t))
        paths = {s: f"/api/v1/datasets/{i}/data?format=csv&purpose=research" for s, i in ids.items()}
        for s, p in paths.items():
            status, body = call(base, "GET", p, token=analyst)
            assert status == 200 and body.count(b"\n") == 1001, (s, status)
        for _ in range(50):
            for p in paths.values():
                call(base, "GET", p, token=analyst)
        times = {s: [] for s in paths}
        for _ in range(N):
            for s, p in paths.items():
                t = time.perf_counter()
                call(base, "GET", p, token=analyst)
                times[s].append(time.perf_counter() - t)
        out = {}
        for s, ts in times.items():
            ts.sort()
            out[s] = {"median_ms": round(statistics.median(ts) * 1000, 2), "p90_ms": round(ts[int(len(ts) * 0.9)] * 1000, 2)}
        ratio = out["shared_specific"]["median_ms"] / out["open"]["median_ms"]
        print(f"open read of 1,000 rows:     median {out['open']['median_ms']} ms, p90 {out['open']['p90_ms']} ms")
        print(f"governed read (agreement):   median {out['shared_specific']['median_ms']} ms, p90 {out['shared_specific']['p90_ms']} ms")
        print(f"governed / open: {ratio:.2f}x (target <= 1.2x: {'met' if ratio <= 1.2 else 'MISSED'})")
        print(json.dumps({"reads_each": N, **out, "ratio": round(ratio, 3)}))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
