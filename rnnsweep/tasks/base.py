"""The task interface: data, loss and metrics for ONE trial.

A task hands the engine fixed-length sequences. Every sequence carries a
per-step target and a per-step weight; the loss and every metric are
weighted means over steps. A next-token task weights every step; a
sequence -> value or sequence -> label task weights only the step where the
answer is due. So the engine has one code path for all tasks, and adding a
task is one small file that subclasses :class:`Task`.

All methods that take arrays are pure JAX functions traced inside the
engine's jit; data lives on the device and batches are cut inside jit.
"""

from __future__ import annotations

import abc
import functools
import json
import math
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnsweep import space as space_lib

Array = jax.Array


class Batch(NamedTuple):
  """Sequences with per-step targets and weights.

  Attributes:
    inputs: ``[B, L]`` int tokens or ``[B, L, F]`` float features.
    targets: ``[B, L]`` int labels or ``[B, L, O]`` float values.
    weights: ``[B, L]`` float; 0 where no loss is taken.
  """

  inputs: Array
  targets: Array
  weights: Array


class TaskData(NamedTuple):
  """What a task keeps on the device.

  Attributes:
    train: any pytree of arrays :meth:`Task.train_batch` cuts batches from.
    val: the validation set as a :class:`Batch` of shape ``[NB, BE, L, ...]``
      (NB eval batches of BE sequences; padding sequences have weight 0).
    test: the held-out test set, same layout. Selection never reads it:
      each trial's best-validation parameters are evaluated on it once.
  """

  train: Any
  val: Batch
  test: Batch


def eval_batches(inputs: np.ndarray, targets: np.ndarray,
                 weights: np.ndarray, max_batch: int = 256) -> Batch:
  """Splits N evaluation sequences into ``[NB, BE, ...]`` with zero-weight
  padding, NB = ceil(N / max_batch), BE = ceil(N / NB)."""
  n = inputs.shape[0]
  nb = math.ceil(n / max_batch)
  be = math.ceil(n / nb)
  pad = nb * be - n

  def shape(a):
    a = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)])
    return jnp.asarray(a.reshape((nb, be) + a.shape[1:]))

  return Batch(shape(inputs), shape(targets), shape(weights))


class Task(abc.ABC):
  """Base class of every task.

  Subclasses set the attributes below in ``__init__`` and implement the
  abstract methods.

  Attributes:
    name: registry name, e.g. ``"lm"``.
    seq_len: L, time steps per sequence.
    vocab_size: token vocabulary for token inputs, else ``None``.
    input_size: F for float-feature inputs, else ``None``.
    output_size: head width.
    selection_metric: validation metric that ranks trials.
    selection_mode: ``"min"`` or ``"max"``.
  """

  name: str
  seq_len: int
  vocab_size: int | None = None
  input_size: int | None = None
  output_size: int
  selection_metric: str
  selection_mode: str = "min"

  # -- data -----------------------------------------------------------------

  @abc.abstractmethod
  def data(self) -> TaskData:
    """Device arrays (built once per task object)."""

  @abc.abstractmethod
  def train_batch(self, train: Any, key: Array, batch_size: int) -> Batch:
    """Cuts (or generates) one training batch of ``[B, L, ...]`` sequences.

    Called inside jit with the sweep's shared data key, so every trial of a
    sweep sees the same batches (common random numbers).
    """

  # -- loss and metrics (per step, unweighted) -------------------------------

  @abc.abstractmethod
  def loss(self, outputs: Array, targets: Array) -> Array:
    """Per-step training loss ``[B, T]`` from head outputs ``[B, T, O]``."""

  @abc.abstractmethod
  def step_metrics(self, outputs: Array, targets: Array) -> dict[str, Array]:
    """Per-step metrics, each ``[B, T]``; the engine takes weighted means."""

  def derived_metrics(self, means: Mapping[str, float]) -> dict[str, float]:
    """Metrics computed from the weighted means (e.g. perplexity)."""
    return {}

  # -- description --------------------------------------------------------------

  def check_batch_size(self, batch_size: int) -> None:
    """Raises ``ValueError`` if the training data cannot fill one batch."""

  def base_params(self) -> dict[str, Any]:
    """Hyperparameter defaults this task overrides (a space may override
    them again)."""
    return {}

  @abc.abstractmethod
  def default_space(self) -> space_lib.Space:
    """A search space that makes sense for this task."""

  def presets(self) -> dict[str, space_lib.Space]:
    """Named search spaces for this task; ``"default"`` is always there.

    ``seed_grid`` is the seed method's example grid: learning rates 0.01,
    0.001, 0.0001 x batch sizes 32, 64 x 50 or 100 hidden units (12 models
    in 4 static buckets, one program each; meant for ``sampler="grid"``).
    """
    return {"default": self.default_space(), "cells": space_lib.Space({
        "cell": space_lib.Choice(["simple", "lstm", "gru"]),
        "learning_rate": space_lib.Choice([1e-3, 3e-3, 1e-2]),
    }), "seed_grid": space_lib.Space({
        "learning_rate": space_lib.Choice([1e-2, 1e-3, 1e-4]),
        "batch_size": space_lib.Choice([32, 64]),
        "hidden_size": space_lib.Choice([50, 100]),
    })}

  def preset(self, name: str) -> space_lib.Space:
    presets = self.presets()
    if name not in presets:
      raise ValueError(f"task {self.name!r} has no preset {name!r}; its "
                       f"presets: {sorted(presets)}")
    return presets[name]

  @abc.abstractmethod
  def config(self) -> dict[str, Any]:
    """The task's own settings (JSON-able); equal configs share programs."""

  def cache_key(self) -> tuple:
    return (type(self).__name__, json.dumps(self.config(), sort_keys=True))

  def describe(self) -> str:
    return f"{self.name} {self.config()}"


