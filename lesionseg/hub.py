"""Publishing a trained model folder to the Hugging Face Hub."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

# a weights folder as the Hub gets it (model.onnx is left out: it is exported again where needed)
PUBLISHED_FILES = ["config.json", "model.safetensors", "README.md", "int8_calibration.json"]


class PublishError(RuntimeError):
    """Publishing failed; local outputs are untouched."""


def push_folder(folder: str | Path, repo_id: str, private: bool = False, commit_message: str | None = None,
                path_in_repo: str | None = None) -> str:
    """Upload ``folder`` (config.json, model.safetensors, README.md, and int8_calibration.json where
    there is one) to model repo ``repo_id``, or
    to its sub-folder ``path_in_repo`` (a click refiner goes to ``refiner/`` beside its model).

    The token comes from ``HF_TOKEN`` or a prior ``hf auth login``. Returns the commit URL.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise PublishError(f"{folder}: no model.safetensors to publish")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 path_in_repo=path_in_repo,
                                 allow_patterns=PUBLISHED_FILES,
                                 commit_message=commit_message or "Upload lesionseg DS-AttentionUNet")
    except OfflineModeIsEnabled:
        raise PublishError(f"cannot publish to {repo_id}: HF_HUB_OFFLINE is set (unset it, then run "
                           f"`hf upload {repo_id} {folder}{' ' + path_in_repo if path_in_repo else ''}`)") from None
    except HfHubHTTPError as e:
        raise PublishError(f"cannot publish to {repo_id}: {str(e).splitlines()[0]} (check HF_TOKEN / `hf auth login` "
                           f"and the repo name, then run `hf upload {repo_id} {folder}`)") from None
    except Exception as e:  # noqa: BLE001 - connection errors come in many types
        raise PublishError(f"cannot publish to {repo_id}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                           f"(no network? run `hf upload {repo_id} {folder}` later)") from None
    url = getattr(info, "commit_url", str(info))
    log.info("published %s to %s", folder, url)
    return url
