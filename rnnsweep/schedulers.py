"""Trial schedulers: early stopping (ASHA, Hyperband, median) and PBT.

A scheduler decides, at each evaluation boundary of a group, which of the
group's running trials stop (``pruned``) and, for PBT, which copy another
trial's weights and take perturbed hyperparameters. It sees only the
validation selection metric. The runner applies the decisions to the
group's slots (a freed slot takes the group's next queued trial without
recompiling) and writes them to the store in the same transaction as the
metrics they were based on.

Everything here is host-side Python over plain numbers, deterministic and
free of clocks: a scheduler's whole memory is :attr:`Scheduler.state`, a
JSON value saved in each group checkpoint, so a group resumed after a kill
replays exactly the decisions the uninterrupted run makes.

The population a decision compares against is the trial's own group: for
ASHA and Hyperband the rung records of the trials the group has run so far,
for the median rule the other trials' values at the same step, for PBT the
group's current population. Groups never wait on one another, so
decisions do not depend on how groups are spread over processes. With a
scheduler, :func:`rnnsweep.groups.plan_groups` gives each static
configuration one group whose K slots work through all its trials.

References: ASHA, Li et al. 2020 ("A System for Massively Parallel
Hyperparameter Tuning"); Hyperband, Li et al. 2018; median stopping,
Golovin et al. 2017 (Google Vizier) and Optuna's ``MedianPruner``; PBT,
Jaderberg et al. 2017.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from rnnsweep import selection
from rnnsweep import space as space_lib

SCHEDULERS = ("none", "asha", "hyperband", "median", "pbt")
#: Schedulers whose groups work through a queue of trials in their slots.
QUEUED = ("asha", "hyperband", "median")
#: PBT's multiplicative perturbations.
PBT_FACTORS = (0.8, 1.25)
#: The median rule needs this many other trials' values at a step.
MEDIAN_MIN_OTHERS = 2
_PBT_STREAM = 0x9B7
_BRACKET_STREAM = 0xB2AC


@dataclasses.dataclass(frozen=True)
class SchedulerSettings:
  """Which scheduler, with which options (part of the sweep's settings).

  Attributes:
    name: one of :data:`SCHEDULERS`.
    min_steps: ASHA's first rung and Hyperband's smallest budget, the
      median rule's warm-up (no stop before it); a positive multiple of the
      sweep's ``eval_every`` (``None``: ``eval_every``).
    reduction_factor: η: rungs at ``min_steps * η**k``; a trial continues
      past a rung only in the top ``1/η`` of its rung.
    pbt_interval: steps between PBT exploit steps; a multiple of
      ``eval_every`` (``None``: ``eval_every``).
    pbt_fraction: the bottom fraction copies from the top fraction.
    pbt_resample_probability: chance that a copied value is drawn afresh
      from the space instead of multiplied by 0.8 or 1.25.
  """

  name: str = "none"
  min_steps: int | None = None
  reduction_factor: int = 3
  pbt_interval: int | None = None
  pbt_fraction: float = 0.25
  pbt_resample_probability: float = 0.25

  def checked(self, *, steps: int, eval_every: int) -> "SchedulerSettings":
    """These settings with defaults filled in, or a one-line
    :class:`ValueError` naming the bad option."""
    if self.name not in SCHEDULERS:
      raise ValueError(f"scheduler must be one of {list(SCHEDULERS)}, got "
                       f"{self.name!r}")
    min_steps = eval_every if self.min_steps is None else self.min_steps
    interval = eval_every if self.pbt_interval is None else self.pbt_interval
    for flag, value in (("min_steps", min_steps),
                        ("pbt_interval", interval)):
      if isinstance(value, bool) or not isinstance(value, int) or (
          value < 1 or value % eval_every):
        raise ValueError(f"{flag} must be a positive multiple of eval_every "
                         f"({eval_every}), got {value!r}")
    eta = self.reduction_factor
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
      raise ValueError(f"reduction_factor must be an integer >= 2, got "
                       f"{eta!r}")
    if not 0 < self.pbt_fraction <= 0.5:
      raise ValueError(f"pbt_fraction must be in (0, 0.5], got "
                       f"{self.pbt_fraction!r}")
    if not 0 <= self.pbt_resample_probability <= 1:
      raise ValueError(f"pbt_resample_probability must be in [0, 1], got "
                       f"{self.pbt_resample_probability!r}")
    if self.name in ("asha", "hyperband", "median") and min_steps >= steps:
      raise ValueError(f"min_steps ({min_steps}) must be below steps "
                       f"({steps}) for the {self.name} scheduler to stop "
                       f"anything")
    if self.name == "pbt" and interval >= steps:
      raise ValueError(f"pbt_interval ({interval}) must be below steps "
                       f"({steps})")
    if self.name == "none":
      return SchedulerSettings()
    return dataclasses.replace(self, min_steps=min_steps,
                               pbt_interval=interval)

  @property
  def queued(self) -> bool:
    return self.name in QUEUED

  def record(self) -> dict[str, Any]:
    """The settings as stored with a sweep."""
    return dataclasses.asdict(self)


class Arrival(NamedTuple):
  """A running trial at an evaluation boundary.

  Attributes:
    slot: its slot in the group.
    trial_id: its id.
    step: the updates it has done.
    value: its validation selection metric now (NaN if diverged).
    hp: its vectorised hyperparameters now.
  """

  slot: int
  trial_id: int
  step: int
  value: float
  hp: Mapping[str, float]


class Decision(NamedTuple):
  """One scheduler decision, as the store keeps it.

  Attributes:
    trial_id: the trial decided about.
    step: its step at the decision.
    kind: ``rung`` (a value recorded at an ASHA/Hyperband rung, with
      ``detail["continue"]``), ``pruned`` (stopped), ``exploit`` (PBT:
      ``detail`` holds ``parent``, ``parent_value``, ``hp`` before and
      after) or ``start`` (the trial entered ``detail["slot"]``).
    value: the validation value the decision read (``None`` for starts).
    detail: JSON-ready particulars.
  """

  trial_id: int
  step: int
  kind: str
  value: float | None
  detail: Mapping[str, Any]


class Exploit(NamedTuple):
  """A PBT exploit for one slot: copy ``source``'s state, take ``hp``."""

  slot: int
  source: int
  hp: Mapping[str, float]


class Outcome(NamedTuple):
  """What a scheduler decided at one evaluation boundary."""

  decisions: list[Decision]
  pruned: set[int]
  exploits: list[Exploit]


def _key(value: float, mode: str) -> float:
  """Lower is better; NaN (diverged) is worst."""
  v = selection.lower_is_better(value, mode)
  return math.inf if not math.isfinite(v) and v != -math.inf else v


class Scheduler:
  """Decides about one group's running trials (see the module docstring).

  Args:
    settings: checked :class:`SchedulerSettings`.
    steps: updates per trial.
    mode: the selection metric's ``min``/``max``.
    space: the sweep's full space (PBT's bounds and resampling).
    seed: the sweep seed (PBT's random choices; Hyperband's brackets).
    state: a saved :attr:`state` to continue from.
  """

  def __init__(self, settings: SchedulerSettings, *, steps: int, mode: str,
               space: space_lib.Space | None, seed: int,
               state: Mapping[str, Any] | None = None):
    self.settings = settings
    self.steps = steps
    self.mode = mode
    self.space = space
    self.seed = seed
    self.state: dict[str, Any] = json_copy(state or {"records": {}})

  # -- the rung ladder ------------------------------------------------------------

  def num_brackets(self) -> int:
    if self.settings.name != "hyperband":
      return 1
    s = self.settings
    return 1 + int(math.floor(math.log(self.steps / s.min_steps,
                                       s.reduction_factor) + 1e-9))

  def bracket(self, trial_id: int) -> int:
    """Hyperband: the trial's bracket, drawn with Hyperband's weights
    ``(s_max + 1) / (s + 1) * eta**s`` from (sweep seed, trial id) alone.
    0 for ASHA (its only bracket)."""
    n = self.num_brackets()
    if n == 1:
      return 0
    eta = self.settings.reduction_factor
    weights = np.array([n / (s + 1) * eta**s for s in range(n)])
    # The most aggressive bracket (smallest budget) is s = n - 1.
    rng = np.random.default_rng([self.seed, _BRACKET_STREAM, trial_id])
    return int(rng.choice(n, p=weights / weights.sum()))

  def rungs(self, trial_id: int) -> list[int]:
    """The steps at which ASHA/Hyperband decide about this trial."""
    s = self.settings
    first = s.min_steps * s.reduction_factor ** (
        self.num_brackets() - 1 - self.bracket(trial_id))
    out, r = [], first
    while r < self.steps:
      out.append(r)
      r *= s.reduction_factor
    return out

  # -- deciding -----------------------------------------------------------------

  def decide(self, arrivals: Sequence[Arrival]) -> Outcome:
    """The decisions at one evaluation boundary. ``arrivals`` are the
    group's running trials (those that just finished their last step are
    not among them); updates :attr:`state`."""
    name = self.settings.name
    if name in ("asha", "hyperband"):
      return self._successive_halving(arrivals)
    if name == "median":
      return self._median(arrivals)
    if name == "pbt":
      return self._pbt(arrivals)
    return Outcome([], set(), [])

  def _successive_halving(self, arrivals):
    records = self.state["records"]
    # (arrival, its bracket, its rung ladder), for those at one of its rungs
    ladders = [(a, self.bracket(a.trial_id), self.rungs(a.trial_id))
               for a in arrivals]
    at_rung = [(a, b, ladder, f"{b}/{a.step}") for a, b, ladder in ladders
               if a.step in ladder]
    # Trials reaching a rung together join it together: none is judged
    # against a partial list because of its slot number.
    for a, _, _, key in at_rung:
      records.setdefault(key, []).append([a.trial_id, _finite(a.value)])
    decisions, pruned = [], set()
    eta = self.settings.reduction_factor
    for a, b, ladder, key in at_rung:
      rung = records[key]
      keep = max(1, len(rung) // eta)
      mine = _key(a.value, self.mode)
      better = sum(1 for _, v in rung if _key(_nan(v), self.mode) < mine)
      go_on = better < keep and math.isfinite(mine)
      decisions.append(Decision(
          a.trial_id, a.step, "rung", _finite(a.value),
          {"rung": ladder.index(a.step), "bracket": b,
           "recorded": len(rung),
           "keep": keep, "continue": go_on}))
      if not go_on:
        pruned.add(a.trial_id)
        decisions.append(Decision(
            a.trial_id, a.step, "pruned", _finite(a.value),
            {"reason": f"not in the top 1/{eta} at rung {a.step} "
                       f"({better} of {len(rung)} better)"}))
    return Outcome(decisions, pruned, [])

  def _median(self, arrivals):
    records = self.state["records"]
    best = self.state.setdefault("best", {})
    for a in arrivals:
      records.setdefault(str(a.step), []).append([a.trial_id,
                                                  _finite(a.value)])
      mine = _key(a.value, self.mode)
      best[str(a.trial_id)] = min(best.get(str(a.trial_id), math.inf), mine)
    decisions, pruned = [], set()
    for a in arrivals:
      if a.step < self.settings.min_steps:
        continue
      others = [_key(_nan(v), self.mode) for t, v in records[str(a.step)]
                if t != a.trial_id]
      if len(others) < MEDIAN_MIN_OTHERS:
        continue
      median = float(np.median(others))
      mine = best[str(a.trial_id)]
      if mine > median:
        pruned.add(a.trial_id)
        decisions.append(Decision(
            a.trial_id, a.step, "pruned", _finite(a.value),
            {"reason": f"best so far worse than the median of "
                       f"{len(others)} others at step {a.step}",
             "median": selection.lower_is_better(median, self.mode)}))
    return Outcome(decisions, pruned, [])

  def _pbt(self, arrivals):
    s = self.settings
    if not arrivals or len(arrivals) < 2:
      return Outcome([], set(), [])
    step = arrivals[0].step
    if step % s.pbt_interval or step >= self.steps:
      return Outcome([], set(), [])
    ranked = sorted(arrivals, key=lambda a: (_key(a.value, self.mode),
                                             a.trial_id))
    n = max(1, int(len(ranked) * s.pbt_fraction))
    top, bottom = ranked[:n], ranked[-n:]
    decisions, exploits = [], []
    for a in bottom:
      rng = np.random.default_rng([self.seed, _PBT_STREAM, step, a.trial_id])
      src = top[int(rng.integers(len(top)))]
      new_hp = self.explore(src.hp, rng)
      exploits.append(Exploit(a.slot, src.slot, new_hp))
      decisions.append(Decision(
          a.trial_id, step, "exploit", _finite(a.value),
          {"parent": src.trial_id, "parent_value": _finite(src.value),
           "old_hp": dict(a.hp), "hp": dict(new_hp)}))
    return Outcome(decisions, set(), exploits)

  def explore(self, hp: Mapping[str, float], rng: np.random.Generator
              ) -> dict[str, float]:
    """PBT's explore step on a copied trial's values: each value the space
    tunes is resampled (with ``pbt_resample_probability``) or multiplied by
    0.8 or 1.25 and kept within the space's bounds (a choice moves to a
    neighbouring value); values the space fixes stay."""
    out = dict(hp)
    params = self.space.params if self.space is not None else {}
    for name in space_lib.VECTOR_NAMES:
      dist = params.get(name)
      if dist is None or isinstance(dist, space_lib.Fixed):
        continue
      if rng.random() < self.settings.pbt_resample_probability:
        out[name] = float(dist.sample(rng))
        continue
      up = bool(rng.integers(2))
      if isinstance(dist, space_lib.Choice):
        values = sorted(float(v) for v in dist.values)
        i = int(np.argmin([abs(v - hp[name]) for v in values]))
        out[name] = values[min(len(values) - 1, i + 1) if up else max(0, i - 1)]
        continue
      lo, hi = float(dist.lo), float(dist.hi)
      value = hp[name] * (PBT_FACTORS[1] if up else PBT_FACTORS[0])
      out[name] = float(min(hi, max(lo, value)))
    # float32, as the engine holds them: the recorded values are exact.
    return {k: float(np.float32(v)) for k, v in out.items()}


def _finite(x: float) -> float | None:
  x = float(x)
  return x if math.isfinite(x) else None


def _nan(x: float | None) -> float:
  return math.nan if x is None else x


def json_copy(value: Any) -> Any:
  """A deep copy through JSON (what a checkpoint does to the state)."""
  return json.loads(json.dumps(value))
