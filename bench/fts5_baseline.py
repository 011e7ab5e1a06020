#!/usr/bin/env python3
"""Baseline for the catalogue search: the same catalogue and query mix answered
by SQLite FTS5 (bm25 ranking) with facet counts by SQL GROUP BY — the
"search inside the database" design that DESIGN.md names as the alternative
to tantivy. In-process (no HTTP, no JSON encoding of results), so it flatters
the baseline.

    bench/fts5_baseline.py DATA_DIR/citytrust.sqlite [requests]
"""
import json, random, sqlite3, statistics, sys, time

src, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000
db = sqlite3.connect(":memory:")

disk = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
rows = disk.execute("SELECT d.id, d.metadata, o.name FROM datasets d JOIN organizations o ON o.id = d.owner_organization_id").fetchall()
db.executescript("""
CREATE TABLE ds(rowid INTEGER PRIMARY KEY, id TEXT, title TEXT, spectrum TEXT, owner TEXT, format TEXT, personal INTEGER, updated TEXT, metadata TEXT);
CREATE TABLE ds_theme(rowid INTEGER, theme TEXT);
CREATE INDEX ds_theme_theme ON ds_theme(theme, rowid);
CREATE VIRTUAL TABLE ds_fts USING fts5(title, keywords, description, owner, tokenize='porter unicode61');
""")
for i, (id_, meta, owner_name) in enumerate(rows, 1):
    m = json.loads(meta)
    db.execute("INSERT INTO ds VALUES (?,?,?,?,?,?,?,?,?)", (i, id_, m["title"], m["spectrum"], m["owner_organization_id"],
               (m.get("format") or "").lower(), int(m.get("personal_data", False)), "", meta))
    for t in m.get("themes", []):
        db.execute("INSERT INTO ds_theme VALUES (?,?)", (i, t))
    db.execute("INSERT INTO ds_fts(rowid, title, keywords, description, owner) VALUES (?,?,?,?,?)",
               (i, m["title"], " ".join(m.get("keywords", [])), m["description"], owner_name))
db.commit()

rng = random.Random(7)
words = ["air quality", "energy", "bus", "tree canopy", "flood", "harbour", "parking", "solar potential", "waste",
         "traffic counts", "school", "noise north", "housing", "rainfall daily", "sensor", "permits old town"]
filters = [{}, {"theme": "energy"}, {"spectrum": "open"}, {"personal": 0}, {"format": "csv"},
           {"theme": "mobility", "spectrum": "shared_group"}, {}, {"page": 3}]

def search(text, f):
    where, args = [], []
    if text:
        where.append("ds.rowid IN (SELECT rowid FROM ds_fts WHERE ds_fts MATCH ?)")
        args.append(" AND ".join('"%s"' % w for w in text.split()))
    for col in ("spectrum", "format", "personal"):
        if col in f:
            where.append(f"ds.{col} = ?"); args.append(f[col])
    if "theme" in f:
        where.append("ds.rowid IN (SELECT rowid FROM ds_theme WHERE theme = ?)"); args.append(f["theme"])
    w = " AND ".join(where) or "1"
    order = "(SELECT bm25(ds_fts, 3.0, 2.0, 1.0, 1.0) FROM ds_fts WHERE ds_fts MATCH ? AND rowid = ds.rowid)" if text else "ds.title"
    oargs = [args[0]] if text else []
    page = f.get("page", 1)
    items = db.execute(f"SELECT ds.metadata FROM ds WHERE {w} ORDER BY {order} LIMIT 20 OFFSET ?", args + oargs + [(page - 1) * 20]).fetchall()
    total = db.execute(f"SELECT count(*) FROM ds WHERE {w}", args).fetchone()[0]
    facets = {c: db.execute(f"SELECT {c}, count(*) FROM ds WHERE {w} GROUP BY {c}", args).fetchall() for c in ("spectrum", "owner", "format", "personal")}
    facets["theme"] = db.execute(f"SELECT t.theme, count(*) FROM ds_theme t JOIN ds ON ds.rowid = t.rowid WHERE {w} GROUP BY t.theme", args).fetchall()
    return total, items, facets

queries = [(rng.choice(words) if rng.random() < 0.85 else "", rng.choice(filters)) for _ in range(n)]
for q in queries[:100]:
    search(*q)
lat = []
for q in queries:
    t = time.perf_counter(); search(*q); lat.append((time.perf_counter() - t) * 1000)
lat.sort()
p = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))]
print(f"SQLite FTS5 baseline (in-process, {len(rows)} datasets, {n} queries): p50={p(.5):.2f}ms p90={p(.9):.2f}ms p99={p(.99):.2f}ms mean={statistics.mean(lat):.2f}ms")
