"""The vectorised trial engine: the ONE module that calls ``jit`` and ``vmap``.

:class:`OneTrial` holds the maths of one trial as plain functions (``init``,
``update`` for one TBPTT window, ``evaluate``, ``keep_best``) of a
:class:`TrialState` whose hyperparameters live inside it. :class:`Program` is
the thin group layer: it vmaps those over K *slots* (the trial axis appears
only there), jits them, caches compiled executables and counts compiles,
and adds the slot operations a scheduler needs between segments: writing a
fresh trial into one slot (``reset_slot``) and PBT's gather along the trial
axis (``exploit``); neither ever recompiles. A :class:`Program` is built once
per (:class:`~rnnsweep.groups.StaticConfig`, task, options) and cached.

Training is truncated BPTT. Each update consumes one window of
``truncation`` steps from a batch of sequences; the recurrent carry passes to
the next window through ``lax.stop_gradient`` and is reset to zero when a new
batch of sequences starts. Windows whose targets all have weight zero (the
early windows of a sequence -> value task) advance the carry without an
update. Steps are counted in windows, per slot: a trial written into a slot
mid-sweep starts at step 0 and sees the data a trial alone would see.

RNG: two disjoint streams under every seed. A trial's key is
``fold_in(PRNGKey(seed), TRIAL_STREAM)``; its init key is ``fold_in(key, 0)``
and its dropout masks for sequence batch ``b`` use
``fold_in(fold_in(key, 1), b)``: one mask per sequence, constant across that
sequence's windows (naive recurrent dropout folds each layer's key with the
window's index within the sequence as well, one mask per time step). Data batches come from a data key shared by the whole
sweep (common random numbers), ``fold_in(PRNGKey(sweep_seed), DATA_STREAM)``:
batch ``b`` uses ``fold_in(data_key, b)``. So a trial whose seed equals the
sweep seed still draws nothing that the data stream draws. Seeds lie in
``[0, 2**31)``. Nothing depends on K or on group-mates ("vmap invariance").

Divergence: a trial whose loss or updated parameters are non-finite is
marked diverged and frozen (parameters and optimizer state stop changing);
``jnp.where`` keeps its NaNs out of everyone else's numbers.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import math
import os
import threading
import time
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnsweep import distributed
from rnnsweep import models
from rnnsweep import placement
from rnnsweep.models import fused
from rnnsweep import selection
from rnnsweep import space as space_lib
from rnnsweep.groups import StaticConfig
from rnnsweep.tasks.base import Batch, Task

Array = jax.Array

#: Stream ids under a seed's root key (the built-in generated tasks draw
#: their fixed validation and test sets under 0x5EED).
DATA_STREAM = 0xDA7A
TRIAL_STREAM = 0x7E1A
_INIT_STREAM = 0
_DROPOUT_STREAM = 1
#: The mesh axis a group's slots are sharded over.
TRIALS_AXIS = "trials"


def data_key(sweep_seed: int) -> Array:
  """The sweep's data key: every trial's training batches come from it."""
  space_lib.check_seed("seed", sweep_seed)
  return jax.random.fold_in(jax.random.PRNGKey(sweep_seed), DATA_STREAM)


def trial_key(seed: Array) -> Array:
  """A trial's own key (init and dropout); ``seed`` may be traced."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), TRIAL_STREAM)


def init_key(key: Array) -> Array:
  """A trial's parameter-init key, from :func:`trial_key`."""
  return jax.random.fold_in(key, _INIT_STREAM)


def dropout_key(key: Array, sequence_batch: Array) -> Array:
  """A trial's dropout key for one batch of sequences."""
  return jax.random.fold_in(jax.random.fold_in(key, _DROPOUT_STREAM),
                            sequence_batch)


def batch_key(data: Array, sequence_batch: Array) -> Array:
  """The data key of one batch of training sequences."""
  return jax.random.fold_in(data, sequence_batch)

# Incremented from inside traced functions, so it counts traces: each trace
# of a jitted function is followed by exactly one XLA compile.
_TRACES: collections.Counter = collections.Counter()
_LOCK = threading.Lock()


def trace_counts() -> dict[str, int]:
  """How many times each engine function has been traced (= compiled)."""
  return dict(_TRACES)


def _count_trace(name: str) -> None:
  with _LOCK:
    _TRACES[name] += 1


_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class CompileLog:
  """Programs compiled while a :func:`count_compiles` block was open.

  Attributes:
    requests: programs JAX had to produce (a compile or a persistent-cache
      load; an in-memory jit cache hit is not a request).
    cache_hits: requests served by the persistent compilation cache.
    seconds: time spent producing them.
    names: requests by the name of the jitted function (the engine's
      ``jit(_segment)``, ``jit(_evaluate)``...).
    seconds_by_name: ``seconds`` by the same names.
  """

  def __init__(self):
    self.requests = 0
    self.cache_hits = 0
    self.seconds = 0.0
    self.names: collections.Counter = collections.Counter()
    self.seconds_by_name: collections.Counter = collections.Counter()

  @property
  def count(self) -> int:
    """Programs XLA actually compiled."""
    return self.requests - self.cache_hits

  def _duration(self, event: str, duration: float, **kwargs) -> None:
    if event == _BACKEND_COMPILE_EVENT:
      self.requests += 1
      self.seconds += duration
      self.names[kwargs.get("fun_name")] += 1
      self.seconds_by_name[kwargs.get("fun_name")] += duration

  def _event(self, event: str, **_) -> None:
    if event == _CACHE_HIT_EVENT:
      self.cache_hits += 1


@contextlib.contextmanager
def count_compiles() -> Iterator[CompileLog]:
  """Counts the programs compiled in the block (any jitted function, not
  only the engine's), via ``jax.monitoring``."""
  log = CompileLog()
  jax.monitoring.register_event_duration_secs_listener(log._duration)
  jax.monitoring.register_event_listener(log._event)
  try:
    yield log
  finally:
    jax.monitoring.unregister_event_duration_listener(log._duration)
    jax.monitoring.unregister_event_listener(log._event)


#: Where sweeps keep compiled programs between processes, unless told:
#: JAX's own ``JAX_COMPILATION_CACHE_DIR`` if set, else a per-user folder.
DEFAULT_COMPILATION_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR") or (
    os.path.join(os.environ.get("XDG_CACHE_HOME",
                                os.path.expanduser("~/.cache")),
                 "rnnsweep", "xla"))


def enable_compilation_cache(path: str = DEFAULT_COMPILATION_CACHE,
                             min_compile_seconds: float = 0.0) -> None:
  """Turns on JAX's persistent compilation cache in ``path``.

  Rerunning or resuming a sweep then loads its programs instead of
  compiling them again (a 16 s run of a small sweep took 5 s the second
  time here). The threshold is lowered from JAX's default of 1 s so that
  every program of a sweep is kept. Results do not change: a cached
  executable is the same program.
  """
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(min_compile_seconds))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# --------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------


class TrialState(flax.struct.PyTreeNode):
  """One trial's training state (under vmap every leaf gains a K axis).

  Attributes:
    params: model parameters.
    opt_state: optimizer state.
    carry: recurrent state per layer, each ``[B, H]``.
    key: the trial's PRNG key (``uint32[2]``).
    hp: the trial's vectorised hyperparameters, ``{name: float32}`` (a
      scheduler may change them between segments; they are checkpointed
      with everything else).
    step: int32, updates (TBPTT windows) this trial has done; it fixes the
      trial's data position, so a trial written into a slot mid-sweep
      starts from the first batch, as it would alone.
    diverged: bool, frozen once set.
    diverged_step: int32, the step that diverged, -1 if none.
    best_params: the parameters at the best validation evaluation so far
      (the held-out test split is evaluated on these).
    best_value: float32, that evaluation's selection metric (+-inf before
      the first).
  """

  params: Any
  opt_state: Any
  carry: Any
  key: Array
  hp: Any
  step: Array
  diverged: Array
  diverged_step: Array
  best_params: Any
  best_value: Array


