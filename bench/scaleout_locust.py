#!/usr/bin/env python3
"""Issue 30, item 4: a mixed scenario over several `citytrust serve` nodes,
driven by Locust. Run by bench/scaleout.sh, which starts PostgreSQL, an
S3-compatible store and the nodes; this file is both the locustfile and the
helpers around it:

    python scaleout_locust.py setup  --nodes URL[,URL…] --users N --state FILE
    python scaleout_locust.py probe  --nodes URL[,URL…] --seconds S --out FILE
    python scaleout_locust.py cpu    --nodes PID[,PID…] --moto PID --postmaster PID --out FILE
    python scaleout_locust.py report --label L --csv PREFIX --probe FILE
                                     [--cpu BEFORE AFTER LOCUST_TIME] --out FILE
    python scaleout_locust.py compare ONE.json MANY.json
    locust -f scaleout_locust.py …   (SCALEOUT_STATE=FILE: what setup wrote)

The scenario. Every Locust user is one client; user i talks to node
i mod (number of nodes), keeps its connection, and waits THINK_MS between
requests (0 by default: the clients keep the nodes busy). Its requests, by
weight:

  search             30  GET /api/v1/datasets?q=WORD (anonymous), one of a
                         rotation of words, 20 results and the facets
  log_read           20  GET /api/v1/ledger/entries/{i} (anonymous), i at
                         random below the newest checkpoint's size (taken from
                         the previous entry's answer)
  open_download      15  GET /api/v1/datasets/seattle-weather/data?format=csv&limit=1000
                         as the user's own account (a logged content.read)
  governed_download  15  GET /api/v1/datasets/household-electricity/data?format=csv
                         &purpose=research as `analyst`, under the demo's
                         consent-based agreement: every consenting
                         household's 672 rows and no others. Checked against
                         the consent changes the clients made (on any node):
                         a withdrawal acknowledged before the read was sent
                         must be in force for it, and so must a consent
                         given; a change still in flight may go either way
  sql_query          12  POST /api/v1/query, a GROUP BY over seattle_weather
                         (purpose research), as the user's own account
  consent_change      5  the user's own resident account withdraws its
                         consent to research by City University, or gives
                         it again (alternately)
  upload              3  `owner` publishes a new 20-row version of one open
                         dataset made for the bench (every user uploads to
                         the same dataset, so nodes claim version numbers
                         against each other)

Every answer is checked (status, the CityTrust-Log-Entry header of a logged
read, the rows a read must have); anything else is a failure in Locust's
statistics, with the answer's first bytes as the reason.

Why governed reads all go through one account: the demo's agreement names
`analyst` alone, and a new agreement for row-level personal data must stay
open for public comment 14 days before the trustees may vote. So the
throttle's per-caller limit (2 reads running per node, citytrust-service's
throttle.rs) applies to every governed read at once — as it would to one
real analyst's client. With many users that kind queues for those places
(its latency includes the wait), and three nodes have three times as many.

The probe (a process of its own, not counted in Locust's figures): once a
second, an anonymous open read of a 9-row dataset from node k; from the
moment its answer arrives, /ledger/checkpoint is polled every 20 ms on node
k+1 (another node when there are several) until the signed size exceeds the
read's log index. That time is the log's integration delay.
"""
import csv
import itertools
import json
import os
import random
import re
import sys
import time

PASSWORD = "demo-password"
BENCH_PASSWORD = "scaleout-bench-password"
PERSONAL = "household-electricity"
# The synthetic dataset's households (demo.rs): H0000…H0039; `resident` is H0007.
DEMO_HOUSEHOLD = "H0007"
HOUSEHOLDS = [f"H{h:04}" for h in range(40) if f"H{h:04}" != DEMO_HOUSEHOLD]
MAX_USERS = len(HOUSEHOLDS)
OPEN = "seattle-weather"
PROBE_DATASET = "barcelona-air-stations"
SEARCH_WORDS = ["air", "bike", "energy", "barcelona", "weather", "population", "stations",
                "trips", "electricity", "", "montreal election", "transport", "quality", "deaths"]
SQL = ("SELECT weather, COUNT(*) AS days, AVG(temp_max) AS mean_max "
       "FROM seattle_weather GROUP BY weather ORDER BY days DESC")
