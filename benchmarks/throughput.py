"""Training throughput of one group versus its size K (rnnsweep alone).

For a workload (S or L, defined in rnnsweep/bench.py) and a cell, doubles K
from 1 until --max_k or until the device runs out of memory, and reports per
K: compile time (apart), steady-state trial-steps/s (median of repeated
segments fenced with block_until_ready), tokens/s, achieved TFLOP/s
(analytic FLOPs) and the compiled program's memory. Prints the device, jax
version and matmul precision with the table; writes JSON and a PNG plot.

  python benchmarks/throughput.py --workload=S --max_k=32 --out_dir=/tmp/bench
  python benchmarks/throughput.py --workload=S --max_k=2048 --precision=bfloat16 --unroll=8
"""

import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging

import rnnsweep as rs
from rnnsweep import bench

_WORKLOAD = flags.DEFINE_enum("workload", "S", sorted(bench.WORKLOADS),
                              "Workload (see rnnsweep/bench.py).")
_CELL = flags.DEFINE_enum("cell", "lstm", ["simple", "lstm", "gru"], "Cell.")
_MAX_K = flags.DEFINE_integer("max_k", 32, "Largest K to try.", lower_bound=1)
_KS = flags.DEFINE_list("ks", None, "Exact K values to measure instead of "
                        "doubling up to --max_k.")
_UPDATES = flags.DEFINE_integer("updates", None, "Updates per timed segment "
                                "(default: the workload's 50).", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed segments per K.",
                                lower_bound=1)
_ENGINE = bench.define_engine_flags()
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where JSON and PNG go.")
_TAG = flags.DEFINE_string("tag", None, "Name of the output files (default: "
                           "from the settings).")


def plot(path, rows, title):
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(6, 4), dpi=100)
  ax = fig.add_subplot()
  ax.plot([r["k"] for r in rows], [r["trial_steps_per_s"] for r in rows],
          marker="o")
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("K (trials per program)")
  ax.set_ylabel("trial-steps / s")
  ax.set_title(title, fontsize=7, wrap=True)
  ax.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  w = bench.WORKLOADS[_WORKLOAD.value]
  w = dataclasses.replace(w, cell=_CELL.value,
                          updates=_UPDATES.value or w.updates)
  options = _ENGINE()
  header = f"workload {w}; {bench.device_header(options)}"
  print(header)
  print(f"{'K':>6} {'compile s':>10} {'trial-steps/s':>14} {'tokens/s':>12} "
        f"{'TFLOP/s':>8} {'temp MiB':>9} {'vs K=1':>7}", flush=True)
  task = bench.workload_task(w)
  if _KS.value:
    ks = [int(k) for k in _KS.value]
  else:
    ks = [2**i for i in range(_MAX_K.value.bit_length())
          if 2**i <= _MAX_K.value]
  rows = []
  for k in ks:
    try:
      r = bench.measure_group(w, k, repeats=_REPEATS.value, options=options,
                              task=task)
    except Exception as e:  # pylint: disable=broad-except
      if rs.engine.is_out_of_memory(e):
        print(f"{k:>6} out of device memory; stopping", flush=True)
        break
      raise
    if r["fallback"] and not rows:
      print(f"recurrence=pallas runs the XLA recurrence here: {r['fallback']}",
            flush=True)
    rows.append(r)
    print(f"{k:>6} {r['compile_s']:>10.2f} {r['trial_steps_per_s']:>14.1f} "
          f"{r['tokens_per_s']:>12.0f} {r['tflops']:>8.3f} "
          f"{(r['temp_bytes'] or 0) / 2**20:>9.1f} "
          f"{r['trial_steps_per_s'] / rows[0]['trial_steps_per_s']:>7.2f}",
          flush=True)
  if _OUT_DIR.value and rows:
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    tag = _TAG.value or (f"throughput_{w.name}_{w.cell}_"
                         f"{bench.options_tag(options)}")
    with open(os.path.join(_OUT_DIR.value, tag + ".json"), "w",
              encoding="utf-8") as f:
      json.dump({"header": header, "rows": rows}, f, indent=1)
    plot(os.path.join(_OUT_DIR.value, tag + ".png"), rows, header)
    print(f"wrote {tag}.json and {tag}.png to {_OUT_DIR.value}")


if __name__ == "__main__":
  sys.exit(app.run(main))
