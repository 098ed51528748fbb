"""Stacked recurrent models for ONE trial, with variational dropout.

The trial axis never appears here: the engine vmaps these functions. Dropout
rates are traced per-trial values, so masks are sampled by
:func:`dropout_masks` (not ``flax.linen.Dropout``, which branches on the rate
in Python) and passed in. Following Gal & Ghahramani (2016), one mask is drawn
per sequence and reused at every time step, on the first layer's inputs, on
each layer's recurrent state and on each layer's outputs.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
#: One entry per layer: ``(c, h)`` for an LSTM, ``h`` for GRU / simple.
Carry = tuple


class DropoutMasks(NamedTuple):
  """Pre-scaled keep masks (0 or ``1 / (1 - rate)``), constant over time.

  Attributes:
    inputs: ``[B, D]`` on the first layer's inputs (D: embedding or features).
    recurrent: per layer ``[B, H]``, on the state fed back into the cell.
    outputs: per layer ``[B, H]``, on what the layer passes upward / to the
      head.
  """

  inputs: Array
  recurrent: tuple[Array, ...]
  outputs: tuple[Array, ...]


def _mask(key: Array, rate: Array, shape: Sequence[int]) -> Array:
  keep = jax.random.bernoulli(key, 1.0 - rate, shape)
  # At rate 0 every unit is kept and the scale is exactly 1: no dropout.
  return jnp.where(keep, 1.0 / (1.0 - rate), 0.0).astype(jnp.float32)


def dropout_masks(key: Array, *, batch_size: int, input_size: int,
                  hidden_size: int, num_layers: int, input_rate: Array,
                  recurrent_rate: Array, output_rate: Array) -> DropoutMasks:
  """Samples one trial's masks for one batch of sequences."""
  keys = jax.random.split(key, 1 + 2 * num_layers)
  h_shape = (batch_size, hidden_size)
  return DropoutMasks(
      inputs=_mask(keys[0], input_rate, (batch_size, input_size)),
      recurrent=tuple(_mask(keys[1 + l], recurrent_rate, h_shape)
                      for l in range(num_layers)),
      outputs=tuple(_mask(keys[1 + num_layers + l], output_rate, h_shape)
                    for l in range(num_layers)),
  )


def no_dropout(*, batch_size: int, input_size: int, hidden_size: int,
               num_layers: int) -> DropoutMasks:
  """All-ones masks (evaluation)."""
  ones_h = jnp.ones((batch_size, hidden_size), jnp.float32)
  return DropoutMasks(jnp.ones((batch_size, input_size), jnp.float32),
                      (ones_h,) * num_layers, (ones_h,) * num_layers)


#: Gate matmuls per cell type (the G in the FLOP count).
GATES = {"simple": 1, "lstm": 4, "gru": 3}


def training_flops(*, cell: str, hidden_size: int, num_layers: int,
                   input_size: int, output_size: int, tokens: int) -> float:
  """Analytic FLOPs of one training update (forward and backward, ~3x the
  forward) over ``tokens`` = batch x window time steps: ``6*G*H*(I+H)`` per
  layer per token plus ``6*H*V`` for the head. (``cost_analysis`` counts a
  scan's body once, so it cannot be used.)"""
  per_token = 6 * hidden_size * output_size
  for layer in range(num_layers):
    width = input_size if layer == 0 else hidden_size
    per_token += 6 * GATES[cell] * hidden_size * (width + hidden_size)
  return float(per_token * tokens)


def make_cell(cell: str, features: int, name: str | None = None,
              dtype: Any = None) -> nn.Module:
  """A Flax cell; ``dtype`` is the compute dtype (parameters stay float32)."""
  if cell == "lstm":
    # Fused gate matmuls: one [D, 4H] input and one [H, 4H] recurrent kernel.
    return nn.OptimizedLSTMCell(features, name=name, dtype=dtype)
  if cell == "gru":
    return nn.GRUCell(features, name=name, dtype=dtype)
  if cell == "simple":
    return nn.SimpleCell(features, name=name, dtype=dtype)
  raise ValueError(f"cell must be one of simple, lstm, gru; got {cell!r}")


def zero_carry(cell: str, num_layers: int, batch_size: int,
               hidden_size: int) -> Carry:
  z = jnp.zeros((batch_size, hidden_size), jnp.float32)
  return tuple(((z, z) if cell == "lstm" else z) for _ in range(num_layers))


def carry_hidden(cell: str, layer_carry: Any) -> Array:
  """The hidden state ``h`` of one layer's carry."""
  return layer_carry[1] if cell == "lstm" else layer_carry


