"""Issue 26's performance targets, measured on a release `citytrust demo`
(or, with BROKER=serve, `citytrust serve` holding nothing but the benchmark's
streams: the broker alone, as the RSS target means it).

Run by bench/ngsi.sh (which builds the release binary and starts a throwaway
PostgreSQL cluster with its default durability: fsync and synchronous commit
on). Every figure is printed as one `RESULT name value unit` line.

1. Durable writes with history: ENTITIES sensors with ATTRS numeric
   attributes each, batch-upserted (`/entityOperations/upsert?options=update`,
   BATCH entities per request, SENDERS requests in flight) for ROUNDS rounds
   after the creating one. An answer means committed: the entity rows, one
   history row per attribute, the outbox and a transparency-log entry.
   Side by side, the same readings as multi-row INSERTs (one statement and
   transaction per batch, SENDERS psql sessions) into a plain PostgreSQL
   table with the index a city would query it by.
2. Latest-values query over the ENTITIES (type + q + geo), sequential.
3. Temporal: HISTORY_ENTITIES entities of a second stream, each with a
   month of minute readings (43,200), written into the store's history table
   directly (setting up 10 M readings through HTTP would take the run's
   whole budget); then one entity's last 24 h (1,440 values) and its hourly
   averages over the month, sequential.
4. Notification latency: SUBSCRIPTIONS subscriptions (ENTITIES/SUBSCRIPTIONS
   entities each), updates at UPDATE_RATE entities/s for NOTIFY_SECONDS
   (over NOTIFY_SENDERS connections); a
   local listener (bench/ngsi_listener.mjs) times each notified entity
   from the update's send time to its receipt.
5. The broker's RSS at the end (ENTITIES entities, SUBSCRIPTIONS
   subscriptions, all the history above).
"""

import http.client
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

BIN = os.environ.get("CITYTRUST", "target/release/citytrust")
PASSWORD = "demo-password"
ENTITIES = int(os.environ.get("ENTITIES", "10000"))
ATTRS = int(os.environ.get("ATTRS", "10"))
BATCH = int(os.environ.get("BATCH", "1000"))
ROUNDS = int(os.environ.get("ROUNDS", "10"))
SENDERS = int(os.environ.get("SENDERS", "2"))
QUERIES = int(os.environ.get("QUERIES", "300"))
HISTORY_ENTITIES = int(os.environ.get("HISTORY_ENTITIES", "232"))
SUBSCRIPTIONS = int(os.environ.get("SUBSCRIPTIONS", "1000"))
UPDATE_RATE = int(os.environ.get("UPDATE_RATE", "5000"))
NOTIFY_SECONDS = int(os.environ.get("NOTIFY_SECONDS", "10"))
NOTIFY_SENDERS = int(os.environ.get("NOTIFY_SENDERS", "1"))
PG_URL = os.environ.get("BENCH_PG_URL")  # the plain-PostgreSQL baseline's server
STORE_URL = os.environ.get("CITYTRUST_DATABASE_URL")  # CityTrust on PostgreSQL when set
PHASES = set(os.environ.get("PHASES", "write,query,temporal,notify").split(","))
# `demo`: the demo city's process, with its datasets; `serve`: the broker alone.
BROKER = os.environ.get("BROKER", "demo")
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"


def result(name, value, unit):
    print(f"RESULT {name} {value} {unit}", flush=True)


class Conn:
    """One keep-alive HTTP connection to the broker."""

    def __init__(self, base, token=None):
        u = urllib.parse.urlparse(base)
        self.c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
        self.token = token

    def call(self, method, path, body=None, ctype="application/json", headers=None):
        h = {"Accept": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            h["Content-Type"] = ctype
            if not isinstance(body, bytes):
                body = json.dumps(body).encode()
        h.update(headers or {})
        self.c.request(method, path, body=body, headers=h)
        r = self.c.getresponse()
        return r.status, r.read(), r


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def quantiles(xs):
    xs = sorted(xs)
    q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]
    return q(0.5), q(0.9), q(0.99)


