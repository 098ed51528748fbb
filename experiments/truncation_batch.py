"""Truncation and batch size on the LM task at equal wall time: validation
bits per character and speed vs TBPTT window and vs batch size. Writes
truncation_batch.csv and truncation_batch.png into --workdir (see
rnnsweep/claims/truncation_batch.py and docs/findings.md)::

  python experiments/truncation_batch.py --workdir=runs/claims/truncation_batch --quick
  python experiments/truncation_batch.py --workdir=runs/claims/truncation_batch --seconds=120
"""

from absl import app
from absl import flags

import rnnsweep as rs
from rnnsweep.claims import script, truncation_batch

FLAGS = script.define_common_flags("Tiny model, two windows and two batch "
                                   "sizes, 0.5 s each: a smoke run.",
                                   hidden_size=False)
_HIDDEN = flags.DEFINE_integer("hidden_size", None, "Units (default 64).",
                               lower_bound=1)
_WINDOWS = flags.DEFINE_list("windows", None, "TBPTT windows (default "
                             "8,16,32,64,128).")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", None, "Batch sizes (default "
                                 "8,16,32,64,128).")
_SECONDS = flags.DEFINE_float("seconds", None, "Training wall time per "
                              "setting (default 120).", lower_bound=0.1)


def run():
  rows = truncation_batch.run(
      FLAGS["workdir"].value, quick=FLAGS["quick"].value,
      windows=script.int_list(_WINDOWS),
      batch_sizes=script.int_list(_BATCH_SIZES),
      seconds=_SECONDS.value, hidden_size=_HIDDEN.value,
      log=rs.runner.log_stderr)
  for r in rows:
    print(f"window {r['truncation']:>4} batch {r['batch_size']:>4}: "
          f"{r['updates_per_s']:.1f} updates/s, {r['steps']} steps, best "
          f"val {r['best_val']}")


if __name__ == "__main__":
  app.run(lambda argv: script.main("truncation_batch.py", argv, run))
