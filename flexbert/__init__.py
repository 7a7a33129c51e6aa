"""FlexBERT: pretrain ModernBERT-style encoders from YAML-selected modules.

``import flexbert`` is light: the config is imported eagerly, the model classes on first use, and
Composer never (only ``flexbert.train`` imports it).
"""

import importlib

from flexbert.model.config import FlexBertConfig

__version__ = "0.1.0"

_LAZY = {
    "FlexBertModel": "flexbert.model.model",
    "FlexBertForMaskedLM": "flexbert.model.model",
    "FlexBertForSequenceClassification": "flexbert.model.model",
}

__all__ = ["FlexBertConfig", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flexbert' has no attribute {name!r}")
