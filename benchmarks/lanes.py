"""Wall time of one sweep on a CPU split into devices, with each lane
layout, measured side by side.

Runs ``experiments/sweep.py`` once per layout per round, each run in its
own process, in a fresh workdir, with the persistent compilation cache off
(``--compilation_cache``) and the layout forced (the rounds alternate the order: A B, then B A):

  plan  what rnnsweep plans (``rnnsweep.placement.plan_lanes``)
  one   every device in one lane: each group sharded over all of them,
        one group after another
  side  one lane per group while devices last (a GPU's rule, and a
        split CPU's before the plan)

Prints each layout's wall times, their mean and the mean against the first
layout's, and checks that every run wrote the same results (every column
of results.csv but the wall time; numbers to 1e-5 relative: a trial's
numbers do not depend on its group's devices). Writes JSON (and each run's
log) with ``--out_dir``. Flags after ``--`` go to the sweep:

  python benchmarks/lanes.py --cpu_devices=2 --rounds=2
  python benchmarks/lanes.py --cpu_devices=2 -- \\
      --trials=benchmarks/results/cpu-2026-12-03-lanes/tiny.csv
"""

import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(ROOT, "experiments", "sweep.py")
LAYOUTS = ("plan", "one", "side")

_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 2, "JAX devices to split the CPU into.", lower_bound=2)
_LAYOUTS = flags.DEFINE_list(
    "layouts", list(LAYOUTS), f"Layouts to time, the first the baseline of "
    f"the ratios: {', '.join(LAYOUTS)}.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Runs of each layout.",
                               lower_bound=1)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the JSON and the "
                               "runs' logs go.")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", "", "The runs' persistent XLA cache (default: off, "
    "so that each run compiles what it runs, as a first sweep does).")

# The child: experiments/sweep.py with rnnsweep.placement.plan_lanes
# replaced by the layout asked for (the runner calls it through the module).
CHILD = """
import runpy, sys
from rnnsweep import placement
layout, script = sys.argv[1:3]
planned = placement.plan_lanes

def forced(devices, groups):
  if layout == "one":
    return placement.LanePlan([list(devices)], [0] * len(groups))
  if layout == "side":
    return placement.in_turn(devices, len(groups))
  return planned(devices, groups)

placement.plan_lanes = forced
sys.argv = [script] + sys.argv[3:]
runpy.run_path(script, run_name="__main__")
"""


def check_layouts(names) -> list[str]:
  bad = [n for n in names if n not in LAYOUTS]
  if bad or not names or len(set(names)) != len(names):
    raise app.UsageError(f"--layouts must be distinct names among "
                         f"{', '.join(LAYOUTS)}, got {','.join(names)!r}")
  return list(names)


def order(layouts: list[str], rounds: int) -> list[tuple[int, str]]:
  """(round, layout) in the order run: A B, B A, A B, ..."""
  return [(r, name) for r in range(rounds)
          for name in (layouts if r % 2 == 0 else layouts[::-1])]


def results(path: str) -> list[dict[str, str]]:
  """results.csv's rows, without the wall time."""
  with open(path, newline="", encoding="utf-8") as f:
    return [{k: v for k, v in row.items() if k != "wall_time_s"}
            for row in csv.DictReader(f)]


def largest_difference(a, b) -> float:
  """Largest relative difference of two runs' results (``inf`` where a
  row or a non-number differs)."""
  if len(a) != len(b):
    return math.inf
  worst = 0.0
  for x, y in zip(a, b):
    if x.keys() != y.keys():
      return math.inf
    for k in x:
      if x[k] == y[k]:
        continue
      try:
        u, v = float(x[k]), float(y[k])
      except ValueError:
        return math.inf
      worst = max(worst, abs(u - v) / max(abs(u), abs(v), 1e-30))
  return worst


def main(argv):
  sweep_args = argv[1:]
  layouts = check_layouts(_LAYOUTS.value)
  out_dir = _OUT_DIR.value
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep +
             os.environ.get("PYTHONPATH", ""))
  runs = []
  with tempfile.TemporaryDirectory(prefix="rnnsweep-lanes-") as scratch:
    for r, name in order(layouts, _ROUNDS.value):
      workdir = os.path.join(scratch, f"{name}-r{r + 1}")
      start = time.perf_counter()
      out = subprocess.run(
          [sys.executable, "-c", CHILD, name, SWEEP, *sweep_args,
           f"--cpu_devices={_CPU_DEVICES.value}",
           f"--compilation_cache={_COMPILATION_CACHE.value}",
           f"--workdir={workdir}"], cwd=ROOT, env=env, capture_output=True,
          text=True, check=False)
      wall = time.perf_counter() - start
      if out_dir:
        with open(os.path.join(out_dir, f"{name}-r{r + 1}.log"), "w",
                  encoding="utf-8") as f:
          f.write(out.stderr)
      if out.returncode != 0:
        sys.exit(f"the {name} run of round {r + 1} failed "
                 f"(exit {out.returncode}):\n{out.stderr[-3000:]}")
      placement = next((l for l in out.stderr.splitlines()
                        if l.startswith("placement: ")), "")
      runs.append({"round": r + 1, "layout": name, "wall_s": wall,
                   "placement": placement[len("placement: "):],
                   "results": results(os.path.join(workdir,
                                                   "results.csv"))})
      print(f"round {r + 1} {name}: {wall:.1f} s ({runs[-1]['placement']})",
            flush=True)
  worst = max(largest_difference(runs[0]["results"], run["results"])
              for run in runs)
  means = {name: statistics.mean(run["wall_s"] for run in runs
                                 if run["layout"] == name)
           for name in layouts}
  print(f"\n| layout | wall s, in the order run | mean s | against "
        f"{layouts[0]} |\n|---|---|---:|---:|")
  for name in layouts:
    times = ", ".join(f"{run['wall_s']:.1f}" for run in runs
                      if run["layout"] == name)
    print(f"| {name} | {times} | {means[name]:.1f} | "
          f"{means[name] / means[layouts[0]]:.2f}x |")
  same = worst <= 1e-5
  print(f"\nthe same results in every run: {'yes' if same else 'NO'} "
        f"(largest relative difference {worst:.1e})")
  if out_dir:
    with open(os.path.join(out_dir, "lanes.json"), "w",
              encoding="utf-8") as f:
      json.dump({"cpu_devices": _CPU_DEVICES.value, "sweep_args": sweep_args,
                 "runs": [{k: v for k, v in run.items() if k != "results"}
                          for run in runs],
                 "means_s": means, "largest_difference": worst,
                 "same_results": same}, f, indent=1)
  if not same:
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
