"""Tasks on a fixed set of sequences: classification and forecasting.

Both hold every split on the device and draw training batches by random
index with the sweep's shared data key. Built-in data come from well-kept
packages that ship them inside their wheels (``pip install
'rnnsweep[datasets]'``); nothing is downloaded:

- ``classify``, dataset ``digits``: scikit-learn's 1797 handwritten digits,
  8x8 images read row by row (8 steps x 8 features), 10 classes.
- ``classify``, dataset ``japanese_vowels``: sktime's copy of the UCR/UEA
  JapaneseVowels set, 640 utterances of 7 to 29 steps x 12 cepstral
  coefficients, 9 speakers; variable length (padding steps carry no weight,
  and the label is read at each sequence's own last step).
- ``forecast``, dataset ``sunspots``: statsmodels' yearly sunspot numbers
  1700-2008 (309 values); windows of past values -> the next value.

Or the user's own file (``data_path``; layouts in :mod:`files`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnsweep import space as space_lib
from rnnsweep.tasks import files
from rnnsweep.tasks.base import (Batch, Task, TaskData, classification_metrics,
                                 cross_entropy, eval_batches, squared_error)

SPLITS = (0.70, 0.15, 0.15)


def _need(module: str, dataset: str):
  try:
    return __import__(module, fromlist=["_"])
  except ImportError:
    raise ValueError(f"dataset {dataset!r} needs the optional package "
                     f"{module.split('.')[0]!r}: pip install "
                     f"'rnnsweep[datasets]'") from None


class SequenceSetTask(Task):
  """N fixed sequences per split, each with per-step targets and weights.

  Subclasses build ``self.splits`` (train, val, test :class:`Batch` of
  numpy arrays) and ``self.source`` (what to name in errors).
  """

  splits: tuple[Batch, Batch, Batch]
  source: str

  def _check_splits(self) -> None:
    for name, b in zip(("training", "validation", "test"), self.splits):
      if b.inputs.shape[0] == 0:
        raise ValueError(f"{self.source}: the {name} split is empty")

  @property
  def num_train(self) -> int:
    return int(self.splits[0].inputs.shape[0])

  def check_batch_size(self, batch_size: int) -> None:
    if batch_size > self.num_train:
      raise ValueError(
          f"{self.source}: the training split has {self.num_train} "
          f"sequences, fewer than one batch (batch_size {batch_size})")

  @functools.cached_property
  def _data(self) -> TaskData:
    train, val, test = self.splits
    return TaskData(train=Batch(*(jnp.asarray(a) for a in train)),
                    val=eval_batches(*val), test=eval_batches(*test))

  def data(self) -> TaskData:
    return self._data

  def train_batch(self, train, key, batch_size):
    idx = jax.random.randint(key, (batch_size,), 0, train.inputs.shape[0])
    return Batch(train.inputs[idx], train.targets[idx], train.weights[idx])


def _split_indices(n: int, seed: int) -> tuple[np.ndarray, ...]:
  """A seeded permutation cut 70/15/15."""
  perm = np.random.default_rng(seed).permutation(n)
  a = int(round(n * SPLITS[0]))
  b = a + int(round(n * SPLITS[1]))
  return perm[:a], perm[a:b], perm[b:]


def _standardize(x: np.ndarray, real: np.ndarray, train_idx: np.ndarray):
  """Per-feature mean/std over the real steps of the training split."""
  sel = x[train_idx][real[train_idx]]
  mean, std = sel.mean(0), sel.std(0)
  std = np.where(std > 0, std, 1.0)
  return np.where(real[..., None], (x - mean) / std, 0.0).astype(np.float32)


class Classify(SequenceSetTask):
  """Sequence -> label; metrics accuracy (selection, max) and cross-entropy.

  Args:
    dataset: ``digits`` or ``japanese_vowels`` (ignored with ``data_path``).
    data_path: your own ``.npz`` / ``.csv`` (see :mod:`files`).
    split_seed: seed of the train/validation/test split.
  """

  name = "classify"
  selection_metric = "accuracy"
  selection_mode = "max"
  DATASETS = ("digits", "japanese_vowels")

  def __init__(self, dataset: str = "digits", data_path: str | None = None,
               split_seed: int = 0):
    self.dataset = None if data_path else dataset
    self.data_path = data_path
    self.split_seed = split_seed
    if data_path:
      x, lengths, y, num_classes = files.load_labelled(data_path)
      self.source = data_path
      split = _split_indices(len(y), split_seed)
    elif dataset == "digits":
      x, lengths, y, num_classes, split = self._digits(split_seed)
    elif dataset == "japanese_vowels":
      x, lengths, y, num_classes, split = self._vowels(split_seed)
    else:
      raise ValueError(f"classify: dataset must be one of "
                       f"{list(self.DATASETS)}, got {dataset!r}")
    self.num_classes = int(num_classes or y.max() + 1)
    self.output_size = self.num_classes
    self.input_size = int(x.shape[2])
    self.seq_len = int(x.shape[1])
    max_len = x.shape[1]
    real = np.arange(max_len)[None, :] < lengths[:, None]
    x = _standardize(x, real, split[0])
    targets = np.broadcast_to(y[:, None], (len(y), max_len)).astype(np.int32)
    weights = (np.arange(max_len)[None, :] == lengths[:, None] - 1).astype(
        np.float32)
    self.splits = tuple(Batch(x[i], targets[i], weights[i]) for i in split)
    self.class_counts = np.bincount(y[split[0]], minlength=self.num_classes)
    self._check_splits()

  def _digits(self, split_seed):
    self.source = "dataset 'digits'"
    d = _need("sklearn.datasets", "digits").load_digits()
    x = d.images.astype(np.float32)  # [1797, 8, 8]: rows are time steps
    y = d.target.astype(np.int64)
    return x, np.full(len(y), 8), y, 10, _split_indices(len(y), split_seed)

  def _vowels(self, split_seed):
    self.source = "dataset 'japanese_vowels'"
    datasets = _need("sktime.datasets", "japanese_vowels")
    parts = [datasets.load_japanese_vowels(split=s, return_X_y=True)
             for s in ("train", "test")]
    series, labels = [], []
    for frame, y in parts:
      for i in range(len(frame)):
        series.append(np.stack([np.asarray(frame.iloc[i, c], np.float32)
                                for c in range(frame.shape[1])], axis=1))
      labels.append(np.asarray(y).astype(int) - 1)
    lengths = np.array([len(s) for s in series])
    x = np.zeros((len(series), lengths.max(), series[0].shape[1]),
                 np.float32)
    for i, s in enumerate(series):
      x[i, :len(s)] = s
    y = np.concatenate(labels)
    # The official test set stays the test set; validation is drawn from the
    # official training set.
    n_train = len(parts[0][1])
    perm = np.random.default_rng(split_seed).permutation(n_train)
    n_val = int(round(n_train * 0.2))
    split = (perm[n_val:], perm[:n_val], np.arange(n_train, len(y)))
    return x, lengths, y, 9, split

  def loss(self, outputs, targets):
    return cross_entropy(outputs, targets)

  def step_metrics(self, outputs, targets):
    return classification_metrics(outputs, targets)

  @property
  def chance_accuracy(self) -> float:
    """Accuracy of always predicting the commonest training class."""
    return float(self.class_counts.max() / self.class_counts.sum())

  def base_params(self):
    return {"truncation": self.seq_len}

  def default_space(self):
    return space_lib.Space({
        "cell": space_lib.Choice(["lstm", "gru"]),
        "hidden_size": 64, "batch_size": 32,
        "learning_rate": space_lib.LogUniform(1e-3, 3e-2),
        "output_dropout": space_lib.Uniform(0.0, 0.3),
    })

  def config(self) -> dict[str, Any]:
    return {"dataset": self.dataset, "data_path": self.data_path,
            "split_seed": self.split_seed, "shape": [
                sum(b.inputs.shape[0] for b in self.splits), self.seq_len,
                self.input_size], "num_classes": self.num_classes}


class Forecast(SequenceSetTask):
  """Windows of past values -> the next value(s); metrics on the original
  scale: MSE (selection) and MAE.

  The series is split by time, never shuffled: the first 70% of steps
  train, the next 15% validate, the last 15% test. Normalisation (per
  channel) uses the training steps only. Training windows predict the next
  value at every step (all their targets lie in the training part);
  validation and test windows end just before a target in their own part
  and are scored on that one forecast. Inputs may reach back across a split
  boundary: that is the past, which a forecaster is allowed to see.

  Args:
    dataset: ``sunspots`` (ignored with ``data_path``).
    data_path: your own series (see :mod:`files`).
    seq_len: window length.
  """

  name = "forecast"
  selection_metric = "mse"
  selection_mode = "min"
  DATASETS = ("sunspots",)

  def __init__(self, dataset: str = "sunspots", data_path: str | None = None,
               seq_len: int = 24):
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
      raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")
    self.dataset = None if data_path else dataset
    self.data_path = data_path
    self.seq_len = seq_len
    if data_path:
      series = files.load_series(data_path)
      self.source = data_path
    elif dataset == "sunspots":
      sm = _need("statsmodels.api", "sunspots")
      series = sm.datasets.sunspots.load_pandas().data[
          "SUNACTIVITY"].to_numpy(np.float32)[:, None]
      self.source = "dataset 'sunspots'"
    else:
      raise ValueError(f"forecast: dataset must be one of "
                       f"{list(self.DATASETS)}, got {dataset!r}")
    t, c = series.shape
    self.input_size = self.output_size = c
    a = int(t * SPLITS[0])
    b = a + int(t * SPLITS[1])
    if a - seq_len < 1 or b - a < 1 or t - b < 1 or a < seq_len + 1:
      raise ValueError(f"{self.source}: {t} steps are too few for windows "
                       f"of seq_len {seq_len} in a 70/15/15 split by time")
    self.mean = series[:a].mean(0)
    std = series[:a].std(0)
    self.std = np.where(std > 0, std, 1.0).astype(np.float32)
    z = ((series - self.mean) / self.std).astype(np.float32)
    self.series = series
    self.boundaries = (a, b)
    starts = np.arange(0, a - seq_len)  # windows [s, s+L), targets to s+L
    idx = starts[:, None] + np.arange(seq_len)
    train = Batch(z[idx], z[idx + 1], np.ones(idx.shape, np.float32))
    last = np.zeros(seq_len, np.float32)
    last[-1] = 1.0

    def forecasts(lo, hi):  # one window per target step in [lo, hi)
      ends = np.arange(lo, hi)
      w = ends[:, None] - seq_len + np.arange(seq_len)
      return Batch(z[w], z[w + 1], np.broadcast_to(last, w.shape).copy())

    self.splits = (train, forecasts(a, b), forecasts(b, t))
    self._check_splits()

  def persistence_mse(self, split: int = 1) -> float:
    """MSE (original scale) of predicting each value by the previous one,
    on the validation (1) or test (2) targets."""
    lo, hi = ((self.boundaries[0], self.boundaries[1]) if split == 1
              else (self.boundaries[1], len(self.series)))
    s = self.series
    return float(np.mean((s[lo:hi] - s[lo - 1:hi - 1]) ** 2))

  def loss(self, outputs, targets):
    return squared_error(outputs, targets)

  def step_metrics(self, outputs, targets):
    err = (outputs.astype(jnp.float32) - targets) * self.std
    return {"mse": jnp.mean(err ** 2, -1), "mae": jnp.mean(jnp.abs(err), -1)}

  def base_params(self):
    return {"truncation": self.seq_len}

  def default_space(self):
    return space_lib.Space({
        "cell": space_lib.Choice(["lstm", "gru"]),
        "hidden_size": 32, "batch_size": 16,
        "learning_rate": space_lib.LogUniform(1e-3, 3e-2),
        "weight_decay": space_lib.Choice([0.0, 1e-4]),
    })

  def config(self) -> dict[str, Any]:
    return {"dataset": self.dataset, "data_path": self.data_path,
            "seq_len": self.seq_len, "shape": list(self.series.shape)}
