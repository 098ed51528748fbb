"""Random search beats grid search when few parameters matter (Bergstra &
Bengio 2012): grid, random and quasi-random search at equal budgets on the
LM task, over seeds. Writes random_vs_grid.csv, trials.csv,
best_vs_budget.png and grid_vs_random.png into --workdir (see
rnnsweep/claims/random_vs_grid.py and docs/findings.md)::

  python experiments/random_vs_grid.py --workdir=runs/claims/random_vs_grid --quick
  python experiments/random_vs_grid.py --workdir=runs/claims/random_vs_grid
"""

import sys

from absl import app
from absl import flags
from absl import logging

import rnnsweep as rs
from rnnsweep.claims import random_vs_grid

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the sweeps, tables "
                               "and figures go (a rerun continues).",
                               required=True)
_QUICK = flags.DEFINE_bool("quick", False, "Tiny model, budgets 4 and 9, "
                           "2 seeds, 8 steps: a smoke run of a minute.")
_BUDGETS = flags.DEFINE_list("budgets", None, "Trial budgets, each a square "
                             "(default 9,16,25,64; quick 4,9).")
_SEEDS = flags.DEFINE_integer("seeds", None, "Repetitions (default 5; quick "
                              "2).", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", None, "Updates per trial (default "
                              "200; quick 8).", lower_bound=1)
_HIDDEN = flags.DEFINE_integer("hidden_size", None, "Units (default 64; "
                               "quick 16).", lower_bound=1)
_MAX_GROUP_SIZE = flags.DEFINE_string("max_group_size", "auto",
                                      "Most trials per program.")


def main(argv):
  if len(argv) > 1:
    sys.exit(f"random_vs_grid.py: error: unexpected arguments {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    budgets = [int(b) for b in _BUDGETS.value] if _BUDGETS.value else None
    rows = random_vs_grid.run(
        _WORKDIR.value, quick=_QUICK.value, budgets=budgets,
        seeds=_SEEDS.value, steps=_STEPS.value, hidden_size=_HIDDEN.value,
        max_group_size=rs.sizing.check_max_group_size(
            _MAX_GROUP_SIZE.value, "--max_group_size"),
        log=rs.runner.log_stderr)
  except ValueError as e:
    print(f"random_vs_grid.py: error: {e}", file=sys.stderr)
    sys.exit(2)
  for (method, budget), value in sorted(random_vs_grid.medians(rows).items(),
                                        key=lambda kv: (kv[0][1], kv[0][0])):
    print(f"budget {budget:>3}  {method:12s} median best {value:.4f}")


if __name__ == "__main__":
  app.run(main)
