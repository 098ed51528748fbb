"""Atomic checkpoints of a running group.

A checkpoint is one ``.npz`` file holding every leaf of the group's
:class:`~rnnsweep.engine.GroupState` (parameters, optimizer state, carries,
PRNG keys, per-trial hyperparameters, divergence flags, each slot's step,
which fixes its data position) plus a JSON record of the host side: the
curves so far, which trial each slot holds, the queue position and the
scheduler's memory. It is written to a temporary file,
flushed and fsynced, then renamed over the final name, so a kill at any
instant leaves either the previous checkpoint or the new one, never half a
file. The last two are kept: if the newest cannot be read or does not match
the program's state structure, the one before it is used, and if neither
can, the group restarts from its first step (its trials are never dropped).

Why not orbax (which flax already pulls in): a group's state is a few
arrays, a single file with write-then-rename is the whole atomicity story,
and zip's per-member CRC detects a corrupt file on read. State sharded over
the devices of several processes (a ``jax.distributed`` job) is gathered
to every process and written by process 0 alone, and read back by process
0 and broadcast (:mod:`rnnsweep.runner`): one format for every device and
process count, and no filesystem shared between hosts, at the cost of one
gather of the group state per checkpoint.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import zipfile
from typing import Any, NamedTuple

import jax
import numpy as np

from rnnsweep import faults
from rnnsweep import store as store_lib

_NAME = "group{group:05d}-tick{tick:09d}.npz"
_PATTERN = re.compile(r"group(\d{5})-tick(\d{9})\.npz$")
KEEP = 2
#: What reading a truncated, corrupt or foreign checkpoint raises.
_UNREADABLE = (OSError, ValueError, KeyError, zipfile.BadZipFile,
               json.JSONDecodeError)


class Restored(NamedTuple):
  """A loaded checkpoint: the state and the host-side progress record."""

  state: Any
  progress: dict


def _fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def checkpoints(directory: str, group_id: int) -> list[tuple[int, str]]:
  """``(tick, path)`` of a group's checkpoints, newest first (a tick is
  one evaluation of the group; its slots' steps may differ)."""
  found = []
  for path in glob.glob(os.path.join(directory, f"group{group_id:05d}-*.npz")):
    m = _PATTERN.search(os.path.basename(path))
    if m:
      found.append((int(m.group(2)), path))
  return sorted(found, reverse=True)


def save(directory: str, group_id: int, tick: int, state: Any,
         progress: dict) -> str:
  """Writes one checkpoint atomically and prunes older ones."""
  return _write(directory, group_id, tick,
                [np.asarray(x) for x in jax.tree_util.tree_leaves(state)],
                progress)


def _write(directory: str, group_id: int, tick: int,
           leaves: list[np.ndarray], progress: dict) -> str:
  os.makedirs(directory, exist_ok=True)
  arrays = {f"leaf{i:05d}": a for i, a in enumerate(leaves)}
  arrays["progress"] = np.frombuffer(json.dumps(progress).encode("utf-8"),
                                     np.uint8)
  final = os.path.join(directory, _NAME.format(group=group_id, tick=tick))
  tmp = final + f".tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
    f.flush()
    faults.point("checkpoint_written")  # tmp complete, not yet renamed
    os.fsync(f.fileno())
  os.replace(tmp, final)
  _fsync_dir(directory)
  for _, old in checkpoints(directory, group_id)[KEEP:]:
    os.remove(old)
  return final


def _read_raw(path: str) -> tuple[list[np.ndarray], dict]:
  with np.load(path) as z:
    names = sorted(n for n in z.files if n.startswith("leaf"))
    leaves = [z[name] for name in names]
    progress = json.loads(z["progress"].tobytes().decode("utf-8"))
  return leaves, progress


