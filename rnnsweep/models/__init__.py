"""Recurrent models (one trial each; the engine adds the trial axis)."""

from rnnsweep.models.rnn import (GATES, Carry, DropoutMasks, MaskedCell,
                                 RecurrentModel, carry_hidden, dropout_masks,
                                 hoisted_apply, hoisted_layer, make_cell,
                                 no_dropout, step_by_step, training_flops,
                                 zero_carry)

__all__ = [
    "GATES", "Carry", "DropoutMasks", "MaskedCell", "RecurrentModel",
    "carry_hidden", "dropout_masks", "hoisted_apply", "hoisted_layer",
    "make_cell", "no_dropout", "step_by_step", "training_flops", "zero_carry",
]
