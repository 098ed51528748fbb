"""How far apart grouped and alone runs of the same trials drift, measured.

For each cell, draws --trials random configurations (learning rate 1e-4 to
3e-2, every dropout up to 0.5, weight decay up to 1e-3, clip in {0, 0.5, 1}),
trains them once as one group and once each alone, and prints per trial the
largest relative difference of the validation curve. Beside it, the same
trial alone with its learning rate nudged by one part in 1e7: if that nudge
moves the curve as far as grouping does, the grouped/alone difference is the
training dynamics amplifying rounding (chaos), not a bug. Writes JSON.

  python benchmarks/invariance.py --task=lm --steps=400 --trials=8
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import numpy as np

import rnnsweep as rs

_TASK = flags.DEFINE_enum("task", "lm", ["lm", "adding"], "Task.")
_CELLS = flags.DEFINE_list("cells", ["simple", "lstm", "gru"], "Cells.")
_TRIALS = flags.DEFINE_integer("trials", 8, "Configurations per cell.",
                               lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 400, "Updates per trial.",
                              lower_bound=1)
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 50, "Evaluation interval.",
                                   lower_bound=1)
_HIDDEN = flags.DEFINE_integer("hidden_size", 64, "Units.", lower_bound=1)
_OUT = flags.DEFINE_string("out", None, "JSON file for the numbers.")

SPACE = {
    "learning_rate": rs.LogUniform(1e-4, 3e-2),
    "input_dropout": rs.Uniform(0.0, 0.5),
    "recurrent_dropout": rs.Uniform(0.0, 0.5),
    "output_dropout": rs.Uniform(0.0, 0.5),
    "weight_decay": rs.Uniform(0.0, 1e-3),
    "grad_clip": rs.Choice([0.0, 0.5, 1.0]),
}


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  ok = np.isfinite(a) & np.isfinite(b)
  if not ok.any():
    return float("nan")
  return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]),
                                                         1e-12)))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  task = rs.make_task(_TASK.value)
  metric = f"val/{task.selection_metric}"
  rows = []
  for cell in _CELLS.value:
    space = rs.Space({**SPACE, "cell": cell, "hidden_size": _HIDDEN.value})
    trials = rs.random(rs.runner.task_space(task, space), _TRIALS.value,
                       seed=1)
    configs = [dict(t.params) for t in trials]
    nudged = [dict(c, learning_rate=c["learning_rate"] * (1 + 1e-7))
              for c in configs]
    run = lambda cs, k: rs.run_trials(task, cs, steps=_STEPS.value,
                                      eval_every=_EVAL_EVERY.value,
                                      max_group_size=k).trials
    grouped, alone, nudge = (run(configs, len(configs)), run(configs, 1),
                             run(nudged, 1))
    for g, a, n in zip(grouped, alone, nudge):
      row = {"cell": cell, "trial": g.trial_id,
             "learning_rate": g.params["learning_rate"],
             "recurrent_dropout": g.params["recurrent_dropout"],
             "grouped_vs_alone": _rel(g.curves[metric], a.curves[metric]),
             "nudged_vs_alone": _rel(n.curves[metric], a.curves[metric]),
             "first_eval_grouped_vs_alone": _rel(g.curves[metric][:1],
                                                 a.curves[metric][:1]),
             "status": g.status}
      rows.append(row)
      print(f"{cell:6s} trial {g.trial_id} lr {row['learning_rate']:.2e} "
            f"rec.drop {row['recurrent_dropout']:.2f}: grouped vs alone "
            f"{row['grouped_vs_alone']:.1e} (first eval "
            f"{row['first_eval_grouped_vs_alone']:.1e}); lr nudged 1e-7 "
            f"{row['nudged_vs_alone']:.1e}  [{g.status}]", flush=True)
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w", encoding="utf-8") as f:
      json.dump({"task": _TASK.value, "steps": _STEPS.value,
                 "hidden_size": _HIDDEN.value, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
