"""Dropout done right: input, recurrent and output dropout against the
train/validation gap of a character LSTM that overfits a small text, and
variational (one mask per sequence) against naive (a new mask every step)
recurrent dropout. Writes dropout.csv, dropout_summary.csv, dropout.png and
naive_vs_variational.png into --workdir (see rnnsweep/claims/dropout.py and
docs/findings.md)::

  python experiments/dropout.py --workdir=runs/claims/dropout --quick
  python experiments/dropout.py --workdir=runs/claims/dropout
"""

from absl import app
from absl import flags

import rnnsweep as rs
from rnnsweep.claims import dropout, script

FLAGS = script.define_common_flags("Tiny model, rates 0 and 0.5, 1 seed, 8 "
                                   "steps: a smoke run.")
_SEEDS = flags.DEFINE_integer("seeds", None, "Repetitions (default 3; quick "
                              "1).", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", None, "Updates per trial (default "
                              "800; quick 8).", lower_bound=1)
_RATES = flags.DEFINE_list("rates", None, "Dropout rates tried for each kind "
                           "(0 is always added; default 0.15,0.3,0.45,0.6; "
                           "quick 0.5).")


def run():
  summary = dropout.run(
      FLAGS["workdir"].value, quick=FLAGS["quick"].value, seeds=_SEEDS.value,
      steps=_STEPS.value, rate_values=script.float_list(_RATES),
      hidden_size=FLAGS["hidden_size"].value,
      max_group_size=script.max_group_size(FLAGS["max_group_size"]),
      log=rs.runner.log_stderr)
  for r in summary:
    print(f"{r['kind']:9s} {r['mode']:11s} rate {r['rate']:.2f}  best val "
          f"{r['best_val']}  train probe {r['train_probe']}  gap {r['gap']}  "
          f"rise after best {r['rise_after_best']}")


if __name__ == "__main__":
  app.run(lambda argv: script.main("dropout.py", argv, run))