def cross_entropy(outputs: Array, targets: Array) -> Array:
  """Per-step cross-entropy ``[B, T]`` of logits ``[B, T, C]`` and integer
  targets ``[B, T]``.

  The target's log-probability is picked by a comparison with the class
  index, not gathered: the same numbers (one term of the sum is non-zero),
  and the gradient is elementwise, where a gather's is a scatter-add into
  a zero ``[K, B, T, C]`` array for a vmapped group (a scatter kernel and
  its atomics on a GPU).
  """
  logp = jax.nn.log_softmax(outputs.astype(jnp.float32), axis=-1)
  picked = targets[..., None] == jnp.arange(logp.shape[-1])
  return -jnp.sum(jnp.where(picked, logp, 0.0), axis=-1)


def classification_metrics(outputs: Array, targets: Array
                           ) -> dict[str, Array]:
  """Per-step accuracy and cross-entropy."""
  return {"accuracy": (jnp.argmax(outputs, -1) == targets).astype(
      jnp.float32), "cross_entropy": cross_entropy(outputs, targets)}


def squared_error(outputs: Array, targets: Array) -> Array:
  """Per-step squared error ``[B, T]``, averaged over the value axis."""
  return jnp.mean((outputs.astype(jnp.float32) - targets) ** 2, axis=-1)


class GeneratedTask(Task):
  """A synthetic task: training batches are generated inside jit from the
  sweep's data key (an endless stream); validation and test are fixed sets
  of ``num_val`` sequences from two streams of ``val_seed`` that no
  training key reaches."""

  num_val: int
  val_seed: int

  @abc.abstractmethod
  def generate(self, key: Array, batch_size: int) -> Batch:
    """``batch_size`` fresh sequences."""

  @functools.cached_property
  def _data(self) -> TaskData:
    root = jax.random.fold_in(jax.random.PRNGKey(self.val_seed), 0x5EED)
    val, test = (self.generate(jax.random.fold_in(root, stream),
                               self.num_val) for stream in (1, 2))
    return TaskData(train=jnp.zeros((), jnp.float32),
                    val=eval_batches(*(np.asarray(a) for a in val)),
                    test=eval_batches(*(np.asarray(a) for a in test)))

  def data(self) -> TaskData:
    return self._data

  def train_batch(self, train, key, batch_size):
    del train  # generated on the fly
    return self.generate(key, batch_size)
