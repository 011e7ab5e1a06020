"""5-anonymity on Adult (8 quasi-identifiers, ARX's hierarchies): CityTrust's
release binary against the `anjana` package (PyPI), same input, same
hierarchies, same run. Both results are checked k-anonymous with pycanon and
their loss (granularity) is computed by the same code (e2e/privacy_test.py).

    bench/anonymise.sh            (builds the release binary, sets up .venv)
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pycanon

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from privacy_test import ADULT, HIERARCHIES, QIS, hierarchy_path, loss  # noqa: E402

BIN = os.environ.get("CITYTRUST", "target/release/citytrust")
RUNS = int(os.environ.get("RUNS", "20"))
original = pd.read_csv(ADULT, sep=";", dtype=str, keep_default_na=False)
total = len(original)


def ours(suppression):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.csv")
        args = [BIN, "anonymise", ADULT, "--delimiter", ";", "--quasi", ",".join(QIS),
                "--k", "5", "--suppression", str(suppression), "--output", out]
        for c in QIS:
            args += ["--hierarchy", f"{c}={hierarchy_path(c)}"]
        walls, algos = [], []
        for _ in range(RUNS):
            start = time.perf_counter()
            report = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
            walls.append((time.perf_counter() - start) * 1000)
            algos.append(report["timing"]["anonymise_ms"])
        released = pd.read_csv(out, sep=";", dtype=str, keep_default_na=False)
    levels = {t["column"]: t["level"] for t in report["transformation"]}
    return {
        "algorithm_ms": statistics.median(algos),
        "algorithm_ms_min": min(algos),
        "wall_ms": statistics.median(walls),
        "levels": levels,
        "suppressed": report["suppressed_records"],
        "k": pycanon.anonymity.k_anonymity(released, QIS),
        "loss": loss(released, levels, QIS, total),
        "reported_loss": report["information_loss"]["loss"],
    }


def anjana(suppression):
    from anjana.anonymity import _k_anonymity

    hierarchies = {}
    for q in QIS:
        rows = list(HIERARCHIES[q].values())
        hierarchies[q] = {level: [r[level] for r in rows] for level in range(len(rows[0]))}
    data = original.copy()
    start = time.perf_counter()
    released, suppressed, levels = _k_anonymity.k_anonymity_inner(data, [], QIS, 5, suppression, hierarchies)
    took = (time.perf_counter() - start) * 1000
    released = released[list(original.columns)]
    return {
        "algorithm_ms": took,
        "wall_ms": took,
        "levels": dict(levels),
        "suppressed": int(suppressed),
        "k": pycanon.anonymity.k_anonymity(released, QIS),
        "loss": loss(released, levels, QIS, total),
    }


def main():
    results = {}
    for suppression in (0, 5):
        results[f"citytrust {suppression}%"] = ours(suppression)
        results[f"anjana {suppression}%"] = anjana(suppression)
    print(f"{'':16} {'algorithm ms':>13} {'wall ms':>9} {'k':>5} {'suppressed':>10} {'loss':>7}  levels")
    for name, r in results.items():
        levels = ",".join(str(r["levels"][q]) for q in QIS)
        print(f"{name:16} {r['algorithm_ms']:13.1f} {r['wall_ms']:9.1f} {r['k']:5} {r['suppressed']:10} "
              f"{r['loss']:7.4f}  {levels}")
    for s in (0, 5):
        a, b = results[f"citytrust {s}%"], results[f"anjana {s}%"]
        print(f"{s}% suppression: {b['algorithm_ms'] / a['algorithm_ms']:.0f}x faster (algorithm), "
              f"{b['wall_ms'] / a['wall_ms']:.0f}x (our whole process incl. reading and writing CSV); "
              f"loss {a['loss']:.4f} vs {b['loss']:.4f}")
        assert a["k"] >= 5 and b["k"] >= 5
        assert abs(a["loss"] - a["reported_loss"]) < 1e-9
    print(json.dumps(results, indent=1, default=str), file=open(os.environ.get("JSON", os.devnull), "w"))


if __name__ == "__main__":
    main()
