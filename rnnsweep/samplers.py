"""Samplers turn a :class:`~rnnsweep.space.Space` into a list of trials.

Every trial gets a stable integer id (its position in the sampler's order)
and its own integer seed. Unless the space names ``seed``, the seed is
derived from the sweep seed and the trial id alone, so a trial's numbers do
not depend on which other trials were sampled beside it.

- ``grid``: every combination of the space's values.
- ``random``: independent draws; trial ``i`` depends on ``(seed, i)`` only.
- ``quasirandom``: a scrambled Sobol sequence (``scipy.stats.qmc``) mapped
  through each parameter's distribution: the points cover the space more
  evenly than random ones; trial ``i`` is the ``i``-th point of the
  sequence the seed scrambles, so it too depends on ``(seed, i)`` only.
- ``around``: one factor at a time around a base configuration.
- ``trials``: configurations read from a JSON or CSV file
  (:func:`load_trials`).
- ``optuna:<sampler>``: model-based, asked in batches
  (:mod:`rnnsweep.batch_search`).

:func:`with_seeds` runs each trial of any of the up-front samplers several
times, each with its own seed (replicates, ranked by their mean in the
report).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from rnnsweep import space as space_lib

#: Samplers that draw from a space up front (``trials`` reads a file and
#: ``optuna:<name>`` asks in rounds: see :func:`check_sampler`).
SAMPLERS = ("grid", "random", "quasirandom", "around")
OPTUNA_PREFIX = "optuna:"


def check_sampler(name: Any) -> str:
  """Returns ``name`` if it names a sampler, else raises one clear line."""
  if isinstance(name, str) and (
      name in SAMPLERS + ("trials",) or (
          name.startswith(OPTUNA_PREFIX) and len(name) > len(OPTUNA_PREFIX))):
    return name
  raise ValueError(
      f"sampler must be one of {list(SAMPLERS + ('trials',))} or "
      f"'optuna:<sampler>' (tpe, cmaes, gp, qmc, random or an Optuna "
      f"sampler class name), got {name!r}")


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


def check_seeds(seeds: Any) -> int:
  """Returns ``seeds`` (seeds per configuration) if it is a positive
  integer, else raises one clear line."""
  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
    raise ValueError(f"seeds (per configuration) must be a positive "
                     f"integer, got {seeds!r}")
  return seeds


def seeds_of(record: Mapping[str, Any]) -> int:
  """Runs per configuration of a sweep, from its settings record
  (:meth:`~rnnsweep.settings.SweepSettings.record`; stored only above 1)."""
  return (record.get("sampler_options") or {}).get("seeds", 1)


def replica_seed(seed: int, replica: int) -> int:
  """The seed of a configuration's ``replica``-th run (from 1) when its
  first run has ``seed``: a function of the two alone, so the same
  configuration and seed always gets the same replicates."""
  ss = np.random.SeedSequence([int(seed), int(replica), 0x5EED5])
  return int(ss.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


def with_seeds(trials: Sequence[TrialSpec], seeds: int) -> list[TrialSpec]:
  """Every trial run ``seeds`` times: first with its own seed (the same
  numbers as the trial alone), then with :func:`replica_seed` ``(own seed,
  1)``, ``(own seed, 2)``, ... Trial ``i``'s runs take ids ``i * seeds``
  to ``i * seeds + seeds - 1``, so a sweep that grows by trials keeps the
  runs it had."""
  check_seeds(seeds)
  out = []
  for t in sorted(trials, key=lambda t: t.trial_id):
    for j in range(seeds):
      s = t.seed if j == 0 else replica_seed(t.seed, j)
      out.append(TrialSpec(t.trial_id * seeds + j, {**t.params, "seed": s},
                           s))
  return out


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
  _check_num_trials(num_trials)
  configs = []
  for i in range(num_trials):
    rng = np.random.default_rng([int(seed), i, 0x5A4D])
    # Sorted names: the draw for a parameter does not depend on the order
    # the space was written in.
    configs.append({n: space.params[n].sample(rng)
                    for n in sorted(space.names())})
  return make_trials(configs, seed=seed)


def _check_num_trials(num_trials: Any) -> None:
  if isinstance(num_trials, bool) or not isinstance(num_trials, int) or (
      num_trials < 1):
    raise ValueError(f"num_trials must be a positive integer, got {num_trials!r}")


def unit_points(space: space_lib.Space, num_trials: int, *, seed: int = 0
                ) -> tuple[list[str], np.ndarray]:
  """The first ``num_trials`` points of the scrambled Sobol sequence
  ``seed`` chooses, one axis per tuned parameter (sorted names).

  Returns:
    ``(names, points)``: ``points`` is ``[num_trials, len(names)]`` in
    ``[0, 1)``.
  """
  from scipy.stats import qmc  # pylint: disable=import-outside-toplevel
  names = sorted(space.tuned_names())
  if not names:
    return names, np.zeros((num_trials, 0))
  engine = qmc.Sobol(len(names), scramble=True,
                     rng=np.random.default_rng([int(seed), 0x50B0]))
  with warnings.catch_warnings():
    # Sobol's balance holds at powers of two; any prefix still covers the
    # cube better than random draws, and extending keeps earlier points.
    warnings.filterwarnings("ignore", message=".*balance properties.*")
    return names, engine.random(num_trials)


def quasirandom(space: space_lib.Space, num_trials: int, *,
                seed: int = 0) -> list[TrialSpec]:
  """``num_trials`` points of a scrambled Sobol sequence, mapped through
  each parameter's distribution (:meth:`~rnnsweep.space.Distribution.from_unit`:
  log scales respected, integers and choices spread evenly).

  Trial ``i`` is the sequence's ``i``-th point, so asking for more trials
  extends a sweep without changing the trials already drawn.
  """
  _check_num_trials(num_trials)
  names, points = unit_points(space, num_trials, seed=seed)
  fixed = {n: d.from_unit(0.0) for n, d in space.params.items()
           if n not in names}
  configs = [{**fixed, **{n: space.params[n].from_unit(float(u))
                          for n, u in zip(names, row)}} for row in points]
  return make_trials(configs, seed=seed)


def around_configs(space: space_lib.Space, base: Mapping[str, Any],
                   points_per_axis: int) -> list[dict[str, Any]]:
  """One factor at a time: the base configuration, then for each tuned
  parameter (in the space's order) ``points_per_axis`` values across its
  range (every value of a choice) with the rest held at the base.

  Args:
    space: the full space; its tuned parameters are the axes, its fixed
      values fill what ``base`` leaves out.
    base: the configuration to vary around; a tuned parameter it leaves out
      sits at the middle of its range (geometric middle on a log scale),
      except a choice of seeds: then each configuration runs once with
      each of those seeds (replicates, not an axis).
    points_per_axis: values per continuous or integer axis (>= 2).

  Returns:
    Configs, base first; a value equal to the base's is not repeated.
  """
  if isinstance(points_per_axis, bool) or not isinstance(
      points_per_axis, int) or points_per_axis < 2:
    raise ValueError(f"points_per_axis must be an integer >= 2, got "
                     f"{points_per_axis!r}")
  if not isinstance(base, Mapping):
    raise ValueError(f"around: the base configuration must be an object of "
                     f"name -> value, got {base!r}")
  tuned = space.tuned_names()
  seeds = space.params.get("seed")
  replicas = None
  if "seed" in tuned and "seed" not in base and isinstance(
      seeds, space_lib.Choice):
    # A choice of seeds is no axis: every configuration runs with each.
    tuned.remove("seed")
    replicas = list(seeds.values)
  center = {n: d.from_unit(0.5) for n, d in space.params.items()}
  start = space_lib.resolve_params({**center, **base})
  start = {n: start[n] for n in {**center, **base}}
  configs = [start]
  for name in tuned:
    for v in space.params[name].axis_values(points_per_axis):
      if not _same(v, start[name]):
        configs.append({**start, name: v})
  if replicas is not None:
    configs = [{**c, "seed": seed} for c in configs for seed in replicas]
  return configs


def _same(a: Any, b: Any) -> bool:
  """Equal, floats up to rounding (a log axis' middle point may differ
  from the base's 1e-3 in the last bit)."""
  if isinstance(a, float) or isinstance(b, float):
    return (isinstance(a, (int, float)) and isinstance(b, (int, float))
            and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15))
  return a == b


def around(space: space_lib.Space, base: Mapping[str, Any],
           points_per_axis: int, *, seed: int = 0) -> list[TrialSpec]:
  """The trials of :func:`around_configs`."""
  return make_trials(around_configs(space, base, points_per_axis), seed=seed)


def sample(space: space_lib.Space, sampler: str, *, num_trials: int | None,
           seed: int = 0, options: Mapping[str, Any] | None = None
           ) -> list[TrialSpec]:
  """Dispatches on a sampler name (``grid`` and ``around`` ignore
  ``num_trials``; ``around`` reads ``base`` and ``points_per_axis`` from
  ``options``)."""
  options = dict(options or {})
  if sampler == "around":
    unknown = set(options) - {"base", "points_per_axis"}
    if unknown or "base" not in options:
      raise ValueError("sampler 'around' takes options base (a "
                       "configuration) and points_per_axis, got "
                       f"{sorted(options)}")
    return around(space, options["base"], options.get("points_per_axis", 5),
                  seed=seed)
  if options:
    raise ValueError(f"sampler {sampler!r} takes no options, got "
                     f"{sorted(options)}")
  if sampler == "grid":
    return grid(space, seed=seed)
  if sampler == "random":
    return random(space, num_trials, seed=seed)
  if sampler == "quasirandom":
    return quasirandom(space, num_trials, seed=seed)
  raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}")


