"""The learning rate over several decades, for Adam and SGD with momentum:
too small converges slowly, too large blows up. Writes learning_rate.csv,
ranges.csv and learning_rate.png into --workdir (see
rnnsweep/claims/learning_rate.py and docs/findings.md)::

  python experiments/learning_rate.py --workdir=runs/claims/learning_rate --quick
  python experiments/learning_rate.py --workdir=runs/claims/learning_rate
"""

from absl import app
from absl import flags

import rnnsweep as rs
from rnnsweep.claims import learning_rate, script

FLAGS = script.define_common_flags("Tiny model, 5 rates, 1 seed, 8 steps: a "
                                   "smoke run.")
_SEEDS = flags.DEFINE_integer("seeds", None, "Repetitions (default 3; quick "
                              "1).", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", None, "Updates per trial (default "
                              "300; quick 8).", lower_bound=1)


def run():
  ranges = learning_rate.run(
      FLAGS["workdir"].value, quick=FLAGS["quick"].value, seeds=_SEEDS.value,
      steps=_STEPS.value, hidden_size=FLAGS["hidden_size"].value,
      max_group_size=script.max_group_size(FLAGS["max_group_size"]),
      log=rs.runner.log_stderr)
  for r in ranges:
    print(f"{r['optimizer']:5s} best lr {r['best_learning_rate']}  stable "
          f"[{r['stable_lo']}, {r['stable_hi']}]  useful [{r['useful_lo']}, "
          f"{r['useful_hi']}]  blows up from {r['unstable_from']} "
          f"(non-finite from {r['nonfinite_from']})")


if __name__ == "__main__":
  app.run(lambda argv: script.main("learning_rate.py", argv, run))
