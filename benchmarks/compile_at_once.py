"""A whole sweep's wall time with its group's programs compiled at once
(``EngineOptions(compile_at_once=True)``: init, the training segment, both
evaluations and the best-parameter update, each in its own thread as the
group starts, ``Program.prepare``) against
compiled one after another as each is first called, side by side in one
process. The rows alternate (on, off, on, off, ...) so drift on a shared
machine falls on both; each round starts from an empty program cache, and
no persistent compilation cache is used, so every round pays its compiles.

  python benchmarks/compile_at_once.py --workload=S --trials=8 --updates=20
  python benchmarks/compile_at_once.py --workload=toyS --rounds=2   # a quick check
"""

import dataclasses
import json
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

import rnnsweep as rs
from rnnsweep import bench
from rnnsweep import engine

_WORKLOAD = flags.DEFINE_enum("workload", "S", sorted(bench.WORKLOADS),
                              "Workload (see rnnsweep/bench.py).")
_TRIALS = flags.DEFINE_integer("trials", 8, "Trials in the sweep (one "
                               "group).", lower_bound=1)
_UPDATES = flags.DEFINE_integer("updates", 20, "Updates per trial "
                                "(validation every fifth of them).",
                                lower_bound=5)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Sweeps per setting.",
                               lower_bound=1)
_ENGINE = bench.define_engine_flags()  # --compile_at_once: both are run
_OUT = flags.DEFINE_string("out", None, "JSON file for the rows.")


def sweep_seconds(task, configs, *, updates: int,
                  options: engine.EngineOptions) -> tuple[float, float]:
  """``(wall, summed compile seconds)`` of one whole sweep, compiles
  included."""
  engine.clear_programs()
  with engine.count_compiles() as log, \
      tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    rs.run_trials(task, configs, steps=updates, eval_every=updates // 5,
                  max_group_size=len(configs), options=options,
                  workdir=workdir)
    return time.perf_counter() - start, log.seconds


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  options = _ENGINE()
  w = bench.WORKLOADS[_WORKLOAD.value]
  task = bench.workload_task(w)
  configs = bench.trial_configs(w, _TRIALS.value)
  print(f"{bench.device_header(options)}\nworkload {w.name}: a sweep of "
        f"{_TRIALS.value} trials x {_UPDATES.value} updates, one group",
        flush=True)
  print(f"{'round':>5} {'programs compiled':<18} {'wall s':>8} "
        f"{'compile s (summed)':>19}", flush=True)
  rows = []
  for r in range(_ROUNDS.value):
    for at_once in (True, False):
      wall, compile_s = sweep_seconds(
          task, configs, updates=_UPDATES.value,
          options=dataclasses.replace(options, compile_at_once=at_once))
      rows.append({"round": r, "at_once": at_once, "wall_s": wall,
                   "compile_s": compile_s})
      print(f"{r:>5} {'at once' if at_once else 'as first called':<18} "
            f"{wall:>8.2f} {compile_s:>19.2f}", flush=True)
  on = statistics.median(x["wall_s"] for x in rows if x["at_once"])
  off = statistics.median(x["wall_s"] for x in rows if not x["at_once"])
  print(f"median wall: at once {on:.2f} s, as first called {off:.2f} s: "
        f"{off / on:.2f}x", flush=True)
  if _OUT.value:
    with open(_OUT.value, "w", encoding="utf-8") as f:
      json.dump({"header": bench.device_header(options), "workload": w.name,
                 "trials": _TRIALS.value, "updates": _UPDATES.value,
                 "rows": rows, "median_at_once_s": on,
                 "median_as_first_called_s": off}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
