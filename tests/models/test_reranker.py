"""AnswerTokenReranker on a tiny Qwen2 causal LM and a tiny BERT masked LM (built from configs, no downloads)."""

import pytest
import torch
import yaml
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from hf_contrastive.data.reranking import DEFAULT_INSTRUCTION, DEFAULT_PROMPT_TEMPLATE
from hf_contrastive.models.reranker import AnswerTokenReranker, RerankerSettings
from hf_contrastive.models.tokenizer import train_wordpiece_tokenizer
from tests.conftest import SENTENCES
from tests.hub import fake_hub as fake_hub_module

fake_hub = fake_hub_module.fake_hub  # registers the fixture in this module
VOCABULARY_TEXTS = [*SENTENCES, DEFAULT_PROMPT_TEMPLATE, DEFAULT_INSTRUCTION, "yes no what"]


# ------------------------------------------------------------------------ tiny builders (the trainer tests use them)
def tiny_word_tokenizer(texts=VOCABULARY_TEXTS, drop=()) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the words of ``texts`` (minus ``drop``): "yes" and "no" are single tokens.

    Like a Qwen2 tokenizer it adds no special tokens; it pads with <pad> (id 0).
    """
    splitter = pre_tokenizers.Whitespace()
    words = sorted({word for text in texts for word, _ in splitter.pre_tokenize_str(text)} - set(drop))
    vocabulary = {token: index for index, token in enumerate(["<pad>", "<unk>", "<eos>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = splitter
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


def tiny_qwen2(vocab_size: int, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    return Qwen2ForCausalLM(config)


def tiny_masked_tokenizer() -> PreTrainedTokenizerFast:
    return train_wordpiece_tokenizer(VOCABULARY_TEXTS, vocab_size=400, model_max_length=256)


def tiny_bert_mlm(vocab_size: int, seed: int = 0) -> BertForMaskedLM:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForMaskedLM(config)


def causal_reranker(seed: int = 0, **settings) -> AnswerTokenReranker:
    tokenizer = tiny_word_tokenizer()
    return AnswerTokenReranker(tiny_qwen2(len(tokenizer), seed), tokenizer, RerankerSettings(**settings))


def masked_reranker(seed: int = 0) -> AnswerTokenReranker:
    tokenizer = tiny_masked_tokenizer()
    return AnswerTokenReranker(tiny_bert_mlm(len(tokenizer), seed), tokenizer)


PAIRS = [
    ("the cat sat", "the cat sat on the mat"),
    ("a dog", "a dog runs in the park"),
    ("rain", "rain falls on the quiet town tonight and the river flows past the old mill"),
    ("the chef", "stocks rose"),
]
GROUPS = [
    {"query": "the cat sat", "positive": "the cat sat on the mat", "negatives": ["stocks rose", "rain falls"]},
    {"query": "a dog", "positive": "a dog runs in the park", "negatives": ["the band played a loud song"]},
]


def pair_batch(reranker, pairs=PAIRS):
    queries, documents = zip(*pairs)
    return reranker.collator().encode(list(queries), list(documents))


# ------------------------------------------------------------------------ answer position
def test_causal_answer_logits_are_the_next_token_logits_after_the_prompt():
    reranker = causal_reranker().eval()
    batch = pair_batch(reranker)
    logits = reranker.answer_logits(batch)
    for row, (query, document) in enumerate(PAIRS):  # each prompt alone, unpadded, full logits of the plain model
        ids = reranker.collator().encode([query], [document])["input_ids"]
        expected = reranker.model(input_ids=ids).logits[0, -1]
        torch.testing.assert_close(logits[row], expected, rtol=1e-5, atol=1e-5)


def test_left_and_right_padding_give_the_same_yes_no_logits():
    reranker = causal_reranker().eval()
    results = {}
    for side in ("left", "right"):
        reranker.tokenizer.padding_side = side
        batch = pair_batch(reranker)
        assert (batch["attention_mask"] == 0).any()  # the batch really is padded
        results[side] = reranker.yes_no_logits(batch)
    reranker.tokenizer.padding_side = "right"
    torch.testing.assert_close(results["left"], results["right"], rtol=1e-5, atol=1e-5)


def test_masked_answer_logits_are_read_at_the_mask_token():
    reranker = masked_reranker().eval()
    batch = pair_batch(reranker)
    logits = reranker.answer_logits(batch)
    full = reranker.model(**batch).logits
    mask_positions = (batch["input_ids"] == reranker.tokenizer.mask_token_id).nonzero()
    assert mask_positions[:, 0].tolist() == list(range(len(PAIRS)))  # exactly one mask per prompt
    torch.testing.assert_close(logits, full[mask_positions[:, 0], mask_positions[:, 1]], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------ scores
def test_scores_follow_the_settings_and_do_not_depend_on_batching():
    reranker = causal_reranker()
    queries, documents = map(list, zip(*PAIRS))
    logits = reranker.eval().yes_no_logits(pair_batch(reranker))
    expected = torch.sigmoid(logits[:, 0] - logits[:, 1])
    one_by_one = reranker.score(queries, documents, batch_size=1)
    batched = reranker.score(queries, documents, batch_size=3)
    torch.testing.assert_close(torch.tensor(one_by_one), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(batched), expected, rtol=1e-5, atol=1e-6)
    reranker.settings.score = "yes_logit"
    torch.testing.assert_close(torch.tensor(reranker.score(queries, documents)), logits[:, 0], rtol=1e-5, atol=1e-5)


def test_score_refuses_strings_and_unaligned_lists():
    reranker = causal_reranker()
    with pytest.raises(TypeError, match="lists of queries and documents"):
        reranker.score("the cat", "the mat")
    with pytest.raises(ValueError, match="one document"):
        reranker.score(["a", "b"], ["a"])


# ------------------------------------------------------------------------ save, reload, push
def test_save_and_reload_give_the_same_scores(tmp_path):
    reranker = causal_reranker(instruction="Find the matching sentence.", score="yes_logit", max_length=48)
    queries, documents = map(list, zip(*PAIRS))
    reranker.save_pretrained(tmp_path / "reranker")
    reloaded = AnswerTokenReranker.from_pretrained(str(tmp_path / "reranker"))
    assert reloaded.settings == reranker.settings and reloaded.model_kind == "causal"
    assert reloaded.score(queries, documents) == reranker.score(queries, documents)


def test_masked_lm_reranker_saves_and_reloads(tmp_path):
    reranker = masked_reranker()
    queries, documents = map(list, zip(*PAIRS))
    reranker.save_pretrained(tmp_path / "mlm")
    reloaded = AnswerTokenReranker.from_pretrained(str(tmp_path / "mlm"))
    assert reloaded.model_kind == "masked"
    assert reloaded.score(queries, documents) == reranker.score(queries, documents)


def test_a_plain_lm_folder_is_wrapped_by_from_model_and_refused_by_from_pretrained(tmp_path):
    reranker = masked_reranker()
    reranker.model.save_pretrained(tmp_path / "plain")
    reranker.tokenizer.save_pretrained(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="reranker_config.json"):
        AnswerTokenReranker.from_pretrained(str(tmp_path / "plain"))
    wrapped = AnswerTokenReranker.from_model(str(tmp_path / "plain"), model_kind="masked")
    queries, documents = map(list, zip(*PAIRS))
    assert wrapped.answer_token_ids == reranker.answer_token_ids
    assert wrapped.score(queries, documents) == reranker.score(queries, documents)


def lora_reranker(tmp_path):
    from peft import LoraConfig, get_peft_model

    tokenizer = tiny_word_tokenizer()
    base = tiny_qwen2(len(tokenizer))
    base.save_pretrained(tmp_path / "base")  # the adapter reloads onto the base model named by this path
    base = Qwen2ForCausalLM.from_pretrained(tmp_path / "base")
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False
    )
    return AnswerTokenReranker(get_peft_model(base, lora), tokenizer)


def test_lora_reranker_scores_trains_and_reloads_from_its_adapter(tmp_path):
    from hf_contrastive.objectives.reranking import two_way_sft_loss

    reranker = lora_reranker(tmp_path)
    trainable = {n for n, p in reranker.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    batch = reranker.collator()(GROUPS)
    optimizer = torch.optim.SGD([p for p in reranker.parameters() if p.requires_grad], lr=0.5)
    losses = []
    for _ in range(3):
        loss = two_way_sft_loss(reranker.yes_no_logits(batch), batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    reranker.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    reloaded = AnswerTokenReranker.from_pretrained(str(tmp_path / "adapter"))
    queries, documents = map(list, zip(*PAIRS))
    torch.testing.assert_close(
        torch.tensor(reloaded.score(queries, documents)), torch.tensor(reranker.score(queries, documents))
    )


def test_push_to_hub_uploads_a_reranker_card_and_downloads_back(tmp_path, fake_hub):
    reranker = causal_reranker()
    reranker.push_to_hub("fake-user/tiny-reranker", token=fake_hub.token)
    files = fake_hub.files("fake-user/tiny-reranker")
    assert {"config.json", "model.safetensors", "tokenizer.json", "reranker_config.json", "README.md"} <= set(files)
    readme = files["README.md"].decode()
    metadata = yaml.safe_load(readme.split("---")[1])
    assert metadata["library_name"] == "hf_contrastive" and metadata["pipeline_tag"] == "text-ranking"
    assert {"reranker", "arxiv:2510.14824"} <= set(metadata["tags"])
    assert DEFAULT_PROMPT_TEMPLATE in readme and "yes = `'yes'`" in readme and "sigmoid(z_yes - z_no)" in readme
    downloaded = AnswerTokenReranker.from_pretrained("fake-user/tiny-reranker", cache_dir=str(tmp_path / "cache"))
    queries, documents = map(list, zip(*PAIRS))
    assert downloaded.score(queries, documents) == reranker.score(queries, documents)


# ------------------------------------------------------------------------ bad input
def test_an_answer_token_missing_from_the_vocabulary_is_named():
    tokenizer = tiny_word_tokenizer(drop=("yes",))
    with pytest.raises(ValueError, match=r"answer token 'yes' must be a single token.*\['<unk>'\]"):
        AnswerTokenReranker(tiny_qwen2(len(tokenizer)), tokenizer)


def test_an_answer_token_split_into_pieces_is_named_with_its_pieces():
    tokenizer = train_wordpiece_tokenizer(SENTENCES, vocab_size=200)  # "yes" is not a word of this vocabulary
    with pytest.raises(ValueError, match=r"answer token 'yes'.*tokenises to \['y', '##e', '##s'\]"):
        AnswerTokenReranker(tiny_bert_mlm(len(tokenizer)), tokenizer)


def test_a_tokenizer_that_appends_eos_would_move_the_answer_position_and_is_refused():
    from tokenizers import processors

    tokenizer = tiny_word_tokenizer()
    eos_id = tokenizer.eos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <eos>", special_tokens=[("<eos>", eos_id)]
    )
    with pytest.raises(ValueError, match="appends the special token '<eos>'"):
        AnswerTokenReranker(tiny_qwen2(len(tokenizer)), tokenizer)


def test_settings_refuse_bad_templates_and_scores():
    with pytest.raises(ValueError, match="unknown field"):
        RerankerSettings(prompt_template="{query} {doc}")
    with pytest.raises(ValueError, match="score must be one of"):
        RerankerSettings(score="probability")
    with pytest.raises(ValueError, match="must differ"):
        RerankerSettings(yes_token="no")


def test_a_model_without_an_lm_head_is_refused():
    from transformers import Qwen2Model

    tokenizer = tiny_word_tokenizer()
    with pytest.raises(ValueError, match="causal LM .* or a masked LM"):
        AnswerTokenReranker(Qwen2Model(tiny_qwen2(len(tokenizer)).config), tokenizer)