class GroupState(flax.struct.PyTreeNode):
  """K slots, each holding one trial; they train in lockstep.

  Attributes:
    trials: a :class:`TrialState` whose leaves have a leading ``[K]`` axis.
  """

  trials: TrialState

  @property
  def step(self) -> Array:
    """``int32[K]``: each slot's own step."""
    return self.trials.step


class SegmentMetrics(flax.struct.PyTreeNode):
  """What one segment reports.

  Attributes:
    train_loss: ``[K]`` mean loss over the segment's windows with targets
      (NaN once a trial has diverged, or when it trained none).
    windows_with_targets: ``int32[K]``, how many windows produced an
      update for each slot.
  """

  train_loss: Array
  windows_with_targets: Array


# --------------------------------------------------------------------------
# Optimizer with traced per-trial values
# --------------------------------------------------------------------------


def clip_by_global_norm(max_norm: Array) -> optax.GradientTransformation:
  """Like ``optax.clip_by_global_norm`` but ``max_norm <= 0`` disables it, so
  clipping can be switched per trial by a traced value."""

  def update(updates, state, params=None):
    del params
    norm = optax.tree.norm(updates)
    scale = jnp.where((max_norm > 0) & (norm > max_norm),
                      max_norm / jnp.where(norm > 0, norm, 1.0), 1.0)
    return jax.tree_util.tree_map(lambda g: g * scale, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


#: The entry of a trial's values holding the number of steps its learning
#: rate schedule spans (the sweep's ``steps``); not a hyperparameter.
HORIZON = "horizon"
#: Every name in a trial's ``hp``: the vectorised hyperparameters and the
#: schedule's horizon.
HP_NAMES = space_lib.VECTOR_NAMES + (HORIZON,)


def learning_rate(schedule: str, hp: Mapping[str, Array], step: Array
                  ) -> Array:
  """The learning rate of update ``step`` (0-based) under ``schedule``.

  Written on traced per-trial values (optax's schedule builders branch on
  their peak in Python and reject tracers). With ``T = hp["horizon"]``,
  ``lr = hp["learning_rate"]`` and ``t = step``:

  - ``constant``: ``lr``.
  - ``cosine``: ``lr * (f + (1 - f) * (1 + cos(pi * t / T)) / 2)`` with
    ``f = final_lr_fraction``.
  - ``warmup_cosine``: ``lr * (t + 1) / W`` while ``t < W`` (``W =
    warmup_steps_fraction * T``), then the cosine over the remaining
    ``T - W`` steps.
  - ``exponential``: ``lr * decay_rate ** (t / T)``.
  - ``step``: ``lr * decay_rate ** k``, ``k`` the number of drops passed
    (at ``T / 2`` and ``3 T / 4``).
  """
  peak = hp["learning_rate"]
  if schedule == "constant":
    return peak
  t = jnp.asarray(step, jnp.float32)
  horizon = jnp.maximum(hp[HORIZON], 1.0)
  if schedule in ("cosine", "warmup_cosine"):
    warm = (hp["warmup_steps_fraction"] * horizon
            if schedule == "warmup_cosine" else jnp.float32(0.0))
    rising = jnp.minimum(1.0, (t + 1.0) / jnp.maximum(warm, 1.0))
    p = jnp.clip((t - warm) / jnp.maximum(horizon - warm, 1.0), 0.0, 1.0)
    f = hp["final_lr_fraction"]
    falling = f + (1.0 - f) * 0.5 * (1.0 + jnp.cos(jnp.pi * p))
    return peak * jnp.where(t < warm, rising, falling)
  if schedule == "exponential":
    return peak * hp["decay_rate"] ** (t / horizon)
  if schedule == "step":
    drops = ((t >= 0.5 * horizon).astype(jnp.float32)
             + (t >= 0.75 * horizon).astype(jnp.float32))
    return peak * hp["decay_rate"] ** drops
  raise ValueError(f"lr_schedule must be one of {space_lib.LR_SCHEDULES}, "
                   f"got {schedule!r}")


def make_optimizer(name: str, hp: Mapping[str, Array]
                   ) -> optax.GradientTransformation:
  """The optimizer family ``name`` built from one trial's traced values.

  Weight decay is coupled (L2 added to the gradient) for adam, rmsprop and
  sgd, and decoupled for adamw. ``momentum`` applies to sgd and rmsprop.
  """
  clip = clip_by_global_norm(hp["grad_clip"])
  decay = optax.add_decayed_weights(hp["weight_decay"])
  descend = optax.scale(-hp["learning_rate"])
  if name == "adam":
    return optax.chain(clip, decay,
                       optax.scale_by_adam(hp["beta1"], hp["beta2"]), descend)
  if name == "adamw":
    return optax.chain(clip, optax.scale_by_adam(hp["beta1"], hp["beta2"]),
                       decay, descend)
  if name == "rmsprop":
    return optax.chain(clip, decay, optax.scale_by_rms(decay=0.9, eps=1e-8),
                       optax.trace(decay=hp["momentum"]), descend)
  if name == "sgd":
    return optax.chain(clip, decay, optax.trace(decay=hp["momentum"]),
                       descend)
  raise ValueError(f"optimizer must be one of {space_lib.OPTIMIZERS}, "
                   f"got {name!r}")


def _all_finite(tree) -> Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _select(pred: Array, on_true, on_false):
  return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true,
                                on_false)


def carry_handoff(carry, reset: Array):
  """The carry entering a window: the last window's state with no gradient
  path back into it, or zeros at the start of a new sequence."""
  return jax.tree_util.tree_map(
      lambda c: jnp.where(reset, jnp.zeros_like(c), jax.lax.stop_gradient(c)),
      carry)


# --------------------------------------------------------------------------
# Program: one compiled family per (static config, task)
# --------------------------------------------------------------------------


#: The named scopes of a training update, in the order a profile lists
#: them (``recurrence`` is each layer's time loop, forward and backward,
#: from :func:`rnnsweep.models.layer_scan`; the rest of the model and the
#: loss carry no scope).
PROFILE_SCOPES = ("recurrence", "dropout_masks", "optimizer", "divergence",
                  "data_window")
#: ``EngineOptions.recurrence`` values (besides :data:`AUTO`).
RECURRENCES = models.RECURRENCES
#: ``EngineOptions.compute_dtype`` values (besides :data:`AUTO`).
COMPUTE_DTYPES = ("float32", "bfloat16")
#: An engine option chosen by platform (and, for the recurrence, by each
#: group's shapes): the default of ``compute_dtype``, ``unroll``,
#: ``recurrence`` and ``trial_chunk``.
AUTO = "auto"
AUTO_CHUNK = AUTO
#: What ``auto`` chooses on a CUDA GPU, the best combination measured on
#: an H200 (benchmarks/RESULTS.md, 2026-11-28 and 2026-12-04): bfloat16
#: compute (float32 master weights) with the scan unrolled 8 steps was
#: faster than float32 on workloads S (1.25x) and L (1.17x), and than
#: unrolling the whole window (S: 0.86x); the fused kernel was faster still
#: on S (1.31x) where its shapes fit (L's H=512 does not). bfloat16 needs
#: compute capability 8.0 (Ampere) or newer, so bfloat16 and unroll 8 are
#: chosen from there, and the kernel, measured on 9.0 (Hopper) only, from
#: 9.0. Anywhere else (a CPU, a TPU, an older GPU, a GPU that reports no
#: compute capability): float32, unroll 1, the XLA recurrence.
GPU_AUTO_UNROLL = 8
GPU_AUTO_BF16_ARCH = (8, 0)
GPU_AUTO_FUSED_ARCH = (9, 0)
#: ``trial_chunk="auto"`` on a CPU vmaps as many slots together as make
#: one batched recurrent matmul of about this many multiply-adds per time
#: step (``chunk * batch * gates * hidden**2``), at least one: trials of
#: LSTM(64), batch 32 (0.5M) and larger run one at a time (from LSTM(128)
#: 1.4-1.8x faster than the whole group vmapped, on 1 and 2 cores), small
#: ones in chunks (LSTM(32): 0.13M, chunks of up to 7, where no choice was
#: reliably faster) and tiny ones vmapped whole. Measured across K, hidden
#: sizes and core counts with benchmarks/trial_chunk.py (RESULTS.md).
CPU_CHUNK_MACS = 1_000_000


