"""rnnsweep against what a user would do instead, side by side in one run.

1. Steady-state speed (trial-steps/s, compile excluded): rnnsweep with K
   trials in one program; the same program with K=1, trials one after
   another; PyTorch nn.LSTM (cuDNN on GPU) trials one after another; PyTorch
   torch.func.vmap over stacked parameters with a hand-written LSTM and
   per-trial Adam learning rates. The torch rows need torch installed and
   are skipped with a message otherwise.
2. A whole sweep of --sweep_trials trials, compile included (what the user
   waits for): rnnsweep (all trials in one group), the same trials through
   one K=1 program, and the naive Optuna-style loop that jits a train
   function per trial with Python-float hyperparameters (one compile each).
3. With --full_sweep_trials: one sweep of that many trials as a user runs
   it (one group; --full_sweep_updates updates, validation every fifth of
   them, the test split and store writes, compile included: by default
   experiments/sweep.py's 500 steps, validating every 100) against its
   steady-state training time at part 1's speed for that K.

Prints ratios rnnsweep / baseline, measured in this run on this device, and
writes JSON.

  python benchmarks/baselines.py --workload=S --k=32 --sweep_trials=32
"""

import contextlib
import dataclasses
import importlib.util
import json
import os
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging


import rnnsweep as rs
from rnnsweep import bench

_WORKLOAD = flags.DEFINE_enum("workload", "S", sorted(bench.WORKLOADS),
                              "Workload (see rnnsweep/bench.py).")
_K = flags.DEFINE_integer("k", 32, "rnnsweep's group size for part 1.",
                          lower_bound=1)
_SEQUENTIAL_TRIALS = flags.DEFINE_integer(
    "sequential_trials", 3, "Trials timed one after another (part 1).",
    lower_bound=1)
_SWEEP_TRIALS = flags.DEFINE_integer(
    "sweep_trials", 32, "Trials in the end-to-end sweep (part 2; 0 skips "
    "it).", lower_bound=0)
_UPDATES = flags.DEFINE_integer("updates", None, "Updates per trial "
                                "(default: the workload's 50).", lower_bound=1)
_ENGINE = bench.define_engine_flags()  # rnnsweep's engine options
_FULL_SWEEP_TRIALS = flags.DEFINE_integer(
    "full_sweep_trials", 0, "Trials in part 3's whole sweep against its "
    "steady-state time (0 skips it).", lower_bound=0)
_FULL_SWEEP_UPDATES = flags.DEFINE_integer(
    "full_sweep_updates", 500, "Updates per trial in part 3 (validation "
    "every fifth of them).", lower_bound=5)
_TORCH = flags.DEFINE_bool("torch", True, "Run the PyTorch baselines when "
                           "torch is installed.")
_STEADY = flags.DEFINE_bool("steady", True, "Run part 1 (steady state).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the JSON goes.")


@contextlib.contextmanager
def _part(out, name):
  """Adds the block's wall seconds (compiles, init and torch's start
  included) to ``out["seconds"][name]``: where the run's own time goes."""
  start = time.perf_counter()
  try:
    yield
  finally:
    seconds = out.setdefault("seconds", {})
    seconds[name] = round(time.perf_counter() - start, 2)


