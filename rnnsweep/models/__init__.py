"""Recurrent models (one trial each; the engine adds the trial axis)."""

from rnnsweep.models.rnn import (GATES, RECURRENCES, Carry, DropoutMasks,
                                 RecurrentLayer, RecurrentModel, dropout_masks,
                                 layer_scan, no_dropout, training_flops,
                                 zero_carry)

__all__ = [
    "GATES", "RECURRENCES", "Carry", "DropoutMasks", "RecurrentLayer",
    "RecurrentModel", "dropout_masks", "layer_scan", "no_dropout",
    "training_flops", "zero_carry",
]
