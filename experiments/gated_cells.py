"""Gated cells and long lags: SimpleRNN vs LSTM vs GRU on the adding
problem and the copy task at growing lags, each cell given the same random
search over learning rate and gradient clip. Writes gated_cells.csv and
gated_cells.png into --workdir (see rnnsweep/claims/gated_cells.py and
docs/findings.md)::

  python experiments/gated_cells.py --workdir=runs/claims/gated_cells --quick
  python experiments/gated_cells.py --workdir=runs/claims/gated_cells
"""

from absl import app
from absl import flags

import rnnsweep as rs
from rnnsweep.claims import gated_cells, script

FLAGS = script.define_common_flags("Lags 5 and 10, 3 trials per cell, 8 "
                                   "steps: a smoke run.")
_LAGS = flags.DEFINE_list("lags", None, "Lags (default 10,50,100,200).")
_TASKS = flags.DEFINE_list("tasks", None, "Tasks (default: adding, copy).")
_BUDGET = flags.DEFINE_integer("budget", None, "Random trials per cell and "
                               "seed (default 16).", lower_bound=1)
_SEEDS = flags.DEFINE_integer("seeds", None, "Repetitions (default 3).",
                              lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", None, "Updates per trial (default "
                              "1000).", lower_bound=1)


def run():
  lags = script.int_list(_LAGS)
  rows = gated_cells.run(
      FLAGS["workdir"].value, quick=FLAGS["quick"].value, lags=lags,
      budget=_BUDGET.value, seeds=_SEEDS.value, steps=_STEPS.value,
      hidden_size=FLAGS["hidden_size"].value,
      max_group_size=script.max_group_size(FLAGS["max_group_size"]),
      task_names=_TASKS.value, log=rs.runner.log_stderr)
  for r in rows:
    print(f"{r['task']:6s} lag {r['lag']:>4} {r['cell']:6s} success "
          f"{r['succeeded']}/{r['trials']}  selected test {r['selected_test']}")


if __name__ == "__main__":
  app.run(lambda argv: script.main("gated_cells.py", argv, run))
