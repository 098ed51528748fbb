"""Bucketing trials into groups that share one compiled program.

Trials whose static hyperparameters agree share a :class:`StaticConfig`.
Each bucket is split into groups of at most ``max_group_size`` trials, as
evenly as possible, and every group of a bucket is padded to the same size
K, so one bucket compiles exactly one program however many groups it has.
Padding slots repeat a real trial's values and never train.

With an early-stopping scheduler (``queue=True``) a bucket becomes one group
whose K slots work through all of the bucket's trials: a slot freed by a
stopped or finished trial takes the next one (continuous batching).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

from rnnsweep import space as space_lib
from rnnsweep.samplers import TrialSpec


@dataclasses.dataclass(frozen=True)
class StaticConfig:
  """Everything that changes shapes or program structure (hashable)."""

  cell: str
  hidden_size: int
  num_layers: int
  batch_size: int
  truncation: int
  embed_size: int
  optimizer: str
  # Stores written before schedules existed have no lr_schedule.
  lr_schedule: str = "constant"
  # ... and before naive recurrent dropout existed, no mode.
  recurrent_dropout_mode: str = "variational"

  @classmethod
  def from_params(cls, params: Mapping[str, Any]) -> "StaticConfig":
    return cls(**{n: params[n] for n in space_lib.STATIC_NAMES})

  def label(self) -> str:
    return (f"{self.cell}(h={self.hidden_size}x{self.num_layers}) "
            f"b={self.batch_size} w={self.truncation} e={self.embed_size} "
            f"{self.optimizer}"
            + ("" if self.lr_schedule == "constant"
               else f" {self.lr_schedule}")
            + ("" if self.recurrent_dropout_mode == "variational"
               else f" {self.recurrent_dropout_mode}-recurrent-dropout"))


@dataclasses.dataclass(frozen=True)
class Group:
  """Trials that run together in one program.

  Attributes:
    group_id: position in the plan.
    static: the configuration every trial here shares.
    trials: the real trials, in id order (the order slots take them).
    size: K, the program's trial axis (slots). Without a queue
      ``size >= len(trials)`` and the rest is padding; a queued group may
      hold more trials than slots.
  """

  group_id: int
  static: StaticConfig
  trials: tuple[TrialSpec, ...]
  size: int

  @property
  def num_padding(self) -> int:
    return max(0, self.size - len(self.trials))

  @property
  def queued(self) -> bool:
    """Whether slots take further trials as others stop."""
    return len(self.trials) > self.size

  def padded_trials(self) -> list[TrialSpec]:
    """``size`` trials for the slots at the start: the first real ones,
    then copies of the first as padding."""
    return list(self.trials[:self.size]) + [self.trials[0]] * self.num_padding


#: Chooses a bucket's largest K from its static config and its trials.
GroupSizer = Callable[[StaticConfig, Sequence[TrialSpec]], int]


def plan_groups(trials: Sequence[TrialSpec],
                max_group_size: int | GroupSizer, *,
                queue: bool = False) -> list[Group]:
  """Buckets trials by static config and splits buckets into groups.

  Args:
    trials: trials with unique ids.
    max_group_size: the largest K a group may have (``1`` runs every trial
      alone), or a function giving it per bucket (see
      :class:`rnnsweep.sizing.AutoSizer`), called once per bucket.
    queue: one group per bucket, with K slots taking its trials in turn.

  Returns:
    Groups ordered by first appearance of their static config, each bucket's
    groups of equal padded size ``ceil(n / ceil(n / max_group_size))`` (with
    ``queue``: one group of ``min(n, max_group_size)`` slots).
  """
  if not callable(max_group_size):
    _check_size(max_group_size)
  ids = [t.trial_id for t in trials]
  if len(set(ids)) != len(ids):
    raise ValueError("trial ids must be unique")
  buckets: dict[StaticConfig, list[TrialSpec]] = {}
  for t in trials:
    buckets.setdefault(StaticConfig.from_params(t.params), []).append(t)
  groups = []
  for static, members in buckets.items():
    members = sorted(members, key=lambda t: t.trial_id)
    limit = max_group_size
    if callable(limit):
      limit = limit(static, members)
      _check_size(limit)
    if queue:
      groups.append(Group(len(groups), static, tuple(members),
                          min(limit, len(members))))
      continue
    n_groups = math.ceil(len(members) / limit)
    size = math.ceil(len(members) / n_groups)
    for start in range(0, len(members), size):
      chunk = tuple(members[start:start + size])
      groups.append(Group(len(groups), static, chunk, size))
  return groups


def split_group(group: Group, first_id: int) -> list[Group]:
  """Two groups of half the size holding ``group``'s trials (ids
  ``first_id`` and ``first_id + 1``); for a group too big for memory. A
  queued group becomes one group with half the slots."""
  if group.queued:
    # Slots work through a queue: fewer slots, the same queue.
    return [Group(first_id, group.static, group.trials,
                  math.ceil(group.size / 2))]
  if len(group.trials) < 2:
    raise ValueError("a group of one trial cannot be split")
  size = math.ceil(len(group.trials) / 2)
  return [Group(first_id + i, group.static, group.trials[start:start + size],
                size)
          for i, start in enumerate(range(0, len(group.trials), size))]


def _check_size(max_group_size: Any) -> None:
  if isinstance(max_group_size, bool) or not isinstance(
      max_group_size, int) or max_group_size < 1:
    raise ValueError(
        f"max_group_size must be a positive integer, got {max_group_size!r}")
