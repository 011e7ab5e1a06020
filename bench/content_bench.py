#!/usr/bin/env python3
"""Issue 3's benches, side by side in one run (see bench/README.md).

Ingest: one CSV of bike trips (bench/gen_trips.py) published as a Parquet
version through `POST /api/v1/datasets/{id}/versions` on a release
`citytrust serve`, against DuckDB `COPY (SELECT * FROM read_csv(...)) TO
'...parquet'` and PostgreSQL `COPY trips FROM '...' CSV HEADER`. The server's
peak RSS (VmHWM) is read from /proc after each upload, each size on a fresh
process, to show memory does not grow with the file.

Query: a GROUP BY aggregate over the stored version through `POST
/api/v1/query`, against the same SQL run directly on DataFusion over the same
Parquet file (examples/sql_direct: same version, same session settings) and
on DuckDB over the same Parquet file.

    bench/content.sh            # builds, installs duckdb, starts PostgreSQL, runs this
"""
import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("CITYTRUST_BIN", ROOT / "target/release/citytrust"))
DIRECT = ROOT / "target/release/examples/sql_direct"
PASSWORD = "bench-password-123"

GROUP_BY = ('SELECT "start station id" AS station, COUNT(*) AS trips, AVG(tripduration) AS mean_duration, '
            'MAX("birth year") AS youngest FROM {table} GROUP BY "start station id" ORDER BY trips DESC')


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def request(base, method, path, body=None, token=None, content_type="application/json"):
    data = json.dumps(body).encode() if body is not None and content_type == "application/json" else body
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", content_type)
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=3600) as res:
        return json.loads(res.read() or b"null")


