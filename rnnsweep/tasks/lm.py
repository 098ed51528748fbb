"""Character-level language modelling on real text, offline.

The default corpus is the prose of Python's own reference documentation, as
the standard library's ``pydoc_data.topics`` holds it in CPython 3.11.7
(464,970 characters, 103 distinct). That module's text changes between
Python releases (3.12's has 104 distinct characters), which would change the
vocabulary and every number, so a gzipped snapshot ships inside the package
(``rnnsweep/data``; Python Software Foundation License) and every machine
trains on the same characters. Nothing is downloaded.

The text is split by position, not shuffled: the first 90% trains, the next
5% validates and the last 5% is held out as test. Training batches are random
crops of the training text (shared by every trial of a sweep); validation is
the whole validation text cut into consecutive sequences.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import math
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnsweep import space as space_lib
from rnnsweep.tasks.base import (Batch, Task, TaskData, cross_entropy,
                                 eval_batches)

LN2 = math.log(2.0)
SPLITS = (0.90, 0.05, 0.05)


CORPUS_NAME = "pydoc_topics_3.11.7"


@functools.lru_cache(maxsize=1)
def python_docs_text() -> str:
  """The shipped snapshot: CPython 3.11.7's ``pydoc_data.topics`` values
  concatenated in key order."""
  raw = importlib.resources.files("rnnsweep.data").joinpath(
      f"{CORPUS_NAME}.txt.gz").read_bytes()
  return gzip.decompress(raw).decode("utf-8")


def split_text(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Contiguous 90/5/5 train/validation/test split by position."""
  n = len(ids)
  a = int(n * SPLITS[0])
  b = a + int(n * SPLITS[1])
  return ids[:a], ids[a:b], ids[b:]


class CharLM(Task):
  """Next-character prediction; metrics cross-entropy (nats) and bits/char.

  Args:
    seq_len: characters per training / validation sequence.
    text: the corpus; default :func:`python_docs_text`.
    data_path: a UTF-8 text file to use as the corpus instead.
  """

  name = "lm"
  selection_metric = "bits_per_char"
  selection_mode = "min"

  def __init__(self, seq_len: int = 128, text: str | None = None,
               data_path: str | None = None):
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
      raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")
    self.seq_len = seq_len
    self.data_path = data_path
    if data_path is not None:
      if text is not None:
        raise ValueError("give text or data_path, not both")
      from rnnsweep.tasks import files  # pylint: disable=import-outside-toplevel
      text = files.load_text(data_path)
    self._custom_text = text is not None
    source = data_path or "LM text"
    self.text = python_docs_text() if text is None else text
    chars = sorted(set(self.text))
    if len(chars) < 2:
      raise ValueError(f"{source}: needs at least two distinct characters")
    self.chars = "".join(chars)
    self.vocab_size = len(chars)
    self.output_size = len(chars)
    lookup = {c: i for i, c in enumerate(chars)}
    self.ids = np.fromiter((lookup[c] for c in self.text), np.int32,
                           len(self.text))
    self.train_ids, self.val_ids, self.test_ids = split_text(self.ids)
    for split, arr in (("training", self.train_ids),
                       ("validation", self.val_ids), ("test", self.test_ids)):
      if len(arr) < seq_len + 1:
        raise ValueError(
            f"{source}: too short: its {split} split has {len(arr)} "
            f"characters, fewer than seq_len + 1 = {seq_len + 1}")

  def _chunks(self, ids: np.ndarray):
    """A split cut into consecutive sequences (next characters as targets)."""
    n = (len(ids) - 1) // self.seq_len
    idx = np.arange(n)[:, None] * self.seq_len + np.arange(self.seq_len)
    return eval_batches(ids[idx], ids[idx + 1],
                        np.ones(idx.shape, np.float32))

  @functools.cached_property
  def _data(self) -> TaskData:
    return TaskData(train=jnp.asarray(self.train_ids),
                    val=self._chunks(self.val_ids),
                    test=self._chunks(self.test_ids))

  def data(self) -> TaskData:
    return self._data

  def train_batch(self, train, key, batch_size):
    # Random crops anywhere in the training text.
    starts = jax.random.randint(key, (batch_size,), 0,
                                train.shape[0] - self.seq_len)
    idx = starts[:, None] + jnp.arange(self.seq_len)
    return Batch(train[idx], train[idx + 1],
                 jnp.ones((batch_size, self.seq_len), jnp.float32))

  def loss(self, outputs, targets):
    return cross_entropy(outputs, targets)

  def step_metrics(self, outputs, targets):
    ce = self.loss(outputs, targets)
    return {"cross_entropy": ce, "bits_per_char": ce / LN2}

  def derived_metrics(self, means):
    ce = means.get("cross_entropy", math.nan)
    return {"perplexity": math.exp(ce) if ce < 700 else math.inf}

  def base_params(self):
    return {}

  def default_space(self):
    return space_lib.Space({
        "cell": space_lib.Choice(["lstm", "gru"]),
        "hidden_size": 128,
        "learning_rate": space_lib.LogUniform(1e-3, 2e-2),
        "output_dropout": space_lib.Uniform(0.0, 0.3),
        "recurrent_dropout": space_lib.Uniform(0.0, 0.2),
    })

  def config(self) -> dict[str, Any]:
    cfg = {"seq_len": self.seq_len, "vocab_size": self.vocab_size,
           "chars": len(self.text)}
    cfg["corpus"] = ("crc32:%08x" % zlib.crc32(self.text.encode("utf-8"))
                     if self._custom_text else CORPUS_NAME)
    return cfg
