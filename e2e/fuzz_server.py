"""Black-box fuzzing of a running CityTrust demo over HTTP.

Starts its own server (`CITYTRUST_LOG=warn $CITYTRUST demo --data <temp dir>
--listen 127.0.0.1:<free port>`), waits for `/healthz`, then for a bounded time
sends, from a few threads, as anonymous and signed-in users (analyst, owner):

- arbitrary bytes (0..64 KiB, random content types) to every POST/PUT/PATCH
  path in `/api/openapi.json`, path parameters filled with real ids or junk,
  and junk query strings to the GET paths;
- grammar-generated SQL to `POST /api/v1/query`: long operator chains, deep
  parentheses, CASE/CAST/TRY_CAST on real columns, division by zero, string
  blow-ups (repeat, lpad, rpad, replace, ||, doubling CTE chains), self cross
  joins, huge generate_series and IN lists, unknown names, bad text, and
  statements that are not SELECT;
- uploads as `owner` to a fresh closed dataset: broken CSV (ragged rows,
  unclosed quotes, CR/CRLF, BOMs, NUL bytes, 1 MiB fields, thousands of
  columns, gzip declared but not gzip), JSON / NDJSON / GeoJSON with deep
  nesting, huge numbers, wrong types and unknown fields, junk Parquet;
- JSON-LD documents (remote `@context`, deep `@graph`) to JSON endpoints.

It checks that
- the server process never exits, and `/healthz` answers 200 at the end;
- no response has a status >= 500, and no request loses its connection
  without an answer (a panicking handler drops it); no panic in the log;
- the server's peak resident memory (VmHWM) stays under FUZZ_MAX_RSS_MIB.

Bounds: FUZZ_SECONDS of fuzzing (default 90) after a start-up of at most
FUZZ_STARTUP_SECONDS (default 240); each request waits at most
FUZZ_REQUEST_TIMEOUT seconds (default 120, a query's own limit is 30 s), so
the whole run takes at most start-up + FUZZ_SECONDS + FUZZ_REQUEST_TIMEOUT + a
few seconds. FUZZ_THREADS (default 4) workers; FUZZ_SEED (default 20261205)
fixes what each worker sends, in order (how far each gets depends on the
server's speed). FUZZ_FAILURES_DIR, if set, keeps the full body of every
failing request there.

    FUZZ_SECONDS=60 python3 e2e/fuzz_server.py     # from the repo root

Exit code 0 when every check passed, 1 otherwise (each failure printed with
method, path, content type and the first 300 bytes of its body).
"""

import collections
import gzip
import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.getcwd()
BINARY = os.path.join(ROOT, os.environ.get("CITYTRUST", "target/debug/citytrust"))
SECONDS = float(os.environ.get("FUZZ_SECONDS", "90"))
SEED = int(os.environ.get("FUZZ_SEED", "20261205"))
MAX_RSS_MIB = float(os.environ.get("FUZZ_MAX_RSS_MIB", "1536"))
THREADS = int(os.environ.get("FUZZ_THREADS", "4"))
STARTUP_SECONDS = float(os.environ.get("FUZZ_STARTUP_SECONDS", "240"))
REQUEST_TIMEOUT = float(os.environ.get("FUZZ_REQUEST_TIMEOUT", "120"))
FAILURES_DIR = os.environ.get("FUZZ_FAILURES_DIR")
PASSWORD = "demo-password"
USERS = ["analyst", "owner"]
READ_CAP = 4 * 1024 * 1024  # bytes of a response body read before hanging up
KIB = 1024
MAX_SHOWN = 60  # failures printed in full
MIB = 1024 * 1024


# ---------------------------------------------------------------- the server


class Server:
    """The demo server under test, in its own temporary data directory."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="citytrust-fuzz.")
        self.port = free_port()
        self.host = "127.0.0.1"
        self.err_path = os.path.join(self.dir, "server.err")
        self.proc = None

    def start(self):
        env = dict(os.environ, CITYTRUST_LOG="warn")
        args = [BINARY, "demo", "--data", os.path.join(self.dir, "data"),
                "--listen", f"{self.host}:{self.port}"]
        with open(os.path.join(self.dir, "server.out"), "wb") as out, \
                open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, env=env,
                                         stdin=subprocess.DEVNULL)

    def wait_healthy(self):
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if not self.alive():
                raise SystemExit(f"the server exited during start-up ({self.proc.returncode}):\n"
                                 + self.stderr_tail())
            if self.healthz() == 200:
                return
            time.sleep(0.5)
        raise SystemExit(f"/healthz did not answer 200 within {STARTUP_SECONDS:.0f} s\n"
                         + self.stderr_tail())

    def healthz(self):
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            conn.close()
            return status
        except OSError:
            return None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def peak_rss_mib(self):
        """VmHWM of the server process, or None once it has gone."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stderr_text(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_tail(self, lines=40):
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- HTTP


