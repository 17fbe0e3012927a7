"""Share trained models on the Hub: model cards (`build_model_card`) and uploads (`push_folder`)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import CommitInfo, HfApi

from .card import (
    HF_CONTRASTIVE_CITATION,
    CardEvalResult,
    ContrastiveCardData,
    build_model_card,
    card_tags,
    dataset_statistics,
    encoder_details,
    encoder_model_card,
    framework_versions,
    split_non_default_args,
)


def push_folder(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload model trained with hf_contrastive",
    revision: str | None = None,
) -> CommitInfo:
    """Create `repo_id` on the Hub if needed and upload every file of `folder` in one commit.

    Write `folder/README.md` with `build_model_card(...).save(...)` first so the card goes up with the weights.
    """
    api = HfApi(token=token, library_name="hf_contrastive")
    repo = api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo.repo_id, folder_path=folder, commit_message=commit_message, revision=revision
    )


__all__ = [
    "encoder_details",
    "encoder_model_card",
    "HF_CONTRASTIVE_CITATION",
    "CardEvalResult",
    "ContrastiveCardData",
    "build_model_card",
    "card_tags",
    "dataset_statistics",
    "framework_versions",
    "push_folder",
    "split_non_default_args",
]
