"""The learning rate over several decades, for Adam and SGD with momentum:
too small converges slowly, too large diverges. Writes learning_rate.csv,
ranges.csv and learning_rate.png into --workdir (see
rnnsweep/claims/learning_rate.py and docs/findings.md)::

  python experiments/learning_rate.py --workdir=runs/claims/learning_rate --quick
  python experiments/learning_rate.py --workdir=runs/claims/learning_rate
"""

import sys

from absl import app
from absl import flags
from absl import logging

import rnnsweep as rs
from rnnsweep.claims import learning_rate

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the sweeps, tables "
                               "and figures go (a rerun continues).",
                               required=True)
_QUICK = flags.DEFINE_bool("quick", False, "Tiny model, 5 rates, 1 seed, 8 "
                           "steps: a smoke run.")
_SEEDS = flags.DEFINE_integer("seeds", None, "Repetitions (default 3; quick "
                              "1).", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", None, "Updates per trial (default "
                              "300; quick 8).", lower_bound=1)
_HIDDEN = flags.DEFINE_integer("hidden_size", None, "Units (default 64; "
                               "quick 16).", lower_bound=1)
_MAX_GROUP_SIZE = flags.DEFINE_string("max_group_size", "auto",
                                      "Most trials per program.")


def main(argv):
  if len(argv) > 1:
    sys.exit(f"learning_rate.py: error: unexpected arguments {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    ranges = learning_rate.run(
        _WORKDIR.value, quick=_QUICK.value, seeds=_SEEDS.value,
        steps=_STEPS.value, hidden_size=_HIDDEN.value,
        max_group_size=rs.sizing.check_max_group_size(
            _MAX_GROUP_SIZE.value, "--max_group_size"),
        log=rs.runner.log_stderr)
  except ValueError as e:
    print(f"learning_rate.py: error: {e}", file=sys.stderr)
    sys.exit(2)
  for r in ranges:
    print(f"{r['optimizer']:5s} best lr {r['best_learning_rate']}  stable "
          f"[{r['stable_lo']}, {r['stable_hi']}]  useful [{r['useful_lo']}, "
          f"{r['useful_hi']}]  blows up from {r['unstable_from']} "
          f"(non-finite from {r['nonfinite_from']})")


if __name__ == "__main__":
  app.run(main)
