#!/usr/bin/env python3
"""Catalogue search latency at the HTTP layer: sequential keep-alive requests,
a mix of queries (words, filters, facets, paging), p50/p90/p99 in milliseconds.

    bench/search_latency.py http://127.0.0.1:8080 [requests]
"""
import http.client, random, statistics, sys, time, urllib.parse

base = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port)
rng = random.Random(7)
words = ["air quality", "energy", "bus", "tree canopy", "flood", "harbour", "parking", "solar potential", "waste",
         "traffic counts", "school", "noise north", "housing", "rainfall daily", "sensor", "permits old town"]
filters = ["", "&theme=energy", "&spectrum=open", "&personal_data=false", "&format=CSV", "&theme=mobility&spectrum=shared_group",
           "&sort=updated", "&page=3"]
paths = []
for _ in range(n):
    q = urllib.parse.quote_plus(rng.choice(words)) if rng.random() < 0.85 else ""
    paths.append(f"/api/v1/datasets?q={q}{rng.choice(filters)}")
for p in paths[:200]:  # warm up
    conn.request("GET", p); conn.getresponse().read()
lat = []
for p in paths:
    t = time.perf_counter()
    conn.request("GET", p)
    r = conn.getresponse(); r.read()
    lat.append((time.perf_counter() - t) * 1000)
    if r.status != 200:
        raise SystemExit(f"{p} -> {r.status}")
lat.sort()
q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
print(f"requests={n} p50={q(0.50):.2f}ms p90={q(0.90):.2f}ms p99={q(0.99):.2f}ms max={lat[-1]:.2f}ms mean={statistics.mean(lat):.2f}ms")
