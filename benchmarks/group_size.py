"""max_group_size=auto against every fixed K, whole sweeps side by side.

Runs the same sweep (--trials trials of a workload, --updates each,
evaluation and test included) once per fixed group size and with ``auto``,
each from a cold start (programs forgotten, no persistent compilation
cache), so every row pays its own compiles and ``auto`` pays its probes.
All rows run in turn, --rounds times over, each round starting one row
later than the last (on 2026-12-07 the row run first, auto, was the
slowest of every first round), and each row keeps its fastest round (a
shared machine's noise only ever adds time). Prints wall seconds
and ``auto``'s speed relative to the best fixed K (the goal: never below
0.95); writes JSON.

  python benchmarks/group_size.py --workload=S --trials=32 --ks=1,4,8,16,32
"""

import dataclasses
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

import jax

import rnnsweep as rs
from rnnsweep import bench

_WORKLOAD = flags.DEFINE_enum("workload", "S", sorted(bench.WORKLOADS),
                              "Workload (see rnnsweep/bench.py).")
_TRIALS = flags.DEFINE_integer("trials", 32, "Trials in the sweep.",
                               lower_bound=1)
_UPDATES = flags.DEFINE_integer("updates", None, "Updates per trial "
                                "(default: the workload's 50).", lower_bound=1)
_KS = flags.DEFINE_list("ks", ["1", "4", "8", "16", "32"],
                        "Fixed group sizes to compare with auto.")
_ENGINE = bench.define_engine_flags()  # rnnsweep's engine options
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Times each row runs (its "
                               "fastest counts).", lower_bound=1)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the JSON goes.")


def _run(task, configs, w, group_size, options):
  """Wall seconds of one cold sweep, and its group sizes."""
  rs.engine.clear_programs()
  lines = []
  start = time.perf_counter()
  result = rs.run_trials(task, configs, steps=w.updates,
                      eval_every=w.updates, max_group_size=group_size,
                      options=options, log=lines.append)
  wall = time.perf_counter() - start
  assert not result.failed, result.failed
  groups = len({r.group_id for r in result.trials})
  return wall, groups, [l for l in lines if l.startswith("auto")]


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    ks = [rs.sizing.check_max_group_size(k, "--ks") for k in _KS.value]
  except ValueError as e:
    sys.exit(f"group_size.py: error: {e}")
  jax.config.update("jax_compilation_cache_dir", None)
  w = bench.WORKLOADS[_WORKLOAD.value]
  w = dataclasses.replace(w, updates=_UPDATES.value or w.updates)
  options = _ENGINE()
  header = (f"workload {w}; {_TRIALS.value} trials; "
            f"{bench.device_header(options)}")
  print(header)
  task = bench.workload_task(w)
  task.data()
  configs = bench.trial_configs(w, _TRIALS.value)
  # The first sweep in a process pays one-off costs (backend start-up,
  # tracing machinery): pay them on a different, tiny shape first.
  warm = dataclasses.replace(w, hidden=8, batch=2, window=4, embed=8,
                             updates=1)
  _run(task, bench.trial_configs(warm, 1), warm, 1, options)
  names = ["auto"] + ks
  walls = {k: [] for k in names}
  groups, why = {}, {}
  for r in range(_ROUNDS.value):
    print(f"\nround {r + 1}: max_group_size  groups  wall s", flush=True)
    shift = r % len(names)
    for k in names[shift:] + names[:shift]:
      wall, groups[k], lines = _run(task, configs, w, k, options)
      walls[k].append(wall)
      why.setdefault(k, lines)
      print(f"  {str(k):<22} {groups[k]:>6} {wall:>7.1f}", flush=True)
      for line in lines:
        print(f"    {line}", flush=True)
  rows = [{"max_group_size": k, "groups": groups[k], "wall_s": min(walls[k]),
           "rounds_s": walls[k], "auto": why[k]} for k in names]
  best = min(rows[1:], key=lambda r: r["wall_s"])
  ratio = best["wall_s"] / rows[0]["wall_s"]
  print("\nfastest round of each: " + ", ".join(
      f"{r['max_group_size']} {r['wall_s']:.1f} s" for r in rows))
  print(f"best fixed K: {best['max_group_size']}; auto's speed relative to "
        f"it: {ratio:.2f} (goal >= 0.95)")
  if _OUT_DIR.value:
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    path = os.path.join(_OUT_DIR.value, f"group_size_{w.name}.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"header": header, "rows": rows,
                 "best_fixed": best["max_group_size"],
                 "auto_relative_speed": ratio}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
  sys.exit(app.run(main))
