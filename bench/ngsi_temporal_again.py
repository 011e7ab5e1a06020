"""Issue 26: the temporal phase's two queries again, against a data directory
bench/ngsi.sh left behind (its 10 M readings, without loading them again) and
a server started on it:

    target/release/citytrust demo --data /tmp/ct-ngsi-bench-XXXX/demo --listen 127.0.0.1:18111 --live-speed 0 &
    python3 bench/ngsi_temporal_again.py http://127.0.0.1:18111 /tmp/ct-ngsi-bench-XXXX/demo
"""
import json, sqlite3, sys, time, urllib.parse, urllib.request
from datetime import datetime, timedelta, timezone
base = sys.argv[1]; data = sys.argv[2]
db = sqlite3.connect(data + "/citytrust.sqlite")
last = db.execute("SELECT MAX(observed_at) FROM ngsi_history WHERE entity_id = 'urn:ngsi-ld:BenchHistory:s000000'").fetchone()[0]
db.close()
now = datetime.strptime(last[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
def get(path):
    t = time.perf_counter()
    with urllib.request.urlopen(base + path) as r:
        body = r.read()
    return (time.perf_counter() - t) * 1000, body
day, month = [], []
for n in range(50):
    eid = f"urn:ngsi-ld:BenchHistory:s{n % 232:06d}"
    q = urllib.parse.urlencode({"timerel": "between", "timeAt": (now - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endTimeAt": (now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), "attrs": "a0", "options": "temporalValues"})
    ms, body = get(f"/ngsi-ld/v1/temporal/entities/{eid}?{q}"); day.append(ms)
    assert 1440 <= len(json.loads(body)["a0"]["values"]) <= 1442
    q = urllib.parse.urlencode({"timerel": "between", "timeAt": (now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endTimeAt": (now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), "attrs": "a0", "options": "aggregatedValues",
        "aggrMethods": "avg", "aggrPeriodDuration": "PT1H"})
    ms, body = get(f"/ngsi-ld/v1/temporal/entities/{eid}?{q}"); month.append(ms)
    assert 719 <= len(json.loads(body)["a0"]["avg"]) <= 722
q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]
print(f"24h p50 {q(day,.5):.2f} p99 {q(day,.99):.2f}; month avg p50 {q(month,.5):.2f} p99 {q(month,.99):.2f}")