def rss_mb(pid, part="VmRSS"):
    """The process's resident memory (or one part of it: RssAnon, RssFile), in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(part + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_ms(pid):
    """The process's CPU time so far (user + system), in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def rss_results(name, pid):
    result(name, round(rss_mb(pid)), "MB")
    for part in ("RssAnon", "RssFile"):
        result(f"{name}.{part}", round(rss_mb(pid, part)), "MB")


def make_stream(base, owner, sid, kind):
    c = Conn(base, owner)
    st, body, _ = c.call("POST", "/api/v1/datasets", {
        "id": sid, "title": f"Bench {kind}", "description": "Benchmark sensors.",
        "owner_organization_id": "city-data-office", "spectrum": "open", "structure": "real_time",
        "stream": {"entity_types": [kind], "retention_days": 3650},
    })
    assert st == 201, body
    st, body, _ = c.call("POST", f"/api/v1/datasets/{sid}/stream-credentials", {"label": "bench"})
    assert st == 201, body
    return json.loads(body)["token"]


def sensor_id(kind, i):
    return f"urn:ngsi-ld:{kind}:s{i:06d}"


def batches(kind, rnd, t0):
    """The request bodies of one round: BATCH entities each."""
    out = []
    rng = random.Random(rnd)
    for start in range(0, ENTITIES, BATCH):
        items = []
        for i in range(start, min(ENTITIES, start + BATCH)):
            at = (t0 + timedelta(seconds=rnd * 60 + i % 60)).strftime("%Y-%m-%dT%H:%M:%SZ")
            e = {"id": sensor_id(kind, i), "type": kind}
            for a in range(ATTRS):
                e[f"a{a}"] = {"type": "Property", "value": round(rng.uniform(0, 100), 2), "observedAt": at}
            if rnd == 0:
                lon = 2.05 + (i % 100) * 0.0025
                lat = 41.32 + (i // 100 % 100) * 0.0015
                e["location"] = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}
            items.append(e)
        out.append(json.dumps(items).encode())
    return out


def send_all(base, token, bodies, path):
    """Send `bodies` over SENDERS connections; every answer must be 201/204."""
    todo = list(enumerate(bodies))
    lock = threading.Lock()
    failures = []

    def worker():
        c = Conn(base, token)
        while True:
            with lock:
                if not todo:
                    return
                _, b = todo.pop(0)
            st, body, _ = c.call("POST", path, b)
            if st not in (201, 204):
                failures.append((st, body[:300]))

    threads = [threading.Thread(target=worker) for _ in range(SENDERS)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not failures, failures[:3]
    return time.perf_counter() - t


def psql(url, sql):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url], input=sql.encode(), check=True,
                   stdout=subprocess.DEVNULL)


