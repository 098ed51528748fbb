"""An independent reference of rnnsweep's models, for the tests only.

Written from the papers with plain ``jnp`` and a Python loop over time; it
shares no code with ``rnnsweep.models`` (it only reads the parameter dict by
its documented names). Gate equations:

- Elman (1990) simple RNN: ``h' = tanh(W x + U h + b)``.
- LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al.
  2000): ``c' = f c + i g``, ``h' = o tanh(c')``.
- GRU (Cho et al. 2014, the variant cuDNN and Flax use, with ``r`` applied
  after the recurrent product): ``n = tanh(W_n x + b_n + r (U_n h + b_hn))``,
  ``h' = (1 - z) n + z h``.
- Variational dropout (Gal & Ghahramani 2016): one mask per sequence, reused
  at every step; the recurrent mask multiplies ``h`` only where it enters the
  recurrent matrix products (``U h``). The carried ``h`` (the ``z h`` term of
  the GRU) and the LSTM's ``c`` are never masked.
- Naive recurrent dropout: a recurrent mask per time step (``[B, T, H]``),
  applied the same way at its step.
"""

import jax.numpy as jnp
import numpy as np

NUM_GATES = {"simple": 1, "lstm": 4, "gru": 3}


def sigmoid(a):
  return 1.0 / (1.0 + jnp.exp(-a))


def gate(w, k, hidden):
  """Gate ``k``'s ``[.., H]`` slice of a fused ``[.., G*H]`` array."""
  return w[..., k * hidden:(k + 1) * hidden]


def cell_step(cell, p, c, x, m):
  """One step. ``p``: the layer's params; ``c``: ``(c, h)`` or ``h``;
  ``x`` [B, D]; ``m`` [B, H] recurrent mask."""
  hidden = p["w_h"].shape[0]
  W = lambda k: gate(p["w_i"], k, hidden)
  U = lambda k: gate(p["w_h"], k, hidden)
  b = lambda k: gate(p["b"], k, hidden)
  if cell == "simple":
    h = c
    new_h = jnp.tanh(x @ W(0) + (m * h) @ U(0) + b(0))
    return new_h, new_h
  if cell == "lstm":
    mem, h = c
    hm = m * h
    i = sigmoid(x @ W(0) + hm @ U(0) + b(0))
    f = sigmoid(x @ W(1) + hm @ U(1) + b(1))
    g = jnp.tanh(x @ W(2) + hm @ U(2) + b(2))
    o = sigmoid(x @ W(3) + hm @ U(3) + b(3))
    new_mem = f * mem + i * g
    new_h = o * jnp.tanh(new_mem)
    return (new_mem, new_h), new_h
  assert cell == "gru"
  h = c
  hm = m * h
  r = sigmoid(x @ W(0) + b(0) + hm @ U(0))
  z = sigmoid(x @ W(1) + b(1) + hm @ U(1))
  n = jnp.tanh(x @ W(2) + b(2) + r * (hm @ U(2) + p["b_hn"]))
  new_h = (1.0 - z) * n + z * h
  return new_h, new_h


def forward(cell, params, carry, inputs, masks):
  """The whole model on a window: embedding (or features), input dropout,
  the layers (output dropout after each), the head.

  Args:
    params: the model's parameter dict (``embed``, ``layer_<l>``, ``head``).
    carry: per layer ``(c, h)`` or ``h``.
    inputs: ``[B, T]`` tokens or ``[B, T, F]`` features.
    masks: ``(input [B, D], recurrent per layer, output per layer)``; a
      recurrent mask is ``[B, H]`` (every step) or ``[B, T, H]`` (per step).

  Returns:
    ``(new_carry, outputs [B, T, V])``.
  """
  input_mask, recurrent, output = masks
  if "embed" in params:
    x = params["embed"]["embedding"][inputs]
  else:
    x = inputs
  x = x * input_mask[:, None, :]
  new_carry = []
  for l, c in enumerate(carry):
    p = params[f"layer_{l}"]
    ys = []
    m = recurrent[l]
    for t in range(x.shape[1]):
      c, y = cell_step(cell, p, c, x[:, t], m[:, t] if m.ndim == 3 else m)
      ys.append(y)
    new_carry.append(c)
    x = jnp.stack(ys, axis=1) * output[l][:, None, :]
  out = x @ params["head"]["kernel"] + params["head"]["bias"]
  return tuple(new_carry), out


def bernoulli_masks(rng, rates, batch, input_size, hidden, layers,
                    steps=None):
  """Masks drawn with NumPy: 0 or ``1/(1-rate)``, per sequence (with
  ``steps``, recurrent masks per time step: ``[B, steps, H]``)."""
  def one(rate, shape):
    keep = rng.random(shape) >= rate
    return jnp.asarray(np.where(keep, 1.0 / (1.0 - rate), 0.0), jnp.float32)
  r_in, r_rec, r_out = rates
  return (one(r_in, (batch, input_size)),
          tuple(one(r_rec, (batch, hidden) if steps is None
                    else (batch, steps, hidden)) for _ in range(layers)),
          tuple(one(r_out, (batch, hidden)) for _ in range(layers)))


def random_carry(rng, cell, layers, batch, hidden):
  """A non-zero state in (-1, 1), as a window that is not a sequence's
  first starts from."""
  def one():
    return jnp.asarray(rng.uniform(-0.9, 0.9, (batch, hidden)), jnp.float32)
  return tuple(((one(), one()) if cell == "lstm" else one())
               for _ in range(layers))
