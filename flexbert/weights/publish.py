"""Publishing a model folder on the Hugging Face Hub (``flexbert export --push-to-hub REPO``).

huggingface_hub does the work (``HfApi.create_repo`` + ``upload_folder``, the library's own upload
with its large-file handling); this module checks the repo id before anything is exported, takes
the endpoint and token the usual way (``HF_ENDPOINT``, ``HF_TOKEN`` or ``huggingface-cli login``),
and turns a failed push - no token, offline mode, an unreachable endpoint, a refusal - into one
line that says the export is on disk and how to push it later.
"""

from __future__ import annotations

import os

from huggingface_hub import HfApi
from huggingface_hub.utils import HFValidationError, validate_repo_id

from flexbert.errors import FlexBertError


class PublishError(FlexBertError, RuntimeError):
    """The Hub cannot take the model (one line; the exported folder stays on disk)."""


def check_repo_id(repo: str) -> None:
    """``owner/name`` as the Hub accepts it, or one line naming the flag (before any export)."""
    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        raise PublishError(f"--push-to-hub {repo}: not a Hub repo id ({str(e).splitlines()[0]})") from None
    if "/" not in repo:
        raise PublishError(f"--push-to-hub {repo}: give owner/name (your user or organisation, then the model's name)")


def push_to_hub(folder: str, repo: str, private: bool = False) -> str:
    """Create ``repo`` (if new) and upload ``folder`` to it; returns the model's URL."""
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now: huggingface_hub reads it once, at import
    api = HfApi(endpoint=endpoint)
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo, folder_path=folder, repo_type="model",
                          commit_message="Upload a FlexBERT model (flexbert export --push-to-hub)")
    except Exception as e:  # noqa: BLE001 - token, network, refusal: every failure is one line
        text = (str(e).strip().splitlines() or [""])[0]
        raise PublishError(f"--push-to-hub {repo}: the Hub at {endpoint or api.endpoint} did not take it "
                           f"({type(e).__name__}: {text}); the export is in {folder}: push it later with "
                           f"`huggingface-cli upload {repo} {folder}` (after `huggingface-cli login`)") from None
    return str(url)