class Request:
    def __init__(self, kind, user, method, path, body=b"", headers=None):
        self.kind, self.user, self.method, self.path = kind, user, method, path
        self.body = body
        self.headers = headers or {}

    def describe(self):
        ctype = self.headers.get("content-type", "-")
        extra = "".join(f" {k}: {v}" for k, v in self.headers.items()
                        if k not in ("content-type", "authorization"))
        sha = hashlib.sha256(self.body).hexdigest()[:16]
        return (f"[{self.kind}] as {self.user}: {self.method} {self.path}\n"
                f"    content-type: {ctype}{extra}; body {len(self.body)} bytes (sha256 {sha}…)\n"
                f"    body[:300]: {self.body[:300]!r}")


def send(server, req, token):
    """Send `req`; return (status or an error word, first bytes of the answer)."""
    headers = dict(req.headers)
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection(server.host, server.port, timeout=REQUEST_TIMEOUT)
    try:
        sent = True
        try:
            conn.request(req.method, req.path, body=req.body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            sent = False  # the server answered before reading everything; read that answer
        try:
            resp = conn.getresponse()
            data = resp.read(READ_CAP)
            return resp.status, data[:300]
        except socket.timeout:
            return "timeout", b""
        except (http.client.HTTPException, OSError) as e:
            return ("no-answer" if sent else "send-aborted"), repr(e).encode()
    except socket.timeout:
        return "timeout", b""
    except OSError as e:
        return "conn-error", repr(e).encode()
    finally:
        conn.close()


def http_json(server, method, path, token=None, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"content-type": "application/json"} if body is not None else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {raw[:300]!r}")
        return json.loads(raw) if raw else None
    finally:
        conn.close()


# ---------------------------------------------------------------- what the demo holds


class Target:
    """Everything the generators need to know about the running demo."""

    def __init__(self, server):
        self.tokens = {None: None}
        for user in USERS:
            self.tokens[user] = http_json(server, "POST", "/api/v1/auth/token",
                                          body={"username": user, "password": PASSWORD})["token"]
        owner = self.tokens["owner"]
        spec = http_json(server, "GET", "/api/openapi.json")
        self.writes, self.reads = operations(spec)
        listing = http_json(server, "GET", "/api/v1/datasets?per_page=100", owner)
        self.datasets = [d["id"] for d in listing["items"]]
        self.tables = table_columns(server, self.datasets, owner)
        org = http_json(server, "GET", "/api/v1/me", owner)["organization_ids"][0]
        self.upload_target = fuzz_dataset(server, owner, org, listing["items"])
        self.ids = known_ids(server, owner, self.datasets, org)


def operations(spec):
    """([(method, path)] that take bodies, [path] of GETs) from the OpenAPI document."""
    writes, reads = [], []
    for path, ops in sorted(spec["paths"].items()):
        for method in ops:
            if method in ("post", "put", "patch"):
                writes.append((method.upper(), path))
            elif method == "get":
                reads.append(path)
    return writes, reads


def table_columns(server, datasets, token):
    """{table name: [(column, type)]} of each dataset's latest version."""
    tables = {}
    for ds in datasets:
        try:
            versions = http_json(server, "GET", f"/api/v1/datasets/{ds}/versions", token)
        except RuntimeError:
            continue
        if versions:
            latest = max(versions, key=lambda v: v["version"])
            tables[ds.replace("-", "_")] = [(c["name"], c["type"]) for c in latest["columns"]]
    return tables


def fuzz_dataset(server, token, org, items):
    """A fresh closed dataset of the owner's organisation (or one it owns already)."""
    body = {"title": "Fuzz", "description": "Fuzz target.",
            "owner_organization_id": org, "spectrum": "closed"}
    try:
        return http_json(server, "POST", "/api/v1/datasets", token, body)["id"]
    except RuntimeError as e:
        print(f"note: could not create a fuzz dataset ({e}); uploading to an owned one")
        return next(d["id"] for d in items if d["owner_organization_id"] == org)


def known_ids(server, token, datasets, org):
    """Real values for path parameters, by parameter name."""
    ids = {"id": list(datasets), "version": ["1", "2", "3"], "username": USERS + ["admin", "resident"],
           "account": ["analyst", "city-university", org], "feedback": ["1"], "index": ["0", "1", "5"],
           "action": ["package_search", "package_show", "organization_list", "group_list",
                      "tag_list", "package_list", "status_show", "license_list"]}
    for path in ("/api/v1/agreements", "/api/v1/access-requests"):
        try:
            answer = http_json(server, "GET", path, token)
            items = answer.get("items", []) if isinstance(answer, dict) else answer
            ids["id"] += [str(x["id"]) for x in items if isinstance(x, dict) and "id" in x]
        except RuntimeError:
            pass
    return ids


# ---------------------------------------------------------------- junk


CONTENT_TYPES = ["application/json", "text/csv", "application/x-ndjson", "application/geo+json",
                 "application/ld+json", "application/merge-patch+json", "text/plain",
                 "application/octet-stream", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "application/vnd.apache.parquet",
                 "text/tab-separated-values", "application/json; charset=utf-16",
                 "text/csv; charset=latin1", "", "garbage/\u00e9", "application/json;;;="]
JUNK_WORDS = ["", "0", "-1", "1e309", "NaN", "null", "true", "../../etc/passwd", "%00", "%ff%fe",
              "'", "\"", "a" * 5000, "\u202e\u0000", "😀", "9" * 40, "2026-13-45", "@", "%",
              "table@1", "\\", "<script>", "${jndi:ldap://x}", " ", "%2e%2e%2f"]


def junk_bytes(rng, size):
    mode = rng.randrange(4)
    if mode == 0:
        return rng.randbytes(size)
    if mode == 1:
        return bytes(rng.choice(b"{}[]\",:0123456789eE+-.tfnul \n\\") for _ in range(size))
    if mode == 2:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(size // 2)).encode(
            "utf-8", "surrogatepass")
    return bytes(rng.choice(b"abc,;\"\r\n\t\x00\xef\xbb\xbf") for _ in range(size))


def junk_size(rng):
    """0..64 KiB, mostly small."""
    return min(64 * KIB, int(rng.expovariate(1 / 2000))) if rng.random() < 0.8 \
        else rng.randrange(64 * KIB + 1)


def junk_word(rng):
    word = rng.choice(JUNK_WORDS)
    return word if rng.random() < 0.7 else word + str(rng.randrange(10**6))


def fill_path(rng, path, ids):
    """Replace each {param} with a real id (mostly) or junk, percent-encoded."""
    out = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            real = ids.get(name) or ids["id"]
            value = rng.choice(real) if rng.random() < 0.75 else junk_word(rng)
            out.append(urllib.parse.quote(value, safe=""))
        else:
            out.append(part)
    return "/".join(out)


def junk_query(rng):
    keys = ["page", "per_page", "version", "as_of", "purpose", "level", "format", "q", "limit",
            "rows", "start", "id", "fq", "sort", "theme", "spectrum", "from", "to", "size",
            "for", junk_word(rng)]
    pairs = []
    for _ in range(rng.randrange(1, 6)):
        value = rng.choice([junk_word(rng), str(rng.randrange(-10**12, 10**12)), "research",
                            "pseudonymised", "csv", "geojson", "parquet", "2026-03-01T12:00:00Z"])
        pairs.append((rng.choice(keys), value))
    query = urllib.parse.urlencode(pairs)
    if rng.random() < 0.2:
        query += rng.choice(["&&&", "=", "%", "%zz", "a=%ff", "&page=1&page=2", "#frag", "=" * 100])
    return query


# ---------------------------------------------------------------- SQL grammar


SQL_TYPES = ["INT", "BIGINT", "DOUBLE", "VARCHAR", "DATE", "TIMESTAMP", "DECIMAL(38,10)",
             "BOOLEAN", "SMALLINT", "REAL", "INTERVAL", "BYTEA", "NOTATYPE"]
SQL_FUNCS = ["abs", "upper", "lower", "length", "substr", "round", "sqrt", "ln", "power",
             "coalesce", "nullif", "concat", "md5", "sha256", "to_timestamp", "date_trunc",
             "regexp_replace", "regexp_match", "split_part", "strpos", "reverse", "btrim",
             "array_agg", "string_agg", "nosuchfunction", "sum", "avg", "min", "max", "count"]
NOT_SELECT = ["DROP TABLE {t}", "DELETE FROM {t}", "INSERT INTO {t} VALUES (1)",
              "CREATE TABLE x AS SELECT * FROM {t}", "UPDATE {t} SET a = 1", "SET x = 1",
              "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
              "COPY {t} TO '/tmp/out.csv'", "SHOW TABLES", "DESCRIBE {t}", "EXPLAIN SELECT 1",
              "EXPLAIN ANALYZE SELECT count(*) FROM {t}", "SELECT 1; SELECT 2",
              "SELECT 1; DROP TABLE {t}", "PREPARE p AS SELECT 1", "CREATE VIEW v AS SELECT 1",
              "SELECT * FROM information_schema.tables", "SHOW ALL", "", ";", "--", "/*",
              "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM '/etc/passwd'"]


class SqlGen:
    """Random SQL over the demo's real tables and columns."""

    def __init__(self, rng, tables):
        self.rng = rng
        self.tables = tables
        self.names = sorted(tables)

    def table(self):
        r = self.rng.random()
        if r < 0.8 or not self.names:
            return self.rng.choice(self.names) if self.names else "nope"
        if r < 0.9:
            return f'"{self.rng.choice(self.names)}@{self.rng.choice(["1", "2", "0", "999999", "2026-03-01", "x", "-1"])}"'
        return self.rng.choice(["nope", "no_such_table", '"a""b"', "datasets", "users"])

    def column(self, table):
        cols = self.tables.get(table.strip('"').split("@")[0])
        if not cols or self.rng.random() < 0.05:
            return self.rng.choice(["nosuchcolumn", '"Nope"', "*", "rowid"])
        name, _ = self.rng.choice(cols)
        return '"' + name.replace('"', '""') + '"'

    def literal(self):
        rng = self.rng
        return rng.choice([str(rng.randrange(-1000, 1000)), "9223372036854775807",
                           "-9223372036854775808", "99999999999999999999999999999", "1e308",
                           "0.0", "NULL", "TRUE", "'x'", "''", "'2026-02-30'", "DATE '2026-01-01'",
                           "'\u00e9\u0000\ud7ff'", "'" + "\u2603" * rng.randrange(50) + "'",
                           "INTERVAL '1000000 years'", "X'ff00'", "[1,2,3]"])

    def expr(self, table, depth=0):
        rng = self.rng
        if depth > 4 or rng.random() < 0.3:
            return self.column(table) if table and rng.random() < 0.5 else self.literal()
        sub = lambda: self.expr(table, depth + 1)  # noqa: E731
        choice = rng.randrange(11)
        if choice == 0:
            return f"({sub()} {rng.choice(['+', '-', '*', '/', '%', '||', '=', '<>', '<', 'AND', 'OR', 'LIKE'])} {sub()})"
        if choice == 1:
            return f"({sub()} {rng.choice(['/', '%'])} {rng.choice(['0', '0.0', '(1-1)', 'NULL'])})"
        if choice == 2:
            return f"CASE WHEN {sub()} THEN {sub()} WHEN {sub()} THEN {sub()} ELSE {sub()} END"
        if choice == 3:
            return f"{rng.choice(['CAST', 'TRY_CAST'])}({sub()} AS {rng.choice(SQL_TYPES)})"
        if choice == 4:
            return self.blowup(sub())
        if choice == 5:
            args = ", ".join(sub() for _ in range(rng.randrange(4)))
            return f"{rng.choice(SQL_FUNCS)}({args})"
        if choice == 6:
            return f"({sub()} IS {rng.choice(['NULL', 'NOT NULL', 'TRUE', 'DISTINCT FROM 1'])})"
        if choice == 7:
            return f"{sub()} BETWEEN {sub()} AND {sub()}"
        if choice == 8:
            return f"(SELECT {sub()})"
        if choice == 9:
            return f"{sub()} IN ({', '.join(self.literal() for _ in range(rng.randrange(1, 8)))})"
        return f"-{sub()}"

    def blowup(self, arg):
        rng = self.rng
        n = rng.choice(["500000000", "2147483647", "-1", "100000", "9223372036854775807", "1e9"])
        return rng.choice([f"repeat({arg}, {n})", f"repeat('x', {n})", f"lpad({arg}, {n}, 'ab')",
                           f"rpad('x', {n})", f"replace(repeat('ab', 100000), 'a', repeat('b', 100000))",
                           f"replace({arg}, '', 'x')", " || ".join([f"repeat('y', {n})"] * 4),
                           f"concat(repeat('z', {n}), repeat('z', {n}))",
                           f"regexp_replace(repeat('a', 100000), '(a*)*b', 'c')"])

    def select(self):
        rng = self.rng
        t = self.table()
        items = ", ".join(self.expr(t) for _ in range(rng.randrange(1, 4)))
        sql = f"SELECT {items} FROM {t}"
        if rng.random() < 0.4:
            sql += f" WHERE {self.expr(t)}"
        if rng.random() < 0.2:
            sql += f" GROUP BY {self.column(t)}"
        if rng.random() < 0.3:
            sql += f" ORDER BY {self.expr(t)}"
        if rng.random() < 0.5:
            sql += f" LIMIT {rng.choice(['1', '10', '100000', '-1', '0', '99999999999999'])}"
        return sql

    def chain(self):
        n = self.rng.randrange(100, 20001)
        op = self.rng.choice(["+", "*", "||", " OR ", " AND ", "-"])
        if self.rng.random() < 0.7 or not self.names:
            return "SELECT " + op.join([self.rng.choice(["1", "'a'", "TRUE"])] * n)
        t = self.rng.choice(self.names)
        return f"SELECT {op.join([self.column(t)] * n)} FROM {t}"

    def parens(self):
        n = self.rng.choice([10, 99, 100, 101, 500, 5000, 15000])
        return f"SELECT {'(' * n}1{')' * n}"

    def nested_selects(self):
        n = self.rng.choice([5, 50, 100, 200, 2000])
        if self.rng.random() < 0.5:
            return "SELECT " + "(SELECT " * n + "1" + ")" * n
        return "SELECT * FROM (" * n + "SELECT 1" + ") AS q" * n

    def doubling_cte(self):
        k = self.rng.randrange(2, 45)
        parts = ["a0 AS (SELECT 'x' || 'x' AS s)"]
        parts += [f"a{i} AS (SELECT s || s AS s FROM a{i - 1})" for i in range(1, k)]
        return f"WITH {', '.join(parts)} SELECT length(s) FROM a{k - 1}"

    def cross_join(self):
        t = self.rng.choice(self.names)
        n = self.rng.randrange(2, 5)
        froms = ", ".join(f"{t} t{i}" for i in range(n))
        return self.rng.choice([f"SELECT count(*) FROM {froms}", f"SELECT * FROM {froms}",
                                f"SELECT t0.* FROM {froms} ORDER BY random()"])

    def series(self):
        hi = self.rng.choice(["1000000000000", "9223372036854775807", "100000000", "-5"])
        return self.rng.choice([f"SELECT count(*) FROM generate_series(1, {hi})",
                                f"SELECT * FROM generate_series(1, {hi})",
                                f"SELECT sum(value) FROM range(0, {hi}, 1)",
                                f"SELECT * FROM generate_series(1, {hi}) a, generate_series(1, {hi}) b",
                                f"SELECT unnest(generate_series(1, {hi}))"])

    def in_list(self):
        t = self.rng.choice(self.names)
        n = self.rng.choice([100, 1000, 5000, 20000])
        values = ", ".join(str(i) for i in range(n))
        return f"SELECT count(*) FROM {t} WHERE {self.column(t)} IN ({values})"

    def not_select(self):
        return self.rng.choice(NOT_SELECT).format(t=self.rng.choice(self.names or ["x"]))

    def weird_text(self):
        base = self.select()
        cut = self.rng.randrange(len(base) + 1)
        noise = self.rng.choice(["\u0000", "\ufffd", "\ud800", "\u202e", "\x1b[31m", "'", "\"",
                                 "/*", "--", "$$", "\\", "`", "\u00a0", "🦀" * 100])
        return base[:cut] + noise + base[cut:]

    def sql(self):
        makers = [self.select] * 6 + [self.chain, self.parens, self.nested_selects,
                                      self.doubling_cte, self.cross_join, self.series,
                                      self.in_list, self.not_select, self.weird_text]
        return self.rng.choice(makers)()


def query_body(rng, sql):
    """The JSON body of a query; sometimes with raw invalid UTF-8 or odd fields."""
    doc = {"sql": sql, "purpose": "research"}
    r = rng.random()
    if r < 0.05:
        doc["purpose"] = rng.choice(["", "nope", "research" * 1000, None, 7])
    elif r < 0.1:
        doc["max_rows"] = rng.choice([0, 1, -1, 10**20, 100000, "10"])
    elif r < 0.13:
        doc["unknown"] = {"a": [1]}
    body = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:  # invalid UTF-8 inside the JSON string
        body = body.replace(b"SELECT", b"SEL\xff\xfeECT", 1)
    return body


# ---------------------------------------------------------------- uploads


def csv_rows(rng, rows, cols):
    header = ",".join(f"c{i}" for i in range(cols))
    lines = [header]
    for r in range(rows):
        lines.append(",".join(rng.choice([str(r), str(rng.random()), "x", "", "2026-01-01",
                                           "\"q,uoted\"", "NA", "-0", "1e400"])
                              for _ in range(cols)))
    return lines


def csv_upload(rng):
    """(body, headers, label) of one broken or odd CSV."""
    lines = csv_rows(rng, rng.randrange(0, 200), rng.randrange(1, 8))
    variant = rng.randrange(12)
    label = ["ragged", "unclosed-quote", "crlf", "cr", "bom", "nul", "1MiB-field",
             "many-columns", "fake-gzip", "real-gzip", "quoted-newlines", "tsv"][variant]
    headers = {"content-type": "text/csv"}
    if variant == 0:
        lines = [line + ",extra" * rng.randrange(3) for line in lines]
    elif variant == 1:
        lines.insert(rng.randrange(1, len(lines) + 1), "\"never closed," + "x" * 1000)
    text = "\n".join(lines)
    if variant == 2:
        text = text.replace("\n", "\r\n")
    elif variant == 3:
        text = text.replace("\n", "\r")
    body = text.encode()
    if variant == 4:
        body = rng.choice([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf" * 3]) + body
    elif variant == 5:
        body = body.replace(b",", b",\x00", rng.randrange(1, 50))
    elif variant == 6:
        body = b"a,b\n1," + b"y" * MIB + b"\n2,z\n"
    elif variant == 7:
        n = rng.choice([1000, 5000, 20000])
        body = (",".join(f"c{i}" for i in range(n)) + "\n" + ",".join("1" for _ in range(n)) + "\n").encode()
    elif variant == 8:
        headers["content-encoding"] = "gzip"
    elif variant == 9:
        headers["content-encoding"] = "gzip"
        body = gzip.compress(body if rng.random() < 0.7 else b"a,b\n" + b"1,2\n" * (8 * MIB), 1)
    elif variant == 10:
        body = b"a,b\n\"multi\nline\r\nvalue\",1\n\"\"\"\",2\n\"a\"b,3\n"
    elif variant == 11:
        headers["content-type"] = "text/tab-separated-values"
        body = body.replace(b",", b"\t")
    return body, headers, label


def deep_nesting(rng):
    n = rng.choice([200, 10000, 100000])
    return "[" * n + "1" + "]" * n if rng.random() < 0.5 else '{"a":' * n + "1" + "}" * n


def json_rows(rng):
    rows = []
    for i in range(rng.randrange(0, 50)):
        row = {"id": i, "name": f"n{i}", "value": rng.random()}
        mutation = rng.randrange(6)
        if mutation == 0:
            row["value"] = rng.choice([1e308, -0.0, 12345678901234567890123456789, "str", None,
                                       [1, 2], {"x": 1}, True])
        elif mutation == 1:
            row[f"unknown{rng.randrange(100)}"] = 1
        elif mutation == 2:
            del row["id"]
        rows.append(row)
    return rows


def json_upload(rng):
    """(body, headers, label) of an odd JSON, NDJSON or GeoJSON upload."""
    variant = rng.randrange(9)
    if variant == 0:
        return json.dumps(json_rows(rng)).encode(), {"content-type": "application/json"}, "json-rows"
    if variant == 1:
        return deep_nesting(rng).encode(), {"content-type": rng.choice(
            ["application/json", "application/geo+json", "application/x-ndjson"])}, "deep-nesting"
    if variant == 2:
        body = "\n".join(json.dumps(r) for r in json_rows(rng)) + "\n{broken\n" + deep_nesting(rng)
        return body.encode(), {"content-type": "application/x-ndjson"}, "ndjson"
    if variant == 3:
        return huge_numbers(rng), {"content-type": "application/json"}, "huge-numbers"
    if variant in (4, 5):
        return geojson(rng), {"content-type": "application/geo+json"}, "geojson"
    if variant == 6:
        return jsonld_doc(rng), {"content-type": rng.choice(
            ["application/json", "application/ld+json"])}, "json-ld"
    if variant == 7:
        body = b"PAR1" + rng.randbytes(rng.randrange(10, 5000)) + b"PAR1"
        return body, {"content-type": "application/vnd.apache.parquet"}, "junk-parquet"
    return rng.choice([b"{}", b"[]", b"null", b"[1,2,3]", b"[[]]", b"[{}]", b'"x"',
                       b'[{"a":1},{"a":1}] trailing', b'[{"a":1,"a":2}]']), \
        {"content-type": "application/json"}, "json-odd"


def huge_numbers(rng):
    n = rng.choice(["1" + "0" * 400, "1e999999999", "-" + "9" * 100000, "0." + "0" * 5000 + "1",
                    "1E-400", "NaN", "Infinity"])
    return f'[{{"a": {n}}}, {{"a": 1}}]'.encode()


def geojson(rng):
    def point():
        return [rng.uniform(-200, 200), rng.uniform(-100, 100)]
    geometries = [
        {"type": "Point", "coordinates": point()},
        {"type": "Polygon", "coordinates": [[point(), point(), point()]]},  # not closed
        {"type": "LineString", "coordinates": [point() for _ in range(rng.choice([1, 2, 20000]))]},
        {"type": "Nope", "coordinates": "x"},
        {"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": []}]},
        None,
        {"type": "MultiPolygon", "coordinates": [[[[0, 0]] * 5]] * 3},
    ]
    features = [{"type": "Feature", "geometry": rng.choice(geometries),
                 "properties": rng.choice([{"a": i}, None, [], {"a": "x" * 100}, {"b": {"c": [1]}}])}
                for i in range(rng.randrange(0, 30))]
    doc = {"type": rng.choice(["FeatureCollection", "Feature", "Point", 7]), "features": features}
    if rng.random() < 0.2:
        doc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}}
    return json.dumps(doc).encode()