class MaskedCell(nn.Module):
  """One time step of one layer: the cell, with its state masked first."""

  cell: str
  features: int
  dtype: Any = None

  @nn.compact
  def __call__(self, carry, x, recurrent_mask):
    if self.cell == "lstm":
      c, h = carry
      masked = (c, h * recurrent_mask)
    else:
      masked = carry * recurrent_mask
    new_carry, y = make_cell(self.cell, self.features, name="cell",
                             dtype=self.dtype)(masked, x)
    # The carry keeps its (float32) dtype whatever the compute dtype, so the
    # scan's carry type is fixed and state crosses windows at full precision.
    new_carry = jax.tree_util.tree_map(lambda n, o: n.astype(o.dtype),
                                       new_carry, carry)
    return new_carry, y


class RecurrentModel(nn.Module):
  """Embedding or features -> ``num_layers`` recurrent layers -> dense head.

  The head is applied at every time step; a task that predicts one value or
  label per sequence puts its target weight on the last step only.

  Attributes:
    cell: ``simple`` | ``lstm`` | ``gru``.
    hidden_size: units per layer.
    num_layers: stacked layers.
    output_size: head width (classes, vocabulary, or regression values).
    vocab_size: token vocabulary for token inputs; ``None`` for float
      features.
    embed_size: embedding width (token inputs only).
    dtype: compute dtype (``None``: float32); parameters stay float32.
    unroll: time steps per iteration of the scan loop.
  """

  cell: str
  hidden_size: int
  num_layers: int
  output_size: int
  vocab_size: int | None = None
  embed_size: int = 64
  dtype: Any = None
  unroll: int = 1

  @nn.compact
  def __call__(self, carry: Carry, inputs: Array,
               masks: DropoutMasks) -> tuple[Carry, Array]:
    """Runs a window of time steps.

    Args:
      carry: per layer state, each ``[B, H]``.
      inputs: ``[B, T]`` int tokens or ``[B, T, F]`` float features.
      masks: this sequence batch's dropout masks.

    Returns:
      ``(new_carry, outputs)`` with outputs ``[B, T, output_size]``.
    """
    if self.vocab_size is not None:
      x = nn.Embed(self.vocab_size, self.embed_size, name="embed",
                   dtype=self.dtype)(inputs)
    else:
      x = inputs.astype(jnp.float32)
    x = x * masks.inputs[:, None, :]
    layer = nn.scan(MaskedCell, variable_broadcast="params",
                    split_rngs={"params": False}, in_axes=(1, nn.broadcast),
                    out_axes=1, unroll=self.unroll)
    new_carry = []
    for l in range(self.num_layers):
      c, ys = layer(self.cell, self.hidden_size, self.dtype,
                    name=f"layer_{l}")(carry[l], x, masks.recurrent[l])
      new_carry.append(c)
      x = ys * masks.outputs[l][:, None, :]
    return tuple(new_carry), nn.Dense(self.output_size, name="head",
                                      dtype=self.dtype)(x)


def _stack(model: RecurrentModel, params: Any, carry: Carry, inputs: Array,
           masks: DropoutMasks, layer: Callable[..., tuple[Any, Array]]
           ) -> tuple[Carry, Array]:
  """The model's structure around a per-layer function
  ``layer(l, carry_l, x [B, T, D], recurrent_mask) -> (carry_l, ys)``:
  embedding or features, input dropout, the layers with output dropout,
  the head. (:class:`RecurrentModel` is the same structure in Flax.)"""
  if model.vocab_size is not None:
    x = nn.Embed(model.vocab_size, model.embed_size, dtype=model.dtype).apply(
        {"params": params["embed"]}, inputs)
  else:
    x = inputs.astype(jnp.float32)
  x = x * masks.inputs[:, None, :]
  new_carry = []
  for l in range(model.num_layers):
    c, ys = layer(l, carry[l], x, masks.recurrent[l])
    new_carry.append(c)
    x = ys * masks.outputs[l][:, None, :]
  out = nn.Dense(model.output_size, dtype=model.dtype).apply(
      {"params": params["head"]}, x)
  return tuple(new_carry), out


def step_by_step(model: RecurrentModel, params: Any, carry: Carry,
                 inputs: Array, masks: DropoutMasks) -> tuple[Carry, Array]:
  """The same computation as ``model.apply`` with a Python loop over time.

  Slow; it exists so tests can check the scanned model against the plain
  definition of the recurrence.
  """
  cell = MaskedCell(model.cell, model.hidden_size, model.dtype)

  def layer(l, c, x, recurrent_mask):
    ys = []
    for t in range(x.shape[1]):
      c, y = cell.apply({"params": params[f"layer_{l}"]}, c, x[:, t],
                        recurrent_mask)
      ys.append(y)
    return c, jnp.stack(ys, axis=1)

  return _stack(model, params, carry, inputs, masks, layer)


