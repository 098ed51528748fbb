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
  except ValueError as e:
    print(f"report.py: error: {e}", file=sys.stderr)
    sys.exit(2)
  print(report.text)


if __name__ == "__main__":
  app.run(main)