SQL_GROUPS = 5  # drizzle, fog, rain, snow, sun
GOVERNED_HEADER = "household_id,meter_id,postcode,reading_time,kwh"
WEIGHTS = {
    "search": 30,
    "log_read": 20,
    "open_download": 15,
    "governed_download": 15,
    "sql_query": 12,
    "consent_change": 5,
    "upload": 3,
}
KINDS = list(WEIGHTS)


def consent_body():
    return {"dataset_id": PERSONAL, "purpose": "research",
            "recipient_organization_id": "city-university"}


def upload_body():
    rows = "".join(f"S{n:02},{random.randint(0, 999)}\n" for n in range(20))
    return ("station,reading\n" + rows).encode()


# ---- setup, probe, report (plain Python; Locust is not imported) -------------------

def _session():
    import requests
    return requests.Session()


def _call(s, method, url, token=None, expect=(200, 201), **kw):
    headers = kw.pop("headers", {})
    if token:
        headers["authorization"] = f"Bearer {token}"
    r = s.request(method, url, headers=headers, timeout=120, **kw)
    if r.status_code not in expect:
        raise SystemExit(f"setup: {method} {url} answered {r.status_code}: {r.text[:500]}")
    return r


def setup(nodes, users, state_path):
    """Accounts and data the scenario needs, made through node 1's API."""
    if users > MAX_USERS:
        raise SystemExit(f"at most {MAX_USERS} users: each needs a household of its own to consent for")
    base = nodes[0]
    s = _session()

    def token(username, password=PASSWORD):
        r = _call(s, "POST", f"{base}/api/v1/auth/token", json={"username": username, "password": password})
        return r.json()["token"]

    admin, owner, analyst = token("admin"), token("owner"), token("analyst")
    r = _call(s, "POST", f"{base}/api/v1/datasets", owner, json={
        "title": "Scale-out bench uploads",
        "description": "Small versions published during the scale-out benchmark.",
        "owner_organization_id": "city-data-office", "spectrum": "open"})
    upload_dataset = r.json()["id"]
    _call(s, "POST", f"{base}/api/v1/datasets/{upload_dataset}/versions", owner,
          data=upload_body(), headers={"content-type": "text/csv"})
    accounts = []
    for i in range(users):
        username, household = f"bench-user-{i}", HOUSEHOLDS[i]
        _call(s, "POST", f"{base}/api/v1/users", admin, json={
            "username": username, "display_name": f"Bench user {i}", "password": BENCH_PASSWORD,
            "roles": ["resident"]})
        code = _call(s, "POST", f"{base}/api/v1/datasets/{PERSONAL}/link-codes", owner,
                     json={"subject_key": household}).json()["code"]
        t = token(username, BENCH_PASSWORD)
        _call(s, "POST", f"{base}/api/v1/me/links", t, json={"code": code})
        consent = _call(s, "POST", f"{base}/api/v1/me/consents", t, json=consent_body()).json()
        accounts.append({"username": username, "token": t, "household": household,
                         "consent_id": consent["id"]})
    size = int(_call(s, "GET", f"{base}/ledger/checkpoint").text.splitlines()[1])
    state = {"nodes": nodes, "owner": owner, "analyst": analyst, "users": accounts,
             "upload_dataset": upload_dataset, "log_size": size,
             "households_that_consented": sorted([a["household"] for a in accounts] + [DEMO_HOUSEHOLD])}
    with open(state_path, "w") as f:
        json.dump(state, f)
    print(f"setup: {users} bench accounts linked and consenting, upload dataset {upload_dataset}, "
          f"log at {size} entries")


