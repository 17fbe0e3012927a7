"""Contrastive search: each step's score against a naive full-forward recomputation, greedy equivalence, batching
with left padding, the ``model.generate`` entries, stopping, streaming and the refused inputs."""

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    LogitsProcessor,
    LogitsProcessorList,
    Qwen2Config,
    Qwen2ForCausalLM,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from hf_contrastive.generation import contrastive_search, contrastive_search_decoding, custom_generate_path

VOCAB, PAD, EOS = 64, 0, 1


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    # No default end-of-sequence id: every row generates max_new_tokens unless a test asks otherwise.
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=128, n_embd=32, n_layer=2, n_head=2, bos_token_id=EOS, eos_token_id=None
    )
    return GPT2LMHeadModel(config).double().eval()


def tiny_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention: the cache has fewer heads than the queries
        max_position_embeddings=128,
        bos_token_id=EOS,
        eos_token_id=None,
        pad_token_id=None,
    )
    return Qwen2ForCausalLM(config).double().eval()


MODELS = {"gpt2": tiny_gpt2, "qwen2": tiny_qwen2}


def left_padded_prompts(lengths=(7, 4, 6), seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.randint(2, VOCAB, (len(lengths), width), generator=generator)
    mask = torch.stack([torch.arange(width) >= width - length for length in lengths]).long()
    return input_ids * mask, mask


def greedy(model, input_ids, attention_mask, new_tokens):
    return model.generate(
        input_ids, attention_mask=attention_mask, max_new_tokens=new_tokens, do_sample=False, pad_token_id=PAD
    )


@torch.no_grad()
def naive_step(model, tokens: list[int], top_k: int, alpha: float):
    """One step recomputed without a cache: full forwards of the real context and of context + each candidate."""
    context = torch.tensor([tokens])
    outputs = model(context, output_hidden_states=True)
    probs = outputs.logits[0, -1].softmax(-1)
    top_probs, top_ids = probs.topk(top_k)
    context_states = F.normalize(outputs.hidden_states[-1][0], dim=-1)
    penalties = []
    for candidate in top_ids.tolist():
        extended = model(torch.tensor([[*tokens, candidate]]), output_hidden_states=True)
        state = F.normalize(extended.hidden_states[-1][0, -1], dim=-1)
        penalties.append((context_states @ state).max())
    penalty = torch.stack(penalties)
    return top_ids, top_probs, penalty, (1 - alpha) * top_probs - alpha * penalty


@pytest.mark.parametrize("family", list(MODELS))
def test_each_step_scores_confidence_minus_max_cosine_like_a_full_recomputation(family):
    model = MODELS[family]()
    input_ids, mask = left_padded_prompts()
    out = contrastive_search(model, input_ids, mask, top_k=4, penalty_alpha=0.6, max_new_tokens=6, return_dict=True)

    width = input_ids.shape[1]
    for row in range(input_ids.shape[0]):
        tokens = input_ids[row][mask[row].bool()].tolist()  # the real prompt, padding dropped
        for step in range(6):
            ids, probs, penalty, scores = naive_step(model, tokens, 4, 0.6)
            assert out.candidate_ids[row, step].tolist() == ids.tolist()
            torch.testing.assert_close(out.candidate_probs[row, step], probs)
            torch.testing.assert_close(out.degeneration_penalty[row, step], penalty)
            torch.testing.assert_close(out.candidate_scores[row, step], scores)
            chosen = ids[scores.argmax()].item()
            assert out.sequences[row, width + step].item() == chosen
            tokens.append(chosen)


def test_spec_toy_case_prefers_a_fresh_token_over_a_likelier_repeat():
    # Penalty 1 for a repeat, 0 for a fresh token; p = 0.5 vs 0.3; alpha = 0.6: 0.4*0.5 - 0.6 < 0.4*0.3 - 0.
    from hf_contrastive.generation import contrastive_scores, degeneration_penalty

    context = torch.eye(3)[:, :2][None]  # [1, D=3, L=2]: one-hot states of two context tokens
    candidates = torch.eye(3)[[0, 2]][None]  # [1, k=2, D]: a repeat of token 0, a fresh token
    penalty = degeneration_penalty(candidates, context, torch.ones(1, 2, dtype=torch.bool))
    scores = contrastive_scores(torch.tensor([[0.5, 0.3]]), penalty, 0.6)
    assert penalty.tolist() == [[1.0, 0.0]]
    torch.testing.assert_close(scores, torch.tensor([[-0.4, 0.12]]))
    assert scores.argmax().item() == 1


@pytest.mark.parametrize("family", list(MODELS))
@pytest.mark.parametrize(("top_k", "alpha"), [(5, 0.0), (1, 0.6)])
def test_alpha_zero_or_one_candidate_is_greedy_token_for_token(family, top_k, alpha):
    model = MODELS[family]()
    input_ids, mask = left_padded_prompts()
    ours = contrastive_search(model, input_ids, mask, top_k=top_k, penalty_alpha=alpha, max_new_tokens=12)
    assert torch.equal(ours, greedy(model, input_ids, mask, 12))


@pytest.mark.parametrize("family", list(MODELS))
def test_left_padded_batch_decodes_each_prompt_as_if_alone(family):
    model = MODELS[family]()
    input_ids, mask = left_padded_prompts()
    batched = contrastive_search(model, input_ids, mask, top_k=4, penalty_alpha=0.6, max_new_tokens=10)
    for row in range(input_ids.shape[0]):
        alone = input_ids[row][mask[row].bool()][None]
        single = contrastive_search(model, alone, top_k=4, penalty_alpha=0.6, max_new_tokens=10)
        assert batched[row, -10:].tolist() == single[0, -10:].tolist()


def test_generate_with_the_callable_or_the_folder_equals_the_function():
    model = tiny_gpt2()
    input_ids, mask = left_padded_prompts()
    expected = contrastive_search(model, input_ids, mask, top_k=4, penalty_alpha=0.6, max_new_tokens=8)
    options = dict(attention_mask=mask, max_new_tokens=8, penalty_alpha=0.6, top_k=4, pad_token_id=PAD)
    by_callable = model.generate(input_ids, custom_generate=contrastive_search_decoding, **options)
    by_folder = model.generate(input_ids, custom_generate=custom_generate_path(), trust_remote_code=True, **options)
    assert torch.equal(by_callable, expected) and torch.equal(by_folder, expected)


def test_generate_returns_the_scores_of_each_step_on_request():
    model = tiny_gpt2()
    input_ids, mask = left_padded_prompts()
    out = model.generate(
        input_ids,
        attention_mask=mask,
        custom_generate=contrastive_search_decoding,
        max_new_tokens=5,
        penalty_alpha=0.6,
        top_k=4,
        pad_token_id=PAD,
        return_dict_in_generate=True,
        output_scores=True,
    )
    assert out.sequences.shape == (3, input_ids.shape[1] + 5)
    assert len(out.scores) == 5 and out.scores[0].shape == (3, VOCAB) and out.logits is None


def test_end_of_sequence_stops_a_row_pads_it_and_ends_when_all_rows_stopped():
    model = tiny_gpt2()
    input_ids, mask = left_padded_prompts()
    free = contrastive_search(model, input_ids, mask, top_k=4, penalty_alpha=0.6, max_new_tokens=10)
    width = input_ids.shape[1]
    eos = free[0, width + 2].item()  # the token row 0 generates third
    stopped = contrastive_search(
        model, input_ids, mask, top_k=4, penalty_alpha=0.6, max_new_tokens=10, eos_token_id=eos, pad_token_id=PAD
    )
    assert stopped[0, : width + 3].tolist() == free[0, : width + 3].tolist()
    assert set(stopped[0, width + 3 :].tolist()) <= {PAD}
    first_eos = [row.tolist().index(eos) if eos in row.tolist() else None for row in free[:, width:]]
    if all(position is not None for position in first_eos):  # every row meets it: the loop ends at the last one
        assert stopped.shape[1] == width + max(first_eos) + 1
    single = contrastive_search(
        model, input_ids[:1], mask[:1], top_k=4, penalty_alpha=0.6, max_new_tokens=10, eos_token_id=eos
    )
    assert single.shape[1] == width + 3 and single[0, -1].item() == eos


class StopAfter(StoppingCriteria):
    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.length, dtype=torch.bool)


