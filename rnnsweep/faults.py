"""Named crash points, so tests can kill a sweep at exact instants.

Set ``RNNSWEEP_KILL_AT=<point>:<n>`` and the process sends itself SIGKILL
the n-th time (1-based) it passes ``point``. Unset, a point costs one
dictionary lookup. Points: ``segment_start`` (before a segment is launched;
the first one of a fresh program is during compilation), ``segment_done``,
``checkpoint_written`` (temporary file written, not yet renamed),
``group_committed`` (a group committed, its checkpoints not yet deleted),
``group_recorded`` (a group committed, the next not started),
``store_write`` (inside a database transaction, before commit).
"""

from __future__ import annotations

import collections
import os
import signal

_ENV = "RNNSWEEP_KILL_AT"
_hits: collections.Counter = collections.Counter()


def point(name: str) -> None:
  spec = os.environ.get(_ENV)
  if not spec:
    return
  target, _, count = spec.partition(":")
  if target != name:
    return
  _hits[name] += 1
  if _hits[name] == int(count or 1):
    os.kill(os.getpid(), signal.SIGKILL)
