#!/usr/bin/env python3
"""Fill a running CityTrust with N synthetic catalogue entries through the API.

    bench/gen_catalogue.py http://127.0.0.1:8080 10000

Titles, descriptions and keywords are drawn (seeded) from a civic-data vocabulary
so that searches match realistic fractions of the catalogue."""
import http.client, json, random, sys, urllib.parse

base, n = sys.argv[1], int(sys.argv[2])
password = sys.argv[3] if len(sys.argv) > 3 else "demo-password"
rng = random.Random(20261122)
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port)

def call(method, path, body=None, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    res = conn.getresponse()
    data = res.read()
    if res.status >= 300:
        raise SystemExit(f"{method} {path} -> {res.status}: {data[:300]!r}")
    return json.loads(data) if data else None

token = call("POST", "/api/v1/auth/token", {"username": "admin", "password": password})["token"]
orgs = [o["id"] for o in call("GET", "/api/v1/organizations")]
subjects = ["air quality", "noise", "traffic counts", "bus punctuality", "cycle lanes", "street lighting", "energy use",
            "heat demand", "solar potential", "building permits", "waste collection", "recycling rates", "water quality",
            "flood risk", "tree canopy", "parking occupancy", "school places", "hospital admissions", "footfall",
            "business rates", "housing stock", "population estimates", "crime reports", "road works", "public toilets",
            "EV charging", "library loans", "park visits", "rainfall", "temperature"]
places = ["city centre", "north district", "south district", "harbour", "old town", "university quarter",
          "industrial estate", "riverside", "east ward", "west ward", "airport", "suburbs"]
kinds = ["hourly readings", "daily totals", "monthly summary", "annual report", "register", "survey", "sensor feed",
         "inventory", "forecast", "boundaries"]
themes = ["energy", "buildings", "mobility", "transport", "health", "environment", "population", "economy",
          "government", "safety", "education", "culture", "technology", "boundaries"]
spectra = ["open"] * 5 + ["shared_public"] * 2 + ["shared_group", "shared_specific", "closed"]
formats = ["CSV", "GeoJSON", "Parquet", "JSON", "GTFS", "XLSX"]
start = int(__import__("os").environ.get("START", "0"))  # the first number (to add more later)
for i in range(start, start + n):
    s, p, k = rng.choice(subjects), rng.choice(places), rng.choice(kinds)
    body = {
        "id": f"bench-{i:05d}",
        "title": f"{s.capitalize()} {k}, {p} {2010 + i % 15}",
        "description": f"{k.capitalize()} of {s} for the {p}, collected by the city and its partners. "
                       f"Covers {rng.randint(10, 5000)} sites; see the data states for coverage and gaps.",
        "owner_organization_id": rng.choice(orgs),
        "spectrum": rng.choice(spectra),
        "themes": rng.sample(themes, rng.randint(1, 3)),
        "keywords": [s, p, k.split()[0]],
        "format": rng.choice(formats),
        "personal_data": rng.random() < 0.15,
    }
    call("POST", "/api/v1/datasets", body, token)
    if (i + 1) % 1000 == 0:
        print(f"{i + 1} datasets", file=sys.stderr)
