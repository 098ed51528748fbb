"""Model-based search in batches: an Optuna sampler asked K trials at a time.

Tools that ask for one trial at a time leave a vectorised engine idle.
Here each *round* asks the sampler for a whole batch (enough trials to fill
a group), trains the batch as groups, tells Optuna every result, and asks
again. Samplers get the parallel-safe settings Optuna provides for batch
asks (TPE's ``constant_liar``: trials asked but not yet told count as
mediocre, so one batch does not pile onto one point).

- The study lives in the workdir (``optuna.db`` beside ``results.db``) or
  in the user's storage URL, so it resumes with the sweep: trials asked
  before an interruption are trained with the values they were given,
  never asked again, and each is told exactly once.
- Each round's sampler is seeded from (sweep seed, round), so the values a
  round asks depend only on the seed and the results told before it: a
  resumed sweep asks what an uninterrupted one would.
- Told states: completed -> ``COMPLETE`` with the best validation value
  (the validation curve reported as intermediate values); pruned by a
  scheduler -> ``PRUNED`` (its curve so far is what samplers read);
  diverged or failed -> ``FAIL``. With several seeds per configuration,
  the study sees one trial per configuration, told their mean.

Optuna is an optional extra (``pip install rnnsweep[optuna]``).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from rnnsweep import samplers
from rnnsweep import space as space_lib

STUDY_NAME = "rnnsweep"
STUDY_FILE = "optuna.db"
#: Short names for Optuna's samplers; any other name is looked up as a
#: class in ``optuna.samplers``.
SHORT_NAMES = {"tpe": "TPESampler", "cmaes": "CmaEsSampler",
               "gp": "GPSampler", "qmc": "QMCSampler",
               "random": "RandomSampler"}
_ROUND_STREAM = 0x0B7A


def import_optuna():
  """Optuna, or one line saying how to install it."""
  try:
    import optuna  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError("sampler 'optuna:*' needs Optuna: pip install "
                     "'rnnsweep[optuna]'") from None
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  return optuna


def sampler_class(name: str):
  """The Optuna sampler class ``optuna:<name>`` stands for."""
  optuna = import_optuna()
  short = name[len(samplers.OPTUNA_PREFIX):] if name.startswith(
      samplers.OPTUNA_PREFIX) else name
  class_name = SHORT_NAMES.get(short, short)
  cls = getattr(optuna.samplers, class_name, None)
  if not (isinstance(cls, type) and issubclass(
      cls, optuna.samplers.BaseSampler)):
    raise ValueError(
        f"sampler {name!r}: Optuna has no sampler {class_name!r}; short "
        f"names: {sorted(SHORT_NAMES)}, or a class of optuna.samplers")
  # Optuna imports these only when the sampler first models the study
  # (after its random start-up trials): fail before anything is trained.
  needs = {"GPSampler": "torch", "CmaEsSampler": "cmaes"}.get(class_name)
  if needs is not None:
    try:
      importlib.import_module(needs)
    except ImportError:
      raise ValueError(f"sampler {name!r} needs {needs}: pip install "
                       f"{needs}") from None
  return cls


def make_sampler(name: str, seed: int, batch: int):
  """A fresh sampler for one round, seeded by ``seed``, set up for asks of
  ``batch`` trials at once: TPE with ``constant_liar`` (asked, untold
  trials count as mediocre, so a batch spreads out); CMA-ES with one
  generation per round (``popsize=batch``)."""
  cls = sampler_class(name)
  kwargs: dict[str, Any] = {"seed": seed}
  if cls.__name__ == "TPESampler":
    kwargs["constant_liar"] = True
  if cls.__name__ == "CmaEsSampler":
    kwargs.update(popsize=max(2, batch), warn_independent_sampling=False)
  optuna = import_optuna()
  try:
    with warnings.catch_warnings():
      # constant_liar is marked experimental; it is what batches need.
      warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
      return cls(**kwargs)
  except ImportError as e:
    raise ValueError(f"sampler {name!r} needs a package Optuna could not "
                     f"import: {e}") from None
  except TypeError as e:
    raise ValueError(f"sampler {name!r} cannot be built from a seed alone "
                     f"({e}); pick another sampler") from None


def distributions(space: space_lib.Space) -> dict[str, Any]:
  """Optuna distributions of the space's tuned parameters (static ones
  included: trials are bucketed into groups after each ask)."""
  optuna = import_optuna()
  d = optuna.distributions
  out = {}
  for name in space.tuned_names():
    dist = space.params[name]
    if isinstance(dist, space_lib.Uniform):
      out[name] = d.FloatDistribution(float(dist.lo), float(dist.hi))
    elif isinstance(dist, space_lib.LogUniform):
      out[name] = d.FloatDistribution(float(dist.lo), float(dist.hi),
                                      log=True)
    elif isinstance(dist, space_lib.IntUniform):
      out[name] = d.IntDistribution(int(dist.lo), int(dist.hi), log=dist.log)
    elif isinstance(dist, space_lib.Choice):
      out[name] = d.CategoricalDistribution(list(dist.values))
    else:
      raise ValueError(f"parameter {name!r}: Optuna cannot sample {dist!r}")
  return out


def round_seed(seed: int, round_index: int) -> int:
  """The seed of round ``round_index``'s sampler."""
  ss = np.random.SeedSequence([int(seed), _ROUND_STREAM, int(round_index)])
  return int(ss.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


def default_storage(workdir: str | None) -> str | None:
  """The study's storage: ``optuna.db`` in the workdir (in memory
  without one)."""
  if workdir is None:
    return None
  return "sqlite:///" + os.path.abspath(os.path.join(workdir, STUDY_FILE))


@dataclasses.dataclass
class BatchStudy:
  """An Optuna study asked and told in batches.

  Attributes:
    study: the ``optuna.Study``.
    space: the full space (fixed values fill what is not asked).
    sampler: ``optuna:<name>``.
    seed: the sweep seed.
  """

  study: Any
  space: space_lib.Space
  sampler: str
  seed: int
  batch: int

  @classmethod
  def open(cls, space: space_lib.Space, sampler: str, *, seed: int,
           mode: str, storage: str | None, batch: int) -> "BatchStudy":
    """Creates the study or loads the one ``storage`` holds."""
    optuna = import_optuna()
    sampler_class(sampler)  # a bad name fails before anything is written
    try:
      study = optuna.create_study(
          study_name=STUDY_NAME, storage=storage,
          direction="minimize" if mode == "min" else "maximize",
          sampler=make_sampler(sampler, round_seed(seed, 0), batch),
          load_if_exists=True)
    except (ValueError, ImportError) as e:
      raise ValueError(f"Optuna storage {storage!r}: {e}") from None
    want = "minimize" if mode == "min" else "maximize"
    if study.direction.name.lower() != want:
      raise ValueError(f"Optuna storage {storage!r}: study {STUDY_NAME!r} "
                       f"is to {study.direction.name.lower()}, this sweep "
                       f"to {want}")
    out = cls(study, space, sampler, seed, batch)
    names = set(distributions(space))
    for t in study.get_trials(deepcopy=False):
      if set(t.distributions) != names:
        raise ValueError(
            f"Optuna storage {storage!r}: study {STUDY_NAME!r} holds trial "
            f"{t.number} over {sorted(t.distributions)}, this sweep tunes "
            f"{sorted(names)}; use another workdir or storage")
    return out

  def configs(self, num_trials: int, round_index: int
              ) -> list[dict[str, Any]]:
    """The first ``num_trials`` trials' configurations: those already in
    the study as they were asked, the rest asked now from round
    ``round_index``'s sampler (one batch)."""
    have = len(self.study.get_trials(deepcopy=False))
    if have < num_trials:
      self.study.sampler = make_sampler(
          self.sampler, round_seed(self.seed, round_index), self.batch)
      dists = distributions(self.space)
      for _ in range(num_trials - have):
        self.study.ask(dists)
    trials = sorted(self.study.get_trials(deepcopy=False),
                    key=lambda t: t.number)[:num_trials]
    tuned = set(self.space.tuned_names())
    fixed = {n: d.from_unit(0.0) for n, d in self.space.params.items()
             if n not in tuned}
    return [{**fixed, **t.params} for t in trials]

  def tell(self, results: Sequence[Any], failed: Mapping[int, str],
           metric_curve: str, seeds: int = 1) -> int:
    """Tells the study every result it is still waiting for; returns how
    many were told.

    Args:
      results: finished trials (``TrialResult``), any rounds.
      failed: trial id -> error for trials whose group raised.
      metric_curve: the curve key of the selection metric
        (``val/<metric>``).
      seeds: runs of each asked configuration
        (:func:`~rnnsweep.samplers.with_seeds`: study trial ``n`` is
        trials ``n * seeds`` to ``n * seeds + seeds - 1``). A
        configuration is told once all its runs have finished: the mean
        of their best values (and, as intermediate values, the mean curve
        where every run has a value), ``PRUNED`` if a run was pruned,
        else ``FAIL`` if one diverged or failed.
    """
    optuna = import_optuna()
    state = optuna.trial.TrialState
    by_number = {t.number: t for t in self.study.get_trials(deepcopy=False)}
    runs: dict[int, dict[int, Any]] = {}
    for r in results:
      runs.setdefault(r.trial_id // seeds, {})[r.trial_id] = r
    for tid in failed:
      runs.setdefault(tid // seeds, {}).setdefault(tid, None)
    told = 0
    for number, of in sorted(runs.items()):
      t = by_number.get(number)
      if t is None or t.state != state.RUNNING or len(of) < seeds:
        continue
      done = [r for r in of.values() if r is not None]
      live = optuna.trial.Trial(self.study, t._trial_id)  # pylint: disable=protected-access
      for step, value in _mean_curve(done, metric_curve, len(of)):
        live.report(value, step)
      if len(done) == len(of) and all(
          r.status == "completed" and r.best_value is not None for r in done):
        self.study.tell(t.number, float(np.mean([r.best_value
                                                 for r in done])))
      elif any(r.status == "pruned" for r in done):
        self.study.tell(t.number, state=state.PRUNED)
      else:
        self.study.tell(t.number, state=state.FAIL)
      told += 1
    return told


def _mean_curve(results: Sequence[Any], key: str, runs: int
                ) -> list[tuple[int, float]]:
  """``(step, value)`` of the curve ``key`` averaged over ``results``, at
  the steps where all ``runs`` have a finite value (one run: its curve)."""
  values: dict[int, list[float]] = {}
  for r in results:
    for step, value in zip(r.curves.get("step", []), r.curves.get(key, [])):
      if value is not None and math.isfinite(value):
        values.setdefault(int(step), []).append(float(value))
  return [(step, float(np.mean(v))) for step, v in sorted(values.items())
          if len(v) == runs]


def run_rounds(study: BatchStudy, *, rounds: int, first_round: int,
               train: Callable[[list[dict[str, Any]], int], Any],
               log: Callable[[str], None], seeds: int = 1) -> Any:
  """The ask / train / tell loop.

  Args:
    study: the batch study (``study.batch`` trials asked per round).
    rounds: rounds in the sweep.
    first_round: the round to start from (earlier rounds are in the store
      and were told).
    train: ``train(configs, round_index)`` trains the first ``len(configs)``
      trials (the earlier rounds' are skipped when already recorded) and
      returns ``(result, new_results, failed, metric_curve)``.
    log: one line per round.
    seeds: runs of each asked configuration (see :meth:`BatchStudy.tell`).

  Returns:
    The last round's ``result``.
  """
  result, batch = None, study.batch
  for r in range(first_round, rounds):
    n = (r + 1) * batch
    configs = study.configs(n, r)
    what = (f"{batch} configurations x {seeds} seeds" if seeds > 1
            else f"{batch} trials")
    log(f"round {r + 1}/{rounds}: {what} from {study.sampler} "
        f"({n * seeds} trials in all)")
    result, new_results, failed, curve = train(configs, r)
    study.tell(new_results, failed, curve, seeds)
  return result
