"""What the claim scripts in ``experiments/`` share: their common flags and
their ``main`` (one error line and exit status 2 on bad input)."""

from __future__ import annotations

import sys
from typing import Any, Callable

from absl import flags
from absl import logging

from rnnsweep import sizing


def define_common_flags(quick_help: str, *, hidden_size: bool = True
                        ) -> dict[str, Any]:
  """Defines --workdir, --quick, --hidden_size and --max_group_size (call
  once, from a script); returns their holders by name."""
  out = {
      "workdir": flags.DEFINE_string(
          "workdir", None, "Where the sweeps, tables and figures go (a rerun "
          "continues).", required=True),
      "quick": flags.DEFINE_bool("quick", False, quick_help),
  }
  if hidden_size:
    out["hidden_size"] = flags.DEFINE_integer(
        "hidden_size", None, "Units (default 64, dropout 128; quick 16).", lower_bound=1)
    out["max_group_size"] = flags.DEFINE_string(
        "max_group_size", "auto", "Most trials per program: an integer or "
        "'auto'.")
  return out


def max_group_size(holder) -> int | str:
  """--max_group_size, checked."""
  return sizing.check_max_group_size(holder.value, "--max_group_size")


def main(script: str, argv, run: Callable[[], None]) -> None:
  """Runs ``run()``; a ``ValueError`` becomes one error line and exit 2."""
  if len(argv) > 1:
    print(f"{script}: error: unexpected arguments {argv[1:]}",
          file=sys.stderr)
    sys.exit(2)
  logging.set_verbosity(logging.WARNING)
  try:
    run()
  except ValueError as e:
    print(f"{script}: error: {e}", file=sys.stderr)
    sys.exit(2)


def int_list(holder) -> list[int] | None:
  """A comma-separated list flag as integers (``None`` when not given)."""
  return _numbers(holder, int, "integers")


def float_list(holder) -> list[float] | None:
  """A comma-separated list flag as numbers (``None`` when not given)."""
  return _numbers(holder, float, "numbers")


def _numbers(holder, cast, what):
  if not holder.value:
    return None
  try:
    return [cast(v) for v in holder.value]
  except ValueError:
    raise ValueError(f"--{holder.name} must be {what}, got "
                     f"{','.join(holder.value)!r}") from None
