#!/usr/bin/env python3
"""Writes rfm/testdata/quantiles.json: generated RFM populations and the
boundaries numpy.quantile (default linear method) gives them, which
rfm's tests check the Go cuts and the merged partition summaries against.

    python3 scripts/rfm/quantiles.py   # needs numpy (2.4.6 was used)
"""
import json
import os

import numpy as np

rng = np.random.default_rng(16)


def population(n):
    # recency: whole days, many ties; frequency: small counts, heavy ties;
    # monetary: long-tailed revenue with cents.
    r = np.floor(rng.exponential(60, n)).tolist()
    f = (1 + rng.geometric(0.45, n) - 1).astype(float).tolist()
    m = np.round(rng.lognormal(4, 1.2, n), 2).tolist()
    return {"r": r, "f": f, "m": m}


cases = []
for name, n, scores in [("tiny", 7, 5), ("small", 40, 5), ("odd_scores", 333, 3), ("medium", 4000, 5), ("ten", 2500, 10)]:
    pop = population(n)
    qs = [k / scores for k in range(1, scores)]
    cuts = {d: [float(x) for x in np.quantile(np.array(pop[d]), qs)] for d in "rfm"}
    cases.append({"name": name, "scores": scores, "values": pop, "cuts": cuts})

out = os.path.join(os.path.dirname(__file__), "..", "..", "rfm", "testdata", "quantiles.json")
with open(out, "w") as fh:
    json.dump({"numpy": np.__version__, "cases": cases}, fh, separators=(",", ":"))
    fh.write("\n")
print("wrote", out)
