"""Trainer.push_to_hub through the real huggingface_hub client into the local Hub stand-in, card included."""

import torch
import yaml
from huggingface_hub import snapshot_download
from transformers import AutoModel, AutoTokenizer

from hf_contrastive.hub import CardEvalResult
from hf_contrastive.trainers import ContrastiveTrainer
from tests.hub import fake_hub as fake_hub_module

from ..conftest import SENTENCES, make_tiny_encoder
from .helpers import config, triplet_dataset

fake_hub = fake_hub_module.fake_hub
REPO_ID = "fake-user/trained-tiny-encoder"


def test_trainer_push_uploads_model_tokenizer_and_card(tmp_path, fake_hub, tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer))
    args = config(tmp_path / "run", max_steps=2, hub_model_id=REPO_ID, hub_token=fake_hub.token, temperature=0.07)
    trainer = ContrastiveTrainer(model, args, triplet_dataset(8), processing_class=tiny_tokenizer)
    trainer.train()
    sts = CardEvalResult(
        "STS Benchmark", "sentence-transformers/stsb", "spearman_cosine", 0.61, before=0.40, dataset_split="validation"
    )
    trainer.push_to_hub(commit_message="tiny run", eval_results=[sts], blocking=True)

    files = fake_hub.files(REPO_ID)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(files)
    assert "training_args.bin" in files
    readme = files["README.md"].decode()
    metadata = yaml.safe_load(readme.split("---")[1])
    assert metadata["library_name"] == "hf_contrastive"
    assert {"info_nce", "arxiv:2104.08821", "contrastive-learning"} <= set(metadata["tags"])
    result = metadata["model-index"][0]["results"][0]
    assert result["metrics"][0]["value"] == 0.61 and result["dataset"]["type"] == "sentence-transformers/stsb"
    assert "| Effective negatives per anchor | 7 |" in readme
    assert "| Temperature | 0.07 |" in readme
    assert "@inproceedings{gao2021simcse" in readme
    assert REPO_ID in readme  # the usage snippet loads this repo

    snapshot = snapshot_download(REPO_ID, cache_dir=tmp_path / "cache")
    reloaded = AutoModel.from_pretrained(snapshot)
    tokenizer = AutoTokenizer.from_pretrained(snapshot)
    torch.testing.assert_close(reloaded.encode(SENTENCES, tokenizer), model.encode(SENTENCES, tiny_tokenizer))


def test_model_push_writes_an_encoder_card_and_keeps_an_existing_one(tmp_path, fake_hub, tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer))
    trainer = ContrastiveTrainer(
        model, config(tmp_path / "run", max_steps=1), triplet_dataset(8), processing_class=tiny_tokenizer
    )
    trainer.train()
    model.push_to_hub("fake-user/model-only", tokenizer=tiny_tokenizer, token=fake_hub.token)
    files = fake_hub.files("fake-user/model-only")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(files)
    readme = files["README.md"].decode()
    metadata = yaml.safe_load(readme.split("---")[1])
    assert metadata["library_name"] == "hf_contrastive" and "info_nce" in metadata["tags"]
    assert "@inproceedings{gao2021simcse" in readme and "fake-user/model-only" in readme

    fake_hub_card = b"---\nlibrary_name: hf_contrastive\n---\n# kept\n"
    from huggingface_hub import HfApi

    HfApi(token=fake_hub.token).upload_file(
        path_or_fileobj=fake_hub_card, path_in_repo="README.md", repo_id="fake-user/model-only"
    )
    model.push_to_hub("fake-user/model-only", token=fake_hub.token)
    assert fake_hub.files("fake-user/model-only")["README.md"] == fake_hub_card
