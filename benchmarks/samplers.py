"""Samplers at equal budgets: coverage of the unit cube, and best validation
metric on the LM task.

1. Coverage: the L2-star discrepancy (``scipy.stats.qmc.discrepancy``) of
   N points in 2 and 4 dimensions drawn by rnnsweep's ``random`` and
   ``quasirandom`` samplers (uniform parameters mapped back to [0, 1)),
   averaged over seeds. Lower is more even.
2. Search: on the LM task, the best validation bits per character found by
   ``random``, ``quasirandom`` (each ROUNDS x BATCH trials at once) and
   ``optuna:tpe`` (ROUNDS rounds of BATCH trials asked, trained as groups,
   told), for several sweep seeds. Every method trains the same number of
   trial-steps.

Writes JSON and prints tables::

  python benchmarks/samplers.py --seeds=3 --rounds=4 --batch=16 --steps=120 \\
      --out=benchmarks/results/cpu-2026-11-29/samplers.json
"""

import json
import math
import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
from scipy.stats import qmc

import rnnsweep as rs

_SEEDS = flags.DEFINE_integer("seeds", 3, "Sweep seeds (repetitions).",
                              lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 4, "TPE rounds.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch", 16, "Trials per TPE round (and K).",
                              lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 120, "Updates per trial.",
                              lower_bound=1)
_HIDDEN = flags.DEFINE_integer("hidden_size", 64, "Units.", lower_bound=1)
_POINTS = flags.DEFINE_integer("points", 64, "Points for the coverage "
                               "table.", lower_bound=2)
_COVERAGE_SEEDS = flags.DEFINE_integer("coverage_seeds", 20, "Seeds "
                                       "averaged in the coverage table.",
                                       lower_bound=1)
_METHODS = flags.DEFINE_list("methods", ["random", "quasirandom",
                                         "optuna:tpe"], "Search rows.")
_OUT = flags.DEFINE_string("out", None, "JSON file for the numbers.")

UNIT_NAMES = ("input_dropout", "output_dropout", "recurrent_dropout",
              "momentum")


def coverage(points: int, seeds: int) -> list[dict]:
  rows = []
  for dims in (2, 4):
    names = UNIT_NAMES[:dims]
    space = rs.Space({n: rs.Uniform(0.0, 0.9) for n in names})
    row = {"dims": dims, "points": points}
    for method, draw in (("random", rs.random),
                         ("quasirandom", rs.quasirandom)):
      values = []
      for s in range(seeds):
        pts = np.array([[t.params[n] / 0.9 for n in names]
                        for t in draw(space, points, seed=s)])
        values.append(qmc.discrepancy(pts, method="L2-star"))
      row[method] = statistics.mean(values)
      row[f"{method}_sd"] = statistics.pstdev(values)
    row["ratio"] = row["quasirandom"] / row["random"]
    rows.append(row)
  return rows


def search_space(hidden: int) -> rs.Space:
  return rs.Space({"cell": "lstm", "hidden_size": hidden,
                   "learning_rate": rs.LogUniform(1e-4, 3e-2),
                   "output_dropout": rs.Uniform(0.0, 0.5),
                   "recurrent_dropout": rs.Uniform(0.0, 0.5)})


def search(task, method: str, seed: int) -> dict:
  n = _ROUNDS.value * _BATCH.value
  kwargs = dict(steps=_STEPS.value, eval_every=_STEPS.value // 4,
                max_group_size=_BATCH.value, seed=seed)
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    if method.startswith("optuna:"):
      result = rs.sweep(task, search_space(_HIDDEN.value), sampler=method,
                        sampler_options={"rounds": _ROUNDS.value,
                                         "batch_size_trials": _BATCH.value},
                        workdir=workdir, **kwargs)
    else:
      result = rs.sweep(task, search_space(_HIDDEN.value), sampler=method,
                        num_trials=n, workdir=workdir, **kwargs)
  wall = time.perf_counter() - start
  best = result.best
  return {"method": method, "seed": seed, "trials": len(result.trials),
          "best": best.best_value if best else math.nan,
          "best_params": {k: best.params[k] for k in
                          ("learning_rate", "output_dropout",
                           "recurrent_dropout")} if best else None,
          "trial_steps": sum(r.curves["step"][-1] for r in result.trials),
          "wall_s": wall}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  out = {"coverage": coverage(_POINTS.value, _COVERAGE_SEEDS.value),
         "search": [], "settings": {
             "seeds": _SEEDS.value, "rounds": _ROUNDS.value,
             "batch": _BATCH.value, "steps": _STEPS.value,
             "hidden_size": _HIDDEN.value},
         "versions": rs.runner._versions()}  # pylint: disable=protected-access
  print(f"L2-star discrepancy of {_POINTS.value} points, mean over "
        f"{_COVERAGE_SEEDS.value} seeds (lower is more even)")
  print("dims  random             quasirandom        quasi/random")
  for r in out["coverage"]:
    print(f"{r['dims']:>4}  {r['random']:.5f} ± {r['random_sd']:.5f}  "
          f"{r['quasirandom']:.5f} ± {r['quasirandom_sd']:.5f}  "
          f"{r['ratio']:.3f}")
  task = rs.make_task("lm")
  # Compile every program once before the clocks start.
  search(task, "random", 10_000)
  for seed in range(_SEEDS.value):
    for method in _METHODS.value:
      row = search(task, method, seed)
      out["search"].append(row)
      print(f"seed {seed} {method:12s} best {row['best']:.4f} "
            f"({row['trials']} trials, {row['trial_steps']} trial-steps, "
            f"{row['wall_s']:.1f} s)", flush=True)
  print("\nmedian best per method:")
  for method in _METHODS.value:
    vals = [r["best"] for r in out["search"] if r["method"] == method]
    print(f"  {method:12s} {statistics.median(vals):.4f}  "
          f"(seeds: {', '.join(f'{v:.4f}' for v in vals)})")
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  app.run(main)
