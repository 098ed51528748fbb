"""Which hyperparameters matter, per task: a random sweep on each task and
two importance measures (fANOVA through Optuna, and a model-free variance
decomposition). Writes importance.csv and importance.png into --workdir
(see rnnsweep/claims/importance.py and docs/findings.md)::

  python experiments/importance.py --workdir=runs/claims/importance --quick
  python experiments/importance.py --workdir=runs/claims/importance
"""

import sys

from absl import app
from absl import flags
from absl import logging

import rnnsweep as rs
from rnnsweep.claims import importance

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the sweeps, tables "
                               "and figures go (a rerun continues).",
                               required=True)
_QUICK = flags.DEFINE_bool("quick", False, "Tiny LM and adding problem, 16 "
                           "trials of 8 steps each: a smoke run.")
_NUM_TRIALS = flags.DEFINE_integer("num_trials", None, "Random trials per "
                                   "task (default 128; quick 16).",
                                   lower_bound=2)
_STEPS = flags.DEFINE_integer("steps", None, "Updates per trial (default "
                              "300; quick 8).", lower_bound=1)
_TASKS = flags.DEFINE_list("tasks", None, "Tasks to measure (default: lm, "
                           "adding, classify, forecast; quick: lm, adding).")
_HIDDEN = flags.DEFINE_integer("hidden_size", None, "Units (default 64; "
                               "quick 16).", lower_bound=1)
_MAX_GROUP_SIZE = flags.DEFINE_string("max_group_size", "auto",
                                      "Most trials per program.")


def main(argv):
  if len(argv) > 1:
    sys.exit(f"importance.py: error: unexpected arguments {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    rows = importance.run(
        _WORKDIR.value, quick=_QUICK.value, num_trials=_NUM_TRIALS.value,
        steps=_STEPS.value, hidden_size=_HIDDEN.value,
        task_names=_TASKS.value,
        max_group_size=rs.sizing.check_max_group_size(
            _MAX_GROUP_SIZE.value, "--max_group_size"),
        log=rs.runner.log_stderr)
  except ValueError as e:
    print(f"importance.py: error: {e}", file=sys.stderr)
    sys.exit(2)
  for r in rows:
    fanova = "n/a" if r["fanova"] is None else f"{r['fanova']:.3f}"
    print(f"{r['task']:9s} {r['parameter']:18s} fANOVA {fanova:>6s}  "
          f"eta^2 {r['eta_squared']:.3f}")


if __name__ == "__main__":
  app.run(main)
