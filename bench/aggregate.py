#!/usr/bin/env python3
"""Issue 7's thresholded-aggregate bench, side by side in one run.

5,000,000 synthetic trips (bench/gen_trips.py) are published on a release
`citytrust serve`; then each table is asked for two ways over the same
stored version, through the API, alternately:

* thresholded: `POST /api/v1/datasets/{id}/aggregate` — the GROUP BY, every
  margin, small-cell (primary) and secondary suppression, the spooled and
  hashed result, the `content.read` log entry;
* plain: the same GROUP BY as SQL through `POST /api/v1/query` — no margins,
  no suppression, its own `query.run` log entry.

Three tables: origin–destination counts between 0.01° grid areas (with the
total trip duration), start station × birth year, and start station × birth
year × user type (where the rare 1887 birth year of customers leaves small
cells to suppress, and secondary suppression to find).
Medians of RUNS runs after one warm-up each.

    bench/aggregate.sh          # builds, makes the file, runs this
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import urllib.request  # noqa: E402

from content_bench import Server, count_rows  # noqa: E402


def post(base, path, body, token):
    """The response body as bytes: both sides are timed to the last byte, not parsed."""
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("content-type", "application/json")
    req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=3600) as res:
        return res.read()

LAT0, LON0 = '"start station latitude"', '"start station longitude"'
LAT1, LON1 = '"end station latitude"', '"end station longitude"'


def cell(column, degrees):
    return f"CAST(FLOOR(CAST({column} AS DOUBLE) / {degrees:e} + 1e-9) AS BIGINT)"


TABLES = {
    "origin-destination (0.01° areas)": (
        [{"grid": {"latitude": "start station latitude", "longitude": "start station longitude", "degrees": 0.01}},
         {"grid": {"latitude": "end station latitude", "longitude": "end station longitude", "degrees": 0.01}}],
        "tripduration",
        "SELECT {a} AS o_lat, {b} AS o_lon, {c} AS d_lat, {d} AS d_lon, COUNT(*) AS trips, "
        "SUM(tripduration) AS duration FROM {{table}} GROUP BY 1, 2, 3, 4".format(
            a=cell(LAT0, 0.01), b=cell(LON0, 0.01), c=cell(LAT1, 0.01), d=cell(LON1, 0.01)),
    ),
    "start station × birth year": (
        [{"column": "start station id"}, {"column": "birth year"}],
        None,
        'SELECT "start station id", "birth year", COUNT(*) AS trips FROM {table} GROUP BY 1, 2',
    ),
    "start station × birth year × user type": (
        [{"column": "start station id"}, {"column": "birth year"}, {"column": "usertype"}],
        None,
        'SELECT "start station id", "birth year", usertype, COUNT(*) AS trips FROM {table} GROUP BY 1, 2, 3',
    ),
}


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True, type=Path)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    rows = count_rows(args.csv)
    print(f"file: {args.csv} ({rows:,} rows)", flush=True)
    import os
    os.environ.setdefault("CITYTRUST_LOG", "warn,citytrust_service::levels=info")
    s = Server(args.workdir)
    t, body = s.upload(args.csv)
    assert body["rows"] == rows, body["rows"]
    print(f"published in {t:.1f} s", flush=True)
    table = s.dataset.replace("-", "_")
    results = {"rows": rows, "tables": {}}
    try:
        for name, (by, measure, sql) in TABLES.items():
            sql = sql.format(table=table)
            agg_body = {"purpose": "research", "by": by, "format": "json"}
            if measure:
                agg_body["sum"] = measure

            def thresholded():
                return post(s.base, f"/api/v1/datasets/{s.dataset}/aggregate", agg_body, s.token)

            def plain():
                return post(s.base, "/api/v1/query", {"sql": sql, "purpose": "research", "max_rows": 100000}, s.token)

            thresholded()
            plain()
            times_t, times_p = [], []
            for _ in range(args.runs):
                t, table_out = timed(thresholded)
                times_t.append(t)
                t, plain_out = timed(plain)
                times_p.append(t)
            table_out, plain_out = json.loads(table_out), json.loads(plain_out)
            # Since issue 24 only shown cells are listed and how many were
            # suppressed is not served (the server's log line says it).
            old = table_out.get("table")
            cells = old["cells"] if old else table_out["cells"]
            mt, mp = statistics.median(times_t) * 1000, statistics.median(times_p) * 1000
            r = {
                "groups": len(plain_out),
                "cells_listed": len(cells),
                "suppressed_small": old["primary"] if old else None,
                "suppressed_secondary": old["secondary"] if old else None,
                "thresholded_median_ms": round(mt, 1), "thresholded_best_ms": round(min(times_t) * 1000, 1),
                "plain_median_ms": round(mp, 1), "plain_best_ms": round(min(times_p) * 1000, 1),
                "ratio": round(mt / mp, 3),
            }
            results["tables"][name] = r
            print(f"{name}: {r['groups']} groups, {r['suppressed_small']} small + "
                  f"{r['suppressed_secondary']} secondary suppressed; thresholded {mt:.0f} ms, "
                  f"plain GROUP BY {mp:.0f} ms = {mt / mp:.2f}x", flush=True)
    finally:
        for line in s.log.read_text(errors="replace").splitlines():
            if "thresholded table" in line:
                last = line
        print("  server (last table):", last.strip()[-240:], flush=True)
        s.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