def split(directory: str, group: Any, parts: list) -> int | None:
  """Hands a group's newest readable checkpoint to the groups it was split
  into (a group too big for memory), so they continue from its step
  instead of step 0.

  Every leaf with a leading slot axis is sliced to each part's trials (and
  padded as :meth:`~rnnsweep.groups.Group.padded_trials` pads: copies of the
  part's first trial); each part's host record keeps its own trials'
  curves and which of them still run. A queued group (slots taking trials
  in turn) starts over instead. Returns the step handed on, or ``None``
  when there was no usable checkpoint.
  """
  if group.queued:
    return None
  for tick, path in checkpoints(directory, group.group_id):
    try:
      leaves, progress = _read_raw(path)
    except _UNREADABLE:
      continue
    if any(a.ndim and a.shape[0] != group.size for a in leaves):
      continue  # not this group's shapes
    position = {t.trial_id: i for i, t in enumerate(group.trials)}
    for part in parts:
      rows = [position[t.trial_id] for t in part.padded_trials()]
      ids = {str(t.trial_id) for t in part.trials}
      mine = lambda d: {k: v for k, v in d.items() if k in ids}
      part_progress = dict(
          progress, next=len(part.trials),
          slots=[j if j < len(part.trials) and progress["slots"][row] >= 0
                 else -1 for j, row in enumerate(rows)],
          curves=mine(progress["curves"]),
          started=mine(progress["started"]),
          lineage=mine(progress.get("lineage", {})),
          unwritten=[d for d in progress["unwritten"] if str(d[0]) in ids])
      _write(directory, part.group_id, tick,
             [a[rows] if a.ndim else a for a in leaves], part_progress)
    return max((c["step"][-1] for c in progress["curves"].values()),
               default=0)
  return None


def _read(path: str, template: Any) -> Restored:
  """A checkpoint checked against ``template``'s structure and shapes
  (``template`` may be a function of the checkpoint's progress record)."""
  leaves, progress = _read_raw(path)
  if callable(template):
    template = template(progress)
  leaves_t, treedef = jax.tree_util.tree_flatten(template)
  if len(leaves) != len(leaves_t):
    raise ValueError(f"{len(leaves)} arrays, the program has "
                     f"{len(leaves_t)}")
  for i, (a, t) in enumerate(zip(leaves, leaves_t)):
    if a.shape != tuple(t.shape) or a.dtype != t.dtype:
      raise ValueError(f"leaf{i:05d} is {a.dtype}{list(a.shape)}, the "
                       f"program expects {t.dtype}{list(t.shape)}")
  return Restored(jax.tree_util.tree_unflatten(treedef, leaves), progress)


def load_latest(directory: str, group_id: int, template: Any
                ) -> Restored | None:
  """The newest readable checkpoint of a group that fits ``template``
  (a pytree of ``jax.ShapeDtypeStruct``, or a function of the progress
  record giving one: a group may have shrunk), or ``None``."""
  for tick, path in checkpoints(directory, group_id):
    try:
      return _read(path, template)
    except _UNREADABLE as e:
      logging.getLogger("rnnsweep").warning(
          "checkpoint %s (evaluation %d) is unusable (%s); trying an older "
          "one", path, tick, e)
  return None


def remove_stale(directory: str, unfinished: set[int]) -> None:
  """At a sweep's start: deletes the checkpoints of groups that are no
  longer unfinished (a kill between recording a group and deleting its
  files leaves them behind), and temporary files of dead processes."""
  for path in glob.glob(os.path.join(directory, "group*")):
    m = re.match(r"group(\d{5})-", os.path.basename(path))
    if (m is not None and int(m.group(1)) not in unfinished) or (
        store_lib.left_by_dead_process(path)):
      with contextlib.suppress(OSError):
        os.remove(path)


def remove(directory: str, group_id: int) -> None:
  """Deletes a finished group's checkpoints (and stray temporary files)."""
  for path in glob.glob(os.path.join(directory, f"group{group_id:05d}-*")):
    os.remove(path)