class Server:
    """A release `citytrust serve` on a fresh data directory, with an admin and one dataset."""

    def __init__(self, workdir):
        self.data = Path(tempfile.mkdtemp(dir=workdir, prefix="ct-"))
        env = dict(os.environ, CITYTRUST_LOG=os.environ.get("CITYTRUST_LOG", "warn"))
        subprocess.run([BIN, "user", "add", "--data", self.data, "admin", "--role", "administrator"],
                       input=PASSWORD + "\n", text=True, check=True, env=env, capture_output=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # The server's log (CITYTRUST_LOG=citytrust_service=info adds convert_ms / measure_ms per version).
        self.log = self.data / "serve.log"
        self.proc = subprocess.Popen([BIN, "serve", "--data", self.data, "--listen", f"127.0.0.1:{self.port}"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        for _ in range(200):
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        self.token = request(self.base, "POST", "/api/v1/auth/token",
                             {"username": "admin", "password": PASSWORD})["token"]
        request(self.base, "POST", "/api/v1/organizations",
                {"id": "bench-org", "name": "Bench", "kind": "city_department"}, self.token)
        self.dataset = request(self.base, "POST", "/api/v1/datasets",
                               {"title": "Bike trips", "description": "Synthetic trips for the bench.",
                                "owner_organization_id": "bench-org", "spectrum": "open"}, self.token)["id"]

    def rss_mb(self, field):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def upload(self, csv_path):
        size = csv_path.stat().st_size
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)
        started = time.perf_counter()
        with open(csv_path, "rb") as f:
            conn.request("POST", f"/api/v1/datasets/{self.dataset}/versions", body=f,
                         headers={"content-type": "text/csv", "content-length": str(size),
                                  "authorization": f"Bearer {self.token}"})
            res = conn.getresponse()
            body = json.loads(res.read())
        elapsed = time.perf_counter() - started
        if res.status != 201:
            raise SystemExit(f"upload failed: {res.status} {body}")
        return elapsed, body

    def query(self, sql):
        started = time.perf_counter()
        rows = request(self.base, "POST", "/api/v1/query",
                       {"sql": sql, "purpose": "research", "max_rows": 100000}, self.token)
        return time.perf_counter() - started, len(rows)

    def parquet(self, version):
        return self.data / "content" / "datasets" / self.dataset / str(version) / "data.parquet"

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


def duckdb_ingest(csv_path, out):
    import duckdb
    con = duckdb.connect()
    started = time.perf_counter()
    con.execute(f"COPY (SELECT * FROM read_csv('{csv_path}')) TO '{out}' (FORMAT parquet)")
    return time.perf_counter() - started


def duckdb_query(parquet, runs):
    import duckdb
    times = []
    for _ in range(runs):
        con = duckdb.connect()
        started = time.perf_counter()
        con.execute(GROUP_BY.format(table=f"read_parquet('{parquet}')")).fetchall()
        times.append(time.perf_counter() - started)
    return times


PG_TABLE = """CREATE TABLE trips (
  tripduration integer, starttime timestamp, stoptime timestamp,
  "start station id" integer, "start station name" text,
  "start station latitude" double precision, "start station longitude" double precision,
  "end station id" integer, "end station name" text,
  "end station latitude" double precision, "end station longitude" double precision,
  bikeid integer, usertype text, "birth year" integer, gender integer)"""


def pg_copy(csv_path, psql):
    subprocess.run(psql + ["-c", "DROP TABLE IF EXISTS trips", "-c", PG_TABLE], check=True, capture_output=True)
    started = time.perf_counter()
    subprocess.run(psql + ["-c", f"COPY trips FROM '{csv_path}' CSV HEADER"], check=True, capture_output=True)
    return time.perf_counter() - started


def count_rows(csv_path):
    with open(csv_path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True, type=Path, help="the big file (5M rows)")
    ap.add_argument("--small-csv", type=Path, help="a smaller file, to show RSS does not grow with size")
    ap.add_argument("--psql", help="psql command line for the PostgreSQL side, e.g. 'psql -h /tmp -U postgres'")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    results = {}
    mb = args.csv.stat().st_size / 1e6
    rows = count_rows(args.csv)
    results["file"] = {"rows": rows, "mb": round(mb, 1)}
    print(f"file: {args.csv} ({rows:,} rows, {mb:,.0f} MB)", flush=True)

    # ---- ingest -----------------------------------------------------------------
    if args.small_csv:
        s = Server(args.workdir)
        idle = s.rss_mb("VmRSS")
        t, body = s.upload(args.small_csv)
        small_rows = body["rows"]
        results["citytrust_small"] = {"rows": small_rows, "seconds": round(t, 2), "idle_rss_mb": round(idle),
                                      "peak_rss_mb": round(s.rss_mb("VmHWM"))}
        print(f"citytrust ingest {small_rows:,} rows: {t:.2f} s, peak RSS {s.rss_mb('VmHWM'):.0f} MB", flush=True)
        s.stop()

    s = Server(args.workdir)
    idle = s.rss_mb("VmRSS")
    t, body = s.upload(args.csv)
    assert body["rows"] == rows, body["rows"]
    peak = s.rss_mb("VmHWM")
    results["citytrust"] = {"seconds": round(t, 2), "rows_per_s": round(rows / t), "idle_rss_mb": round(idle),
                            "peak_rss_mb": round(peak), "parquet_mb": round(body["bytes"] / 1e6, 1)}
    print(f"citytrust ingest: {t:.2f} s ({rows / t:,.0f} rows/s), peak RSS {peak:.0f} MB "
          f"(idle {idle:.0f} MB), Parquet {body['bytes'] / 1e6:.0f} MB", flush=True)
    for line in s.log.read_text(errors="replace").splitlines():
        if "convert_ms" in line:
            print("  server:", line.strip()[-300:], flush=True)

    out = args.workdir / "duckdb-trips.parquet"
    t_duck = duckdb_ingest(args.csv, out)
    results["duckdb"] = {"seconds": round(t_duck, 2), "rows_per_s": round(rows / t_duck)}
    print(f"duckdb COPY to Parquet: {t_duck:.2f} s ({rows / t_duck:,.0f} rows/s)", flush=True)
    out.unlink(missing_ok=True)

    if args.psql:
        t_pg = pg_copy(args.csv, args.psql.split())
        results["postgres"] = {"seconds": round(t_pg, 2), "rows_per_s": round(rows / t_pg)}
        print(f"postgres COPY: {t_pg:.2f} s ({rows / t_pg:,.0f} rows/s)", flush=True)

    # ---- query ------------------------------------------------------------------
    table = s.dataset.replace("-", "_")
    sql = GROUP_BY.format(table=table)
    api = []
    for _ in range(args.runs + 1):
        t, n = s.query(sql)
        api.append(t)
    api = api[1:]  # the first run warms the page cache for everyone
    parquet = s.parquet(body["version"])
    direct = json.loads(subprocess.run([DIRECT, parquet, table, sql, str(args.runs)], check=True,
                                       capture_output=True, text=True).stdout)
    duck = duckdb_query(parquet, args.runs)
    results["query"] = {
        "result_rows": n,
        "api_median_ms": round(statistics.median(api) * 1000, 1), "api_best_ms": round(min(api) * 1000, 1),
        "datafusion_median_ms": direct["median_ms"], "datafusion_best_ms": direct["best_ms"],
        "duckdb_median_ms": round(statistics.median(duck) * 1000, 1), "duckdb_best_ms": round(min(duck) * 1000, 1),
    }
    print(f"GROUP BY ({n} groups): API median {statistics.median(api) * 1000:.0f} ms, "
          f"DataFusion direct median {direct['median_ms']:.0f} ms, DuckDB median {statistics.median(duck) * 1000:.0f} ms",
          flush=True)
    s.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
