#!/usr/bin/env python3
"""CKAN package_search latency at the HTTP layer: sequential keep-alive GETs of
/api/3/action/package_search with a mix of queries, filters (fq), facets and
paging, as CKAN clients and harvesters send them; p50/p90/p99 in ms.

    bench/ckan_latency.py http://127.0.0.1:8080 [requests]
"""
import http.client, json, random, statistics, sys, time, urllib.parse

base = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port)
rng = random.Random(11)
words = ["air quality", "energy", "bus", "tree canopy", "flood", "harbour", "parking", "solar potential", "waste",
         "traffic counts", "school", "noise north", "housing", "rainfall daily", "sensor", "permits old town"]
extras = ["", "&fq=groups:energy", "&fq=spectrum:open", "&fq=personal_data:false",
          "&facet.field=%5B%22organization%22%2C%22groups%22%5D", "&facet.field=%5B%22tags%22%2C%22license_id%22%5D",
          "&sort=metadata_modified%20desc", "&start=20", "&rows=20"]
paths = []
for _ in range(n):
    q = urllib.parse.quote(rng.choice(words)) if rng.random() < 0.85 else ""
    paths.append(f"/api/3/action/package_search?q={q}{rng.choice(extras)}")
for p in paths[:200]:  # warm up
    conn.request("GET", p); conn.getresponse().read()
lat, sizes = [], []
for p in paths:
    t = time.perf_counter()
    conn.request("GET", p)
    r = conn.getresponse(); body = r.read()
    lat.append((time.perf_counter() - t) * 1000)
    if r.status != 200 or not json.loads(body)["success"]:
        raise SystemExit(f"{p} -> {r.status}")
    sizes.append(len(body))
lat.sort()
q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
print(f"package_search: requests={n} p50={q(0.50):.2f}ms p90={q(0.90):.2f}ms p99={q(0.99):.2f}ms "
      f"max={lat[-1]:.2f}ms mean={statistics.mean(lat):.2f}ms answer={statistics.mean(sizes)/1024:.1f}KB")
