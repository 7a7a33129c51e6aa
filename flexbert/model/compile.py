"""torch.compile in one place: the run config's ``compile: none | blocks | model``.

Called once by the trainer builder (``flexbert.train.recipe.build_model``), never from a model's
constructor.  Both modes compile in place (``nn.Module.compile``), so parameter and state-dict
names stay those of the eager model (checkpoints, export and ``init_from`` are unaffected).

Shapes are static (``dynamic=False``): the Composer wrapper pads every row to fixed capacities
(flexbert/model/static.py), so each compiled piece traces once for training (and once more for
evaluation, which runs without gradients).  Given the device and compute dtype, the attention
backend is bound before compiling (``FlexBertModel.bind_backends``), and with ``model`` the forward
is one graph from the embeddings to the loss sums (``plain``/``chunked`` losses; ``liger`` is one
separate call): ``tests/test_model_fullgraph.py`` compiles it with ``fullgraph=True``.
``compile_mode`` is torch.compile's ``mode`` (``reduce-overhead``: CUDA graphs).
"""

from __future__ import annotations

from typing import Any, Callable, Union

from torch import nn

COMPILE_MODES = ("none", "blocks", "model")
# torch.compile's own modes: reduce-overhead records CUDA graphs (no per-kernel launch cost, needs
# fixed shapes, which flexbert/model/static.py gives); max-autotune also searches matmul kernels
TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_model(model: nn.Module, mode: str, backend: Union[str, Callable[..., Any]] = "inductor",
                  compile_mode: str = "default", device: Any = None, dtype: Any = None) -> nn.Module:
    """Compile ``model`` (a FlexBertForMaskedLM or anything holding ``.model.layers``) in place.

    ``blocks``: each transformer block (the per-batch preparation and the head stay eager);
    ``model``: the whole forward, one graph up to the loss; ``none``: nothing."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile: unknown value '{mode}'; valid choices: {', '.join(COMPILE_MODES)}")
    if compile_mode not in TORCH_COMPILE_MODES:
        raise ValueError(f"compile_mode: unknown value '{compile_mode}'; valid choices: {', '.join(TORCH_COMPILE_MODES)}")
    if device is not None and dtype is not None and hasattr(model.model, "bind_backends"):
        model.model.bind_backends(device, dtype)  # the attention backend is chosen now, not in forward
    kw: dict = {} if compile_mode == "default" or not isinstance(backend, str) else {"mode": compile_mode}
    if mode == "blocks":
        for layer in model.model.layers:
            layer.compile(dynamic=False, backend=backend, **kw)
    elif mode == "model":
        model.compile(dynamic=False, backend=backend, **kw)
    return model