@dataclasses.dataclass(frozen=True)
class EngineOptions:
  """How programs are built; not hyperparameters, but they shape the
  program, so each combination compiles its own.

  Attributes:
    compute_dtype: ``float32`` or ``bfloat16`` (matmuls and activations;
      parameters, optimizer state, carries and losses stay float32), or
      ``"auto"`` (bfloat16 on a CUDA GPU of compute capability 8.0 or
      newer, float32 elsewhere; :data:`GPU_AUTO_UNROLL`'s note).
    unroll: time steps per iteration of the recurrent scan, or ``"auto"``
      (:data:`GPU_AUTO_UNROLL` on a CUDA GPU, 1 elsewhere).
    donate: donate the group state's buffers to each segment (the old state
      must not be used after the call; the runner never does).
    hoist_input: compute each layer's input projection for the whole
      window in one matmul before the time loop, with fused gate kernels
      (:func:`rnnsweep.models.layer_scan`; the same parameters and
      function, different rounding).
    recurrence: ``xla`` (a ``lax.scan`` over time steps, differentiated
      by JAX), ``xla_vjp`` (the fused kernels' algorithm with XLA's time
      loop: a forward scan, a reverse scan of the gradient carried through
      time, and each layer's recurrent-kernel gradient as one matmul over
      the window, :func:`rnnsweep.models.fused.scan_layer`; every shape,
      every platform) or ``pallas``
      (each layer's whole window in one fused kernel with its own
      backward, :mod:`rnnsweep.models.fused`: Triton on a GPU, Pallas
      interpret mode elsewhere, which is slow and for tests; a shape the
      kernel cannot take runs the XLA recurrence, with a warning), or
      ``"auto"``: per group, the fused kernel where it is measured to pay
      (a CUDA GPU of compute capability 9.0 or newer, bfloat16 compute)
      and the group's shapes fit it, else XLA. A sweep records ``xla``
      where the kernel cannot be chosen, else ``auto`` (the choice follows
      from each group's shapes, and changes rounding only).
    trial_chunk: how many of a group's slots are vmapped together. A
      group of K runs its slots in chunks of this many, one chunk after
      another inside the same program (``lax.map``), each chunk training
      its whole segment. ``0``: all K at once (pure vmap: what an
      accelerator wants). ``"auto"``: all K on a GPU/TPU; on a CPU, where
      a batch of per-trial matmuls runs slower per trial than the same
      matmuls one trial at a time once they are not tiny, the chunk
      :data:`CPU_CHUNK_MACS` gives (benchmarks/RESULTS.md). A chunk size
      that does not divide K runs the largest one that does (one loop
      body, one compile). A group sharded over several devices chunks
      each device's share.
    compile_at_once: compile a fresh group's programs (init, segment,
      both evaluations, the best-parameter update) side by side in
      threads as it starts (:meth:`Program.prepare`), not one after
      another as each is first called. The same executables and numbers;
      off by default: on a 2-core CPU it made a sweep slower (XLA's CPU
      compiles already share the cores; benchmarks/RESULTS.md), and on a
      GPU host it is not measured yet (benchmarks/compile_at_once.py).
      Not part of a sweep's recorded settings (:meth:`record`).
  """

  compute_dtype: str = AUTO
  unroll: int | str = AUTO
  donate: bool = False
  hoist_input: bool = False
  recurrence: str = AUTO
  trial_chunk: int | str = AUTO
  compile_at_once: bool = False

  def __post_init__(self):
    if self.compute_dtype not in (AUTO, *COMPUTE_DTYPES):
      raise ValueError(f"compute_dtype must be auto, float32 or bfloat16, "
                       f"got {self.compute_dtype!r}")
    _check_unroll(self.unroll)
    if self.recurrence not in (AUTO, *RECURRENCES):
      raise ValueError(f"recurrence must be one of auto, "
                       f"{', '.join(RECURRENCES)}, got {self.recurrence!r}")
    _check_trial_chunk(self.trial_chunk)
    if not isinstance(self.compile_at_once, bool):
      raise ValueError(f"compile_at_once must be True or False, got "
                       f"{self.compile_at_once!r}")

  def record(self) -> dict[str, Any]:
    """The options a sweep stores and a resume must match: all but
    ``compile_at_once``, which changes when programs compile, not what
    they compute (a sweep records them :meth:`resolved`)."""
    out = dataclasses.asdict(self)
    del out["compile_at_once"]
    return out

  def resolved(self, platform: str | None = None, arch: str | None = None
               ) -> "EngineOptions":
    """These options with ``compute_dtype`` and ``unroll`` chosen for the
    platform where they are ``auto``, and ``recurrence`` where ``auto``
    cannot choose the kernel here (``xla``; where it can, each group
    chooses, in :class:`OneTrial`; the trial chunk too, :meth:`chunk_for`).

    Args:
      platform: ``cpu``, ``gpu``, ``tpu`` (default: JAX's default backend).
      arch: a CUDA GPU's compute capability, e.g. ``"9.0"`` (default: the
        default device's; ``None`` where it has none).
    """
    platform, arch = _platform_arch(platform, arch)
    measured = (platform == "gpu" and arch is not None
                and arch >= GPU_AUTO_BF16_ARCH)
    dtype, unroll = self.compute_dtype, self.unroll
    if dtype == AUTO:
      dtype = "bfloat16" if measured else "float32"
    if unroll == AUTO:
      unroll = GPU_AUTO_UNROLL if measured else 1
    recurrence = self.recurrence
    if recurrence == AUTO and not _auto_fused(platform, arch, dtype):
      recurrence = "xla"
    return dataclasses.replace(self, compute_dtype=dtype, unroll=unroll,
                               recurrence=recurrence)

  def auto_line(self, platform: str | None = None, arch: str | None = None
                ) -> str | None:
    """One line saying what ``auto`` chose here (``None``: nothing is
    ``auto``), e.g. for a sweep's log."""
    picked = [name for name in ("compute_dtype", "unroll", "recurrence")
              if getattr(self, name) == AUTO]
    if not picked:
      return None
    platform, arch = _platform_arch(platform, arch)
    done = self.resolved(platform, arch)
    where = platform + (f" (compute capability {arch[0]}.{arch[1]})"
                        if platform == "gpu" and arch else "")
    said = []
    if "compute_dtype" in picked:
      said.append(f"{done.compute_dtype} compute")
    if "unroll" in picked:
      said.append(f"unroll {done.unroll}")
    if "recurrence" in picked:
      said.append("the fused recurrence where a group's shapes fit it"
                  if _auto_fused(platform, arch, done.compute_dtype)
                  else "the XLA recurrence")
    return (f"engine options on {where}, auto: {', '.join(said)} "
            f"(set --precision, --unroll, --recurrence to choose)")

  def chunk_for(self, k: int, platform: str, step_macs: int = 0) -> int:
    """Slots vmapped together among ``k`` slots (a group's, or one
    device's share of a sharded group) on ``platform``: a divisor of
    ``k`` (``k``: all at once). ``step_macs``: one trial's recurrent
    multiply-adds per time step (``auto`` on a CPU)."""
    chunk = self.trial_chunk
    if chunk == AUTO_CHUNK:
      chunk = (max(1, CPU_CHUNK_MACS // max(step_macs, 1))
               if platform == "cpu" else 0)
    if chunk == 0 or chunk >= k:
      return k
    return max(d for d in range(1, chunk + 1) if k % d == 0)


def _platform_arch(platform: str | None, arch: str | None
                   ) -> tuple[str, tuple[int, int] | None]:
  """``(platform, (major, minor))``: the compute capability only for a
  CUDA GPU (``None`` elsewhere, or for a GPU that reports none)."""
  platform = platform or fused.target_platform()
  if arch is None and platform == "gpu":
    arch = fused.cuda_arch()
  if platform != "gpu" or not arch:
    return platform, None
  if isinstance(arch, tuple):
    return platform, arch
  major, _, minor = str(arch).partition(".")
  return platform, (int(major), int(minor or 0))


def _auto_fused(platform: str, arch: tuple[int, int] | None,
                compute_dtype: str) -> bool:
  """Whether ``recurrence="auto"`` picks the fused kernel here (before a
  group's shapes are asked)."""
  return (platform == "gpu" and arch is not None and
          arch >= GPU_AUTO_FUSED_ARCH and compute_dtype == "bfloat16")


def _check_trial_chunk(value: Any, name: str = "trial_chunk",
                       shown: str | None = None) -> None:
  """Refuses anything but ``"auto"`` or an integer ``>= 0`` (``shown``:
  the value as the user wrote it)."""
  if value != AUTO_CHUNK and (isinstance(value, bool)
                              or not isinstance(value, int) or value < 0):
    raise ValueError(f"{name} must be 'auto' or an integer >= 0 (0: all of "
                     f"a group's trials at once), got "
                     f"{shown if shown is not None else repr(value)}")


def _check_unroll(value: Any, name: str = "unroll",
                  shown: str | None = None) -> None:
  """Refuses anything but ``"auto"`` or an integer ``>= 1``."""
  if value != AUTO and (isinstance(value, bool) or not isinstance(value, int)
                        or value < 1):
    raise ValueError(f"{name} must be 'auto' or a positive integer, got "
                     f"{shown if shown is not None else repr(value)}")


def _parse_auto_int(value: Any, check: Callable[..., None], name: str
                    ) -> int | str:
  """``value`` as ``check`` accepts it, an integer string read as its
  integer; ``check``'s error, naming ``name``, otherwise."""
  if not isinstance(value, str):
    check(value, name)
    return value
  text = value.strip()
  try:
    number = text if text == AUTO else int(text)
  except ValueError:
    number = value
  check(number, name, shown=repr(value))
  return number


def parse_trial_chunk(value: Any, name: str = "trial_chunk") -> int | str:
  """``"auto"`` or an integer ``>= 0`` (an integer string is accepted);
  a clear error naming ``name`` otherwise."""
  return _parse_auto_int(value, _check_trial_chunk, name)


def parse_unroll(value: Any, name: str = "unroll") -> int | str:
  """``"auto"`` or an integer ``>= 1`` (an integer string is accepted);
  a clear error naming ``name`` otherwise."""
  return _parse_auto_int(value, _check_unroll, name)


def _input_size(static: StaticConfig, task: Task) -> int:
  """Width of the recurrent layers' input: the embedding for token tasks."""
  return static.embed_size if task.vocab_size is not None else task.input_size


def flops_per_update(static: StaticConfig, task: Task) -> float:
  """Analytic training FLOPs of one trial's update (one window) of
  ``static`` on ``task`` (:func:`~rnnsweep.models.training_flops`), with
  no program built."""
  return models.training_flops(
      cell=static.cell, hidden_size=static.hidden_size,
      num_layers=static.num_layers, input_size=_input_size(static, task),
      output_size=task.output_size,
      tokens=static.batch_size * static.truncation)


class OneTrial:
  """The maths of ONE trial as plain functions (no vmap, no jit, no cache).

  ``init``, ``update`` (one TBPTT window), ``evaluate`` and ``keep_best``
  take and return a :class:`TrialState`; hyperparameters are read from
  ``state.hp``. :class:`Program` vmaps and compiles them for K slots.

  Args:
    static: shapes and structure shared by every trial.
    task: the task (its data arrays are arguments, never baked in).
    options: how the model is built (precision, unroll, hoisting).
  """

  def __init__(self, static: StaticConfig, task: Task,
               options: EngineOptions | None = None,
               platform: str | None = None):
    self.static = static
    self.task = task
    asked = options or EngineOptions()
    #: The options with ``auto`` precision and unroll chosen for
    #: ``platform`` (default: JAX's default backend).
    self.options = asked.resolved(platform)
    platform, arch = _platform_arch(platform, None)
    #: Why this program runs the XLA recurrence although ``pallas`` was
    #: asked, or ``auto`` would have chosen the kernel here (``None``: as
    #: asked, or chosen).
    self.fallback = None
    recurrence = self.options.recurrence
    if recurrence == AUTO:
      recurrence = ("pallas" if _auto_fused(
          platform, arch, self.options.compute_dtype) else "xla")
    if recurrence == "pallas":
      self.fallback = fused.unsupported(
          static.cell, static.batch_size, static.hidden_size,
          dtype=self.options.compute_dtype)
      if self.fallback is not None:
        recurrence = "xla"
        # Asked for by name, the kernel's absence is worth a warning;
        # chosen by auto, it is the group's log line's business.
        logging.getLogger("rnnsweep").log(
            logging.WARNING if asked.recurrence == "pallas" else logging.INFO,
            "recurrence=%s: %s; %s runs the XLA recurrence",
            asked.recurrence, self.fallback, static.label())
    #: The recurrence this program runs: ``xla``, ``xla_vjp`` or
    #: ``pallas``.
    self.recurrence = recurrence
    self.model = models.RecurrentModel(
        cell=static.cell, hidden_size=static.hidden_size,
        num_layers=static.num_layers, output_size=task.output_size,
        vocab_size=task.vocab_size, embed_size=static.embed_size,
        dtype=(jnp.bfloat16 if self.options.compute_dtype == "bfloat16"
               else None), unroll=self.options.unroll,
        hoist_input=self.options.hoist_input, recurrence=recurrence)
    self.input_size = _input_size(static, task)
    self.windows_per_sequence = math.ceil(task.seq_len / static.truncation)

  def zero_carry(self, batch_size: int):
    return models.zero_carry(self.static.cell, self.static.num_layers,
                             batch_size, self.static.hidden_size)

  def flops_per_update(self) -> float:
    """Analytic training FLOPs of one trial's update (one window)."""
    return flops_per_update(self.static, self.task)

  def forward(self, params, carry, inputs: Array, masks: models.DropoutMasks):
    """The model on one window: ``(new_carry, outputs)``."""
    return self.model.apply({"params": params}, carry, inputs, masks)

  def init(self, seed: Array, hp: Mapping[str, Array]) -> TrialState:
    """A fresh trial at step 0: parameters, optimizer state, its values."""
    key = trial_key(seed)
    b = 1
    dummy = (jnp.zeros((b, 1), jnp.int32) if self.task.vocab_size is not None
             else jnp.zeros((b, 1, self.task.input_size), jnp.float32))
    masks = models.no_dropout(batch_size=b, input_size=self.input_size,
                              hidden_size=self.static.hidden_size,
                              num_layers=self.static.num_layers)
    params = self.model.init(init_key(key),
                             self.zero_carry(b), dummy, masks)["params"]
    if HORIZON not in hp:
      if self.static.lr_schedule != "constant":
        raise ValueError(f"lr_schedule {self.static.lr_schedule!r} needs "
                         f"the number of steps it spans (hp[{HORIZON!r}])")
      hp = {**hp, HORIZON: 0.0}
    hp = {n: jnp.asarray(hp[n], jnp.float32) for n in HP_NAMES}
    opt_state = make_optimizer(self.static.optimizer, hp).init(params)
    worst = selection.worst(self.task.selection_mode)
    return TrialState(params=params, opt_state=opt_state,
                      carry=self.zero_carry(self.static.batch_size), key=key,
                      hp=hp, step=jnp.asarray(0, jnp.int32),
                      diverged=jnp.asarray(False),
                      diverged_step=jnp.asarray(-1, jnp.int32),
                      best_params=params,
                      best_value=jnp.asarray(worst, jnp.float32))

  def masks(self, key: Array, hp: Mapping[str, Array], sequence_batch: Array,
            window: Array = 0) -> models.DropoutMasks:
    """One trial's dropout masks for window ``window`` of one batch of
    sequences (only naive recurrent masks change between windows)."""
    naive = self.static.recurrent_dropout_mode == "naive"
    return models.dropout_masks(
        dropout_key(key, sequence_batch), batch_size=self.static.batch_size,
        input_size=self.input_size, hidden_size=self.static.hidden_size,
        num_layers=self.static.num_layers, input_rate=hp["input_dropout"],
        recurrent_rate=hp["recurrent_dropout"],
        output_rate=hp["output_dropout"],
        steps_per_window=self.static.truncation if naive else None,
        window=window)

  def window_loss(self, params, carry, window: Batch,
                  masks: models.DropoutMasks):
    """Weighted mean loss of one window; returns ``(loss, new_carry)``."""
    new_carry, outputs = self.forward(params, carry, window.inputs, masks)
    per_step = self.task.loss(outputs, window.targets)
    total = jnp.sum(window.weights)
    loss = jnp.sum(per_step * window.weights) / jnp.maximum(total, 1e-12)
    return loss, new_carry

  def train_window(self, data_train: Any, data_key: Array, step: Array
                   ) -> tuple[Batch, Array, Array]:
    """The window trained at ``step`` (the same for every trial at that
    step: common random numbers).

    Returns:
      ``(window, sequence_batch, index)``: ``index`` is the window's
      position in its sequence (0: a new batch of sequences starts).
    """
    w = self.static.truncation
    seq_batch, idx = jnp.divmod(step, self.windows_per_sequence)
    full = self.task.train_batch(data_train, batch_key(data_key, seq_batch),
                                 self.static.batch_size)
    pad = self.windows_per_sequence * w - self.task.seq_len
    if pad:
      # Padded steps carry weight 0: they never enter the loss.
      full = jax.tree_util.tree_map(
          lambda a: jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2)),
          full)
    window = jax.tree_util.tree_map(
        lambda a: jax.lax.dynamic_slice_in_dim(a, idx * w, w, axis=1), full)
    return window, seq_batch, idx

  def update(self, state: TrialState, data_train: Any, data_key: Array
             ) -> tuple[TrialState, Array, Array]:
    """One TBPTT update on the window at ``state.step``.

    Returns:
      ``(state, loss, has_targets)``: the loss is NaN once diverged;
      ``has_targets`` is False for a window with nothing to learn (the
      carry advances, the parameters do not).
    """
    # Named scopes (in the HLO's op names only) let a profile say where
    # the time goes (benchmarks/profile_gpu.py): see PROFILE_SCOPES.
    step = state.step
    with jax.named_scope("data_window"):
      window, seq_batch, index = self.train_window(data_train, data_key,
                                                   step)
      carry = carry_handoff(state.carry, index == 0)
    with jax.named_scope("dropout_masks"):
      masks = self.masks(state.key, state.hp, seq_batch, index)
    (loss, new_carry), grads = jax.value_and_grad(
        self.window_loss, has_aux=True)(state.params, carry, window, masks)
    with jax.named_scope("optimizer"):
      tx = make_optimizer(self.static.optimizer, {
          **state.hp,
          "learning_rate": learning_rate(self.static.lr_schedule, state.hp,
                                         step)})
      updates, new_opt = tx.update(grads, state.opt_state, state.params)
      new_params = optax.apply_updates(state.params, updates)
    with jax.named_scope("divergence"):
      has_targets = jnp.sum(window.weights) > 0
      bad = has_targets & ~(jnp.isfinite(loss) & _all_finite(new_params))
      newly = bad & ~state.diverged
      diverged = state.diverged | bad
      take = has_targets & ~diverged
      reported = jnp.where(state.diverged, jnp.nan, loss)
      return state.replace(
          params=_select(take, new_params, state.params),
          opt_state=_select(take, new_opt, state.opt_state),
          carry=_select(diverged, self.zero_carry(self.static.batch_size),
                        new_carry),
          step=step + 1,
          diverged=diverged,
          diverged_step=jnp.where(newly, step, state.diverged_step),
      ), reported, has_targets

  def keep_best(self, state: TrialState, value: Array) -> TrialState:
    """Remembers the parameters if ``value`` (validation) beats the best."""
    better = selection.better(value, state.best_value,
                              self.task.selection_mode)
    take = better & jnp.isfinite(value) & ~state.diverged
    return state.replace(
        best_params=_select(take, state.params, state.best_params),
        best_value=jnp.where(take, value, state.best_value))

  def evaluate(self, params, data: Batch) -> dict[str, Array]:
    """Weighted mean metrics of ``params`` on an evaluation set
    (``[num_batches, B, T, ...]``), without dropout."""
    be = data.inputs.shape[1]
    masks = models.no_dropout(batch_size=be, input_size=self.input_size,
                              hidden_size=self.static.hidden_size,
                              num_layers=self.static.num_layers)

    def one_batch(batch: Batch):
      _, outputs = self.forward(params, self.zero_carry(be), batch.inputs,
                                masks)
      per_step = self.task.step_metrics(outputs, batch.targets)
      sums = {k: jnp.sum(v * batch.weights) for k, v in per_step.items()}
      sums["_weight"] = jnp.sum(batch.weights)
      return sums

    sums = jax.lax.map(one_batch, data)
    sums = jax.tree_util.tree_map(lambda s: jnp.sum(s, axis=0), sums)
    weight = sums.pop("_weight")
    return {k: v / jnp.maximum(weight, 1e-12) for k, v in sums.items()}