# --------------------------------------------------------------------------
# Trials files
# --------------------------------------------------------------------------


def _csv_value(text: str) -> Any:
  """A CSV cell as the JSON value it spells (number, true/false, null) or
  else as the string itself."""
  try:
    value = json.loads(text)
  except json.JSONDecodeError:
    return text
  return value if isinstance(value, (int, float, bool)) or value is None \
      else text


def _results_csv_outcomes(header: Sequence[str]) -> set[str]:
  """The outcome columns of a sweep's own results.csv (rows of it make a
  trials file: its parameters and seeds run again), else nothing."""
  # store imports groups, which imports this module.
  from rnnsweep import store  # pylint: disable=import-outside-toplevel
  first = store.RESULTS_BEFORE_PARAMS
  lead = header[:len(first)]
  if (len(lead) < len(first) or list(lead[:2]) != list(first[:2]) or
      not lead[2].startswith("best_val_")):
    return set()
  metric = lead[2][len("best_val_"):]
  return {c.format(metric=metric)
          for c in first + store.RESULTS_AFTER_PARAMS}


def parse_trials(text: str, source: str) -> list[dict[str, Any]]:
  """Configurations from a JSON list of objects or a CSV with a header.

  A CSV cell is read as a number when it spells one (``128`` an integer,
  ``0.001`` or ``1e-3`` a float) and as text otherwise; an empty cell
  leaves that parameter at its default. Every name must be a known
  parameter and every value valid for it, except that the rows of a
  sweep's own ``results.csv`` (say, its best few) read as their
  parameters and seeds, the outcome columns left out.

  Raises:
    ValueError: one line naming ``source`` (and the row) and the problem.
  """
  stripped = text.lstrip()
  if stripped.startswith("["):
    try:
      configs = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"{source} is not valid JSON: {e}") from None
    if not all(isinstance(c, dict) for c in configs):
      raise ValueError(f"{source}: a JSON trials file is a list of objects "
                       f"(name -> value)")
  elif stripped.startswith("{"):
    raise ValueError(f"{source}: a JSON trials file is a list of objects, "
                     f"got one object (a search space goes to --space)")
  else:
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
      raise ValueError(f"{source} holds no trials")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header) or "" in header:
      raise ValueError(f"{source}: the CSV header must name each column "
                       f"once, got {header}")
    outcomes = _results_csv_outcomes(header)
    configs = []
    for line, row in enumerate(rows[1:], start=2):
      if len(row) != len(header):
        raise ValueError(f"{source} row {line}: {len(row)} cells, the "
                         f"header has {len(header)}")
      configs.append({h: _csv_value(c.strip()) for h, c in zip(header, row)
                      if c.strip() and h not in outcomes})
  if not configs:
    raise ValueError(f"{source} holds no trials")
  for i, config in enumerate(configs):
    try:
      space_lib.resolve_params(config)
    except ValueError as e:
      raise ValueError(f"{source} trial {i}: {e}") from None
  return configs


def load_trials(path: str) -> list[dict[str, Any]]:
  """Reads configurations from a ``.json`` or ``.csv`` file
  (:func:`parse_trials`)."""
  source = f"trials file {path!r}"
  if not os.path.isfile(path):
    raise ValueError(f"{source} does not exist")
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"{source} cannot be read: {e}") from None
  return parse_trials(text, source)


def configs_digest(configs: Sequence[Mapping[str, Any]]) -> str:
  """Twelve hex digits naming a list of configurations (settings record)."""
  text = json.dumps([dict(c) for c in configs], sort_keys=True)
  return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]
