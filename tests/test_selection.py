"""The one better-than rule, for both directions."""

import math

import numpy as np
import pytest

from rnnsweep import selection


@pytest.mark.parametrize("mode, good, bad", [("min", 0.1, 0.2),
                                             ("max", 0.9, 0.8)])
def test_better_and_worst(mode, good, bad):
  assert selection.better(good, bad, mode)
  assert not selection.better(bad, good, mode)
  assert not selection.better(good, good, mode)  # strictly
  assert selection.better(bad, selection.worst(mode), mode)
  values = np.array([bad, good, bad])
  assert int(np.argmin(selection.lower_is_better(values, mode))) == 1


def test_unknown_mode_is_an_error():
  with pytest.raises(ValueError, match="'min' or 'max'"):
    selection.better(1.0, 2.0, "mni")
  assert math.isinf(selection.worst("max"))
