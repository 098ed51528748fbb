"""The built-in tasks' data, loss and metrics."""

import math
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnsweep as rs
from rnnsweep.tasks import adding as adding_lib
from rnnsweep.tasks import lm as lm_lib


def test_shipped_corpus_is_the_documented_snapshot():
  text = lm_lib.python_docs_text()
  # The README states these numbers; a changed snapshot must change them.
  assert len(text) == 464_970 and len(set(text)) == 103
  assert zlib.crc32(text.encode("utf-8")) == 0xC66386E4
  assert "Assert statements are a convenient way" in text
  from pydoc_data import topics  # the source, where this Python has it
  if sys.version_info[:3] == (3, 11, 7):
    assert text == "".join(topics.topics[k] for k in sorted(topics.topics))
  task = rs.CharLM()
  assert task.vocab_size == len(set(text)) > 90
  n = len(task.ids)
  assert len(task.train_ids) + len(task.val_ids) + len(task.test_ids) == n
  # Contiguous by position: the splits are the text's consecutive pieces.
  np.testing.assert_array_equal(
      np.concatenate([task.train_ids, task.val_ids, task.test_ids]), task.ids)
  assert abs(len(task.val_ids) / n - 0.05) < 0.001
  # Round trip ids -> characters.
  assert "".join(task.chars[i] for i in task.ids[:200]) == text[:200]


def test_lm_batches_and_validation(tiny_lm):
  data = tiny_lm.data()
  b = tiny_lm.train_batch(data.train, jax.random.PRNGKey(0), 5)
  assert b.inputs.shape == b.targets.shape == b.weights.shape == (5, 16)
  # Targets are the inputs shifted by one character.
  np.testing.assert_array_equal(b.inputs[:, 1:], b.targets[:, :-1])
  same = tiny_lm.train_batch(data.train, jax.random.PRNGKey(0), 5)
  np.testing.assert_array_equal(b.inputs, same.inputs)
  val = data.val
  nb, be, length = val.inputs.shape
  real = int(val.weights.sum())
  assert length == 16 and real == ((len(tiny_lm.val_ids) - 1) // 16) * 16
  # Validation text is all of the validation split, in order.
  flat = np.asarray(val.inputs).reshape(-1, 16)[:real // 16].ravel()
  np.testing.assert_array_equal(flat, tiny_lm.val_ids[:real])


def test_lm_metrics():
  task = rs.CharLM(seq_len=4, text="abcd" * 200)
  logits = jnp.zeros((1, 4, task.vocab_size))  # uniform prediction
  m = task.step_metrics(logits, jnp.zeros((1, 4), jnp.int32))
  np.testing.assert_allclose(m["cross_entropy"], math.log(4), rtol=1e-6)
  np.testing.assert_allclose(m["bits_per_char"], 2.0, rtol=1e-6)
  assert task.derived_metrics({"cross_entropy": math.log(4)})[
      "perplexity"] == pytest.approx(4.0)


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16])
def test_cross_entropy_and_its_gradient_match_numpy(dtype):
  """The loss every classifying task trains on, against the textbook
  formulas in NumPy: -log softmax(z)[y], and its gradient softmax(z) -
  onehot(y) (float64), at random logits and targets."""
  rng = np.random.default_rng(0)
  logits = (3 * rng.standard_normal((2, 3, 5))).astype(dtype)
  targets = rng.integers(0, 5, size=(2, 3))
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  softmax = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  onehot = np.eye(5)[targets]
  want = -np.log((softmax * onehot).sum(-1))
  ce = rs.tasks.base.cross_entropy
  got = ce(jnp.asarray(logits), jnp.asarray(targets))
  assert got.shape == (2, 3) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5)
  grad = jax.grad(lambda o: ce(o, jnp.asarray(targets)).sum())(
      jnp.asarray(logits, jnp.float32))
  np.testing.assert_allclose(grad, softmax - onehot, atol=1e-6)


def test_lm_rejects_bad_settings():
  with pytest.raises(ValueError, match="seq_len"):
    rs.CharLM(seq_len=1)
  with pytest.raises(ValueError, match="too short"):
    rs.CharLM(seq_len=64, text="ab" * 100)
  with pytest.raises(ValueError, match="task must be one of"):
    rs.make_task("transformer_lm")
  with pytest.raises(ValueError, match="task 'lm'"):
    rs.make_task("lm", sequence_length=5)


def test_adding_problem_definition():
  b = adding_lib.adding_batch(jax.random.PRNGKey(0), 500, 20)
  values, marker = np.asarray(b.inputs[..., 0]), np.asarray(b.inputs[..., 1])
  assert b.inputs.shape == (500, 20, 2)
  assert np.all(marker.sum(1) == 2)
  assert np.all(marker[:, :10].sum(1) == 1) and np.all(
      marker[:, 10:].sum(1) == 1)
  np.testing.assert_allclose(b.targets[:, -1, 0], (values * marker).sum(1),
                             rtol=1e-6)
  np.testing.assert_array_equal(b.weights[:, :-1], 0)
  np.testing.assert_array_equal(b.weights[:, -1], 1)
  # The documented baseline: predicting 1.0 scores MSE ~ 1/6.
  mse = np.mean((np.asarray(b.targets[:, -1, 0]) - 1.0) ** 2)
  assert abs(mse - adding_lib.MEAN_PREDICTOR_MSE) < 0.03


def test_adding_validation_is_fixed_and_distinct_from_training():
  a, b = rs.Adding(seq_len=10, num_val=30), rs.Adding(seq_len=10, num_val=30)
  np.testing.assert_array_equal(a.data().val.inputs, b.data().val.inputs)
  assert float(a.data().val.weights.sum()) == 30
  # The keys the engine really trains on, for sweep seeds that equal the
  # task's validation seed and others: no training sequence is a
  # validation or test sequence.
  held_out = {np.asarray(s).tobytes() for split in (a.data().val,
                                                    a.data().test)
              for s in np.asarray(split.inputs).reshape(-1, 10, 2)}
  for seed in (0, a.val_seed, 1234):
    for b in range(4):
      key = rs.engine.batch_key(rs.engine.data_key(seed), jnp.int32(b))
      train = a.train_batch(None, key, 30)
      assert not held_out & {np.asarray(s).tobytes()
                             for s in np.asarray(train.inputs)}
  assert a.base_params() == {"truncation": 10}


def test_eval_batches_pad_with_zero_weight():
  x = np.arange(10 * 3).reshape(10, 3)
  b = rs.tasks.eval_batches(x, x, np.ones((10, 3), np.float32), max_batch=4)
  assert b.inputs.shape == (3, 4, 3)
  assert float(b.weights.sum()) == 30
  np.testing.assert_array_equal(np.asarray(b.weights).reshape(12, 3)[10:], 0)
