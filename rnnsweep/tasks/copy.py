"""The copy (delayed recall) memory task (Hochreiter & Schmidhuber 1997;
Arjovsky et al. 2016).

A sequence shows ``length`` random symbols, then ``delay`` blanks, then a
delimiter, then ``length`` blanks during which the model must emit the
symbols it saw, in order. Only the recall steps carry a target. Chance
accuracy is ``1 / num_symbols``; growing ``delay`` compares how far each
cell type can carry information. Training data is generated inside jit;
validation and test are fixed sets from separate keys.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnnsweep import space as space_lib
from rnnsweep.tasks.base import (Batch, GeneratedTask, classification_metrics,
                                 cross_entropy)


def copy_batch(key: jax.Array, batch_size: int, *, num_symbols: int,
               length: int, delay: int) -> Batch:
  """Token inputs ``[B, L]``: symbols ``0..S-1``, blank ``S``, delimiter
  ``S+1``; targets are the symbols at the recall steps."""
  blank, delim = num_symbols, num_symbols + 1
  symbols = jax.random.randint(key, (batch_size, length), 0, num_symbols)
  fill = lambda n: jnp.full((batch_size, n), blank, jnp.int32)
  inputs = jnp.concatenate([symbols, fill(delay),
                            jnp.full((batch_size, 1), delim, jnp.int32),
                            fill(length)], axis=1)
  total = inputs.shape[1]
  targets = jnp.zeros((batch_size, total), jnp.int32).at[:, -length:].set(
      symbols)
  weights = jnp.zeros((batch_size, total), jnp.float32).at[:, -length:].set(
      1.0)
  return Batch(inputs, targets, weights)


class Copy(GeneratedTask):
  """Delayed recall; metrics accuracy (selection, max) and cross-entropy.

  Args:
    seq_len: the delay between the symbols and the delimiter (the sequence
      is ``2 * length + delay + 1`` steps long).
    length: symbols to remember.
    num_symbols: alphabet size.
    num_val: validation (and test) sequences.
    val_seed: seed of the fixed validation and test sets.
  """

  name = "copy"
  selection_metric = "accuracy"
  selection_mode = "max"

  def __init__(self, seq_len: int = 20, length: int = 5,
               num_symbols: int = 8, num_val: int = 512,
               val_seed: int = 4321):
    for name, v, lo in (("seq_len", seq_len, 0), ("length", length, 1),
                        ("num_symbols", num_symbols, 2),
                        ("num_val", num_val, 1)):
      if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    self.delay = seq_len
    self.length = length
    self.num_symbols = num_symbols
    self.num_val = num_val
    self.val_seed = val_seed
    self.seq_len = 2 * length + seq_len + 1
    self.vocab_size = num_symbols + 2
    self.output_size = num_symbols

  def generate(self, key, batch_size):
    return copy_batch(key, batch_size, num_symbols=self.num_symbols,
                      length=self.length, delay=self.delay)

  def loss(self, outputs, targets):
    return cross_entropy(outputs, targets)

  def step_metrics(self, outputs, targets):
    return classification_metrics(outputs, targets)

  def base_params(self):
    return {"truncation": self.seq_len, "embed_size": 16}

  def default_space(self):
    return space_lib.Space({
        "cell": space_lib.Choice(["simple", "lstm", "gru"]),
        "hidden_size": 64,
        "learning_rate": space_lib.LogUniform(1e-3, 3e-2),
    })

  def config(self) -> dict[str, Any]:
    return {"delay": self.delay, "length": self.length,
            "num_symbols": self.num_symbols, "num_val": self.num_val,
            "val_seed": self.val_seed}