def _row(name, rate, base):
  ratio = "" if base is None else f"{base / rate:>10.1f}x"
  print(f"  {name:<46} {rate:>12.1f} {ratio}", flush=True)


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  w = bench.WORKLOADS[_WORKLOAD.value]
  w = dataclasses.replace(w, updates=_UPDATES.value or w.updates)
  options = _ENGINE()
  header = f"workload {w}; {bench.device_header(options)}"
  print(header)
  task = bench.workload_task(w)
  out = {"header": header, "precision": options.resolved().compute_dtype}

  if _STEADY.value:
    _steady_state(w, task, options, out)
  with _part(out, "sweep"):
    _sweep(w, task, options, out)
  with _part(out, "full_sweep"):
    swept = _full_sweep(w, task, options, out)
  print("\nseconds each part took: " + ", ".join(
      f"{name} {sec:.1f}" for name, sec in out["seconds"].items()))
  if _OUT_DIR.value:
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    path = os.path.join(_OUT_DIR.value, f"baselines_{w.name}_"
                        f"{bench.options_tag(options)}.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=1)
    print(f"wrote {path}")
  if not swept:
    sys.exit("baselines.py: error: the whole sweep (part 3) failed: "
             f"{out['full_sweep']['error']}")


def _steady_state(w, task, options, out):
  print("\n1. steady state, compile excluded       trial-steps/s   "
        "rnnsweep is")
  with _part(out, "rnnsweep"):
    ours = bench.measure_group(w, _K.value, options=options, task=task)
  out["rnnsweep"] = ours
  rate = ours["trial_steps_per_s"]
  _row(f"rnnsweep, K={_K.value} in one program", rate, None)
  with _part(out, "sequential_k1"):
    seq = bench.measure_sequential(w, _SEQUENTIAL_TRIALS.value, task=task,
                                   options=options)
  out["sequential_k1"] = seq
  _row("same program, K=1, one trial after another",
       seq["trial_steps_per_s"], rate)
  torch_ok = _TORCH.value and importlib.util.find_spec("torch") is not None
  if _TORCH.value and not torch_ok:
    print("  (PyTorch rows skipped: torch is not installed)")
  if torch_ok:
    import bench_torch  # pylint: disable=import-outside-toplevel
    # At rnnsweep's precision: bfloat16 compute is torch's autocast.
    precision = out["precision"]
    shown = "" if precision == "float32" else ", bf16 autocast"
    for key, label, measure in (
        ("torch_lstm_sequential", f"PyTorch nn.LSTM{shown}, sequential",
         lambda: bench_torch.measure_cudnn_sequential(
             w, _SEQUENTIAL_TRIALS.value, precision=precision)),
        ("torch_func_vmap", f"PyTorch torch.func.vmap, K={_K.value}{shown}",
         lambda: bench_torch.measure_func_vmap(w, _K.value,
                                               precision=precision))):
      try:
        with _part(out, key):
          out[key] = measure()
      except Exception as e:  # pylint: disable=broad-except
        # A baseline torch cannot run here (bfloat16 cuDNN on an older
        # GPU, say) costs its row, not the run's other parts.
        out[key] = {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
        print(f"  {label}: failed ({out[key]['error']})", flush=True)
        continue
      _row(f"{label} ({out[key]['device']})", out[key]["trial_steps_per_s"],
           rate)


def _sweep(w, task, options, out):
  """Part 2: whole sweeps, compile and evaluation included."""
  n = _SWEEP_TRIALS.value
  if n:
    print(f"\n2. a sweep of {n} trials x {w.updates} updates, compile "
          f"included   wall s   rnnsweep is")
    configs = bench.trial_configs(w, n)
    timings = {}
    for name, group in (("rnnsweep, one group", n),
                        ("same program, K=1, sequential", 1)):
      rs.engine.clear_programs()  # both pay their compile
      start = time.perf_counter()
      rs.run_trials(task, configs, steps=w.updates, eval_every=w.updates,
                    max_group_size=group, options=options)
      timings[name] = time.perf_counter() - start
    naive = bench.measure_naive(w, n, task=task)
    timings["naive loop, one compile per trial"] = naive["total_s"]
    out["sweep"] = {"trials": n, "wall_s": timings, "naive": naive}
    ours_s = timings["rnnsweep, one group"]
    for name, sec in timings.items():
      ratio = "" if name.startswith("rnnsweep") else f"{sec / ours_s:>8.1f}x"
      print(f"  {name:<46} {sec:>8.1f} {ratio}", flush=True)


def _full_sweep(w, task, options, out):
  """Part 3: what a whole sweep costs beyond its training; ``False`` (the
  error in ``out``) when a group of it raised."""
  n = _FULL_SWEEP_TRIALS.value
  if not n:
    return True
  steady = (out["rnnsweep"] if out.get("rnnsweep", {}).get("k") == n else
            bench.measure_group(w, n, options=options, task=task))
  updates = _FULL_SWEEP_UPDATES.value
  steady_s = n * updates / steady["trial_steps_per_s"]
  rs.engine.clear_programs()  # the sweep pays its compile
  with tempfile.TemporaryDirectory() as workdir, \
      rs.engine.count_compiles() as compiles:
    start = time.perf_counter()
    result = rs.run_trials(task, bench.trial_configs(w, n), steps=updates,
                           eval_every=updates // 5, max_group_size=n,
                           options=options, workdir=workdir)
    wall = time.perf_counter() - start
  if result.failed:
    # A group that raised is recorded as failed and the sweep goes on: its
    # wall time is no sweep's (the H200 run of 2026-12-04 timed 0 of 1024).
    first = next(iter(result.failed.values()))
    out["full_sweep"] = {"trials": n, "updates": updates,
                         "failed": len(result.failed), "error": first}
    print(f"\n3. a whole sweep of {n} trials: FAILED, the groups of "
          f"{len(result.failed)} of its trials raised ({first})", flush=True)
    return False
  out["full_sweep"] = {"trials": n, "updates": updates,
                       "completed": sum(t.status == "completed"
                                        for t in result.trials),
                       "wall_s": wall, "steady_s": steady_s,
                       "steady_trial_steps_per_s": steady["trial_steps_per_s"],
                       "ratio": wall / steady_s,
                       # What the sweep spent beyond training: its compiles
                       # (one after another unless --compile_at_once).
                       "compile_s": compiles.seconds,
                       "compiles": compiles.count,
                       "compile_cache_hits": compiles.cache_hits,
                       "compile_s_by_program": dict(
                           compiles.seconds_by_name.most_common())}
  print(f"\n3. a whole sweep of {n} trials x {updates} updates (one group; "
        f"compile, validation every {updates // 5}, test and store "
        f"included): {wall:.1f} s, {wall / steady_s:.2f}x its "
        f"{steady_s:.1f} s of steady-state training", flush=True)
  top = ", ".join(f"{name} {sec:.1f}" for name, sec in
                  compiles.seconds_by_name.most_common(4))
  print(f"   of which compiling {compiles.seconds:.1f} s ({compiles.count} "
        f"programs, {compiles.cache_hits} from the compilation cache; {top})",
        flush=True)
  return True


if __name__ == "__main__":
  sys.exit(app.run(main))
