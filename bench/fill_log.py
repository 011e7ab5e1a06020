"""Fill a CityTrust SQLite database's transparency log with N read entries,
in bulk (bench/biglog.sh): the entries a read writes, in canonical form,
inserted straight into `ledger_entries` with durability off, so a log of
10^8 entries takes minutes, not the hours the group committer would. The
bench then has the service build the tree's tiles from them and sign it.

    python3 bench/fill_log.py DATABASE N
"""

import sqlite3
import sys
import time


def entry(i: int) -> tuple[str, str]:
    at = f"2026-11-{1 + (i // 86_400) % 28:02}T{(i // 3600) % 24:02}:{(i // 60) % 60:02}:{i % 60:02}Z"
    # Canonical: keys sorted, no spaces (citytrust_ledger::entry::encode).
    body = (
        '{"at":"%s","bytes":%d,"by":"organization:city-university","dataset":"barcelona-air-quality",'
        '"level":"identified","purpose":"research","rows":%d,"type":"content.read","v":1}'
        % (at, 40_000 + i % 9973, 100 + i % 977)
    )
    return body, at


def main() -> None:
    path, n = sys.argv[1], int(sys.argv[2])
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    (start,) = db.execute("SELECT value FROM counters WHERE name = 'ledger_size'").fetchone()
    t0 = time.time()
    chunk = 1_000_000
    for lo in range(start, n, chunk):
        hi = min(n, lo + chunk)
        db.executemany(
            "INSERT INTO ledger_entries (idx, kind, body, created_at) VALUES (?, 'content.read', ?, ?)",
            ((i, *entry(i)) for i in range(lo, hi)),
        )
        db.execute("UPDATE counters SET value = ? WHERE name = 'ledger_size'", (hi,))
        db.commit()
        rate = (hi - start) / (time.time() - t0)
        print(f"\r  {hi:>11,} entries ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    db.close()


if __name__ == "__main__":
    main()