def jsonld_doc(rng):
    """A JSON-LD document: remote contexts, deep @graph, odd keywords."""
    context = rng.choice(["https://schema.org/", "http://127.0.0.1:9/ctx.jsonld",
                          ["https://www.w3.org/ns/dcat.jsonld", {"@vocab": "http://x/"}],
                          {"@import": "http://169.254.169.254/latest/meta-data/"}])
    depth = rng.choice([1, 100, 1000, 20000])
    node = {"@id": "_:leaf", "name": "x"}
    for i in range(depth):
        node = {"@id": f"_:n{i}", "@graph": [node]}
    doc = {"@context": context, "@graph": [node], "@type": "dcat:Dataset",
           "title": "Fuzz", "description": "x", "@included": [{"@id": "http://evil/"}]}
    return json.dumps(doc).encode() if depth < 900 else serialize_deep(doc)


def serialize_deep(doc):
    """json.dumps recurses; write very deep documents by hand."""
    graph = doc["@graph"][0]
    depth = 0
    while "@graph" in graph:
        depth += 1
        graph = graph["@graph"][0]
    inner = '{"@id":"_:leaf"}'
    body = '{"@id":"_:n","@graph":[' * depth + inner + "]}" * depth
    head = json.dumps({k: v for k, v in doc.items() if k != "@graph"})[:-1]
    return f'{head}, "@graph": [{body}]}}'.encode()


