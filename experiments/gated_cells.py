"""Gated cells and long lags: SimpleRNN vs LSTM vs GRU on the adding
problem and the copy task at growing lags, each cell given the same random
search over learning rate and gradient clip. Writes gated_cells.csv and
gated_cells.png into --workdir (see rnnsweep/claims/gated_cells.py and
docs/findings.md)::

  python experiments/gated_cells.py --workdir=runs/claims/gated_cells --quick
  python experiments/gated_cells.py --workdir=runs/claims/gated_cells
"""

import sys

from absl import app
from absl import flags
from absl import logging

import rnnsweep as rs
from rnnsweep.claims import gated_cells

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the sweeps, tables "
                               "and figures go (a rerun continues).",
                               required=True)
_QUICK = flags.DEFINE_bool("quick", False, "Lags 5 and 10, 3 trials per "
                           "cell, 8 steps: a smoke run.")
_LAGS = flags.DEFINE_list("lags", None, "Lags (default 10,50,100,200).")
_BUDGET = flags.DEFINE_integer("budget", None, "Random trials per cell and "
                               "seed (default 16).", lower_bound=1)
_SEEDS = flags.DEFINE_integer("seeds", None, "Repetitions (default 3).",
                              lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", None, "Updates per trial (default "
                              "1000).", lower_bound=1)
_HIDDEN = flags.DEFINE_integer("hidden_size", None, "Units (default 64).",
                               lower_bound=1)
_MAX_GROUP_SIZE = flags.DEFINE_string("max_group_size", "auto",
                                      "Most trials per program.")


def main(argv):
  if len(argv) > 1:
    sys.exit(f"gated_cells.py: error: unexpected arguments {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    lags = [int(v) for v in _LAGS.value] if _LAGS.value else None
    rows = gated_cells.run(
        _WORKDIR.value, quick=_QUICK.value, lags=lags, budget=_BUDGET.value,
        seeds=_SEEDS.value, steps=_STEPS.value, hidden_size=_HIDDEN.value,
        max_group_size=rs.sizing.check_max_group_size(
            _MAX_GROUP_SIZE.value, "--max_group_size"),
        log=rs.runner.log_stderr)
  except ValueError as e:
    print(f"gated_cells.py: error: {e}", file=sys.stderr)
    sys.exit(2)
  for r in rows:
    print(f"{r['task']:6s} lag {r['lag']:>4} {r['cell']:6s} success "
          f"{r['succeeded']}/{r['trials']}  selected test {r['selected_test']}")


if __name__ == "__main__":
  app.run(main)
