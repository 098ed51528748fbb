"""Which hyperparameters matter, per task: a random sweep on each task and
two importance measures (fANOVA through Optuna, and a model-free variance
decomposition). Writes importance.csv and importance.png into --workdir
(see rnnsweep/claims/importance.py and docs/findings.md)::

  python experiments/importance.py --workdir=runs/claims/importance --quick
  python experiments/importance.py --workdir=runs/claims/importance
"""

from absl import app
from absl import flags

import rnnsweep as rs
from rnnsweep.claims import importance, script

FLAGS = script.define_common_flags("Tiny LM and adding problem, 16 trials "
                                   "of 8 steps each: a smoke run.")
_TASKS = flags.DEFINE_list("tasks", None, "Tasks to measure (default: lm, "
                           "adding, classify, forecast; quick: lm, adding).")
_NUM_TRIALS = flags.DEFINE_integer("num_trials", None, "Random trials per "
                                   "task (default 128; quick 16).",
                                   lower_bound=2)
_STEPS = flags.DEFINE_integer("steps", None, "Updates per trial (default "
                              "300; quick 8).", lower_bound=1)


def run():
  rows = importance.run(
      FLAGS["workdir"].value, quick=FLAGS["quick"].value,
      num_trials=_NUM_TRIALS.value, steps=_STEPS.value,
      hidden_size=FLAGS["hidden_size"].value, task_names=_TASKS.value,
      max_group_size=script.max_group_size(FLAGS["max_group_size"]),
      log=rs.runner.log_stderr)
  for r in rows:
    fanova = "n/a" if r["fanova"] is None else f"{r['fanova']:.3f}"
    print(f"{r['task']:9s} {r['parameter']:18s} fANOVA {fanova:>6s}  "
          f"eta^2 {r['eta_squared']:.3f}")


if __name__ == "__main__":
  app.run(lambda argv: script.main("importance.py", argv, run))
