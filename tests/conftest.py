"""Shared fixtures: tiny tasks, so tests share compiled programs."""

import jax
import pytest

import rnnsweep as rs

# Equivalence tests compare two computations of the same math. On GPUs the
# default float32 matmul precision is TF32 (about 3 decimal digits), which
# would hide real differences under rounding noise; ask for full float32.
# On CPU this changes nothing.
jax.config.update("jax_default_matmul_precision", "highest")
from rnnsweep.tasks.lm import python_docs_text

# Tiny shapes shared by the engine tests: equal static configs hit the same
# cached program, so most tests compile nothing new.
TINY = {"hidden_size": 16, "embed_size": 8, "batch_size": 4, "truncation": 8}


@pytest.fixture(scope="session")
def small_text():
  return python_docs_text()[:40_000]


@pytest.fixture(scope="session")
def tiny_lm(small_text):
  return rs.CharLM(seq_len=16, text=small_text)


@pytest.fixture(scope="session")
def tiny_adding():
  return rs.Adding(seq_len=12, num_val=64)
