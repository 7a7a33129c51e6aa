"""One registry per swappable kind of model module, and the config-time name check.

Each module file registers its classes here (``@NORMS.register("rmsnorm")``), so adding a module
is one class plus one line.  ``check_names`` is what ``FlexBertConfig.validate`` calls: it imports
the module files (so every registration has happened) and checks each name field of the config,
failing with one line that names the key and the valid choices.
"""

from __future__ import annotations

import importlib

from flexbert.registry import ConfigError, Registry, RegistryError

NORMS = Registry("norm")
ACTIVATIONS = Registry("activation")
MLPS = Registry("mlp")
EMBEDDINGS = Registry("embedding")
BLOCKS = Registry("block")
ATTENTION_BACKENDS = Registry("attention backend")
INITS = Registry("init scheme")
MLM_LOSSES = Registry("mlm loss")

# The files whose import fills the registries above.
_MODULE_FILES = ("norms", "activations", "mlp", "embeddings", "blocks", "backends", "init", "loss")

# config field -> registry that must know its value
NAME_FIELDS = {
    "embedding": EMBEDDINGS,
    "norm": NORMS,
    "activation": ACTIVATIONS,
    "head_activation": ACTIVATIONS,
    "mlp": MLPS,
    "block": BLOCKS,
    "attention_backend": ATTENTION_BACKENDS,
    "init": INITS,
    "mlm_loss": MLM_LOSSES,
}


def load_all() -> None:
    """Import every module file so that all registrations exist (idempotent)."""
    for name in _MODULE_FILES:
        importlib.import_module(f"flexbert.model.{name}")


def check_names(config, prefix: str = "") -> None:
    """Raise ``flexbert.config.ConfigError`` if a name field of ``config`` is not registered.

    ``prefix`` is where the config sits in the full config ("model" or "model."), so the message
    names the full key, e.g. ``model.norm: unknown norm 'rmsnrom' (did you mean 'rmsnorm'?); ...``.
    """
    load_all()
    if prefix and not prefix.endswith("."):
        prefix += "."
    for field, registry in NAME_FIELDS.items():
        try:
            registry.check(getattr(config, field), key=f"{prefix}{field}")
        except RegistryError as e:
            raise ConfigError(str(e)) from None
