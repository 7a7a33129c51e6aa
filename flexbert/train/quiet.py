"""The one filter for known, harmless notices from FlexBERT's dependencies (train.py and
``build_trainer`` both apply it); FlexBERT's own warnings stay visible."""

from __future__ import annotations

import logging
import warnings

KNOWN_NOTICES = (
    # ScheduleStepper steps at BATCH_START, before the first optimizer.step(): intended.
    r"Detected call of `lr_scheduler.step\(\)` before",
    # ExactResume / PhaseOverride restore their own state; Composer need not.
    r".*is not in the state_dict. Its state will not be restored.*",
    r".*torch.cuda.amp.*",
    r".*Cannot split.*",
    r".*The `compile_config` argument.*",
    r".*No batches were trained.*",
    r".*TypedStorage is deprecated.*",
    r".*Setting torch.backends.*",
    r".*device_train_microbatch_size.*",
    r".*sampler.*",
)


def quiet_known_warnings() -> None:
    logging.getLogger("composer").setLevel(logging.WARNING)
    logging.getLogger("streaming").setLevel(logging.ERROR)
    for pattern in KNOWN_NOTICES:
        warnings.filterwarnings("ignore", message=pattern)