def probe(nodes, seconds, out_path):
    """The log's integration delay, sampled once a second for `seconds`."""
    import resource
    s = _session()
    delays, failures = [], []
    start = time.monotonic()
    for k in itertools.count():
        due = start + k
        if due >= start + seconds:
            break
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        read_node, poll_node = nodes[k % len(nodes)], nodes[(k + 1) % len(nodes)]
        try:
            r = s.get(f"{read_node}/api/v1/datasets/{PROBE_DATASET}/data?format=csv", timeout=30)
            seen_at = time.monotonic()
            if r.status_code != 200 or "citytrust-log-entry" not in r.headers:
                failures.append(f"read {r.status_code}: {r.text[:200]}")
                continue
            index = int(r.headers["citytrust-log-entry"])
            while True:
                c = s.get(f"{poll_node}/ledger/checkpoint", timeout=30)
                if c.status_code != 200:
                    failures.append(f"checkpoint {c.status_code}: {c.text[:200]}")
                    break
                if int(c.text.splitlines()[1]) > index:
                    delays.append(time.monotonic() - seen_at)
                    break
                if time.monotonic() - seen_at > 60:
                    failures.append(f"entry {index} not in a checkpoint after 60 s")
                    break
                time.sleep(0.02)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            failures.append(f"{type(e).__name__}: {e}")
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with open(out_path, "w") as f:
        json.dump({"delays_s": delays, "failures": failures, "cpu_s": ru.ru_utime + ru.ru_stime}, f)