#: ``stop_at`` for a slot with no limit within the segment.
NO_LIMIT = np.iinfo(np.int32).max


class Program:
  """The group layer: :class:`OneTrial`'s functions vmapped over K slots,
  jitted, compiled ahead of time once per argument shapes, and counted.

  On several devices the trial axis is sharded over the mesh axis
  :data:`TRIALS_AXIS` (``NamedSharding(mesh, P("trials"))`` for the group
  state, the per-trial values and every ``[K]`` output; the task's data and
  the data key replicated), so K must be a multiple of the device count.
  Trials are independent: the training step has no collectives.

  Args:
    static: shapes and structure shared by every trial.
    task: the task (its data arrays are passed in at call time, not baked
      into the program).
    options: how to build the program.
    devices: the devices the group's slots are spread over (``None``: the
      default device, unsharded).
  """

  def __init__(self, static: StaticConfig, task: Task,
               options: EngineOptions | None = None,
               devices: Sequence[Any] | None = None):
    self.devices = tuple(devices) if devices else None
    self.platform = (self.devices or jax.devices())[0].platform
    self.trial = OneTrial(static, task, options, platform=self.platform)
    self.static = static
    self.task = task
    self.options = self.trial.options
    self._compiled: dict[Any, Compiled] = {}
    # Spread over other processes' devices too (a jax.distributed job):
    # host values must become global arrays before each call.
    self.multi_process = distributed.spans_processes(self.devices)
    if self.devices is None:
      k = rep = None
      jit = lambda f, ins, outs, **kw: _Jitted(jax.jit(f, **kw), None)
    else:
      mesh = jax.sharding.Mesh(np.asarray(self.devices), (TRIALS_AXIS,))
      k = jax.sharding.NamedSharding(mesh,
                                     jax.sharding.PartitionSpec(TRIALS_AXIS))
      rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
      jit = lambda f, ins, outs, **kw: _Jitted(
          jax.jit(f, in_shardings=ins, out_shardings=outs, **kw),
          ins if self.multi_process else None)
    self.replicated = rep
    self.mesh = None if self.devices is None else mesh
    self._init_jit = jit(self._init_group, (k, k), k)
    self._segment_jit = jit(
        self._segment, (k, rep, rep, k, rep), k,
        donate_argnums=(0,) if self.options.donate else ())
    self._evaluate_jit = jit(self._evaluate, (k, rep), k)
    self._keep_best_jit = jit(self._keep_best, (k, k), k)
    self.reset_slot = jit(self._reset_slot, (k, rep, rep, rep), k)
    self.exploit = jit(self._exploit, (k, k, k), k)
    self.compact = jit(self._compact, (k, rep), k)

  @property
  def num_devices(self) -> int:
    """Devices the trial axis is spread over (K must be a multiple)."""
    return len(self.devices) if self.devices else 1

  def put_replicated(self, tree: Any) -> Any:
    """``tree`` on every device of the program (once per group, so the
    data is not copied again at each call)."""
    if self.replicated is None:
      return tree
    if self.multi_process:
      return distributed.place(tree, self.replicated)
    return jax.device_put(tree, self.replicated)

  def to_host(self, tree: Any) -> Any:
    """NumPy copies of ``tree``'s leaves with their whole values (gathered
    from every process of a multi-process program: each must call it)."""
    return distributed.to_host(tree)

  def flops_per_update(self) -> float:
    return self.trial.flops_per_update()

  def chunk(self, k: int) -> int:
    """Slots vmapped together on each device in a group of ``k``."""
    s = self.static
    return self.options.chunk_for(
        k // self.num_devices, self.platform,
        step_macs=s.batch_size * models.GATES[s.cell] * s.hidden_size**2)

  def parts(self, k: int) -> int:
    """Pieces a training segment or an evaluation over ``k`` slots runs
    as, side by side, each from a thread of its own (``1``: one call).

    On one CPU device whose group trains its trials in chunks (a trial's
    matmuls then run on one core, and XLA runs one program's chunks one
    after another), the slots are cut into as many contiguous pieces as
    the cores allow (a CPU split into devices: its share of them; a
    divisor of ``k``, at most one a chunk): two
    executions on one CPU device from two threads run at once (on 2 cores
    a segment of 8 LSTM(128) trials took 0.50-0.78 s in two pieces against
    0.95-1.02 s in one call, benchmarks/RESULTS.md). Each piece runs the
    same per-trial program, so the numbers are the same bit for bit. Never
    on an accelerator, over several devices or processes.
    """
    if (self.platform != "cpu" or self.mesh is not None
        or self.multi_process):
      return 1
    # A CPU split into devices gives each its share of the cores (the
    # groups of other devices train meanwhile).
    cores = placement.usable_cores() // max(1, jax.local_device_count("cpu"))
    most = min(cores, k // self.chunk(k))
    return max(p for p in range(1, max(most, 1) + 1) if k % p == 0)

  def _run(self, jitted: "_Jitted", compiled: "Compiled", args: tuple,
           slotted: tuple[int, ...]) -> Any:
    """``compiled`` on ``args``, whose arguments at ``slotted`` have the
    group's K slots on their leading axis (the rest are shared): in one
    call, or (:meth:`parts`) ``compiled`` being one piece's program, on
    each piece side by side from threads, its outputs joined back along
    the slot axis."""
    p = self.parts(np.shape(jax.tree_util.tree_leaves(args[slotted[0]])[0])[0])
    if p == 1:
      return compiled.executable(*jitted.placed(args))
    pieces = _split_slots(p)(tuple(args[i] for i in slotted))

    def run(piece):
      call = list(args)
      for i, value in zip(slotted, piece):
        call[i] = value
      return jax.block_until_ready(
          compiled.executable(*jitted.placed(tuple(call))))

    with concurrent.futures.ThreadPoolExecutor(
        p, thread_name_prefix="rnnsweep-part") as pool:
      outs = list(pool.map(run, pieces))
    return _join_slots(tuple(outs))

  def _piece(self, tree: Any) -> Any:
    """The shapes of one of :meth:`parts`' pieces of ``tree``'s slots
    (``tree`` itself when it runs in one call)."""
    k = np.shape(jax.tree_util.tree_leaves(tree)[0])[0]
    p = self.parts(k)
    if p == 1:
      return tree
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct((k // p,) + tuple(np.shape(a))[1:],
                                       a.dtype), tree)

  # -- compiled executables -----------------------------------------------------

  def _executable(self, name: str, jitted: Any, args: tuple,
                  static: tuple = (), lowered: Any = None) -> "Compiled":
    """``jitted`` compiled ahead of time for these argument shapes on first
    use and kept, with its compile time and memory analysis (group sizing
    reads them, and the run then uses the same executable). ``static``:
    trailing static positional arguments. ``args`` may be arrays or their
    ``jax.ShapeDtypeStruct``s; ``lowered``: the program already lowered for
    them (its trace is not repeated). A program another thread is compiling
    (:meth:`prepare`) is waited for, not compiled twice; a failed compile
    raises here for every caller and is not kept."""
    sig = jax.tree_util.tree_map(
        lambda a: (np.shape(a), str(getattr(a, "dtype", type(a)))), args)
    key = (name, static, jax.tree_util.tree_structure(args),
           tuple(jax.tree_util.tree_leaves(sig)))
    with _LOCK:
      found = self._compiled.get(key)
      if found is None:
        found = self._compiled[key] = concurrent.futures.Future()
        mine = True
      else:
        mine = False
    if not mine:
      return found.result()
    start = time.perf_counter()
    try:
      executable = (lowered or jitted.lower(*args, *static)).compile()
    except BaseException as e:
      with _LOCK:
        del self._compiled[key]
      found.set_exception(e)
      raise
    found.set_result(Compiled(executable, time.perf_counter() - start,
                              _program_bytes(executable)))
    return found.result()

  def prepare(self, seeds: Any, hp: Mapping[str, Any], data: Any,
              data_key: Array) -> list[concurrent.futures.Future]:
    """Starts compiling, each in its own thread, every program a group of
    these trials runs: init, the training segment, evaluation (of the
    current and of the best parameters, on ``data.val`` and
    ``data.test``) and the best-parameter update. XLA compiles with the
    interpreter released, so they compile side by side (and, on an
    accelerator, alongside what the device already runs) instead of one
    after another as each is first called. The calls that need them wait
    for them; nothing else changes (the same executables).

    Args:
      seeds: ``int32[K]``, the arrays :meth:`init` will be given.
      hp: ``{name: float32[K]}``, likewise.
      data: the task's data (``.train``, ``.val``, ``.test``) on the device.
      data_key: the sweep's data key.

    Returns:
      One future a program (done when it is compiled; it holds its
      :class:`Compiled` or raises its compile error), or none in a
      multi-process program, where each is compiled as it is first called.
    """
    if self.multi_process:
      return []
    # The group state's shapes from init's own lowering, which its compile
    # then uses (a separate eval_shape would trace init once more).
    lowered = self._init_jit.lower(seeds, hp)
    state = lowered.out_info
    value = jax.ShapeDtypeStruct(np.shape(seeds), np.float32)
    jobs = {"init": lambda: self._executable(
                "init", self._init_jit, (seeds, hp), lowered=lowered),
            "segment": lambda: self.compiled_segment(state, data.train,
                                                     data_key),
            # The test pass waits for the validation pass's executable
            # where the splits' shapes agree, and shares it.
            "validation": lambda: self.compiled_evaluate(state, data.val),
            "test": lambda: self.compiled_evaluate(state, data.test,
                                                   best=True),
            "keep_best": lambda: self.compiled_keep_best(state, value)}
    return [_in_thread(f"rnnsweep-compile-{name}", job)
            for name, job in jobs.items()]

  @staticmethod
  def _stop_at(state: GroupState, stop_at: Any) -> np.ndarray:
    k = np.shape(state.trials.step)[0]
    if stop_at is None:
      return np.full((k,), NO_LIMIT, np.int32)
    return np.asarray(stop_at, np.int32).reshape(k)

  def compiled_segment(self, state: GroupState, data_train: Any,
                       data_key: Array) -> "Compiled":
    """The training segment's executable for these shapes (every segment
    length shares it; run in :meth:`parts`, one piece's)."""
    state = self._piece(state)
    return self._executable(
        "segment", self._segment_jit,
        (state, data_train, data_key, self._stop_at(state, None),
         np.int32(1)))

  def compiled_init(self, seeds: Any, hp: Mapping[str, Any]
                    ) -> "Compiled":
    """The executable of :meth:`init` for these shapes."""
    return self._executable("init", self._init_jit, (seeds, hp))

  def compiled_keep_best(self, state: GroupState, value: Any
                         ) -> "Compiled":
    """The executable of :meth:`keep_best` for these shapes."""
    return self._executable("keep_best", self._keep_best_jit,
                            (state, value))

  def init(self, seeds: Any, hp: Mapping[str, Any]) -> GroupState:
    """A fresh group: slot ``i`` holds trial ``(seeds[i], hp[n][i])``.

    Args:
      seeds: ``int32[K]`` trial seeds.
      hp: ``{name: float32[K]}`` the vectorised hyperparameters
        (:func:`hparam_arrays`).
    """
    return self.compiled_init(seeds, hp).executable(
        *self._init_jit.placed((seeds, hp)))

  def keep_best(self, state: GroupState, value: Any) -> GroupState:
    """Each slot's best-so-far parameters and value updated with its
    validation ``value`` (``float32[K]``; NaN: not a candidate; a NumPy
    array, as :meth:`prepare` compiled it for)."""
    return self.compiled_keep_best(state, value).executable(
        *self._keep_best_jit.placed((state, value)))

  def compiled_evaluate(self, state: GroupState, data: Batch,
                        best: bool = False) -> "Compiled":
    """The evaluation executable for these shapes (``best``: of each
    trial's best parameters, as the test split is run). It takes the
    parameters, not the state, so the validation pass and the test pass
    share one executable where their splits have the same shape (every
    built-in task's do): one compile fewer a group."""
    params = self._piece(_eval_params(state, best))
    return self._executable("evaluate", self._evaluate_jit, (params, data))

  def segment(self, state: GroupState, data_train: Any, data_key: Array, *,
              num_steps: int, stop_at: Any = None
              ) -> tuple[GroupState, SegmentMetrics]:
    """Trains every slot up to ``num_steps`` more updates.

    ``num_steps`` and ``stop_at`` are runtime values: one executable serves
    every segment length (a shorter last segment, a short timing probe).

    Args:
      state: the group's state (donated when ``options.donate``).
      data_train: the task's training data (on the device).
      data_key: the sweep's data key (:func:`data_key`).
      num_steps: iterations of the loop, ``>= 0``.
      stop_at: ``int32[K]``: a slot trains only while its own step is
        below this (an empty slot: its step; ``None``: no limit).
    """
    exe = self.compiled_segment(state, data_train, data_key)
    args = (state, data_train, data_key, self._stop_at(state, stop_at),
            np.int32(num_steps))
    return self._run(self._segment_jit, exe, args, (0, 3))

  def evaluate(self, state: GroupState, data: Batch, *, best: bool = False
               ) -> dict[str, Array]:
    """Weighted mean metrics ``{name: [K]}`` on an evaluation set, of the
    current parameters or (``best=True``) of each trial's best ones."""
    exe = self.compiled_evaluate(state, data, best)
    args = (_eval_params(state, best), data)
    return self._run(self._evaluate_jit, exe, args, (0,))

  # -- K slots (the only vmap) ----------------------------------------------------

  def _init_group(self, seeds: Array, hp: Mapping[str, Array]) -> GroupState:
    _count_trace("init")
    # lax.map, not vmap: batched QR in the orthogonal initialiser deadlocks
    # jaxlib 0.10.2's CPU backend.
    trials = jax.lax.map(lambda a: self.trial.init(*a), (seeds, dict(hp)))
    return GroupState(trials=trials)

  def _segment(self, state: GroupState, data_train: Any, data_key: Array,
               stop_at: Array, num_steps: Array
               ) -> tuple[GroupState, SegmentMetrics]:
    _count_trace("segment")

    def one(data_train, data_key, num_steps, trial: TrialState, stop: Array):
      # One slot's whole segment (vmapped, or run chunk by chunk).
      def body(_, carry):
        trial, loss_sum, count = carry
        new, loss, has_targets = self.trial.update(trial, data_train,
                                                   data_key)
        go = trial.step < stop
        counted = go & has_targets
        return (_select(go, new, trial),
                loss_sum + jnp.where(counted, loss, 0.0),
                count + counted.astype(jnp.int32))

      return jax.lax.fori_loop(
          0, num_steps, body,
          (trial, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)))

    trials, loss_sum, count = self._over_slots(
        one, (state.trials, stop_at), (data_train, data_key, num_steps))
    mean = jnp.where(count > 0, loss_sum / jnp.maximum(count, 1), jnp.nan)
    return GroupState(trials=trials), SegmentMetrics(mean, count)

  def _over_slots(self, fn: Callable[..., Any], slots: tuple,
                  shared: tuple = ()) -> Any:
    """``fn(*shared, *slot)`` over the leading K axis of each of
    ``slots``: vmapped, or in chunks of ``options.trial_chunk`` one after
    another. ``shared``: values every slot reads (replicated). Sharded
    over several devices, each device chunks its own slots."""
    k = jax.tree_util.tree_leaves(slots)[0].shape[0]
    chunk = self.chunk(k)
    local = k // self.num_devices

    def run(shared, slots):
      one = lambda *slot: fn(*shared, *slot)
      if chunk == local:
        return jax.vmap(one)(*slots)
      return jax.lax.map(lambda a: one(*a), slots,
                         batch_size=None if chunk == 1 else chunk)

    if self.mesh is None or chunk == local:
      return run(shared, slots)
    spec = jax.sharding.PartitionSpec(TRIALS_AXIS)
    return jax.shard_map(
        run, mesh=self.mesh, in_specs=(jax.sharding.PartitionSpec(), spec),
        out_specs=spec, check_vma=False)(shared, slots)

  def _keep_best(self, state: GroupState, value: Array) -> GroupState:
    _count_trace("keep_best")
    return state.replace(
        trials=jax.vmap(self.trial.keep_best)(state.trials, value))

  def _evaluate(self, params: Any, data: Batch) -> dict[str, Array]:
    _count_trace("evaluate")
    return self._over_slots(lambda d, p: self.trial.evaluate(p, d),
                            (params,), (data,))

  def _reset_slot(self, state: GroupState, slot: Array, seed: Array,
                  hp: Mapping[str, Array]) -> GroupState:
    """A fresh trial (``seed``, ``hp``) written into ``slot``: new
    parameters, optimizer state, key and values, its step back at 0. The
    other slots are untouched. ``slot`` is a traced index, so refilling
    any slot reuses one executable."""
    _count_trace("reset_slot")
    fresh = self.trial.init(seed, hp)
    return GroupState(trials=jax.tree_util.tree_map(
        lambda all_, one: jax.lax.dynamic_update_index_in_dim(
            all_, one.astype(all_.dtype), slot, 0),
        state.trials, fresh))

  def _compact(self, state: GroupState, rows: Array) -> GroupState:
    """A smaller group: slot ``i`` of the result is slot ``rows[i]`` of
    ``state`` (its whole state, bit for bit). One program per pair of
    sizes."""
    _count_trace("compact")
    return GroupState(trials=jax.tree_util.tree_map(lambda a: a[rows],
                                                    state.trials))

  def _exploit(self, state: GroupState, sources: Array,
               hp: Mapping[str, Array]) -> GroupState:
    """PBT's exploit step as a gather along the trial axis: slot ``i``
    takes the parameters, optimizer state, carry and divergence flags of
    slot ``sources[i]`` (itself: unchanged) and the values ``hp[name][i]``.
    Each slot keeps its own key, step and best-so-far record."""
    _count_trace("exploit")
    t = state.trials
    take = lambda tree: jax.tree_util.tree_map(lambda a: a[sources], tree)
    return GroupState(trials=t.replace(
        params=take(t.params), opt_state=take(t.opt_state),
        carry=take(t.carry), diverged=take(t.diverged),
        diverged_step=take(t.diverged_step),
        hp={n: jnp.asarray(hp[n], jnp.float32) for n in t.hp}))


