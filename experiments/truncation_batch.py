"""Truncation and batch size on the LM task at equal wall time: validation
bits per character and speed vs TBPTT window and vs batch size. Writes
truncation_batch.csv and truncation_batch.png into --workdir (see
rnnsweep/claims/truncation_batch.py and docs/findings.md)::

  python experiments/truncation_batch.py --workdir=runs/claims/truncation_batch --quick
  python experiments/truncation_batch.py --workdir=runs/claims/truncation_batch --seconds=120
"""

import sys

from absl import app
from absl import flags
from absl import logging

import rnnsweep as rs
from rnnsweep.claims import truncation_batch

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the sweeps, tables "
                               "and figures go (a rerun continues).",
                               required=True)
_QUICK = flags.DEFINE_bool("quick", False, "Tiny model, two windows and two "
                           "batch sizes, 0.5 s each: a smoke run.")
_WINDOWS = flags.DEFINE_list("windows", None, "TBPTT windows (default "
                             "8,16,32,64,128).")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", None, "Batch sizes (default "
                                 "8,16,32,64,128).")
_SECONDS = flags.DEFINE_float("seconds", None, "Training wall time per "
                              "setting (default 120).", lower_bound=0.1)
_HIDDEN = flags.DEFINE_integer("hidden_size", None, "Units (default 64).",
                               lower_bound=1)


def main(argv):
  if len(argv) > 1:
    sys.exit(f"truncation_batch.py: error: unexpected arguments {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    ints = lambda values: [int(v) for v in values] if values else None
    rows = truncation_batch.run(
        _WORKDIR.value, quick=_QUICK.value, windows=ints(_WINDOWS.value),
        batch_sizes=ints(_BATCH_SIZES.value), seconds=_SECONDS.value,
        hidden_size=_HIDDEN.value, log=rs.runner.log_stderr)
  except ValueError as e:
    print(f"truncation_batch.py: error: {e}", file=sys.stderr)
    sys.exit(2)
  for r in rows:
    print(f"window {r['truncation']:>4} batch {r['batch_size']:>4}: "
          f"{r['updates_per_s']:.1f} updates/s, {r['steps']} steps, best "
          f"val {r['best_val']}")


if __name__ == "__main__":
  app.run(main)