# ---------------------------------------------------------------- the fuzzing loop


class Results:
    """Counts and failures, shared by the workers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_kind = collections.Counter()
        self.statuses = collections.defaultdict(collections.Counter)
        self.failures = []
        self.notes = collections.Counter()
        self.slowest = (0.0, None)

    def record(self, req, status, answer, seconds):
        with self.lock:
            self.by_kind[req.kind] += 1
            self.statuses[req.kind][str(status)] += 1
            if seconds > self.slowest[0]:
                self.slowest = (seconds, req)
            problem = failure_reason(status)
            if problem:
                self.failures.append((problem, req, answer))
            elif status == "send-aborted":
                self.notes[f"{req.method} {req.kind}: answered before the body was read"] += 1


def failure_reason(status):
    if isinstance(status, int):
        return f"status {status}" if status >= 500 else None
    if status == "timeout":
        return f"no answer within {REQUEST_TIMEOUT:.0f} s"
    if status in ("no-answer", "conn-error"):
        return "the connection closed without an answer"
    return None


class Worker:
    """One thread's deterministic stream of requests."""

    def __init__(self, index, target):
        self.rng = random.Random(SEED * 1000 + index)
        self.target = target
        self.sql = SqlGen(self.rng, target.tables)

    def user(self):
        return self.rng.choice([None, "analyst", "owner"])

    def next_request(self):
        kind = self.rng.choices(["bytes", "get", "sql", "upload", "jsonld"],
                                weights=[30, 15, 35, 15, 5])[0]
        return getattr(self, f"make_{kind}")()

    def make_bytes(self):
        method, path = self.rng.choice(self.target.writes)
        body = junk_bytes(self.rng, junk_size(self.rng))
        headers = {"content-type": self.rng.choice(CONTENT_TYPES)}
        if self.rng.random() < 0.05:
            headers["content-encoding"] = self.rng.choice(["gzip", "br", "deflate", "x"])
        return Request("bytes", self.user(), method, fill_path(self.rng, path, self.target.ids),
                       body, headers)

    def make_get(self):
        path = fill_path(self.rng, self.rng.choice(self.target.reads), self.target.ids)
        return Request("get", self.user(), "GET", f"{path}?{junk_query(self.rng)}")

    def make_sql(self):
        user = self.rng.choice([None, "analyst", "analyst", "owner"])
        return Request("sql", user, "POST", "/api/v1/query",
                       query_body(self.rng, self.sql.sql()), {"content-type": "application/json"})

    def make_upload(self):
        maker = csv_upload if self.rng.random() < 0.6 else json_upload
        body, headers, label = maker(self.rng)
        user = "owner" if self.rng.random() < 0.9 else self.user()
        dataset = self.target.upload_target
        return Request(f"upload:{label}", user, "POST", f"/api/v1/datasets/{dataset}/versions",
                       body, headers)

    def make_jsonld(self):
        json_writes = [(m, p) for m, p in self.target.writes if "versions" not in p]
        method, path = self.rng.choice(json_writes)
        ctype = self.rng.choice(["application/json", "application/ld+json",
                                 "application/merge-patch+json"])
        return Request("jsonld", self.user(), method, fill_path(self.rng, path, self.target.ids),
                       jsonld_doc(self.rng), {"content-type": ctype})