def baseline(kind, t0):
    """The same readings as multi-row INSERTs into a plain PostgreSQL table."""
    psql(PG_URL, "DROP TABLE IF EXISTS readings; CREATE TABLE readings (entity_id text NOT NULL, "
                 "attribute text NOT NULL, observed_at timestamptz NOT NULL, value double precision NOT NULL); "
                 "CREATE INDEX readings_entity ON readings (entity_id, attribute, observed_at);")
    statements = []
    for rnd in range(1, ROUNDS + 1):
        for body in batches(kind, rnd, t0):
            rows = []
            for e in json.loads(body):
                for a in range(ATTRS):
                    p = e[f"a{a}"]
                    rows.append(f"('{e['id']}','a{a}','{p['observedAt']}',{p['value']})")
            statements.append("INSERT INTO readings VALUES " + ",".join(rows) + ";\n")
    # SENDERS sessions, each its share; each statement is its own transaction.
    shares = [statements[i::SENDERS] for i in range(SENDERS)]
    t = time.perf_counter()
    procs = [subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", PG_URL], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL) for _ in shares]
    for p, share in zip(procs, shares):
        p.stdin.write("".join(share).encode())
        p.stdin.close()
    for p in procs:
        assert p.wait() == 0
    return time.perf_counter() - t


def write_phase(base, token, kind, t0):
    path = "/ngsi-ld/v1/entityOperations/upsert?options=update"
    create = batches(kind, 0, t0)
    send_all(base, token, create, "/ngsi-ld/v1/entityOperations/upsert")
    bodies = [b for rnd in range(1, ROUNDS + 1) for b in batches(kind, rnd, t0)]
    took = send_all(base, token, bodies, path)
    updates = ENTITIES * ATTRS * ROUNDS
    result("write.citytrust.attribute_updates_per_s", round(updates / took), "1/s")
    result("write.citytrust.seconds", round(took, 2), "s")
    if PG_URL:
        took_pg = baseline(kind, t0)
        result("write.postgres_insert.attribute_updates_per_s", round(updates / took_pg), "1/s")
        result("write.ratio_citytrust_over_postgres", round(took_pg / took, 2), "x")


def query_phase(base, kind):
    c = Conn(base)
    times = []
    counts = []
    for n in range(QUERIES):
        lon = 2.05 + (n % 100) * 0.0025
        q = urllib.parse.urlencode({
            "type": kind, "q": f"a0>{n % 90}", "georel": "near;maxDistance==1500", "geometry": "Point",
            "coordinates": f"[{lon:.4f},41.36]", "limit": "100", "count": "true",
        })
        t = time.perf_counter()
        st, body, r = c.call("GET", f"/ngsi-ld/v1/entities?{q}")
        times.append((time.perf_counter() - t) * 1000)
        assert st == 200, body[:300]
        counts.append(int(r.getheader("NGSILD-Results-Count") or 0))
    p50, p90, p99 = quantiles(times)
    result("query.latest.p50", round(p50, 2), "ms")
    result("query.latest.p90", round(p90, 2), "ms")
    result("query.latest.p99", round(p99, 2), "ms")
    result("query.latest.median_matches", statistics.median(counts), "entities")


def history_rows(db_kind, data_dir, kind, token, base):
    """A month of minute readings for HISTORY_ENTITIES entities, into the history table."""
    c = Conn(base, token)
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    items = [{"id": sensor_id(kind, i), "type": kind, "a0": {"type": "Property", "value": 1.0,
              "observedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ")}} for i in range(HISTORY_ENTITIES)]
    for k in range(0, len(items), 1000):  # a batch holds at most 1,000 entities
        st, body, _ = c.call("POST", "/ngsi-ld/v1/entityOperations/upsert",
                             json.dumps(items[k:k + 1000]).encode())
        assert st in (201, 204), body[:300]
    minutes = 30 * 24 * 60
    if db_kind == "sqlite":
        db = sqlite3.connect(os.path.join(data_dir, "citytrust.sqlite"), timeout=60)
        sample = db.execute("SELECT attribute, observed_at, dataset_id, instance FROM ngsi_history "
                            "WHERE entity_id = ?", (sensor_id(kind, 0),)).fetchone()
    else:
        out = subprocess.run(["psql", "-X", "-A", "-t", "-F", "\t", STORE_URL, "-c",
                              f"SELECT attribute, observed_at, dataset_id, instance FROM ngsi_history "
                              f"WHERE entity_id = '{sensor_id(kind, 0)}'"], capture_output=True, check=True)
        sample = out.stdout.decode().strip().split("\t")
    attribute, observed_at, dataset_id, instance = sample
    frac = observed_at[19:-1]  # the stored instants' fraction digits, e.g. ".000000"
    template = json.loads(instance)

    def stamp(m):
        t = now - timedelta(minutes=minutes - m)
        return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"

    t = time.perf_counter()
    if db_kind == "sqlite":
        # In SQL, as the PostgreSQL branch: 100 M readings built row by row in
        # Python took hours. The table's indexes are dropped for the load and
        # made again after (with their own definitions, read first), which
        # sorts once instead of inserting 100 M keys at random places.
        db.execute("PRAGMA cache_size = -1000000")
        db.execute("PRAGMA journal_size_limit = 67108864")
        db.execute("DELETE FROM ngsi_history WHERE dataset_id = ?", (dataset_id,))
        indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                             "AND tbl_name = 'ngsi_history' AND sql IS NOT NULL").fetchall()
        for name, _ in indexes:
            db.execute(f"DROP INDEX {name}")
        db.commit()
        base_t = (now - timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S")
        for i in range(HISTORY_ENTITIES):
            # `num` as the broker keeps it beside each numeric reading (`deleted`
            # is 0 by default); values spread over 0–100, the same each run.
            db.execute(
                "WITH RECURSIVE m(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM m WHERE k < ?), "
                "r AS (SELECT strftime('%Y-%m-%dT%H:%M:%S', ?, '+' || k || ' minutes') AS t, "
                "round(((k * 7919 + ? * 104729) % 10000) / 100.0, 2) AS v FROM m) "
                "INSERT INTO ngsi_history (entity_id, attribute, observed_at, dataset_id, instance, num) "
                "SELECT ?, ?, t || ? || 'Z', ?, json_set(?, '$.value', v, '$.observedAt', t || 'Z'), v FROM r",
                (minutes, base_t, i, sensor_id(kind, i), attribute, frac, dataset_id, json.dumps(template)))
            # One entity (a month of minutes) a transaction, and the log
            # truncated now and then: the WAL holds a transaction whole.
            db.commit()
            if i % 20 == 19:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        for _, sql in indexes:
            db.execute(sql)
            db.commit()
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        db.execute("ANALYZE")
        db.commit()
        db.close()
    else:
        base_t = (now - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S")
        psql(STORE_URL, f"""
DELETE FROM ngsi_history WHERE dataset_id = '{dataset_id}';
INSERT INTO ngsi_history (entity_id, attribute, observed_at, dataset_id, instance, num)
SELECT 'urn:ngsi-ld:{kind}:s' || lpad(e::text, 6, '0'), '{attribute}',
       to_char(ts, 'YYYY-MM-DD"T"HH24:MI:SS') || '{frac}Z', '{dataset_id}',
       jsonb_set(jsonb_set('{json.dumps(template)}'::jsonb, '{{value}}', to_jsonb(v)),
                 '{{observedAt}}', to_jsonb(to_char(ts, 'YYYY-MM-DD"T"HH24:MI:SS') || 'Z'))::text,
       v::double precision
FROM generate_series(0, {HISTORY_ENTITIES - 1}) e,
     generate_series('{base_t}'::timestamp + interval '1 minute', '{base_t}'::timestamp + interval '{minutes} minutes', interval '1 minute') ts,
     LATERAL (SELECT round((random() * 100 + e * 0 + extract(epoch FROM ts) * 0)::numeric, 2) AS v) r;
ANALYZE ngsi_history;
""")
    result("temporal.history_readings", HISTORY_ENTITIES * minutes, "rows")
    result("temporal.load_seconds", round(time.perf_counter() - t, 1), "s")
    return now


def temporal_phase(base, kind, now):
    c = Conn(base)
    day = []
    month = []
    for n in range(50):
        eid = sensor_id(kind, n % HISTORY_ENTITIES)
        q = urllib.parse.urlencode({"timerel": "between", "timeAt": (now - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                    "endTimeAt": (now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                    "attrs": "a0", "options": "temporalValues"})
        t = time.perf_counter()
        st, body, _ = c.call("GET", f"/ngsi-ld/v1/temporal/entities/{eid}?{q}")
        day.append((time.perf_counter() - t) * 1000)
        assert st == 200, (st, body[:300])
        values = json.loads(body)["a0"]["values"]
        assert 1440 <= len(values) <= 1442, len(values)
        q = urllib.parse.urlencode({"timerel": "between", "timeAt": (now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                    "endTimeAt": (now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                    "attrs": "a0", "options": "aggregatedValues", "aggrMethods": "avg",
                                    "aggrPeriodDuration": "PT1H"})
        t = time.perf_counter()
        st, body, _ = c.call("GET", f"/ngsi-ld/v1/temporal/entities/{eid}?{q}")
        month.append((time.perf_counter() - t) * 1000)
        assert st == 200, (st, body[:300])
        avg = json.loads(body)["a0"]["avg"]
        assert 719 <= len(avg) <= 722, (len(avg), avg[:2], avg[-2:])
    p50, _, p99 = quantiles(day)
    result("temporal.last_24h.p50", round(p50, 2), "ms")
    result("temporal.last_24h.p99", round(p99, 2), "ms")
    p50, _, p99 = quantiles(month)
    result("temporal.hourly_avg_month.p50", round(p50, 2), "ms")
    result("temporal.hourly_avg_month.p99", round(p99, 2), "ms")


def notify_phase(base, token, kind, pid):
    lport = free_port()
    listener = subprocess.Popen(["node", os.path.join(os.path.dirname(__file__), "ngsi_listener.mjs"), str(lport)],
                                stdout=subprocess.PIPE)
    listener.stdout.readline()
    lurl = f"http://127.0.0.1:{lport}"
    try:
        c = Conn(base, token)
        per = max(1, ENTITIES // SUBSCRIPTIONS)
        t = time.perf_counter()
        for s in range(SUBSCRIPTIONS):
            st, body, _ = c.call("POST", "/ngsi-ld/v1/subscriptions", {
                "type": "Subscription",
                "entities": [{"type": kind, "id": sensor_id(kind, i)} for i in range(s * per, (s + 1) * per)],
                "watchedAttributes": ["sent"],
                "notification": {"endpoint": {"uri": f"{lurl}/notify", "accept": "application/json"},
                                 "format": "keyValues", "attributes": ["sent"]},
                "@context": CORE,
            }, ctype="application/ld+json")
            assert st == 201, body[:300]
        result("notify.subscriptions_created_per_s", round(SUBSCRIPTIONS / (time.perf_counter() - t)), "1/s")
        lc = http.client.HTTPConnection("127.0.0.1", lport)
        lc.request("POST", "/reset")
        lc.getresponse().read()
        # UPDATE_RATE entity updates a second, in 100 requests a second,
        # spread over NOTIFY_SENDERS connections (request j on sender
        # j % NOTIFY_SENDERS, each sent at its own due time): one
        # connection cannot offer the rate once a request takes longer than
        # its 10 ms slot.
        per_request = max(1, UPDATE_RATE // 100)
        cpu_before = cpu_ms(pid)
        start = time.perf_counter()
        counts = [0] * NOTIFY_SENDERS
        lates = [0] * NOTIFY_SENDERS

        def sender(k):
            conn = Conn(base, token)
            j = k
            while True:
                due = start + j * per_request / UPDATE_RATE
                if due - start >= NOTIFY_SECONDS:
                    break
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                else:
                    lates[k] += 1
                ms = time.time() * 1000
                items = [{"id": sensor_id(kind, (j * per_request + n) % ENTITIES), "type": kind,
                          "sent": {"type": "Property", "value": ms}} for n in range(per_request)]
                st, body, _ = conn.call("POST", "/ngsi-ld/v1/entityOperations/upsert?options=update",
                                        json.dumps(items).encode())
                assert st in (201, 204), body[:300]
                counts[k] += per_request
                j += NOTIFY_SENDERS

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(NOTIFY_SENDERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent = sum(counts)
        took = time.perf_counter() - start
        result("notify.updates_per_s_sent", round(sent / took), "1/s")
        result("notify.requests_sent_late", sum(lates), f"of_{sent // per_request}")
        # Wait for the outbox to drain (or 60 s).
        deadline = time.time() + 60
        stats = {}
        while time.time() < deadline:
            lc.request("GET", "/stats")
            stats = json.loads(lc.getresponse().read())
            if stats["count"] >= sent:
                break
            time.sleep(0.5)
        result("notify.delivered", stats["count"], f"of_{sent}")
        # The broker's CPU for the updates and their notifications (less
        # noisy than the latency on a machine the sender and listener share).
        result("notify.broker_cpu_per_update", round(1000 * (cpu_ms(pid) - cpu_before) / max(1, sent), 1), "us")
        result("notify.notifications", stats["notifications"], "requests")
        for k in ("p50", "p90", "p99", "max"):
            if stats.get(k) is not None:
                result(f"notify.latency.{k}", round(stats[k], 1), "ms")
    finally:
        listener.terminate()


def main():
    work = tempfile.mkdtemp(prefix="ct-ngsi-bench-")
    data = os.path.join(work, "demo")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    store = ["--database-url", STORE_URL] if STORE_URL else []
    env = dict(os.environ, CITYTRUST_LOG=os.environ.get("BENCH_LOG", "warn"))
    if BROKER == "serve":
        # The broker alone: a trust with no data but the benchmark's, its
        # first account an administrator, who makes the owner's organisation.
        os.makedirs(data)
        subprocess.run([BIN, "user", "add", "admin", "--data", data] + store, input=PASSWORD.encode(),
                       check=True, env=env, stdout=subprocess.DEVNULL)
        args = [BIN, "serve", "--data", data, "--listen", f"127.0.0.1:{port}"]
    else:
        args = [BIN, "demo", "--data", data, "--listen", f"127.0.0.1:{port}", "--live-speed", "0"]
    args += ["--allow-private-notifications"] + store
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "server.log"), "w"),
                            env=env)
    try:
        c = Conn(base)
        for _ in range(1200):
            try:
                if c.call("GET", "/healthz")[0] == 200:
                    break
            except Exception:
                c = Conn(base)
                time.sleep(0.25)
        rss_results("rss.start", proc.pid)
        if BROKER == "serve":
            st, body, _ = c.call("POST", "/api/v1/auth/token", {"username": "admin", "password": PASSWORD})
            assert st == 200, body
            admin = Conn(base, json.loads(body)["token"])
            st, body, _ = admin.call("POST", "/api/v1/organizations",
                                     {"id": "city-data-office", "name": "City Data Office", "kind": "city_department"})
            assert st == 201, body
            subprocess.run([BIN, "user", "add", "owner", "--data", data, "--organization", "city-data-office"] + store,
                           input=PASSWORD.encode(), check=True, env=env, stdout=subprocess.DEVNULL)
        print(f"broker: citytrust {BROKER}", flush=True)
        st, body, _ = c.call("POST", "/api/v1/auth/token", {"username": "owner", "password": PASSWORD})
        owner = json.loads(body)["token"]
        kind = "BenchSensor"
        token = make_stream(base, owner, "bench-sensors", kind)
        hkind = "BenchHistory"
        htoken = make_stream(base, owner, "bench-history", hkind)
        print(f"store: {'PostgreSQL' if STORE_URL else 'SQLite'}; entities {ENTITIES} x {ATTRS} attributes, "
              f"batches of {BATCH}, {ROUNDS} update rounds, {SENDERS} senders", flush=True)
        t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
        if "write" in PHASES:
            write_phase(base, token, kind, t0)
        else:
            send_all(base, token, batches(kind, 0, t0), "/ngsi-ld/v1/entityOperations/upsert")
        rss_results("rss.after_writes", proc.pid)
        if "query" in PHASES:
            query_phase(base, kind)
        if "temporal" in PHASES:
            now = history_rows("pg" if STORE_URL else "sqlite", data, hkind, htoken, base)
            temporal_phase(base, hkind, now)
        if "notify" in PHASES:
            notify_phase(base, token, kind, proc.pid)
        rss_results("rss.end", proc.pid)
    finally:
        proc.terminate()
        proc.wait()
        print(f"(server log: {work}/server.log)")


if __name__ == "__main__":
    sys.exit(main())
