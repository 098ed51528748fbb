"""Search spaces: named hyperparameters, each drawn from a distribution.

A :class:`Space` names only what it tunes; every other hyperparameter takes
its default from :data:`PARAMS`. Each known name is either *static* (it
changes shapes or program structure, so trials that differ in it cannot share
one compiled program) or *vectorised* (a traced per-trial float: a new value
never recompiles). Validation happens when the space is built, so a bad space
fails before anything runs or is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

CELLS = ("simple", "lstm", "gru")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
LR_SCHEDULES = ("constant", "cosine", "warmup_cosine", "exponential", "step")
RECURRENT_DROPOUT_MODES = ("variational", "naive")


# --------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------


class Distribution:
  """Base class: something a sampler can draw values from."""

  #: True when values are spread evenly in log space (plots use log axes).
  log_scale: bool = False

  def sample(self, rng: np.random.Generator) -> Any:
    raise NotImplementedError

  def from_unit(self, u: float) -> Any:
    """The value at quantile ``u`` in ``[0, 1)``: maps a point of the unit
    cube (quasi-random search) through this distribution, log scales
    respected and integers and choices spread evenly."""
    raise NotImplementedError

  def axis_values(self, n: int) -> list[Any]:
    """``n`` values spread evenly across the range, ends included (a
    one-factor-at-a-time axis); a finite set gives all its values."""
    raise NotImplementedError

  def grid_values(self, name: str) -> list[Any]:
    """The values a grid search enumerates for this parameter."""
    raise NotImplementedError

  def candidate_values(self) -> list[Any]:
    """Values to check against a parameter's rule (bounds are enough)."""
    raise NotImplementedError

  def to_json(self) -> Any:
    raise NotImplementedError


def _check_bounds(lo, hi, what: str) -> None:
  for v in (lo, hi):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
      raise ValueError(f"{what}: bounds must be numbers, got {v!r}")
    if not math.isfinite(float(v)):
      raise ValueError(f"{what}: bounds must be finite, got {v!r}")
  if not lo < hi:
    raise ValueError(f"{what}: needs lo < hi, got lo={lo!r}, hi={hi!r}")


@dataclasses.dataclass(frozen=True)
class _Continuous(Distribution):
  """A real interval ``[lo, hi)``; grids cannot enumerate it."""

  lo: float
  hi: float

  _json_key = ""

  def __post_init__(self):
    _check_bounds(self.lo, self.hi, type(self).__name__)

  def grid_values(self, name):
    raise ValueError(
        f"parameter {name!r}: grid search cannot enumerate continuous "
        f"{self!r}; give explicit values with Choice([...])")

  def candidate_values(self):
    return [self.lo, self.hi]

  def to_json(self):
    return {self._json_key: [self.lo, self.hi]}


@dataclasses.dataclass(frozen=True)
class Uniform(_Continuous):
  """Continuous, uniform on ``[lo, hi)``."""

  _json_key = "uniform"

  def sample(self, rng):
    return float(rng.uniform(self.lo, self.hi))

  def from_unit(self, u):
    return float(self.lo + u * (self.hi - self.lo))

  def axis_values(self, n):
    return [float(v) for v in np.linspace(self.lo, self.hi, n)]


@dataclasses.dataclass(frozen=True)
class LogUniform(_Continuous):
  """Continuous, uniform in ``log`` on ``[lo, hi)``; needs ``lo > 0``."""

  log_scale = True
  _json_key = "log_uniform"

  def __post_init__(self):
    super().__post_init__()
    if self.lo <= 0:
      raise ValueError(f"LogUniform: needs lo > 0, got lo={self.lo!r}")

  def sample(self, rng):
    return float(math.exp(rng.uniform(math.log(self.lo), math.log(self.hi))))

  def from_unit(self, u):
    lo, hi = math.log(self.lo), math.log(self.hi)
    return float(math.exp(lo + u * (hi - lo)))

  def axis_values(self, n):
    return [float(v) for v in np.geomspace(self.lo, self.hi, n)]


