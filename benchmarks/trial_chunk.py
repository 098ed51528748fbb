"""How many of a group's trials to vmap together on a CPU (``trial_chunk``).

On a CPU a vmapped group's per-trial matmuls become batched dots, which
XLA's CPU backend runs slower per trial than the same dots one trial at a
time (benchmarks/RESULTS.md). ``EngineOptions.trial_chunk`` runs a group's
slots in chunks, one after another inside the same program. This script
measures steady-state trial-steps/s for every (hidden size, K, chunk) in
the grid given, in one process and in turn, so the ratios are side by side;
``0`` is the whole group vmapped. Run it under ``taskset -c 0`` for one
core. It is the measurement behind ``engine.CPU_CHUNK_MACS``.

  python benchmarks/trial_chunk.py --hiddens=32,128,512 --ks=8,32 \\
      --chunks=0,1,4 --out=/tmp/chunk.json
"""

import dataclasses
import json
import sys

from absl import app
from absl import flags
from absl import logging

import rnnsweep as rs
from rnnsweep import bench

_WORKLOAD = flags.DEFINE_enum("workload", "S", sorted(bench.WORKLOADS),
                              "Base workload (see rnnsweep/bench.py).")
_CELL = flags.DEFINE_enum("cell", "lstm", ["simple", "lstm", "gru"], "Cell.")
_HIDDENS = flags.DEFINE_list("hiddens", ["32", "128", "512"],
                             "Hidden sizes.")
_KS = flags.DEFINE_list("ks", ["8", "32"], "Group sizes.")
_CHUNKS = flags.DEFINE_list("chunks", ["0", "1", "4"],
                            "trial_chunk values (0: the whole group).")
_UPDATES = flags.DEFINE_integer("updates", 10, "Updates per timed segment "
                                "(halved per doubling of the hidden size "
                                "above 128, at least 2).", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed segments per point.",
                                lower_bound=1)
_OUT = flags.DEFINE_string("out", None, "JSON file for the rows.")


def _ints(values, name):
  try:
    out = [int(v) for v in values]
  except ValueError:
    raise app.UsageError(f"--{name} must be integers, got {values}") from None
  if any(v < (0 if name == "chunks" else 1) for v in out):
    raise app.UsageError(f"--{name} has a value out of range: {values}")
  return out


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  hiddens = _ints(_HIDDENS.value, "hiddens")
  ks = _ints(_KS.value, "ks")
  chunks = _ints(_CHUNKS.value, "chunks")
  cores = rs.placement.usable_cores()
  print(f"{bench.device_header()}; {cores} usable cores", flush=True)
  print(f"{'hidden':>6} {'K':>4} {'chunk':>5} {'trial-steps/s':>14} "
        f"{'temp MiB':>9} {'vs chunk 0':>10}", flush=True)
  rows = []
  for hidden in hiddens:
    updates = max(2, _UPDATES.value * 128 // max(hidden, 128))
    w = dataclasses.replace(bench.WORKLOADS[_WORKLOAD.value], cell=_CELL.value,
                            hidden=hidden, updates=updates)
    task = bench.workload_task(w)
    for k in ks:
      whole = None
      for chunk in chunks:
        options = rs.engine.EngineOptions(trial_chunk=chunk)
        r = bench.measure_group(w, k, repeats=_REPEATS.value,
                                options=options, task=task)
        rs.engine.clear_programs()
        rate = r["trial_steps_per_s"]
        whole = rate if chunk == 0 else whole
        rows.append(dict(r, hidden=hidden, chunk=chunk, cores=cores,
                         updates=updates, cell=_CELL.value))
        ratio = f"{rate / whole:.2f}" if whole else "-"
        print(f"{hidden:>6} {k:>4} {chunk:>5} {rate:>14.1f} "
              f"{(r['temp_bytes'] or 0) / 2**20:>9.1f} {ratio:>10}",
              flush=True)
  if _OUT.value:
    with open(_OUT.value, "w", encoding="utf-8") as f:
      json.dump({"header": bench.device_header(), "cores": cores,
                 "rows": rows}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