def run_worker(index, server, target, results, deadline, stop):
    worker = Worker(index, target)
    while time.monotonic() < deadline and not stop.is_set():
        req = worker.next_request()
        started = time.monotonic()
        status, answer = send(server, req, target.tokens[req.user])
        results.record(req, status, answer, time.monotonic() - started)


def watch(server, deadline, stop, died):
    """Stop everything as soon as the server process exits."""
    while time.monotonic() < deadline + REQUEST_TIMEOUT and not stop.is_set():
        if not server.alive():
            died.append(time.monotonic())
            stop.set()
            return
        time.sleep(0.25)


def fuzz(server, target, results):
    """Run the workers until FUZZ_SECONDS have passed; True if the server lived."""
    deadline = time.monotonic() + SECONDS
    stop, died = threading.Event(), []
    watcher = threading.Thread(target=watch, args=(server, deadline, stop, died), daemon=True)
    watcher.start()
    workers = [threading.Thread(target=run_worker, daemon=True,
                                args=(i, server, target, results, deadline, stop))
               for i in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join()
    return not died


# ---------------------------------------------------------------- report


def final_checks(server, results, lived):
    failures = []
    if not lived or not server.alive():
        failures.append(f"the server exited during the run (code {server.proc.poll()})")
    elif server.healthz() != 200:
        failures.append("/healthz did not answer 200 at the end")
    peak = server.peak_rss_mib()
    if peak is not None and peak > MAX_RSS_MIB:
        failures.append(f"peak resident memory {peak:.0f} MiB is over the bound of {MAX_RSS_MIB:.0f} MiB")
    log = server.stderr_text()
    panics = [line for line in log.splitlines() if "panicked" in line]
    if panics:
        failures.append("the server panicked:\n  " + "\n  ".join(panics[:20]))
    failures += [f"{problem}\n  {req.describe()}\n    answer: {answer!r}"
                 for problem, req, answer in results.failures]
    return failures, peak, log


def print_summary(results, peak, elapsed, log):
    print(f"\n== fuzz summary (seed {SEED}, {THREADS} threads, {elapsed:.1f} s fuzzing)")
    print(f"requests sent: {sum(results.by_kind.values())}")
    for kind in sorted(results.by_kind):
        statuses = ", ".join(f"{s}×{n}" for s, n in sorted(results.statuses[kind].items()))
        print(f"  {kind:28} {results.by_kind[kind]:6}   {statuses}")
    total = collections.Counter()
    for counter in results.statuses.values():
        total.update(counter)
    print("statuses: " + ", ".join(f"{s}×{n}" for s, n in sorted(total.items())))
    by_problem = collections.Counter(f"{problem}: {req.kind} {req.method} {req.path.split('?')[0]}"
                                     for problem, req, _ in results.failures)
    for what, n in sorted(by_problem.items()):
        print(f"failure: {what} ×{n}")
    for note, n in sorted(results.notes.items()):
        print(f"note: {note} ×{n}")
    seconds, req = results.slowest
    if req:
        print(f"slowest answer: {seconds:.1f} s for {req.method} {req.path} [{req.kind}] "
              f"{req.body[:120]!r}")
    errors = [line for line in log.splitlines() if " ERROR " in line or "ERROR" in line[:40]]
    if errors:
        print(f"server log: {len(errors)} ERROR lines, e.g.\n  " + "\n  ".join(errors[:5]))
    shown = "gone" if peak is None else f"{peak:.0f} MiB"
    print(f"peak resident memory (VmHWM): {shown} (bound {MAX_RSS_MIB:.0f} MiB)")


def save_failures(results):
    if not FAILURES_DIR:
        return
    os.makedirs(FAILURES_DIR, exist_ok=True)
    for i, (problem, req, _) in enumerate(results.failures):
        with open(os.path.join(FAILURES_DIR, f"failure-{i:03}.body"), "wb") as f:
            f.write(req.body)
        with open(os.path.join(FAILURES_DIR, f"failure-{i:03}.txt"), "w") as f:
            f.write(f"{problem}\n{req.describe()}\n")


def main():
    if not os.access(BINARY, os.X_OK):
        raise SystemExit(f"no server binary at {BINARY} (set CITYTRUST)")
    server = Server()
    try:
        started = time.monotonic()
        server.start()
        server.wait_healthy()
        print(f"server up on port {server.port} after {time.monotonic() - started:.1f} s; "
              f"fuzzing for {SECONDS:.0f} s with seed {SEED}")
        target = Target(server)
        print(f"{len(target.writes)} write and {len(target.reads)} read operations, "
              f"{len(target.tables)} tables, uploads to {target.upload_target}")
        results = Results()
        began = time.monotonic()
        lived = fuzz(server, target, results)
        elapsed = time.monotonic() - began
        failures, peak, log = final_checks(server, results, lived)
        save_failures(results)
        for failure in failures[:MAX_SHOWN]:
            print(f"- {failure}")
        if len(failures) > MAX_SHOWN:
            print(f"… and {len(failures) - MAX_SHOWN} more")
        if failures and not server.alive():
            print("server stderr (tail):\n" + server.stderr_tail())
        print_summary(results, peak, elapsed, log)
        print(f"\nFAILED: {len(failures)} problem(s), listed above" if failures else "\nPASSED")
        return 1 if failures else 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