def _proc_ticks(pid):
    """(own, reaped children's) CPU ticks of a live process, user + system."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0, 0
    # After the command: state ppid … utime(14) stime(15) cutime(16) cstime(17), 1-based in proc(5).
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _children(ppid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                        out.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def cpu_snapshot(nodes, moto, postmaster, out_path):
    """CPU seconds so far of the nodes, moto, the PostgreSQL cluster (the
    postmaster, its live backends and those it reaped) and the whole machine."""
    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    busy = cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6]  # user nice system irq softirq
    own, reaped = _proc_ticks(postmaster)
    pg = own + reaped + sum(_proc_ticks(c)[0] + _proc_ticks(c)[1] for c in _children(postmaster))
    snap = {"t": time.monotonic(), "machine": busy / hz, "postgres": pg / hz,
            "nodes": sum(_proc_ticks(p)[0] for p in nodes) / hz, "moto": _proc_ticks(moto)[0] / hz}
    with open(out_path, "w") as f:
        json.dump(snap, f)


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(p / 100 * len(v) + 0.5)) - 1))]


def report(label, csv_prefix, probe_path, cpu_paths, out_path):
    rows = {}
    with open(f"{csv_prefix}_final_stats.csv", newline="") as f:
        for row in csv.DictReader(f):
            rows[row["Name"]] = row
    with open(f"{csv_prefix}_final_exceptions.csv", newline="") as f:
        exceptions = sum(int(row["Count"]) for row in csv.DictReader(f))
    total = rows.get("Aggregated")
    with open(probe_path) as f:
        pr = json.load(f)
    cpu = {}
    if cpu_paths:
        before_path, after_path, locust_time = cpu_paths
        with open(before_path) as f:
            before = json.load(f)
        with open(after_path) as f:
            after = json.load(f)
        cpu = {k: after[k] - before[k] for k in before}
        with open(locust_time) as f:  # /usr/bin/time -f '%U %S'
            cpu["locust"] = sum(float(x) for x in f.read().splitlines()[-1].split())
        cpu["probe"] = pr.get("cpu_s", 0.0)
    kinds = {}
    print(f"\n{label}")
    print(f"  {'kind':<18} {'requests':>9} {'failures':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name in KINDS + ["Aggregated"]:
        row = rows.get(name)
        if row is None:
            print(f"  {name:<18} {'—':>9}")
            continue
        k = {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
             "rps": float(row["Requests/s"]), "p50_ms": float(row["50%"] or "nan"),
             "p99_ms": float(row["99%"] or "nan")}
        kinds[name] = k
        shown = "total" if name == "Aggregated" else name
        print(f"  {shown:<18} {k['requests']:>9,} {k['failures']:>9,} {k['rps']:>8.1f} "
              f"{k['p50_ms']:>8.0f} {k['p99_ms']:>8.0f}")
    others = sorted(set(rows) - set(KINDS) - {"Aggregated"})
    for name in others:
        print(f"  unexpected request name in the statistics: {name!r}")
    d = pr["delays_s"]
    load_failures = int(total["Failure Count"]) if total else 0
    errors = load_failures + exceptions + len(pr["failures"])
    print(f"  errors: {errors} ({load_failures} failed requests, {exceptions} exceptions in the "
          f"load tool, {len(pr['failures'])} in the probe)")
    for fl in pr["failures"][:5]:
        print(f"    probe: {fl}")
    print(f"  log integration delay (read answered → checkpoint covers it), {len(d)} samples: "
          f"p50 {percentile(d, 50) * 1000:.0f} ms, p99 {percentile(d, 99) * 1000:.0f} ms, "
          f"max {max(d) * 1000 if d else float('nan'):.0f} ms")
    if cpu:
        # CPU seconds used while the load ran, from /proc. "Other" is whatever
        # else ran on the machine meanwhile: on a shared machine, a build.
        cores = os.cpu_count() or 1
        other = cpu["machine"] - sum(cpu[k] for k in ["nodes", "postgres", "moto", "locust", "probe"])
        print(f"  CPU-s over {cpu['t']:.0f} s × {cores} cores = {cpu['t'] * cores:.0f}: busy {cpu['machine']:.0f} — "
              f"nodes {cpu['nodes']:.1f}, PostgreSQL {cpu['postgres']:.1f}, moto (S3) {cpu['moto']:.1f}, "
              f"Locust {cpu['locust']:.1f}, probe {cpu['probe']:.1f}, other processes {max(other, 0):.1f}")
    with open(out_path, "w") as f:
        json.dump({"label": label, "kinds": kinds, "errors": errors,
                   "delay_p50_ms": percentile(d, 50) * 1000, "delay_p99_ms": percentile(d, 99) * 1000,
                   "delay_samples": len(d), "cpu_s": cpu}, f)
    return errors


def compare(one_path, many_path):
    with open(one_path) as f:
        one = json.load(f)
    with open(many_path) as f:
        many = json.load(f)
    a, b = one["kinds"].get("Aggregated", {}), many["kinds"].get("Aggregated", {})
    print(f"\nthroughput, {many['label']} ÷ {one['label']}: "
          f"{b.get('rps', 0):.1f} / {a.get('rps', 0):.1f} req/s = "
          f"{b.get('rps', 0) / a['rps'] if a.get('rps') else float('nan'):.2f}×")
    print(f"  {'kind':<18} {'req/s ratio':>12} {'p50 ms (1 → n)':>18} {'p99 ms (1 → n)':>18}")
    for name in KINDS:
        x, y = one["kinds"].get(name), many["kinds"].get(name)
        if not x or not y:
            continue
        ratio = y["rps"] / x["rps"] if x["rps"] else float("nan")
        print(f"  {name:<18} {ratio:>11.2f}× {x['p50_ms']:>8.0f} → {y['p50_ms']:<7.0f} "
              f"{x['p99_ms']:>8.0f} → {y['p99_ms']:<7.0f}")
    print(f"  log integration delay p50/p99: {one['delay_p50_ms']:.0f}/{one['delay_p99_ms']:.0f} ms → "
          f"{many['delay_p50_ms']:.0f}/{many['delay_p99_ms']:.0f} ms")
    return one["errors"] + many["errors"]


def main(argv):
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--nodes", required=True)
    s.add_argument("--users", type=int, required=True)
    s.add_argument("--state", required=True)
    s = sub.add_parser("probe")
    s.add_argument("--nodes", required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("report")
    s.add_argument("--label", required=True)
    s.add_argument("--csv", required=True)
    s.add_argument("--probe", required=True)
    s.add_argument("--cpu", nargs=3, metavar=("BEFORE", "AFTER", "LOCUST_TIME"))
    s.add_argument("--out", required=True)
    s = sub.add_parser("cpu")
    s.add_argument("--nodes", required=True, help="the nodes' process ids, comma-separated")
    s.add_argument("--moto", type=int, required=True)
    s.add_argument("--postmaster", type=int, required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("compare")
    s.add_argument("one")
    s.add_argument("many")
    a = p.parse_args(argv)
    if a.cmd == "setup":
        setup(a.nodes.split(","), a.users, a.state)
    elif a.cmd == "probe":
        probe(a.nodes.split(","), a.seconds, a.out)
    elif a.cmd == "report":
        return 1 if report(a.label, a.csv, a.probe, a.cpu, a.out) else 0
    elif a.cmd == "cpu":
        cpu_snapshot([int(x) for x in a.nodes.split(",")], a.moto, a.postmaster, a.out)
    elif a.cmd == "compare":
        return 1 if compare(a.one, a.many) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# ---- the locustfile ------------------------------------------------------------------

from locust import FastHttpUser, constant, events, task  # noqa: E402
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV  # noqa: E402

with open(os.environ["SCALEOUT_STATE"]) as _f:
    STATE = json.load(_f)
NODES = STATE["nodes"]
ALLOWED = set(STATE["households_that_consented"])
THINK = float(os.environ.get("THINK_MS", "0")) / 1000
_next_index = itertools.count()
HOUSEHOLD_FIELD = re.compile(r"^(H\d{4}),", re.M)

# What the clients did with each bench household's consent, in this process's
# monotonic time: (time, event), event one of give_sent, give_ack,
# withdraw_sent, withdraw_ack. Setup left every one given.
CONSENT_EVENTS = {a["household"]: [(0.0, "give_ack")] for a in STATE["users"]}


def consent_expected(household, sent, received):
    """Whether a governed read sent at `sent` and answered at `received` must
    include the household (True), must not (False), or either (None: a change
    was in flight while it ran)."""
    events_ = CONSENT_EVENTS[household]
    before = [e for t, e in events_ if t <= sent]
    during = [e for t, e in events_ if sent < t <= received]
    last = before[-1] if before else None
    if last == "give_ack" and "withdraw_sent" not in during:
        return True
    if last == "withdraw_ack" and "give_sent" not in during:
        return False
    return None


_env = None


@events.init.add_listener
def _keep_environment(environment, **_kw):
    global _env
    _env = environment


@events.quit.add_listener
def _final_csv(**_kw):
    """Locust writes PREFIX_stats.csv once a second while running and not
    again at the end, so the file misses the last second and the requests
    finished during --stop-timeout. Write the final figures, same columns,
    to PREFIX_final_stats.csv (and the failures and exceptions beside it)."""
    prefix = _env.parsed_options.csv_prefix if _env and _env.parsed_options else None
    if not prefix:
        return
    out = StatsCSV(_env, PERCENTILES_TO_REPORT)
    for suffix, write in [("stats", out.requests_csv), ("failures", out.failures_csv),
                          ("exceptions", out.exceptions_csv)]:
        with open(f"{prefix}_final_{suffix}.csv", "w", newline="") as f:
            write(csv.writer(f))


def _bearer(token):
    return {"authorization": f"Bearer {token}"}


def _json(r):
    """The answer's JSON, or None (and the request marked failed)."""
    try:
        return r.json()
    except ValueError:
        r.failure(f"{r.status_code}, not JSON: {(r.text or '')[:300]}")
        return None