def test_custom_stopping_criteria_end_the_loop():
    model = tiny_gpt2()
    input_ids, mask = left_padded_prompts()
    criteria = StoppingCriteriaList([StopAfter(input_ids.shape[1] + 3)])
    out = contrastive_search(model, input_ids, mask, max_new_tokens=20, stopping_criteria=criteria)
    assert out.shape[1] == input_ids.shape[1] + 3


class CollectingStreamer(BaseStreamer):
    def __init__(self) -> None:
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value.clone())

    def end(self):
        self.ended = True


def test_streamer_gets_the_prompt_then_every_step():
    model = tiny_gpt2()
    input_ids, mask = left_padded_prompts()
    streamer = CollectingStreamer()
    out = contrastive_search(model, input_ids, mask, top_k=3, max_new_tokens=5, streamer=streamer)
    assert torch.equal(streamer.chunks[0], input_ids) and streamer.ended
    assert torch.equal(torch.stack(streamer.chunks[1:], dim=1), out[:, input_ids.shape[1] :])


class AllowOnly(LogitsProcessor):
    def __init__(self, allowed: list[int]) -> None:
        self.allowed = allowed

    def __call__(self, input_ids, scores):
        keep = torch.full_like(scores, float("-inf"))
        keep[:, self.allowed] = 0
        return scores + keep


