"""Random search beats grid search when few parameters matter (Bergstra &
Bengio 2012): grid (centred and randomly shifted), random and quasi-random
search at equal budgets on the LM task, over seeds. Writes
random_vs_grid.csv, trials.csv, best_vs_budget.png and grid_vs_random.png
into --workdir (see rnnsweep/claims/random_vs_grid.py and
docs/findings.md)::

  python experiments/random_vs_grid.py --workdir=runs/claims/random_vs_grid --quick
  python experiments/random_vs_grid.py --workdir=runs/claims/random_vs_grid
"""

from absl import app
from absl import flags

import rnnsweep as rs
from rnnsweep.claims import random_vs_grid, script

FLAGS = script.define_common_flags("Tiny model, budgets 4 and 9, 2 seeds, 8 "
                                   "steps: a smoke run.")
_BUDGETS = flags.DEFINE_list("budgets", None, "Trial budgets, each a square "
                             "(default 9,16,25,64; quick 4,9).")
_SEEDS = flags.DEFINE_integer("seeds", None, "Repetitions (default 5; quick "
                              "2).", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", None, "Updates per trial (default "
                              "200; quick 8).", lower_bound=1)


def run():
  budgets = script.int_list(_BUDGETS)
  rows = random_vs_grid.run(
      FLAGS["workdir"].value, quick=FLAGS["quick"].value, budgets=budgets,
      seeds=_SEEDS.value, steps=_STEPS.value,
      hidden_size=FLAGS["hidden_size"].value,
      max_group_size=script.max_group_size(FLAGS["max_group_size"]),
      log=rs.runner.log_stderr)
  for (method, budget), value in sorted(random_vs_grid.medians(rows).items(),
                                        key=lambda kv: (kv[0][1], kv[0][0])):
    print(f"budget {budget:>3}  {method:12s} median best {value:.4f}")


if __name__ == "__main__":
  app.run(lambda argv: script.main("random_vs_grid.py", argv, run))
