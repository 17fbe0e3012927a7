"""Pushes through the real huggingface_hub client to the local stand-in in tests/hub/fake_hub.py (no network)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoModel, AutoTokenizer

from hf_contrastive.hub import CardEvalResult, ContrastiveCardData, build_model_card, push_folder
from tests import conftest
from tests.hub import fake_hub as fake_hub_module

fake_hub = fake_hub_module.fake_hub  # registers the fixture in this module
REPO_ID = "fake-user/tiny-simcse"


@pytest.fixture
def model_folder(tmp_path, tiny_tokenizer):
    """A saved tiny ContrastiveEncoder + tokenizer + README.md built by build_model_card."""
    folder = tmp_path / "model"
    conftest.make_tiny_encoder(len(tiny_tokenizer)).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    card = build_model_card(
        ContrastiveCardData(
            objective="info_nce",
            paper="2104.08821",
            repo_id=REPO_ID,
            eval_results=[CardEvalResult("STS Benchmark", "sentence-transformers/stsb", "spearman_cosine", 0.42)],
        )
    )
    card.save(folder / "README.md")
    return folder


def local_files(folder) -> dict[str, bytes]:
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def front_matter(readme: bytes) -> dict:
    return yaml.safe_load(readme.decode().split("---")[1])


def test_push_folder_uploads_every_file_byte_for_byte(fake_hub, model_folder):
    info = push_folder(model_folder, REPO_ID, commit_message="Add tiny SimCSE")

    expected = local_files(model_folder)
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= set(expected)
    assert fake_hub.files(REPO_ID) == expected
    assert [c["summary"] for c in fake_hub.commits(REPO_ID)] == ["Add tiny SimCSE"]
    assert info.repo_url.repo_id == REPO_ID and info.oid == fake_hub.commits(REPO_ID)[-1]["oid"]
    assert all(authorized for method, _, authorized in fake_hub.requests if method == "POST")
    metadata = front_matter(fake_hub.files(REPO_ID)["README.md"])
    assert metadata["library_name"] == "hf_contrastive"
    assert {"hf_contrastive", "info_nce", "arxiv:2104.08821"} <= set(metadata["tags"])
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.42


def test_pushed_model_downloads_and_loads_from_the_hub(fake_hub, model_folder, tmp_path, tiny_tokenizer):
    push_folder(model_folder, REPO_ID)

    snapshot = snapshot_download(REPO_ID, cache_dir=tmp_path / "cache")
    assert local_files(snapshot) == local_files(model_folder)
    model = AutoModel.from_pretrained(REPO_ID, cache_dir=tmp_path / "cache")
    tokenizer = AutoTokenizer.from_pretrained(REPO_ID, cache_dir=tmp_path / "cache")
    local = AutoModel.from_pretrained(model_folder)
    sentences = conftest.SENTENCES[:3]
    assert torch.equal(model.encode(sentences, tokenizer), local.encode(sentences, tiny_tokenizer))


def test_unchanged_repush_makes_no_commit_and_changes_are_committed(fake_hub, model_folder):
    push_folder(model_folder, REPO_ID)
    push_folder(model_folder, REPO_ID)  # create_repo answers 409 (exists), every file has the same oid
    assert len(fake_hub.commits(REPO_ID)) == 1

    (model_folder / "README.md").write_text("---\nlicense: mit\n---\n# edited\n", encoding="utf-8")
    push_folder(model_folder, REPO_ID, commit_message="Edit card")
    commits = fake_hub.commits(REPO_ID)
    assert [c["summary"] for c in commits] == ["Upload model trained with hf_contrastive", "Edit card"]
    assert commits[-1]["added"] == ["README.md"]
    assert fake_hub.files(REPO_ID)["README.md"].endswith(b"# edited\n")


def test_push_without_token_is_refused(fake_hub, model_folder, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(HfHubHTTPError) as error:
        push_folder(model_folder, REPO_ID)
    assert error.value.response.status_code == 401
    assert fake_hub.repo_ids() == []


def test_invalid_card_metadata_is_rejected_before_upload(fake_hub, model_folder):
    (model_folder / "README.md").write_text("---\ntags: [unclosed\n---\n", encoding="utf-8")
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        push_folder(model_folder, REPO_ID)
    assert fake_hub.commits(REPO_ID) == []


def test_push_from_a_child_process_goes_through_the_local_server(fake_hub, model_folder):
    script = textwrap.dedent(
        """
        import sys
        from huggingface_hub import HfApi, constants
        assert constants.ENDPOINT.startswith("http://127.0.0.1:"), constants.ENDPOINT
        api = HfApi()
        repo = api.create_repo("child-model", private=True)
        info = api.upload_folder(repo_id=repo.repo_id, folder_path=sys.argv[1], commit_message="from child")
        print(repo.repo_id, info.oid)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(model_folder)],
        env=fake_hub.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    repo_id, oid = result.stdout.split()
    assert repo_id == "fake-user/child-model"
    assert fake_hub.files(repo_id) == local_files(model_folder)
    assert fake_hub.commits(repo_id)[-1] == {
        "oid": oid,
        "summary": "from child",
        "added": sorted(local_files(model_folder)),
        "deleted": [],
    }


def test_fake_hub_restores_the_default_client_and_offline_flag():
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    with fake_hub_module.FakeHub() as hub:
        assert not constants.HF_HUB_OFFLINE
        assert HfApi(token=hub.token).create_repo("x").repo_id == "fake-user/x"
    assert constants.HF_HUB_OFFLINE == offline
    assert hub.repo_ids() == ["fake-user/x"]
