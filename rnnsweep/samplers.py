"""Samplers turn a :class:`~rnnsweep.space.Space` into a list of trials.

Every trial gets a stable integer id (its position in the sampler's order)
and its own integer seed. Unless the space names ``seed``, the seed is
derived from the sweep seed and the trial id alone, so a trial's numbers do
not depend on which other trials were sampled beside it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Mapping, Sequence

import numpy as np

from rnnsweep import space as space_lib

SAMPLERS = ("grid", "random")


@dataclasses.dataclass(frozen=True)
class TrialSpec:
  """One configuration to train.

  Attributes:
    trial_id: stable integer id, unique within a sweep.
    params: every hyperparameter, defaults filled in, ``seed`` included.
    seed: the trial's integer seed (also ``params["seed"]``).
  """

  trial_id: int
  params: Mapping[str, Any]
  seed: int

  @property
  def static_params(self) -> dict[str, Any]:
    return {n: self.params[n] for n in space_lib.STATIC_NAMES}


def derive_seed(sweep_seed: int, trial_id: int) -> int:
  """A trial's default seed: a function of (sweep seed, trial id) only."""
  space_lib.check_seed("seed", sweep_seed)
  ss = np.random.SeedSequence([int(sweep_seed), int(trial_id)])
  return int(ss.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


def make_trials(configs: Sequence[Mapping[str, Any]], *, seed: int = 0,
                first_id: int = 0) -> list[TrialSpec]:
  """Turns explicit configurations into trials (defaults filled, validated).

  Args:
    configs: one partial name -> value mapping per trial.
    seed: sweep seed, used for trials whose config has no ``seed``.
    first_id: id of the first trial; the rest are numbered consecutively.
  """
  trials = []
  for i, config in enumerate(configs):
    trial_id = first_id + i
    params = space_lib.resolve_params(config)
    if "seed" not in params:
      params["seed"] = derive_seed(seed, trial_id)
    trials.append(TrialSpec(trial_id, params, params["seed"]))
  return trials


def grid(space: space_lib.Space, *, seed: int = 0) -> list[TrialSpec]:
  """The full product of every parameter's values, in a fixed order.

  Continuous parameters (Uniform, LogUniform) have no finite grid: give them
  as ``Choice([...])``.
  """
  names = space.names()
  axes = [space.params[n].grid_values(n) for n in names]
  configs = [dict(zip(names, combo)) for combo in itertools.product(*axes)]
  return make_trials(configs, seed=seed)


def grid_size(space: space_lib.Space) -> int:
  """Number of trials :func:`grid` would produce."""
  return math.prod(len(space.params[n].grid_values(n)) for n in space.names())


def random(space: space_lib.Space, num_trials: int, *,
           seed: int = 0) -> list[TrialSpec]:
  """``num_trials`` independent draws, reproducible from ``seed``.

  Trial ``i``'s values depend only on ``(seed, i)``, so asking for more
  trials extends a sweep without changing the trials already drawn.
  """
  if isinstance(num_trials, bool) or not isinstance(num_trials, int) or (
      num_trials < 1):
    raise ValueError(f"num_trials must be a positive integer, got {num_trials!r}")
  configs = []
  for i in range(num_trials):
    rng = np.random.default_rng([int(seed), i, 0x5A4D])
    # Sorted names: the draw for a parameter does not depend on the order
    # the space was written in.
    configs.append({n: space.params[n].sample(rng)
                    for n in sorted(space.names())})
  return make_trials(configs, seed=seed)


def sample(space: space_lib.Space, sampler: str, *, num_trials: int | None,
           seed: int = 0) -> list[TrialSpec]:
  """Dispatches on a sampler name (``grid`` ignores ``num_trials``)."""
  if sampler == "grid":
    return grid(space, seed=seed)
  if sampler == "random":
    return random(space, num_trials, seed=seed)
  raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