@dataclasses.dataclass(frozen=True)
class IntUniform(Distribution):
  """Integers in ``[lo, hi]`` (both ends included); ``log=True`` spreads
  them evenly in log space (needs ``lo >= 1``)."""

  lo: int
  hi: int
  log: bool = False

  def __post_init__(self):
    for v in (self.lo, self.hi):
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"IntUniform: bounds must be integers, got {v!r}")
    _check_bounds(self.lo, self.hi, "IntUniform")
    if self.log and self.lo < 1:
      raise ValueError(
          f"IntUniform(log=True): needs lo >= 1, got lo={self.lo!r}")

  @property
  def log_scale(self):  # type: ignore[override]
    return self.log

  def sample(self, rng):
    if self.log:
      # Uniform in log over [lo - 0.5, hi + 0.5) then round: every integer
      # in range is reachable, ends included.
      u = rng.uniform(math.log(self.lo - 0.5 if self.lo > 1 else self.lo),
                      math.log(self.hi + 0.5))
      return int(min(self.hi, max(self.lo, round(math.exp(u)))))
    return int(rng.integers(self.lo, self.hi + 1))

  def from_unit(self, u):
    if self.log:
      lo = math.log(self.lo - 0.5 if self.lo > 1 else self.lo)
      hi = math.log(self.hi + 0.5)
      return int(min(self.hi, max(self.lo, round(math.exp(lo + u * (hi - lo))))))
    # Each of the hi - lo + 1 integers owns an equal slice of [0, 1).
    return int(min(self.hi, self.lo + math.floor(u * (self.hi - self.lo + 1))))

  def axis_values(self, n):
    spread = (np.geomspace if self.log else np.linspace)(self.lo, self.hi, n)
    return sorted({int(round(v)) for v in spread})

  def grid_values(self, name):
    return list(range(int(self.lo), int(self.hi) + 1))

  def candidate_values(self):
    return [int(self.lo), int(self.hi)]

  def to_json(self):
    return {"int_uniform": [int(self.lo), int(self.hi)], "log": self.log}


def IntLogUniform(lo: int, hi: int) -> IntUniform:  # pylint: disable=invalid-name
  """Integers in ``[lo, hi]`` spread evenly in log space."""
  return IntUniform(lo, hi, log=True)


