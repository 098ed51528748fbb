"""PyTorch baselines for the throughput benchmark (optional: needs torch).

What a user would otherwise write, on the same workload
(:class:`rnnsweep.bench.Workload`) and the same device:

- :func:`measure_cudnn_sequential`: ``nn.Embedding -> nn.LSTM -> nn.Linear``
  (cuDNN on GPU), Adam, TBPTT with the state detached between windows, the
  trials one after another.
- :func:`measure_func_vmap`: PyTorch's own way to vectorise trials,
  ``torch.func.vmap`` of ``torch.func.grad`` over stacked parameters, with a
  hand-written LSTM step (cuDNN's ``nn.LSTM`` cannot be vmapped) and a
  per-trial Adam learning rate.

Both train on random windows of the same 64-symbol text as the JAX runs,
in float32 or, with ``precision="bfloat16"``, as rnnsweep's bfloat16
compute does: float32 parameters and optimizer, the forward pass under
``torch.autocast`` to bfloat16 (matmuls and the cuDNN LSTM in bfloat16),
the loss in float32.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import numpy as np

from rnnsweep.bench import Workload, workload_task


def _torch():
  import torch  # pylint: disable=import-outside-toplevel
  return torch


def _device(torch):
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(torch, device):
  if device.type == "cuda":
    torch.cuda.synchronize()


def _autocast(torch, device, precision: str):
  """The forward pass's context for ``precision`` (``float32``: none)."""
  if precision == "float32":
    return contextlib.nullcontext()
  if precision != "bfloat16":
    raise ValueError(f"precision must be float32 or bfloat16, got "
                     f"{precision!r}")
  return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _batches(torch, w: Workload, device, count: int, seed: int = 0):
  """``count`` token windows ``[B, W+1]`` from the benchmark text."""
  ids = np.asarray(workload_task(w).train_ids)
  rng = np.random.default_rng(seed)
  starts = rng.integers(0, len(ids) - w.window - 1, size=(count, w.batch))
  windows = ids[starts[..., None] + np.arange(w.window + 1)]
  return torch.as_tensor(windows, dtype=torch.long, device=device)


def measure_cudnn_sequential(w: Workload, trials: int = 3,
                             precision: str = "float32") -> dict[str, Any]:
  torch = _torch()
  device = _device(torch)
  _autocast(torch, device, precision)  # refuses an unknown precision
  data = _batches(torch, w, device, w.updates)
  lrs = np.logspace(-4, -2, max(trials, 2))[:trials]
  times = []
  for i, lr in enumerate([1e-3] + list(lrs)):  # the first run warms up
    torch.manual_seed(i)
    emb = torch.nn.Embedding(w.vocab, w.embed).to(device)
    lstm = torch.nn.LSTM(w.embed, w.hidden, batch_first=True).to(device)
    head = torch.nn.Linear(w.hidden, w.vocab).to(device)
    drop = torch.nn.Dropout(0.25)
    params = [*emb.parameters(), *lstm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=float(lr))
    state = None
    _sync(torch, device)
    start = time.perf_counter()
    for step in range(w.updates):
      x, y = data[step, :, :-1], data[step, :, 1:]
      with _autocast(torch, device, precision):
        out, state = lstm(emb(x), state)
        logits = head(drop(out))
      state = tuple(s.detach().float() for s in state)  # truncated BPTT
      loss = torch.nn.functional.cross_entropy(
          logits.float().reshape(-1, w.vocab), y.reshape(-1))
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
    _sync(torch, device)
    if i > 0:
      times.append(time.perf_counter() - start)
  sec = statistics.median(times)
  return {"trials": trials, "trial_s": sec,
          "trial_steps_per_s": w.updates / sec, "device": str(device),
          "precision": precision}


def measure_func_vmap(w: Workload, k: int, repeats: int = 3,
                      precision: str = "float32") -> dict[str, Any]:
  torch = _torch()
  from torch.func import grad, vmap  # pylint: disable=import-outside-toplevel
  device = _device(torch)
  _autocast(torch, device, precision)
  data = _batches(torch, w, device, w.updates)
  g = torch.Generator(device="cpu").manual_seed(0)
  h, e, v = w.hidden, w.embed, w.vocab

  def init(*shape, scale):
    return (torch.randn(k, *shape, generator=g) * scale).to(device)

  params = {"emb": init(v, e, scale=1.0),
            "w_ih": init(e, 4 * h, scale=e ** -0.5),
            "w_hh": init(h, 4 * h, scale=h ** -0.5),
            "b": torch.zeros(k, 4 * h, device=device),
            "w_out": init(h, v, scale=h ** -0.5),
            "b_out": torch.zeros(k, v, device=device)}
  lrs = torch.as_tensor(np.logspace(-4, -2, k) if k > 1 else [1e-3],
                        dtype=torch.float32, device=device)

  def loss_fn(p, x, y, c, hs):
    with _autocast(torch, device, precision):
      xs = p["emb"][x]  # [B, W, E]
      pre = xs @ p["w_ih"] + p["b"]  # input projection for all steps at once
      outs = []
      for t in range(x.shape[1]):
        gates = pre[:, t] + hs @ p["w_hh"]
        i, f, gg, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        hs = torch.sigmoid(o) * torch.tanh(c)
        outs.append(hs)
      logits = torch.stack(outs, 1) @ p["w_out"] + p["b_out"]
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, v),
                                             y.reshape(-1))

  grads_of = vmap(grad(loss_fn), in_dims=(0, None, None, None, None))
  zeros = torch.zeros(w.batch, h, device=device)
  m = {n: torch.zeros_like(t) for n, t in params.items()}
  s = {n: torch.zeros_like(t) for n, t in params.items()}

  def segment():
    for step in range(w.updates):
      x, y = data[step, :, :-1], data[step, :, 1:]
      grads = grads_of(params, x, y, zeros, zeros)
      n = step + 1
      for name, gr in grads.items():  # Adam with a per-trial learning rate
        m[name].mul_(0.9).add_(gr, alpha=0.1)
        s[name].mul_(0.999).addcmul_(gr, gr, value=0.001)
        mhat = m[name] / (1 - 0.9 ** n)
        shat = s[name] / (1 - 0.999 ** n)
        lr = lrs.view(-1, *([1] * (gr.dim() - 1)))
        params[name] -= lr * mhat / (shat.sqrt() + 1e-8)

  segment()  # warm-up
  times = []
  for _ in range(repeats):
    _sync(torch, device)
    start = time.perf_counter()
    segment()
    _sync(torch, device)
    times.append(time.perf_counter() - start)
  sec = statistics.median(times)
  rate = k * w.updates / sec
  return {"k": k, "segment_s": sec, "trial_steps_per_s": rate,
          "tflops": rate * w.flops_per_trial_step() / 1e12,
          "device": str(device), "precision": precision}