class Client(FastHttpUser):
    wait_time = constant(THINK)
    # Locust's own default is 60 s; a request taking longer is a failure.
    network_timeout = 60.0
    connection_timeout = 60.0

    def __init__(self, environment):
        self.index = next(_next_index)
        # Users spread over the nodes; `host` is read when the client is made.
        self.host = NODES[self.index % len(NODES)]
        super().__init__(environment)
        self.me = STATE["users"][self.index % len(STATE["users"])]
        self.consent_id = self.me["consent_id"]
        self.consenting = True
        self.log_size = STATE["log_size"]
        self.rng = random.Random(self.index)

    def _logged(self, r):
        """A logged read must name its entry."""
        if r.status_code != 200:
            r.failure(f"{r.status_code}: {(r.text or '')[:300]}")
            return False
        if not r.headers.get("citytrust-log-entry", "").isdigit():
            r.failure("no CityTrust-Log-Entry header on a logged read")
            return False
        return True

    @task(WEIGHTS["search"])
    def search(self):
        q = self.rng.choice(SEARCH_WORDS)
        with self.client.get(f"/api/v1/datasets?q={q}", name="search", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {(r.text or '')[:300]}")
            elif (body := _json(r)) is not None and not isinstance(body.get("items"), list):
                r.failure("no items in a search answer")

    @task(WEIGHTS["log_read"])
    def log_read(self):
        i = self.rng.randrange(self.log_size)
        with self.client.get(f"/api/v1/ledger/entries/{i}", name="log_read", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {(r.text or '')[:300]}")
                return
            body = _json(r)
            if body is None:
                return
            size = body.get("checkpoint", {}).get("size", 0)
            if body.get("index") != i or not i < size or (size > 1 and not body.get("inclusion_proof")):
                r.failure(f"entry {i}: answered as entry {body.get('index')} of a checkpoint of {size}, "
                          f"proof of {len(body.get('inclusion_proof') or [])} hashes")
                return
            self.log_size = max(self.log_size, size)

    @task(WEIGHTS["open_download"])
    def open_download(self):
        with self.client.get(f"/api/v1/datasets/{OPEN}/data?format=csv&limit=1000", name="open_download",
                             headers=_bearer(self.me["token"]), catch_response=True) as r:
            if self._logged(r) and r.text.count("\n") != 1001:
                r.failure(f"expected 1,000 rows and a header, got {r.text.count(chr(10))} lines")

    @task(WEIGHTS["governed_download"])
    def governed_download(self):
        sent = time.monotonic()
        with self.client.get(f"/api/v1/datasets/{PERSONAL}/data?format=csv&purpose=research",
                             name="governed_download", headers=_bearer(STATE["analyst"]),
                             catch_response=True) as r:
            received = time.monotonic()
            if not self._logged(r):
                return
            text = r.text
            if not text.startswith(GOVERNED_HEADER + "\n"):
                r.failure(f"unexpected header {text[:80]!r}")
                return
            served = set(HOUSEHOLD_FIELD.findall(text))
            stray = served - ALLOWED
            if stray:
                r.failure(f"rows of households that never consented: {sorted(stray)[:5]}")
                return
            # The demo resident's household consents throughout.
            if DEMO_HOUSEHOLD not in served:
                r.failure(f"{DEMO_HOUSEHOLD} consents throughout, but its rows are missing")
                return
            # A withdrawal acknowledged (by any node) before the read was sent
            # is in force for it; so is a consent given.
            for h in CONSENT_EVENTS:
                want = consent_expected(h, sent, received)
                if want is False and h in served:
                    r.failure(f"{h}'s withdrawal was acknowledged before the read, but its rows were served")
                    return
                if want is True and h not in served:
                    r.failure(f"{h}'s consent was acknowledged before the read, but its rows are missing")
                    return

    @task(WEIGHTS["sql_query"])
    def sql_query(self):
        with self.client.post("/api/v1/query", name="sql_query", headers=_bearer(self.me["token"]),
                              json={"sql": SQL, "purpose": "research"}, catch_response=True) as r:
            if self._logged(r) and (rows := _json(r)) is not None and len(rows) != SQL_GROUPS:
                r.failure(f"expected {SQL_GROUPS} groups: {(r.text or '')[:300]}")

    @task(WEIGHTS["consent_change"])
    def consent_change(self):
        token = _bearer(self.me["token"])
        events_ = CONSENT_EVENTS[self.me["household"]]
        if self.consenting:
            events_.append((time.monotonic(), "withdraw_sent"))
            with self.client.post(f"/api/v1/me/consents/{self.consent_id}/withdraw", name="consent_change",
                                  headers=token, catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"{r.status_code}: {(r.text or '')[:300]}")
                elif (body := _json(r)) is None:
                    pass
                elif body.get("withdrawn_at") is None:
                    r.failure(f"withdrawn, but no withdrawn_at: {(r.text or '')[:300]}")
                else:
                    events_.append((time.monotonic(), "withdraw_ack"))
                    self.consenting = False
        else:
            events_.append((time.monotonic(), "give_sent"))
            with self.client.post("/api/v1/me/consents", name="consent_change", headers=token,
                                  json=consent_body(), catch_response=True) as r:
                if r.status_code != 201:
                    r.failure(f"{r.status_code}: {(r.text or '')[:300]}")
                elif (body := _json(r)) is not None:
                    events_.append((time.monotonic(), "give_ack"))
                    self.consent_id, self.consenting = body["id"], True

    @task(WEIGHTS["upload"])
    def upload(self):
        headers = {**_bearer(STATE["owner"]), "content-type": "text/csv"}
        with self.client.post(f"/api/v1/datasets/{STATE['upload_dataset']}/versions", name="upload",
                              data=upload_body(), headers=headers, catch_response=True) as r:
            if r.status_code != 201:
                r.failure(f"{r.status_code}: {(r.text or '')[:300]}")
            elif (body := _json(r)) is not None and body.get("rows") != 20:
                r.failure(f"expected a 20-row version: {(r.text or '')[:300]}")