@functools.lru_cache(maxsize=None)
def _split_slots(p: int) -> Callable[[Any], tuple]:
  """A jitted ``tree -> p trees``, each a contiguous piece of every leaf's
  leading (slot) axis."""

  def split(tree):
    k = jax.tree_util.tree_leaves(tree)[0].shape[0]
    m = k // p
    return tuple(jax.tree_util.tree_map(lambda a, j=j: a[j * m:(j + 1) * m],
                                        tree) for j in range(p))
  return jax.jit(split)


@jax.jit
def _join_slots(trees: tuple) -> Any:
  """The pieces of :func:`_split_slots` joined back along the slot axis."""
  return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *trees)


def _eval_params(state: GroupState, best: bool) -> Any:
  """The ``[K]`` parameters an evaluation runs: each slot's current ones,
  or (``best``) its best so far (arrays or their shapes)."""
  return state.trials.best_params if best else state.trials.params


def _in_thread(name: str, job: Callable[[], Any]
               ) -> concurrent.futures.Future:
  """``job()`` started in a thread of its own named ``name``: a future of
  its result or error."""
  future = concurrent.futures.Future()

  def run():
    try:
      future.set_result(job())
    except BaseException as e:  # pylint: disable=broad-except
      future.set_exception(e)

  threading.Thread(target=run, name=name, daemon=True).start()
  return future


