"""Fine-tuning recipes that more than one caller runs: one definition each.

``make demo``'s steps 7 to 9 and the budget study (``flexbert budget``) fine-tune with the same
settings, so a recipe is data here, a mapping of the command's options (``FinetuneConfig`` keys
for ``flexbert finetune``, ``flexbert finetune-retrieval``'s flags), turned into a command line by
``as_flags``.
"""

from __future__ import annotations

from typing import Any, Mapping

# Rotten Tomatoes, fresh vs rotten (the demo corpus's classification task)
RT_CLASSIFICATION: dict[str, Any] = {"text_columns": ["text"], "label_column": "label", "lr": 3e-4, "batch_size": 32,
                                     "max_seq_len": 128, "patience": 0, "log_interval": 100, "epochs": 1}
# a review as written vs its words shuffled (the demo corpus's word-order set): the Rotten Tomatoes recipe
# unchanged, so what separates the two inits is the pretraining, not a recipe tuned for it
WORD_ORDER: dict[str, Any] = dict(RT_CLASSIFICATION)
# which held-out movie is this review about (the demo corpus's retrieval set): a short contrastive fine-tune
RT_RETRIEVAL: dict[str, Any] = {"max_steps": 40, "batch_size": 32, "lr": 1e-4, "max_seq_len": 128, "no_progress": True}


def as_flags(options: Mapping[str, Any]) -> list[str]:
    """``{"max_seq_len": 128, "no_progress": True, "text_columns": ["a", "b"]}`` ->
    ``["--max-seq-len", "128", "--no-progress", "--text-columns", "a", "b"]`` (False and None are left out)."""
    flags: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags
