"""Checkpoint conversion (transformers ModernBERT <-> FlexBERT)."""

from flexbert.convert.hf import config_from_hf, config_to_hf, from_hf, hf_state_dict, to_hf

__all__ = ["from_hf", "to_hf", "config_from_hf", "config_to_hf", "hf_state_dict"]