class _Jitted:
  """A jitted function whose host-value arguments are first made global
  arrays of its input shardings (``shardings``; ``None`` in one process,
  where JAX places them itself)."""

  def __init__(self, fn: Any, shardings: tuple | None):
    self.fn, self.shardings = fn, shardings

  def placed(self, args: tuple) -> tuple:
    """``args`` ready for the function or its compiled executable."""
    if self.shardings is None:
      return tuple(args)
    n = len(self.shardings)
    return tuple(distributed.place(a, s) for a, s in
                 zip(args[:n], self.shardings)) + tuple(args[n:])

  def __call__(self, *args):
    return self.fn(*self.placed(args))

  def lower(self, *args):
    return self.fn.lower(*self.placed(args))


class Compiled(NamedTuple):
  """A compiled program (training segment or evaluation) for one group size.

  Attributes:
    executable: the callable (the jitted function's dynamic arguments).
    compile_seconds: wall time to trace, lower and compile it (or load it
      from the persistent compilation cache).
    bytes: device memory the program needs while it runs (arguments,
      outputs and temporaries; donated buffers counted once), or ``None``
      when the backend does not say.
  """

  executable: Any
  compile_seconds: float
  bytes: int | None


def state_shape(prog: Program, seeds: Any, hp: Mapping[str, Any]) -> Any:
  """The shapes and dtypes of ``prog.init(seeds, hp)``'s state, for any
  number of slots (a checkpoint's), whatever the program's devices."""
  return jax.eval_shape(prog._init_group, seeds, hp)  # pylint: disable=protected-access


