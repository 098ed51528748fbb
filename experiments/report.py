"""Prints a sweep's report and writes its figures (PNG) into the workdir.

Works on a finished sweep and on one still running. Example::

  python experiments/report.py --workdir=runs/lm-random-1a2b3c4d
  python experiments/report.py --workdir=runs/mine --pair=learning_rate,output_dropout
"""

import sys

from absl import app
from absl import flags
from absl import logging

import rnnsweep as rs

_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's workdir.",
                               required=True)
_TOP = flags.DEFINE_integer("top", 10, "Leaderboard rows and highlighted "
                            "trials.", lower_bound=1)
_PAIR = flags.DEFINE_list("pair", None, "Two parameters for points.png "
                          "(default: the first two tuned ones).")
_PLOTS = flags.DEFINE_bool("plots", True, "Write the PNG figures.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where figures go (default: "
                               "the workdir).")
_OPTUNA_STORAGE = flags.DEFINE_string(
    "optuna_storage", None, "Also export the sweep as an Optuna study to this "
    "storage URL (e.g. sqlite:///optuna.db); needs rnnsweep[optuna].")
_OPTUNA_STUDY = flags.DEFINE_string(
    "optuna_study", None, "Study name (default: rnnsweep-<workdir name>); an "
    "existing study of that name is replaced.")
_TENSORBOARD = flags.DEFINE_string(
    "tensorboard", None, "Also write TensorBoard logs (scalars per trial and "
    "an HParams summary) to this folder; needs rnnsweep[tensorboard].")


def main(argv):
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    print(f"report.py: error: unexpected arguments {argv[1:]}",
          file=sys.stderr)
    sys.exit(2)
  try:
    report = rs.report.write_report(_WORKDIR.value, top=_TOP.value,
                                    pair=_PAIR.value, plots=_PLOTS.value,
                                    out_dir=_OUT_DIR.value)
    if _OPTUNA_STORAGE.value:
      study = rs.interop.export_optuna(_WORKDIR.value, _OPTUNA_STORAGE.value,
                                       _OPTUNA_STUDY.value)
      exported = f"Optuna study {study.study_name!r} in {_OPTUNA_STORAGE.value}"
    if _TENSORBOARD.value:
      logdir = rs.interop.export_tensorboard(_WORKDIR.value,
                                             _TENSORBOARD.value)
  except ValueError as e:
    print(f"report.py: error: {e}", file=sys.stderr)
    sys.exit(2)
  print(report.text)
  if _OPTUNA_STORAGE.value:
    print(f"Exported: {exported}")
  if _TENSORBOARD.value:
    print(f"TensorBoard logs: {logdir}")


if __name__ == "__main__":
  app.run(main)
