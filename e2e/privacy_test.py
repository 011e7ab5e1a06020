"""The release tools (`citytrust anonymise`, `risk`, `tabulate`) checked by
independent code: pycanon (PyPI) for k-anonymity, l-diversity and t-closeness,
pandas for the risk figures and the true counts, numpy's rank for whether a
suppressed cell can be worked out from what is published.

    CITYTRUST=target/debug/citytrust .venv-privacy/bin/python e2e/privacy_test.py
"""

import itertools
import json
import math
import os
import subprocess
import tempfile
import unittest

import numpy as np
import pandas as pd
from pycanon import anonymity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("CITYTRUST", os.path.join(ROOT, "target", "debug", "citytrust"))
# Everything from the repository itself: a clone alone runs these tests.
ADULT_DIR = os.path.join(ROOT, "crates", "citytrust-privacy", "testdata", "adult")
ADULT = os.path.join(ADULT_DIR, "adult.csv")
DEMO_DATA = os.path.join(ROOT, "demo", "data")
ACCIDENTS = os.path.join(DEMO_DATA, "barcelona", "accidents_2017.csv")
CITIBIKE = os.path.join(DEMO_DATA, "citibike", "JC-201801-citibike-tripdata.csv")
QIS = ["age", "education", "marital-status", "native-country", "occupation", "race", "sex", "workclass"]


def hierarchy_path(column):
    return os.path.join(ADULT_DIR, f"adult_hierarchy_{column}.csv")