def _program_bytes(executable) -> int | None:
  try:
    mem = executable.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None  # some backends do not implement it
  if mem is None:
    return None
  return int(mem.argument_size_in_bytes + mem.output_size_in_bytes +
             mem.temp_size_in_bytes - mem.alias_size_in_bytes)


def is_out_of_memory(error: BaseException) -> bool:
  """Whether an exception is XLA's RESOURCE_EXHAUSTED (device memory)."""
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


#: Programs kept by :func:`get_program`, least recently used dropped first.
#: Each compiled program holds memory mappings of its machine code (on a
#: CPU about 900 per static configuration, all its executables together),
#: and the kernel allows a process 65,530 (``vm.max_map_count``): a process
#: that went through a hundred configurations failed to compile with
#: "LLVM compilation error: Cannot allocate memory" and crashed. A dropped
#: program is compiled again if it is needed again (or loaded from the
#: persistent compilation cache).
MAX_CACHED_PROGRAMS = 32
_PROGRAMS: collections.OrderedDict[tuple, Program] = collections.OrderedDict()


def shard_devices(devices: Sequence[Any] | None) -> tuple | None:
  """The devices a program shards its slots over, or ``None`` for the
  unsharded program on the default device (also what one device equal to
  the default device means)."""
  if not devices or list(devices) == jax.devices()[:1]:
    return None
  return tuple(devices)


