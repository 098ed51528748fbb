"""Parses benchmark command lines without running them: every flag must be
known to its script and every value valid. ``gpu_suite.sh`` with
``DRY_RUN=1`` writes its commands to a file and checks them here, so the
GPU suite's flags are tested on any machine.

  python benchmarks/check_flags.py COMMANDS_FILE   # one "script flags..." a line
"""

import re
import runpy
import shlex
import sys

from absl import flags


def check(line: str) -> str | None:
  """The error of one ``[NAME=value ...] script --flag=value ...`` line
  (the variables are the script's environment, not its flags), or
  ``None``."""
  words = shlex.split(line)
  while words and re.match(r"[A-Z_][A-Z0-9_]*=", words[0]):
    words.pop(0)
  script, *args = words
  before = set(flags.FLAGS)
  try:
    runpy.run_path(script, run_name="check_flags")  # defines its flags
    flags.FLAGS([script, *args])
    return None
  except (flags.Error, SystemExit) as e:
    return f"{script}: {e}"
  finally:
    flags.FLAGS.unparse_flags()
    for name in set(flags.FLAGS) - before:  # the next script's own
      delattr(flags.FLAGS, name)


def main() -> None:
  if len(sys.argv) != 2:
    sys.exit("usage: check_flags.py COMMANDS_FILE")
  with open(sys.argv[1], encoding="utf-8") as f:
    lines = [l.strip() for l in f if l.strip()]
  errors = [e for e in map(check, lines) if e]
  for e in errors:
    print(f"check_flags.py: error: {e}", file=sys.stderr)
  print(f"{len(lines) - len(errors)} of {len(lines)} commands parse")
  sys.exit(1 if errors else 0)


if __name__ == "__main__":
  main()
