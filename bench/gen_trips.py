#!/usr/bin/env python3
"""Write N synthetic bike trips in the Citi Bike trip-data schema (seeded).

Stations, their names and coordinates come from the real Jersey City file in
demo/data/citibike; durations, times, bikes, user types, birth years and
genders are drawn from simple distributions. Timestamps are ISO
(`2018-01-01 02:06:00`) so that every engine in the bench reads them natively.

    bench/gen_trips.py 5000000 /tmp/trips.csv
"""
import csv
import datetime as dt
import random
import sys
from pathlib import Path

HEADER = ["tripduration", "starttime", "stoptime", "start station id", "start station name",
          "start station latitude", "start station longitude", "end station id", "end station name",
          "end station latitude", "end station longitude", "bikeid", "usertype", "birth year", "gender"]


def stations():
    path = Path(__file__).resolve().parent.parent / "demo/data/citibike/JC-201801-citibike-tripdata.csv"
    seen = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            seen[row["start station id"]] = (row["start station name"], row["start station latitude"],
                                             row["start station longitude"])
    return sorted(seen.items())


def main():
    n = int(sys.argv[1])
    out = sys.argv[2]
    rng = random.Random(20261123)
    st = stations()
    start = dt.datetime(2018, 1, 1)
    span = 365 * 24 * 3600
    with open(out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        rows = []
        for i in range(n):
            a = st[rng.randrange(len(st))]
            b = st[rng.randrange(len(st))]
            duration = int(rng.lognormvariate(6.3, 0.7)) + 60
            t0 = start + dt.timedelta(seconds=rng.randrange(span))
            t1 = t0 + dt.timedelta(seconds=duration)
            year = "" if rng.random() < 0.03 else str(rng.randint(1940, 2001) if rng.random() > 0.0005 else 1887)
            rows.append((duration, t0.strftime("%Y-%m-%d %H:%M:%S"), t1.strftime("%Y-%m-%d %H:%M:%S"),
                         a[0], a[1][0], a[1][1], a[1][2], b[0], b[1][0], b[1][1], b[1][2],
                         rng.randint(24000, 33000), "Subscriber" if rng.random() < 0.9 else "Customer",
                         year, rng.choice((0, 1, 1, 2))))
            if len(rows) == 100_000:
                w.writerows(rows)
                rows.clear()
        w.writerows(rows)


if __name__ == "__main__":
    main()
