"""torch.compile in one place: the run config's ``compile: none | blocks | model``.

Called once by the trainer builder (``flexbert.train.recipe.build_model``), never from a model's
constructor.  Both modes compile in place (``nn.Module.compile``), so parameter and state-dict
names stay those of the eager model (checkpoints, export and ``init_from`` are unaffected).

Shapes are static (``dynamic=False``): the Composer wrapper pads every row to fixed capacities
(flexbert/model/static.py), so each compiled piece traces once for training (and once more for
evaluation, which runs without gradients).  The MLM loss runs eagerly (flexbert/model/loss.py).
"""

from __future__ import annotations

from typing import Any, Callable, Union

from torch import nn

COMPILE_MODES = ("none", "blocks", "model")


def compile_model(model: nn.Module, mode: str, backend: Union[str, Callable[..., Any]] = "inductor") -> nn.Module:
    """Compile ``model`` (a FlexBertForMaskedLM or anything holding ``.model.layers``) in place.

    ``blocks``: each transformer block (the per-batch preparation and the head stay eager);
    ``model``: the whole forward, one graph up to the loss; ``none``: nothing."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile: unknown value '{mode}'; valid choices: {', '.join(COMPILE_MODES)}")
    if mode == "blocks":
        for layer in model.model.layers:
            layer.compile(dynamic=False, backend=backend)
    elif mode == "model":
        model.compile(dynamic=False, backend=backend)
    return model