@dataclasses.dataclass(frozen=True)
class Choice(Distribution):
  """One of an explicit list of values (any type a parameter accepts)."""

  values: tuple

  def __init__(self, values: Sequence[Any]):
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
      raise ValueError(f"Choice: needs a list of values, got {values!r}")
    if len(values) == 0:
      raise ValueError("Choice: needs at least one value, got an empty list")
    object.__setattr__(self, "values", tuple(values))

  @property
  def log_scale(self):  # type: ignore[override]
    nums = [v for v in self.values
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(nums) != len(self.values) or min(nums) <= 0:
      return False
    return max(nums) / min(nums) >= 100

  def sample(self, rng):
    return self.values[int(rng.integers(len(self.values)))]

  def from_unit(self, u):
    n = len(self.values)
    return self.values[min(n - 1, math.floor(u * n))]

  def axis_values(self, n):
    return list(self.values)

  def grid_values(self, name):
    return list(self.values)

  def candidate_values(self):
    return list(self.values)

  def to_json(self):
    return list(self.values)


@dataclasses.dataclass(frozen=True)
class Fixed(Distribution):
  """A single value."""

  value: Any

  def sample(self, rng):
    return self.value

  def from_unit(self, u):
    return self.value

  def axis_values(self, n):
    return [self.value]

  def grid_values(self, name):
    return [self.value]

  def candidate_values(self):
    return [self.value]

  def to_json(self):
    return self.value


# --------------------------------------------------------------------------
# Known parameters
# --------------------------------------------------------------------------


def _int_rule(minimum: int) -> Callable[[Any], str | None]:
  def rule(v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
      if isinstance(v, float) and v.is_integer():
        return None
      return f"must be an integer, got {v!r}"
    if v < minimum:
      return f"must be an integer >= {minimum}, got {v!r}"
    return None
  return rule


def _seed_rule(v):
  problem = _int_rule(0)(v)
  if problem is not None or v >= 2**31:
    problem = f"must be an integer in [0, 2**31), got {v!r}"
  return problem


def check_seed(name: str, seed: Any) -> None:
  """Seeds are integers in ``[0, 2**31)``: larger ones would alias in the
  32-bit keys, and the trial seeds derived from them are stored as int32."""
  problem = _seed_rule(seed)
  if problem is not None:
    raise ValueError(f"{name} {problem}")


def _one_of(options: Sequence[str]) -> Callable[[Any], str | None]:
  def rule(v):
    if v not in options:
      return f"must be one of {list(options)}, got {v!r}"
    return None
  return rule


def _float_rule(lo: float, hi: float, *, lo_open: bool = False,
                hi_open: bool = False, text: str) -> Callable[[Any], str | None]:
  def rule(v):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
      return f"must be a number {text}, got {v!r}"
    v = float(v)
    bad = (not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo)
           or (hi_open and v == hi))
    return f"must be {text}, got {v!r}" if bad else None
  return rule


@dataclasses.dataclass(frozen=True)
class ParamSpec:
  """What rnnsweep knows about one hyperparameter name."""

  name: str
  static: bool
  default: Any
  rule: Callable[[Any], str | None]
  help: str
  # Cast applied to a sampled value before it is used (ints for shapes).
  cast: Callable[[Any], Any] = lambda v: v


def _as_int(v):
  return int(v)


def _as_float(v):
  return float(v)


_IN_UNIT_INTERVAL = _float_rule(0, 1, hi_open=True, text="in [0, 1)")

_SPECS = [
    # Static: each distinct combination is its own compiled program.
    ParamSpec("cell", True, "lstm", _one_of(CELLS),
              "recurrent cell: simple | lstm | gru"),
    ParamSpec("hidden_size", True, 128, _int_rule(1), "units per layer",
              _as_int),
    ParamSpec("num_layers", True, 1, _int_rule(1), "stacked layers", _as_int),
    ParamSpec("batch_size", True, 32, _int_rule(1), "sequences per update",
              _as_int),
    ParamSpec("truncation", True, 32, _int_rule(1),
              "TBPTT window: time steps per update", _as_int),
    ParamSpec("embed_size", True, 64, _int_rule(1),
              "token embedding width (token inputs only)", _as_int),
    ParamSpec("optimizer", True, "adam", _one_of(OPTIMIZERS),
              "adam | adamw | rmsprop | sgd"),
    ParamSpec("lr_schedule", True, "constant", _one_of(LR_SCHEDULES),
              "learning rate over the run: constant | cosine | "
              "warmup_cosine | exponential | step"),
    ParamSpec("recurrent_dropout_mode", True, "variational",
              _one_of(RECURRENT_DROPOUT_MODES),
              "variational (one recurrent mask per sequence) | naive (a new "
              "mask every time step)"),
    # Vectorised: a [K] array of traced floats per group.
    ParamSpec("learning_rate", False, 1e-3,
              _float_rule(0, math.inf, lo_open=True, text="> 0"),
              "peak learning rate", _as_float),
    ParamSpec("warmup_steps_fraction", False, 0.1,
              _float_rule(0, 1, hi_open=True, text="in [0, 1)"),
              "warmup_cosine: share of the steps spent warming up linearly",
              _as_float),
    ParamSpec("final_lr_fraction", False, 0.0,
              _float_rule(0, 1, text="in [0, 1]"),
              "cosine, warmup_cosine: final learning rate / peak",
              _as_float),
    ParamSpec("decay_rate", False, 0.1,
              _float_rule(0, 1, lo_open=True, text="in (0, 1]"),
              "exponential: learning rate factor over the whole run; step: "
              "factor at each drop (half and three quarters of the run)",
              _as_float),
    ParamSpec("weight_decay", False, 0.0,
              _float_rule(0, math.inf, text=">= 0"),
              "L2 (adam, rmsprop, sgd) or decoupled (adamw) weight decay",
              _as_float),
    *(ParamSpec(f"{part}_dropout", False, 0.0, _IN_UNIT_INTERVAL,
                f"variational dropout on {where}", _as_float)
      for part, where in (("input", "the first layer's inputs"),
                          ("recurrent", "each layer's recurrent state"),
                          ("output", "each layer's outputs"))),
    ParamSpec("grad_clip", False, 1.0,
              _float_rule(0, math.inf, text=">= 0 (0 disables clipping)"),
              "clip gradients to this global norm (0: off)", _as_float),
    ParamSpec("beta1", False, 0.9, _IN_UNIT_INTERVAL,
              "Adam first-moment decay", _as_float),
    ParamSpec("beta2", False, 0.999, _IN_UNIT_INTERVAL,
              "Adam second-moment decay", _as_float),
    ParamSpec("momentum", False, 0.0, _IN_UNIT_INTERVAL,
              "SGD and RMSProp momentum", _as_float),
    ParamSpec("seed", False, None, _seed_rule,
              "trial seed (default: derived from the sweep seed and trial id)",
              _as_int),
]

PARAMS: dict[str, ParamSpec] = {s.name: s for s in _SPECS}
STATIC_NAMES: tuple[str, ...] = tuple(s.name for s in _SPECS if s.static)
#: Vectorised floats the engine receives as ``[K]`` arrays (``seed`` is
#: vectorised too but reaches the engine as a PRNG key, not a float).
VECTOR_NAMES: tuple[str, ...] = tuple(
    s.name for s in _SPECS if not s.static and s.name != "seed")


def _unknown_name_error(name: str) -> ValueError:
  return ValueError(
      f"unknown parameter {name!r}; known parameters: {sorted(PARAMS)}")


def validate_value(name: str, value: Any) -> Any:
  """Checks one concrete value against its parameter's rule; returns it cast."""
  if name not in PARAMS:
    raise _unknown_name_error(name)
  spec = PARAMS[name]
  problem = spec.rule(value)
  if problem:
    raise ValueError(f"parameter {name!r} {problem}")
  return spec.cast(value)


def resolve_params(params: Mapping[str, Any]) -> dict[str, Any]:
  """Fills defaults into one trial's params and validates every value.

  Args:
    params: a (possibly partial) name -> value mapping.

  Returns:
    A dict with every known parameter except ``seed`` (kept only if given).
  """
  out = {}
  for name in params:
    if name not in PARAMS:
      raise _unknown_name_error(name)
  for name, spec in PARAMS.items():
    if name in params:
      out[name] = validate_value(name, params[name])
    elif spec.default is not None:
      out[name] = spec.default
  return out


# --------------------------------------------------------------------------
# Space
# --------------------------------------------------------------------------


class Space:
  """A named collection of distributions over known hyperparameters.

  Example::

      space = Space({
          "learning_rate": LogUniform(1e-4, 1e-2),
          "cell": Choice(["lstm", "gru"]),
          "hidden_size": 128,            # a bare value means Fixed(128)
      })
  """

  def __init__(self, params: Mapping[str, Any] | None = None):
    self._params: dict[str, Distribution] = {}
    for name, dist in (params or {}).items():
      if name not in PARAMS:
        raise _unknown_name_error(name)
      if not isinstance(dist, Distribution):
        dist = Fixed(dist)
      spec = PARAMS[name]
      if spec.cast is _as_int and isinstance(dist, _Continuous):
        raise ValueError(
            f"parameter {name!r} is an integer; use IntUniform, Choice or a "
            f"fixed value, not {type(dist).__name__}")
      for v in dist.candidate_values():
        problem = spec.rule(v)
        if problem:
          raise ValueError(f"parameter {name!r} {problem}")
      self._params[name] = dist

  @property
  def params(self) -> dict[str, Distribution]:
    """The distributions this space names (defaults not included)."""
    return dict(self._params)

  def names(self) -> list[str]:
    return list(self._params)

  def tuned_names(self) -> list[str]:
    """Names whose distribution has more than one possible value."""
    return [n for n, d in self._params.items()
            if not isinstance(d, Fixed) and not (
                isinstance(d, Choice) and len(d.values) == 1)]

  def updated(self, other: "Space | Mapping[str, Any]") -> "Space":
    """A new space: this one with ``other``'s entries replacing its own."""
    other_params = other.params if isinstance(other, Space) else other
    merged = dict(self._params)
    merged.update(Space(other_params).params)
    return Space(merged)

  def to_json(self) -> dict[str, Any]:
    return {n: d.to_json() for n, d in self._params.items()}

  def __repr__(self):
    return f"Space({self._params!r})"

  def __eq__(self, other):
    return isinstance(other, Space) and self._params == other._params


def distribution_from_json(name: str, spec: Any) -> Distribution:
  """Parses one JSON entry: a bare value, a list (Choice) or a one-key dict.

  Dict forms: ``{"uniform": [lo, hi]}``, ``{"log_uniform": [lo, hi]}``,
  ``{"int_uniform": [lo, hi], "log": false}``, ``{"choice": [...]}``,
  ``{"fixed": v}``.
  """
  if isinstance(spec, list):
    return Choice(spec)
  if not isinstance(spec, dict):
    return Fixed(spec)
  kinds = {"uniform", "log_uniform", "int_uniform", "choice", "fixed"}
  keys = set(spec) - {"log"}
  if len(keys) != 1 or not keys <= kinds:
    raise ValueError(
        f"parameter {name!r}: expected one of {sorted(kinds)} as the key, "
        f"got {sorted(spec)}")
  (kind,) = keys
  if "log" in spec and kind != "int_uniform":
    raise ValueError(f"parameter {name!r}: 'log' only goes with int_uniform")
  arg = spec[kind]
  try:
    if kind == "choice":
      return Choice(arg)
    if kind == "fixed":
      return Fixed(arg)
    if not isinstance(arg, list) or len(arg) != 2:
      raise ValueError(f"{kind} needs [lo, hi], got {arg!r}")
    if kind == "uniform":
      return Uniform(*arg)
    if kind == "log_uniform":
      return LogUniform(*arg)
    return IntUniform(*arg, log=bool(spec.get("log", False)))
  except ValueError as e:
    raise ValueError(f"parameter {name!r}: {e}") from None


def space_from_json(obj: Any) -> Space:
  """Builds a :class:`Space` from a parsed JSON object (name -> entry)."""
  if not isinstance(obj, dict):
    raise ValueError(
        f"search space JSON must be an object of name -> entry, got "
        f"{type(obj).__name__}")
  return Space({n: distribution_from_json(n, s) for n, s in obj.items()})


def load_space(text_or_path: str) -> Space:
  """Parses a space from a JSON string or from the path of a JSON file."""
  text = text_or_path
  source = "search space JSON"
  if not text.lstrip().startswith("{"):
    if not os.path.exists(text):
      raise ValueError(
          f"search space {text!r} is neither a JSON object nor an existing "
          f"file")
    source = f"search space file {text!r}"
    try:
      with open(text, encoding="utf-8") as f:
        text = f.read()
    except (OSError, UnicodeDecodeError) as e:
      reason = getattr(e, "strerror", None) or (
          f"not UTF-8 text ({e.reason} at byte {e.start})"
          if isinstance(e, UnicodeDecodeError) else str(e))
      raise ValueError(f"{source} cannot be read: {reason}") from None
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{source} is not valid JSON: {e}") from None
  try:
    return space_from_json(obj)
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from None


# --------------------------------------------------------------------------
# Widening a range whose best trials sit at its edge
# --------------------------------------------------------------------------


def widened(name: str, dist: Distribution, side: str
            ) -> Distribution | None:
  """``dist`` with its range carried past one edge, where a sweep's best
  trials sat (the optimum may lie outside it: Google's tuning playbook).

  A ``Uniform``, ``LogUniform`` or ``IntUniform`` range grows by half its
  width on ``side`` (in log space where log-scaled; integers rounded
  outwards); a ``Choice`` of numbers gains one value past its outermost,
  one step of its two outermost values beyond it (a ratio on a log scale,
  a difference otherwise). On a log scale the step is at most a factor
  of 10 (a learning rate searched over 1e-4..1e-1 goes to 1, not 3.16).
  Where the parameter's rule stops that (a dropout rate stays below 1),
  the step halves until the rule holds.

  Args:
    name: the parameter.
    dist: its distribution in the sweep's space.
    side: ``"low"`` or ``"high"``.

  Returns:
    The widened distribution, or ``None`` where the range cannot move past
    that edge (a rate already at 0, a text choice, a fixed value).
  """
  if side not in ("low", "high"):
    raise ValueError(f"side must be 'low' or 'high', got {side!r}")
  high = side == "high"
  if isinstance(dist, (_Continuous, IntUniform)):
    edge, inner = (dist.hi, dist.lo) if high else (dist.lo, dist.hi)
    step = 0.5
  elif isinstance(dist, Choice) and len(dist.values) >= 2 and all(
      isinstance(v, (int, float)) and not isinstance(v, bool)
      for v in dist.values):
    ordered = sorted(dist.values)
    edge, inner = (ordered[-1], ordered[-2]) if high else (ordered[0],
                                                           ordered[1])
    step = 1.0
  else:
    return None
  log = dist.log_scale
  to, back = (math.log, math.exp) if log else (float, float)
  integer = isinstance(dist, IntUniform) or (isinstance(dist, Choice) and all(
      isinstance(v, (int, np.integer)) for v in dist.values))
  for _ in range(4):
    shift = step * (to(edge) - to(inner))
    if log:  # at most a factor of 10
      shift = math.copysign(min(abs(shift), math.log(10.0)), shift)
    value = back(to(edge) + shift)
    step /= 2
    if not math.isfinite(value):
      continue
    # Integers outwards; floats to three significant digits (a command
    # line to read).
    value = (int(math.ceil(value) if high else math.floor(value)) if integer
             else float(f"{value:.3g}"))
    if value == edge:
      continue
    try:
      if isinstance(dist, Choice):
        candidate = Choice(sorted(list(dist.values) + [value]))
      else:
        lo, hi = (dist.lo, value) if high else (value, dist.hi)
        candidate = (IntUniform(lo, hi, log=dist.log)
                     if isinstance(dist, IntUniform) else type(dist)(lo, hi))
      Space({name: candidate})  # the parameter's own rule
    except ValueError:  # past 0 on a log scale, a rate at 1, ...
      continue
    return candidate
  return None