def get_program(static: StaticConfig, task: Task,
                options: EngineOptions | None = None,
                devices: Sequence[Any] | None = None) -> Program:
  """The cached :class:`Program` for this static config, task config,
  engine options and devices (at most :data:`MAX_CACHED_PROGRAMS` kept;
  see :func:`shard_devices`)."""
  options = options or EngineOptions()
  devices = shard_devices(devices)
  key = (static, task.cache_key(), options,
         tuple(d.id for d in devices) if devices else None)
  with _LOCK:
    if key not in _PROGRAMS:
      _PROGRAMS[key] = Program(static, task, options, devices)
      while len(_PROGRAMS) > MAX_CACHED_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    _PROGRAMS.move_to_end(key)
    return _PROGRAMS[key]


def clear_programs() -> None:
  """Forgets every cached program and JAX's in-memory compilations (the
  next group compiles again; benchmarks use this to time compiles)."""
  with _LOCK:
    _PROGRAMS.clear()
  jax.clear_caches()


def _horizon(params_list: Sequence[Mapping[str, Any]], horizon: int | None
             ) -> float:
  if horizon is None:
    if any(p.get("lr_schedule", "constant") != "constant"
           for p in params_list):
      raise ValueError("a learning rate schedule needs horizon= (the "
                       "number of steps it spans)")
    return 0.0
  if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
    raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
  return float(horizon)


def hparam_arrays(params_list: Sequence[Mapping[str, Any]], *,
                  horizon: int | None = None) -> dict[str, np.ndarray]:
  """Per-trial values as ``{name: float32[K]}``.

  Args:
    params_list: each trial's resolved parameters.
    horizon: the steps a learning rate schedule spans (the sweep's
      ``steps``); only needed when a trial has one.
  """
  h = _horizon(params_list, horizon)
  return {n: np.asarray([h if n == HORIZON else p[n] for p in params_list],
                        np.float32) for n in HP_NAMES}


def trial_hparams(params: Mapping[str, Any], *, horizon: int | None = None
                  ) -> dict[str, np.float32]:
  """One trial's values as float32 scalars (for a slot)."""
  return {n: v[0] for n, v in hparam_arrays([params], horizon=horizon).items()}


def seed_array(seeds: Sequence[int]) -> np.ndarray:
  """Trial seeds as ``int32[K]`` (seeds lie in ``[0, 2**31)``)."""
  return np.asarray(seeds, np.int32)
