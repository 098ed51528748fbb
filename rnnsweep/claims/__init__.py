"""Reproducing the tuning literature's claims with rnnsweep's own sweeps.

One module per claim; each has a ``run(workdir, ...)`` that trains what it
needs (stored in ``workdir``, so an interrupted run continues), writes a
CSV table and PNG figures there, and returns the table's rows. The scripts
in ``experiments/`` are thin absl wrappers; ``docs/findings.md`` holds the
measured results.

- :mod:`rnnsweep.claims.random_vs_grid`: random (and quasi-random) search
  beats grid search when few parameters matter (Bergstra & Bengio 2012).
- :mod:`rnnsweep.claims.learning_rate`: too small a learning rate converges
  slowly, too large diverges; the stable range per optimizer.
- :mod:`rnnsweep.claims.dropout`: input, recurrent and output dropout
  against overfitting; variational against naive recurrent dropout.
- :mod:`rnnsweep.claims.gated_cells`: gated cells learn long lags that a
  simple RNN does not (adding and copy tasks).
- :mod:`rnnsweep.claims.truncation_batch`: TBPTT window and batch size at
  equal wall time.
- :mod:`rnnsweep.claims.importance`: which hyperparameters matter, per
  task (fANOVA and a model-free variance decomposition).
"""

from rnnsweep.claims import (common, dropout, gated_cells, importance,
                             learning_rate, random_vs_grid, truncation_batch)

__all__ = ["common", "dropout", "gated_cells", "importance", "learning_rate",
           "random_vs_grid", "truncation_batch"]
