"""The adding problem (Hochreiter & Schmidhuber 1997; as in Le et al. 2015).

Each sequence has two channels: values uniform in ``[0, 1)`` and a marker
that is 1 at exactly two steps, one in each half of the sequence. The target,
due at the last step, is the sum of the two marked values. Predicting the
mean (1.0) scores an MSE of 1/6, about 0.167; a model must carry a value
across up to ``seq_len`` steps to do better. Training data is generated
inside jit from the sweep's data key (an endless stream); validation is a
fixed set drawn from a separate key.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnnsweep import space as space_lib
from rnnsweep.tasks.base import Batch, GeneratedTask, squared_error

#: MSE of always predicting the expected sum, 1.0: Var(U1 + U2) = 2/12.
MEAN_PREDICTOR_MSE = 1.0 / 6.0


def adding_batch(key: jax.Array, batch_size: int, seq_len: int) -> Batch:
  """``batch_size`` adding-problem sequences of length ``seq_len``."""
  kv, k1, k2 = jax.random.split(key, 3)
  values = jax.random.uniform(kv, (batch_size, seq_len))
  half = seq_len // 2
  first = jax.random.randint(k1, (batch_size,), 0, half)
  second = jax.random.randint(k2, (batch_size,), half, seq_len)
  steps = jnp.arange(seq_len)
  marker = ((steps == first[:, None]) | (steps == second[:, None])).astype(
      jnp.float32)
  total = jnp.sum(values * marker, axis=1)
  last = (steps == seq_len - 1).astype(jnp.float32)
  inputs = jnp.stack([values, marker], axis=-1)
  targets = (total[:, None] * last)[..., None]
  weights = jnp.broadcast_to(last, (batch_size, seq_len))
  return Batch(inputs, targets, weights)


class Adding(GeneratedTask):
  """Sequence -> value regression; metric MSE.

  Args:
    seq_len: sequence length T (the lag to bridge is up to T).
    num_val: validation (and test) sequences.
    val_seed: seed of the fixed validation and test sets.
  """

  name = "adding"
  input_size = 2
  output_size = 1
  vocab_size = None
  selection_metric = "mse"
  selection_mode = "min"

  def __init__(self, seq_len: int = 50, num_val: int = 1000,
               val_seed: int = 1234):
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
      raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")
    if not isinstance(num_val, int) or num_val < 1:
      raise ValueError(f"num_val must be a positive integer, got {num_val!r}")
    self.seq_len = seq_len
    self.num_val = num_val
    self.val_seed = val_seed

  def generate(self, key, batch_size):
    return adding_batch(key, batch_size, self.seq_len)

  def loss(self, outputs, targets):
    return squared_error(outputs, targets)

  def step_metrics(self, outputs, targets):
    return {"mse": self.loss(outputs, targets)}

  def base_params(self):
    # Full BPTT by default: the task exists to test long lags.
    return {"truncation": self.seq_len}

  def default_space(self):
    return space_lib.Space({
        "cell": space_lib.Choice(["simple", "lstm", "gru"]),
        "hidden_size": 64,
        "learning_rate": space_lib.LogUniform(3e-4, 1e-2),
    })

  def config(self) -> dict[str, Any]:
    return {"seq_len": self.seq_len, "num_val": self.num_val,
            "val_seed": self.val_seed}