def test_a_candidate_forbidden_by_a_logits_processor_never_wins():
    # Only 2 tokens allowed but 5 candidates: the 3 forbidden ones have probability 0 and a possibly lower penalty.
    model = tiny_gpt2()
    input_ids, mask = left_padded_prompts()
    out = contrastive_search(
        model,
        input_ids,
        mask,
        top_k=5,
        penalty_alpha=0.9,
        max_new_tokens=6,
        logits_processor=LogitsProcessorList([AllowOnly([5, 7])]),
    )
    assert set(out[:, input_ids.shape[1] :].flatten().tolist()) <= {5, 7}


def test_a_lora_model_decodes_like_its_merged_weights():
    from peft import LoraConfig, get_peft_model

    model = tiny_gpt2()
    lora = get_peft_model(
        model, LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    )
    input_ids, mask = left_padded_prompts()
    adapted = contrastive_search(lora, input_ids, mask, top_k=4, penalty_alpha=0.6, max_new_tokens=6)
    merged = contrastive_search(lora.merge_and_unload(), input_ids, mask, top_k=4, penalty_alpha=0.6, max_new_tokens=6)
    assert torch.equal(adapted, merged)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"penalty_alpha": -0.1}, r"penalty_alpha must be in \[0, 1\]"),
        ({"penalty_alpha": 1.5}, r"penalty_alpha must be in \[0, 1\]"),
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"top_k": VOCAB + 1}, "exceeds the vocabulary size"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ],
)
def test_out_of_range_arguments_are_named(options, message):
    input_ids, mask = left_padded_prompts()
    with pytest.raises(ValueError, match=message):
        contrastive_search(tiny_gpt2(), input_ids, mask, **options)


def test_generate_refuses_alpha_outside_the_unit_interval():
    input_ids, mask = left_padded_prompts()
    with pytest.raises(ValueError, match="penalty_alpha must be in"):
        tiny_gpt2().generate(
            input_ids,
            attention_mask=mask,
            custom_generate=contrastive_search_decoding,
            penalty_alpha=2.0,
            top_k=3,
            max_new_tokens=3,
        )


def test_a_model_without_an_lm_head_has_no_hidden_states_to_score():
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=1, n_head=2, bos_token_id=EOS, eos_token_id=None
    )
    bare = GPT2Model(config).eval()
    with pytest.raises(ValueError, match="no output embeddings"):
        contrastive_search(bare, *left_padded_prompts())


def test_right_padding_is_refused():
    input_ids, mask = left_padded_prompts()
    with pytest.raises(ValueError, match="left padding"):
        contrastive_search(tiny_gpt2(), input_ids, mask.flip(1))


def test_sliding_window_and_flash_attention_models_are_refused():
    model = tiny_qwen2()
    model.config.layer_types = ["sliding_attention"] * 2
    model.config.sliding_window = 8
    with pytest.raises(ValueError, match="DynamicSlidingWindowLayer"):
        contrastive_search(model, *left_padded_prompts())
    model = tiny_gpt2()
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="set_attn_implementation"):
        contrastive_search(model, *left_padded_prompts())


def test_generate_without_penalty_alpha_or_with_other_model_inputs_is_refused():
    input_ids, mask = left_padded_prompts()
    model = tiny_gpt2()
    with pytest.raises(ValueError, match="penalty_alpha must be in"):
        model.generate(input_ids, attention_mask=mask, custom_generate=contrastive_search_decoding, max_new_tokens=3)
    with pytest.raises(ValueError, match=r"text prompts only; got the model inputs \['token_type_ids'\]"):
        model.generate(
            input_ids,
            attention_mask=mask,
            token_type_ids=torch.zeros_like(input_ids),
            custom_generate=contrastive_search_decoding,
            penalty_alpha=0.6,
            top_k=3,
            max_new_tokens=3,
        )


def test_the_preallocated_cache_layer_holds_what_concatenation_would_through_growth_and_crops():
    from transformers.cache_utils import DynamicLayer

    from hf_contrastive.generation.contrastive_search import _PreallocatedLayer

    generator = torch.Generator().manual_seed(0)
    preallocated, reference = _PreallocatedLayer(capacity=3), DynamicLayer()
    for change in (2, 3, -2, 1, 4, -1, 5):  # 2 + 3 already overflows the capacity of 3: the buffer grows twice
        if change < 0:
            preallocated.crop(change)
            reference.crop(change)
            continue
        keys, values = (torch.randn(2, 3, change, 4, generator=generator) for _ in range(2))
        got, expected = preallocated.update(keys, values), reference.update(keys, values)
        for a, b in zip(got, expected):
            assert torch.equal(a, b)
        assert preallocated.get_seq_length() == reference.get_seq_length()
    assert preallocated._key_buffer.shape[-2] >= 12