# Each cell's Flax parameter names, in the gate order of the fused kernels.
_INPUT_NAMES = {"lstm": ("ii", "if", "ig", "io"), "gru": ("ir", "iz", "in"),
                "simple": ("i",)}
_RECURRENT_NAMES = {"lstm": ("hi", "hf", "hg", "ho"),
                    "gru": ("hr", "hz", "hn"), "simple": ("h",)}


def _fused(cell_params: Any, names: Sequence[str]) -> tuple[Array, Any]:
  """One ``[D, G*H]`` kernel from per-gate kernels, and the per-gate biases
  (``None`` where a gate has none)."""
  kernel = jnp.concatenate([cell_params[n]["kernel"] for n in names], axis=-1)
  return kernel, [cell_params[n].get("bias") for n in names]


def hoisted_layer(cell: str, cell_params: Any, carry: Any, x: Array,
                  recurrent_mask: Array, *, dtype: Any = None,
                  unroll: int = 1) -> tuple[Any, Array]:
  """One recurrent layer over a window, input projection hoisted out.

  The same function as the scanned :class:`MaskedCell` (same parameters,
  same operations per step), arranged for speed: the input half of every
  gate is one ``[B*T, D] x [D, G*H]`` matmul before the time loop, and the
  recurrent half one ``[B, H] x [H, G*H]`` matmul per step (Flax's GRU and
  simple cells do one matmul per gate).

  Args:
    cell: ``simple`` | ``lstm`` | ``gru``.
    cell_params: the Flax cell's parameters (``params["layer_l"]["cell"]``).
    carry: the layer's state, float32.
    x: ``[B, T, D]`` inputs, masked already.
    recurrent_mask: ``[B, H]``.
    dtype: compute dtype (``None``: float32).
    unroll: time steps per scan iteration.

  Returns:
    ``(new_carry, outputs [B, T, H])``.
  """
  compute = dtype or jnp.float32
  w_in, b_in = _fused(cell_params, _INPUT_NAMES[cell])
  w_h, b_h = _fused(cell_params, _RECURRENT_NAMES[cell])
  xs = jnp.dot(x.astype(compute), w_in.astype(compute))
  if cell != "lstm":  # Flax puts the LSTM's biases on the recurrent side
    xs = xs + jnp.concatenate(b_in).astype(compute)
  if cell == "lstm":
    b_h = jnp.concatenate(b_h).astype(compute)
  elif cell == "gru":
    b_h = b_h[2].astype(compute)  # only the candidate's recurrent bias
  w_h = w_h.astype(compute)
  hidden = recurrent_mask.shape[-1]

  def step(c, x_t):
    if cell == "lstm":
      mem, h = c
      hh = jnp.dot((h * recurrent_mask).astype(compute), w_h) + b_h
      i, f, g, o = jnp.split(hh + x_t, 4, axis=-1)
      i, f, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jax.nn.sigmoid(o)
      new_mem = f * mem + i * jnp.tanh(g)
      new_h = o * jnp.tanh(new_mem)
      new = (new_mem.astype(mem.dtype), new_h.astype(h.dtype))
      return new, new_h
    h = c * recurrent_mask
    hh = jnp.dot(h.astype(compute), w_h)
    if cell == "gru":
      r = jax.nn.sigmoid(x_t[:, :hidden] + hh[:, :hidden])
      z = jax.nn.sigmoid(x_t[:, hidden:2 * hidden] +
                         hh[:, hidden:2 * hidden])
      n = jnp.tanh(x_t[:, 2 * hidden:] + r * (hh[:, 2 * hidden:] + b_h))
      new_h = (1.0 - z) * n + z * h
    else:
      new_h = jnp.tanh(x_t + hh)
    return new_h.astype(c.dtype), new_h

  new_carry, ys = jax.lax.scan(step, carry, jnp.swapaxes(xs, 0, 1),
                               unroll=unroll)
  return new_carry, jnp.swapaxes(ys, 0, 1)


def hoisted_apply(model: RecurrentModel, params: Any, carry: Carry,
                  inputs: Array, masks: DropoutMasks) -> tuple[Carry, Array]:
  """``model.apply`` computed with :func:`hoisted_layer` for every layer:
  the same parameters and the same function, faster where matmuls are
  cheaper in bulk."""

  def layer(l, c, x, recurrent_mask):
    return hoisted_layer(model.cell, params[f"layer_{l}"]["cell"], c, x,
                         recurrent_mask, dtype=model.dtype,
                         unroll=model.unroll)

  return _stack(model, params, carry, inputs, masks, layer)
