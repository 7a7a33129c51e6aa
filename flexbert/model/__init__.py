import importlib

"""FlexBERT model package: plain PyTorch, no Composer.

``from flexbert.model import FlexBertForMaskedLM`` works; the heavy modules load on first use so
that ``flexbert.config`` can import ``flexbert.model.registries`` cheaply.
"""

_EXPORTS = {
    "FlexBertModel": "flexbert.model.model",
    "FlexBertForMaskedLM": "flexbert.model.model",
    "FlexBertForSequenceClassification": "flexbert.model.model",
    "MaskedLMOutput": "flexbert.model.model",
    "SequenceClassifierOutput": "flexbert.model.model",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'flexbert.model' has no attribute {name!r}")