def read_hierarchy(column):
    """{value: [label at level 0, 1, …]} from ARX's CSV format."""
    out = {}
    with open(hierarchy_path(column), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                fields = line.split(";")
                out[fields[0]] = fields
    return out


HIERARCHIES = {c: read_hierarchy(c) for c in QIS + ["salary-class"]}


def run(*args, check=True):
    proc = subprocess.run([BIN, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"citytrust {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def anonymise(out_dir, *extra, qis=QIS):
    output = os.path.join(out_dir, "out.csv")
    args = ["anonymise", ADULT, "--delimiter", ";", "--quasi", ",".join(qis), "--output", output]
    for c in qis:
        args += ["--hierarchy", f"{c}={hierarchy_path(c)}"]
    report = json.loads(run(*args, *extra).stdout)
    released = pd.read_csv(output, sep=";", dtype=str, keep_default_na=False)
    return report, released


def loss(released, levels, qis, total):
    """ARX's loss (granularity), recomputed: per record and quasi-identifier,
    (leaves under the label − 1) / (leaves − 1); suppressed records count 1."""
    cells = 0.0
    for q in qis:
        h = HIERARCHIES[q]
        leaves = len(h)
        under = {}
        for fields in h.values():
            under[fields[levels[q]]] = under.get(fields[levels[q]], 0) + 1
        cells += released[q].map(lambda v: (under[v] - 1) / (leaves - 1)).sum()
    suppressed = total - len(released)
    return (cells + suppressed * len(qis)) / (total * len(qis))


class Anonymise(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.original = pd.read_csv(ADULT, sep=";", dtype=str, keep_default_na=False)
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def generalised_original(self, levels):
        out = self.original.copy()
        for q, level in levels.items():
            out[q] = out[q].map(lambda v, q=q, level=level: HIERARCHIES[q][v][level])
        return out

    def check_truthful(self, report, released, qis=QIS):
        """Every released row is an input row generalised at the reported levels,
        in input order, and only the reported number of rows is missing."""
        levels = {t["column"]: t["level"] for t in report["transformation"]}
        self.assertEqual(set(levels), set(qis))
        expected = self.generalised_original(levels)
        self.assertEqual(list(released.columns), list(self.original.columns))
        self.assertEqual(len(released) + report["suppressed_records"], len(self.original))
        want = iter(map(tuple, expected.itertuples(index=False)))
        for row in released.itertuples(index=False):
            for candidate in want:
                if candidate == tuple(row):
                    break
            else:
                self.fail(f"released row {tuple(row)} is not a generalised input row (in order)")
        self.assertAlmostEqual(loss(released, levels, qis, len(self.original)),
                               report["information_loss"]["loss"], places=9)
        return levels

    def test_5_anonymity_no_suppression(self):
        report, released = anonymise(self.tmp.name, "--k", "5")
        self.assertEqual(report["records"], 30162)
        self.assertEqual(report["suppressed_records"], 0)
        self.assertGreaterEqual(anonymity.k_anonymity(released, QIS), 5)
        self.check_truthful(report, released)
        info = report["information_loss"]
        self.assertTrue(0 < info["loss"] < 1, info)
        self.assertTrue(0 < info["non_uniform_entropy_share"] < 1, info)
        self.assertGreaterEqual(report["smallest_class"], 5)
        # The risk before is the input's; after, nobody is more than 1/5 re-identifiable.
        self.assertEqual(report["risk_before"]["unique_records"],
                         int((self.original.groupby(QIS).size() == 1).sum()))
        self.assertLessEqual(report["risk_after"]["prosecutor"]["highest"], 1 / 5)
        self.assertEqual(report["risk_after"]["prosecutor"]["records_at_risk"], 0)
        self.assertLess(report["search"]["nodes_checked"], report["search"]["lattice_nodes"])
        type(self).loss_at_0 = info["loss"]

    def test_5_anonymity_5_percent_suppression(self):
        report, released = anonymise(self.tmp.name, "--k", "5", "--suppression", "5")
        self.assertLessEqual(report["suppressed_records"], math.floor(30162 * 0.05))
        self.assertGreater(report["suppressed_records"], 0)
        self.assertGreaterEqual(anonymity.k_anonymity(released, QIS), 5)
        self.check_truthful(report, released)
        # Allowing suppression can only lower the least loss.
        zero, _ = anonymise(self.tmp.name, "--k", "5")
        self.assertLess(report["information_loss"]["loss"], zero["information_loss"]["loss"])

    def test_distinct_l_diversity(self):
        report, released = anonymise(self.tmp.name, "--k", "5", "--suppression", "5",
                                     "--l-diversity", "salary-class:2")
        self.assertEqual(report["sensitive"], "salary-class")
        self.assertGreaterEqual(anonymity.k_anonymity(released, QIS), 5)
        self.assertGreaterEqual(anonymity.l_diversity(released, QIS, ["salary-class"]), 2)
        self.check_truthful(report, released)

    def test_entropy_l_diversity(self):
        qis = [q for q in QIS if q != "occupation"]
        report, released = anonymise(self.tmp.name, "--k", "5", "--suppression", "5",
                                     "--l-diversity", "occupation:3:entropy", qis=qis)
        self.assertGreaterEqual(anonymity.entropy_l_diversity(released, qis, ["occupation"]), 3)
        self.assertGreaterEqual(anonymity.k_anonymity(released, qis), 5)
        self.check_truthful(report, released, qis)

    def test_t_closeness(self):
        report, released = anonymise(self.tmp.name, "--k", "5", "--suppression", "5",
                                     "--t-closeness", "salary-class:0.15")
        self.assertGreaterEqual(anonymity.k_anonymity(released, QIS), 5)
        # pycanon measures against the released table; the criterion is against
        # the input's distribution. Check both.
        self.assertLessEqual(anonymity.t_closeness(released, QIS, ["salary-class"]), 0.15 + 0.05)
        overall = self.original["salary-class"].value_counts(normalize=True)
        for _, group in released.groupby(QIS):
            dist = group["salary-class"].value_counts(normalize=True).reindex(overall.index, fill_value=0)
            self.assertLessEqual(0.5 * (dist - overall).abs().sum(), 0.15 + 1e-9)
        self.check_truthful(report, released)

    def test_unreachable_criteria_say_so(self):
        proc = run("anonymise", ADULT, "--delimiter", ";", "--quasi", "age", "--k", "40000",
                   "--hierarchy", f"age={hierarchy_path('age')}",
                   "--output", os.path.join(self.tmp.name, "never.csv"), check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("30162", proc.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp.name, "never.csv")))


class BadInput(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.out = os.path.join(self.tmp.name, "out.csv")

    def tearDown(self):
        self.tmp.cleanup()

    def fails(self, *args):
        proc = run(*args, check=False)
        self.assertNotEqual(proc.returncode, 0, proc.stdout)
        self.assertFalse(os.path.exists(self.out), "a failed run left an output file")
        return proc.stderr

    def write(self, name, text):
        path = os.path.join(self.tmp.name, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_unknown_column(self):
        err = self.fails("anonymise", ADULT, "--delimiter", ";", "--quasi", "age,postcode",
                         "--auto-hierarchy", "age", "--auto-hierarchy", "postcode", "--k", "5", "--output", self.out)
        self.assertIn('"postcode"', err)
        self.assertIn("not in the header", err)

    def test_hierarchy_missing_a_value(self):
        h = self.write("sex.csv", "Male;*\n")
        err = self.fails("anonymise", ADULT, "--delimiter", ";", "--quasi", "sex",
                         "--hierarchy", f"sex={h}", "--k", "5", "--output", self.out)
        self.assertIn("Female", err)

    def test_ragged_hierarchy(self):
        h = self.write("sex.csv", "Male;*\nFemale;Person;*\n")
        err = self.fails("anonymise", ADULT, "--delimiter", ";", "--quasi", "sex",
                         "--hierarchy", f"sex={h}", "--k", "5", "--output", self.out)
        self.assertIn("line 2", err)

    def test_quasi_without_hierarchy(self):
        err = self.fails("anonymise", ADULT, "--delimiter", ";", "--quasi", "age,sex",
                         "--hierarchy", f"age={hierarchy_path('age')}", "--k", "5", "--output", self.out)
        self.assertIn("sex", err)

    def test_bad_k_and_suppression(self):
        base = ["anonymise", ADULT, "--delimiter", ";", "--quasi", "sex", "--auto-hierarchy", "sex",
                "--output", self.out]
        self.assertIn("k", self.fails(*base, "--k", "0"))
        self.assertIn("suppression", self.fails(*base, "--k", "5", "--suppression", "150").lower())

    def test_malformed_csv_gives_the_line(self):
        bad = self.write("bad.csv", "a,b\n1,2\n3\n")
        err = self.fails("anonymise", bad, "--quasi", "a", "--auto-hierarchy", "a", "--k", "1", "--output", self.out)
        self.assertIn("line 3", err)

    def test_tabulate_not_a_number(self):
        bad = self.write("bad.csv", "zone,kwh\nnorth,1.5\nnorth,lots\n")
        proc = run("tabulate", bad, "--by", "zone", "--sum", "kwh", check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("line 3", proc.stderr)
        self.assertIn('"kwh"', proc.stderr)
        self.assertIn('"lots"', proc.stderr)


class Risk(unittest.TestCase):
    def test_citibike_risk_matches_pandas(self):
        qis = ["birth year", "gender", "start station id"]
        report = json.loads(run("risk", CITIBIKE, "--quasi", ",".join(qis)).stdout)
        trips = pd.read_csv(CITIBIKE, dtype=str, keep_default_na=False)
        sizes = trips.groupby(qis).size()
        self.assertEqual(report["records"], len(trips))
        self.assertEqual(report["equivalence_classes"], len(sizes))
        self.assertEqual(report["unique_records"], int((sizes == 1).sum()))
        self.assertEqual(report["unique_records"], 522)  # as data/README.md says
        self.assertAlmostEqual(report["prosecutor"]["highest"], 1 / sizes.min())
        self.assertAlmostEqual(report["marketer"], len(sizes) / len(trips))
        at_risk = int(sizes[1 / sizes > 0.2].sum())
        self.assertEqual(report["prosecutor"]["records_at_risk"], at_risk)


def solve_determined(cells, shown, shape):
    """Which suppressed cells the published cells and margins determine: each
    line of the table sums to its total; a suppressed cell is determined when
    its unit vector lies in the row space of the equations over the unknowns."""
    unknown = [k for k in cells if k not in shown]
    col = {k: i for i, k in enumerate(unknown)}
    rows = []
    dims = len(shape)
    for d in range(dims):
        others = [range(n + 1) for n in shape]
        others[d] = [None]
        for fixed in itertools.product(*others):
            line = [tuple(list(fixed[:d]) + [i] + list(fixed[d + 1:])) for i in range(shape[d])]
            total = tuple(list(fixed[:d]) + [shape[d]] + list(fixed[d + 1:]))
            coeffs = np.zeros(len(unknown))
            for k in line:
                if k in col:
                    coeffs[col[k]] += 1
            if total in col:
                coeffs[col[total]] -= 1
            if coeffs.any():
                rows.append(coeffs)
    if not unknown:
        return []
    a = np.array(rows) if rows else np.zeros((0, len(unknown)))
    rank = np.linalg.matrix_rank(a) if len(rows) else 0
    determined = []
    for k, i in col.items():
        e = np.zeros(len(unknown))
        e[i] = 1
        if np.linalg.matrix_rank(np.vstack([a, e])) == rank:
            determined.append(k)
    return determined


class SmallCells(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.accidents = pd.read_csv(ACCIDENTS, dtype=str, keep_default_na=False)

    def check(self, by, threshold=10):
        out = json.loads(run("tabulate", ACCIDENTS, "--by", ",".join(by), "--sum", "Victims",
                             "--threshold", str(threshold)).stdout)
        self.assertEqual(out["records"], len(self.accidents))
        frame = self.accidents.copy()
        for c in by:
            frame[c] = frame[c].str.strip()
        frame["Victims"] = frame["Victims"].astype(float)
        values = [sorted(frame[c].unique()) for c in by]
        shape = [len(v) for v in values]
        index = [{v: i for i, v in enumerate(vs)} for vs in values]
        # True counts of every cell, margins included (None = total).
        truth = {}
        for key, group in frame.groupby(by):
            key = key if isinstance(key, tuple) else (key,)
            for mask in itertools.product([False, True], repeat=len(by)):
                k = tuple(None if m else v for m, v in zip(mask, key))
                count, victims = truth.get(k, (0, 0.0))
                truth[k] = (count + len(group), victims + group["Victims"].sum())
        cells, shown = set(), set()
        self.assertEqual(len(out["cells"]), math.prod(n + 1 for n in shape))
        for cell in out["cells"]:
            key = tuple(cell["key"])
            pos = tuple(shape[d] if v is None else index[d][v] for d, v in enumerate(key))
            cells.add(pos)
            count, victims = truth.get(key, (0, 0.0))
            if cell["status"] == "shown":
                shown.add(pos)
                self.assertEqual(cell["count"], count, key)
                self.assertAlmostEqual(cell["sums"][0], victims, places=6)
                self.assertFalse(0 < count < threshold, f"small cell {key} = {count} shown")
            else:
                self.assertIsNone(cell["count"])
                self.assertIsNone(cell["sums"])
                if cell["status"] == "primary":
                    self.assertTrue(0 < count < threshold, key)
        self.assertGreater(out["primary"], 0, "the test table has no small cells")
        small = {p for p in cells - shown
                 if 0 < truth.get(tuple(None if i == shape[d] else values[d][i] for d, i in enumerate(p)),
                                  (0,))[0] < threshold}
        leaked = set(solve_determined(cells, shown, shape)) & small
        self.assertEqual(leaked, set(), "small cells recoverable from the margins")
        return out

    def test_district_by_weekday(self):
        self.check(["DistrictName", "Weekday"])

    def test_neighbourhood_by_part_of_day(self):
        out = self.check(["NeighborhoodName", "Part of the day"])
        self.assertGreater(out["secondary"], 0)

    def test_three_dimensions(self):
        self.check(["DistrictName", "Part of the day", "Weekday"], threshold=5)


if __name__ == "__main__":
    unittest.main(verbosity=2)
