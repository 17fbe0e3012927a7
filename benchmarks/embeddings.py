"""Time one contrastive training step of hf_contrastive against sentence-transformers' MNRL and CMNRL, in one run.

Every contender trains the same randomly initialised BERT (one checkpoint, loaded by both libraries; their
embeddings are checked to agree before any timing) on the same synthetic (anchor, positive) batches, with the same
objective (InfoNCE, cosine similarity, temperature 0.05 == sentence-transformers' scale 20), precision and AdamW::

    python benchmarks/embeddings.py                                   # tiny BERT on the CPU (the default)
    python benchmarks/embeddings.py --device cuda --size base         # BERT-base, bf16, batch 1024 / 1024,4096
    python benchmarks/embeddings.py --contenders st_mnrl,ours_uncached --json results.jsonl

Contenders (uncached ones run at ``--batch-size``, cached ones at each of ``--cached-batch-size``):

- ``st_mnrl``: ``MultipleNegativesRankingLoss`` (one forward per column, each padded to its own longest text);
- ``st_cmnrl``: ``CachedMultipleNegativesRankingLoss`` with ``--mini-batch-size`` rows per mini-batch;
- ``ours_padded``: ``ContrastiveTrainer.training_step`` with ``forward_token_budget=0``: one padded forward over
  both columns merged (what the library's chunks are measured against);
- ``ours_uncached``: the library's default uncached step: the merged batch embedded in length-sorted chunks of at
  most ``--forward-token-budget`` padded tokens, all with gradient (default: the library's for the device);
- ``ours_packed``: ``unpad_inputs=True``: the real tokens packed into one row, variable-length attention (flash
  ``varlen_attn`` on CUDA in bf16, grouped SDPA otherwise; no attention-probability dropout on that path);
- ``ours_cached``: ``gradient_cache=True`` with ``cache_token_budget=--token-budget`` (default: the library's).

A step is forward + loss + backward + ``optimizer.step()`` + ``zero_grad``; tokenization and the copy to the
device happen before the timer, for every contender. Reported: median step time over ``--steps`` steps after
``--warmup`` steps, pairs/s, real (non-padding) tokens/s, forward tokens per real token (padding and re-embedding
overhead, counted at the backbone's input) and peak memory:

- CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before the contender built its model;
- CPU: torch has no CPU allocator statistics, so each contender runs in a forked child (``--isolation fork``, the
  CPU default) and reports its peak resident set size (``getrusage().ru_maxrss``) above its RSS at the fork.
  Both include weights, gradients, optimizer state, activations and the batch.

bf16 autocast wraps each model's ``forward`` (what ``accelerate`` does for ``mixed_precision="bf16"``), so the
re-embedding inside sentence-transformers' backward hook runs in bf16 as it does in real training.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from torch import nn
from transformers import BertConfig, BertModel, Trainer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the parent trains the tokenizer, then forks
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this benchmark belongs to

from hf_contrastive import ContrastiveEncoder
from hf_contrastive.data import ContrastiveCollator
from hf_contrastive.models.tokenizer import train_wordpiece_tokenizer
from hf_contrastive.trainers import ContrastiveConfig, ContrastiveTrainer
from hf_contrastive.trainers.contrastive import resolve_token_budget

CONTENDERS = ("st_mnrl", "st_cmnrl", "ours_padded", "ours_uncached", "ours_packed", "ours_cached")
CACHED = ("st_cmnrl", "ours_cached")
TEMPERATURE = 0.05
LEARNING_RATE = 2e-5
TOKENIZER_VOCAB = 4000
SIZES = {
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512},
    "small": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
VOCAB_SIZES = {"tiny": TOKENIZER_VOCAB, "small": 30522, "base": 30522}
DEVICE_DEFAULTS = {
    "cpu": {
        "size": "tiny",
        "batch_size": 64,
        "cached_batch_size": [64],
        "mini_batch_size": 16,
        "steps": 5,
        "warmup": 2,
        "precision": "fp32",
        "isolation": "fork",
    },
    "cuda": {
        "size": "base",
        "batch_size": 1024,
        "cached_batch_size": [1024, 4096],
        "mini_batch_size": 64,
        "steps": 5,
        "warmup": 2,
        "precision": "bf16",
        "isolation": "none",
    },
}
GIB = 1024**3


@dataclass
class Bench:
    """What every contender shares, built once in the parent: flags, checkpoint folder, tokenizer and batches."""

    args: argparse.Namespace
    checkpoint: Path
    tokenizer: Any
    batches: dict[int, list[list[dict[str, str]]]]  # batch size -> one list of rows per step

    @property
    def device(self) -> torch.device:
        return torch.device(self.args.device)


class Runner(NamedTuple):
    """A contender ready to time: ``prepare(rows)`` tokenizes and moves to the device, ``step(inputs)`` trains.

    ``settings``: the contender's own resolved options (token budgets, mini-batch size), added to its result.
    """

    backbone: nn.Module
    prepare: Callable[[list[dict[str, str]]], Any]
    step: Callable[[Any], None]
    real_tokens: Callable[[Any], int]
    settings: dict[str, Any]


# ------------------------------------------------------------------------------------------------------ data
def single_token_words(tokenizer) -> list[str]:
    """Vocabulary entries that are whole words: each one, written alone, is exactly one token."""
    return sorted(token for token in tokenizer.get_vocab() if token.isalpha() and token.isascii())


def build_tokenizer(seed: int):
    """A WordPiece tokenizer trained on random pseudo-words (offline, deterministic)."""
    rng = random.Random(seed)
    words = sorted({"".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 8))) for _ in range(6000)})
    corpus = [" ".join(rng.sample(words, 20)) for _ in range(3000)]
    return train_wordpiece_tokenizer(corpus, vocab_size=TOKENIZER_VOCAB)


def make_rows(words: Sequence[str], count: int, min_len: int, max_len: int, rng: random.Random) -> list[dict]:
    """``count`` (anchor, positive) rows; each text has a length uniform in [min_len, max_len] tokens with [CLS]/[SEP]."""

    def text() -> str:
        return " ".join(rng.choices(words, k=rng.randint(min_len, max_len) - 2))

    return [{"anchor": text(), "positive": text()} for _ in range(count)]


def jobs(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(contender, batch size) pairs in run order: uncached first, then cached by growing batch, ours before theirs.

    The slowest job (``st_cmnrl`` at the largest batch) comes last, so a run cut short keeps the others.
    """
    uncached = [(name, args.batch_size) for name in args.contenders if name not in CACHED]
    cached = [(name, size) for size in args.cached_batch_size for name in args.contenders if name in CACHED]
    return uncached + sorted(cached, key=lambda job: (job[1], job[0].startswith("st_")))


def make_batches(args: argparse.Namespace, tokenizer) -> dict[int, list[list[dict[str, str]]]]:
    """One distinct batch of rows per step (warmup included) for every batch size in the run."""
    words = single_token_words(tokenizer)
    sizes = sorted({size for _, size in jobs(args)})
    batches = {}
    for size in sizes:
        rng = random.Random(args.seed * 1_000_003 + size)
        batches[size] = [
            make_rows(words, size, args.min_len, args.max_len, rng) for _ in range(args.warmup + args.steps)
        ]
    return batches


# ------------------------------------------------------------------------------------------------------ models
def build_checkpoint(bench: Bench) -> None:
    """Save one randomly initialised BERT (seeded) and the tokenizer to ``bench.checkpoint`` for both libraries."""
    torch.manual_seed(bench.args.seed)
    vocab_size = max(len(bench.tokenizer), VOCAB_SIZES[bench.args.size])
    config = BertConfig(vocab_size=vocab_size, max_position_embeddings=512, **SIZES[bench.args.size])
    BertModel(config).save_pretrained(bench.checkpoint)
    bench.tokenizer.save_pretrained(bench.checkpoint)


def load_st(bench: Bench) -> SentenceTransformer:
    """sentence-transformers' model over the checkpoint: Transformer + mean Pooling."""
    transformer = Transformer(str(bench.checkpoint), max_seq_length=bench.args.max_len)
    pooling = Pooling(transformer.get_embedding_dimension(), "mean")
    return SentenceTransformer(modules=[transformer, pooling], device=str(bench.device))


def load_ours(bench: Bench) -> ContrastiveEncoder:
    """Our encoder over the same checkpoint, with mean pooling."""
    return ContrastiveEncoder.from_backbone(str(bench.checkpoint), pooling="mean").to(bench.device)


def st_features(model: SentenceTransformer, texts: list[str], device: torch.device) -> dict[str, Any]:
    """sentence-transformers' tokenization of one column, on ``device`` (``preprocess``, ``tokenize`` before 6.x)."""
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    return {key: value.to(device) if torch.is_tensor(value) else value for key, value in preprocess(texts).items()}


def find_backbone(model: nn.Module) -> BertModel:
    """The BERT inside either library's model."""
    return next(module for module in model.modules() if isinstance(module, BertModel))


def autocast_forward(model: nn.Module, device: torch.device, precision: str) -> None:
    """Run ``model.forward`` under bf16 autocast, as ``accelerate`` does for ``mixed_precision="bf16"``."""
    if precision == "bf16":
        model.forward = torch.autocast(device.type, dtype=torch.bfloat16)(model.forward)


def check_same_model(bench: Bench, rows: list[dict[str, str]], tolerance: float = 1e-4) -> float:
    """Embed ``rows``' anchors with both libraries (fp32, eval); raise unless tokens and embeddings agree.

    Returns the largest absolute difference between the two embedding matrices.
    """
    st_model, ours = load_st(bench).eval(), load_ours(bench).eval()
    implementations = {find_backbone(m).config._attn_implementation for m in (st_model, ours)}
    if len(implementations) != 1:
        raise RuntimeError(f"The two models use different attention implementations: {implementations}.")
    anchors = [row["anchor"] for row in rows]
    theirs = st_features(st_model, anchors, bench.device)
    collator = ContrastiveCollator(bench.tokenizer, ["anchor", "positive"], max_length=bench.args.max_len)
    batch = collator(rows)
    ours_ids = batch["input_ids"][: len(rows)].to(bench.device)
    ours_mask = batch["attention_mask"][: len(rows)].to(bench.device)
    width = theirs["input_ids"].shape[1]
    if not torch.equal(theirs["input_ids"], ours_ids[:, :width]) or ours_mask[:, width:].any():
        raise RuntimeError("sentence-transformers and ContrastiveCollator tokenized the same texts differently.")
    with torch.no_grad():
        st_embeddings = st_model(theirs)["sentence_embedding"]
        our_embeddings = ours(input_ids=ours_ids, attention_mask=ours_mask).embeddings
    difference = (st_embeddings - our_embeddings).abs().max().item()
    if not difference <= tolerance * st_embeddings.abs().max().item():
        raise RuntimeError(f"The two models disagree (max |diff| = {difference:.3g}): not the same weights.")
    return difference


def prepare_checkpoint(bench: Bench) -> float:
    """Build the shared checkpoint, then check both libraries load the same model from it."""
    build_checkpoint(bench)
    first_rows = next(iter(bench.batches.values()))[0][:8]
    return check_same_model(bench, first_rows)


# ------------------------------------------------------------------------------------------------------ contenders
def training_arguments(bench: Bench, batch_size: int, **contrastive) -> ContrastiveConfig:
    """Trainer arguments shared by every contender (AdamW type and learning rate come from here)."""
    return ContrastiveConfig(
        output_dir=str(bench.checkpoint.parent / "trainer"),
        per_device_train_batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        temperature=TEMPERATURE,
        max_length=bench.args.max_len,
        use_cpu=bench.device.type == "cpu",
        report_to="none",
        save_strategy="no",
        seed=bench.args.seed,
        **contrastive,
    )


def st_runner(bench: Bench, batch_size: int, cached: bool) -> Runner:
    """sentence-transformers: ``loss(features, labels).backward()`` then the same AdamW step as ours."""
    model = load_st(bench).train()
    autocast_forward(model, bench.device, bench.args.precision)
    if cached:
        loss = CachedMultipleNegativesRankingLoss(
            model, scale=1 / TEMPERATURE, mini_batch_size=bench.args.mini_batch_size
        )
    else:
        loss = MultipleNegativesRankingLoss(model, scale=1 / TEMPERATURE)
    optimizer_class, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(training_arguments(bench, batch_size))
    optimizer = optimizer_class(model.parameters(), **optimizer_kwargs)

    def prepare(rows):
        return [st_features(model, [row[column] for row in rows], bench.device) for column in ("anchor", "positive")]

    def step(features):
        # Fresh dicts each step, as the data collator gives: the model writes its outputs into them.
        loss([dict(column) for column in features], None).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def real_tokens(features):
        return int(sum(column["attention_mask"].sum() for column in features))

    settings = {"mini_batch_size": bench.args.mini_batch_size} if cached else {}
    return Runner(find_backbone(model), prepare, step, real_tokens, settings)


OURS_MODES = {  # ContrastiveConfig fields of each ours_* contender, beyond the shared training arguments
    "padded": lambda args: {"forward_token_budget": 0},
    "uncached": lambda args: {"forward_token_budget": args.forward_token_budget},
    "packed": lambda args: {"unpad_inputs": True},
    "cached": lambda args: {"gradient_cache": True, "cache_token_budget": args.token_budget},
}


def ours_runner(bench: Bench, batch_size: int, mode: str) -> Runner:
    """hf_contrastive: ``ContrastiveTrainer.training_step`` (the library's own code path) then the AdamW step.

    ``mode`` picks the step's configuration (:data:`OURS_MODES`); bf16 autocast wraps the encoder's ``forward``,
    which the trainer calls on every path (padded, chunked, packed, cached).
    """
    model = load_ours(bench).train()
    autocast_forward(model, bench.device, bench.args.precision)
    arguments = training_arguments(bench, batch_size, **OURS_MODES[mode](bench.args))
    trainer = ContrastiveTrainer(
        model=model, args=arguments, processing_class=bench.tokenizer, text_columns=["anchor", "positive"]
    )
    trainer.create_optimizer()

    def prepare(rows):
        return trainer._prepare_inputs(trainer.data_collator(rows))

    def step(batch):
        trainer.training_step(model, dict(batch))
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    def real_tokens(batch):
        return int(batch["attention_mask"].sum())

    return Runner(find_backbone(model), prepare, step, real_tokens, ours_settings(trainer))


def ours_settings(trainer: ContrastiveTrainer) -> dict[str, Any]:
    """The budgets the trainer resolved and uses (``None`` where its path ignores one): reported with the numbers."""
    args = trainer.args
    chunked = not (args.gradient_cache or args.unpad_inputs)
    return {
        "forward_token_budget": trainer.forward_token_budget if chunked else None,
        "cache_token_budget": trainer.cache_token_budget if args.gradient_cache else None,
        "unpad_inputs": args.unpad_inputs,
    }


RUNNERS: dict[str, Callable[[Bench, int], Runner]] = {
    "st_mnrl": lambda bench, batch_size: st_runner(bench, batch_size, cached=False),
    "st_cmnrl": lambda bench, batch_size: st_runner(bench, batch_size, cached=True),
    "ours_padded": lambda bench, batch_size: ours_runner(bench, batch_size, "padded"),
    "ours_uncached": lambda bench, batch_size: ours_runner(bench, batch_size, "uncached"),
    "ours_packed": lambda bench, batch_size: ours_runner(bench, batch_size, "packed"),
    "ours_cached": lambda bench, batch_size: ours_runner(bench, batch_size, "cached"),
}


# ------------------------------------------------------------------------------------------------------ measuring
def max_rss_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory:
    """Peak memory of one contender above its start: the CUDA allocator's, or a forked child's peak RSS."""

    def __init__(self, device: torch.device, isolated: bool) -> None:
        self.device = device
        if device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            self.method, self.start = "cuda_max_memory_allocated", torch.cuda.memory_allocated(device)
        elif isolated:
            self.method, self.start = "cpu_peak_rss_in_forked_child", max_rss_bytes()
        else:
            self.method, self.start = "not_measured_cpu_in_process", None

    def peak(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.start
        return None if self.start is None else max_rss_bytes() - self.start


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_step_seconds(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    """Run ``step`` ``warmup`` times, then time ``steps`` calls (device-synchronised); the median in seconds."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextmanager
def count_forward_tokens(backbone: BertModel):
    """Count the token positions (padding included) embedded inside the block; yields a one-item list.

    The hook sits on the word embeddings: sentence-transformers calls the backbone's ``forward`` directly, which
    skips hooks on the backbone itself.
    """
    total = [0]

    def hook(module, args):
        total[0] += args[0].numel()

    handle = backbone.get_input_embeddings().register_forward_pre_hook(hook)
    try:
        yield total
    finally:
        handle.remove()


def measure(bench: Bench, contender: str, batch_size: int) -> dict[str, Any]:
    """Build one contender, run warmup + timed steps, and return its numbers."""
    args, device = bench.args, bench.device
    torch.manual_seed(args.seed)
    memory = PeakMemory(device, isolated=args.isolation == "fork")
    runner = RUNNERS[contender](bench, batch_size)
    times, cpu_times, real_tokens, forward_tokens = [], [], [], []
    for index, rows in enumerate(bench.batches[batch_size]):
        inputs = runner.prepare(rows)
        with count_forward_tokens(runner.backbone) as counted:
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            runner.step(inputs)
            synchronize(device)
            elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
        if index >= args.warmup:
            times.append(elapsed)
            cpu_times.append(cpu_elapsed)
            real_tokens.append(runner.real_tokens(inputs))
            forward_tokens.append(counted[0])
    step_time = statistics.median(times)
    tokens_per_step = statistics.mean(real_tokens)
    return {
        "contender": contender,
        "batch_size": batch_size,
        "median_step_s": step_time,
        "median_process_cpu_s": statistics.median(cpu_times),
        "pairs_per_s": batch_size / step_time,
        "real_tokens_per_s": tokens_per_step / step_time,
        "real_tokens_per_step": tokens_per_step,
        "forward_tokens_per_real_token": sum(forward_tokens) / sum(real_tokens),
        "peak_memory_bytes": memory.peak(),
        "memory_method": memory.method,
        **runner.settings,
    }


def run_isolated(function: Callable[..., Any], *args: Any) -> Any:
    """Run ``function(*args)`` in a forked child (its own peak RSS) and return its result or raise its error.

    The parent must not have run multi-threaded torch ops before forking (an OpenMP pool does not survive a fork).
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, function, args))
    process.start()
    sender.close()
    try:
        status, value = receiver.recv()
    except EOFError:
        status, value = "error", "the child process died without a result"
    process.join()
    if status == "error":
        raise RuntimeError(f"{function.__name__} failed in a child process (exit code {process.exitcode}):\n{value}")
    return value


def _child(sender, function: Callable[..., Any], args: tuple) -> None:
    try:
        sender.send(("ok", function(*args)))
    except BaseException:
        sender.send(("error", traceback.format_exc()))


# ------------------------------------------------------------------------------------------------------ report
def add_ratios(results: list[dict[str, Any]]) -> None:
    """Add ``vs_st_mnrl`` and ``vs_st_cmnrl`` (pairs/s ratios at the same batch size) to every result."""
    reference = {(r["contender"], r["batch_size"]): r["pairs_per_s"] for r in results}
    for result in results:
        for peer in ("st_mnrl", "st_cmnrl"):
            theirs = reference.get((peer, result["batch_size"]))
            result[f"vs_{peer}"] = result["pairs_per_s"] / theirs if theirs else None


def format_memory(value: int | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / GIB:.2f} GiB" if value >= GIB else f"{value / 1024**2:.0f} MiB"


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(results: list[dict[str, Any]]) -> str:
    header = (
        f"{'contender':<15}{'batch':>7}{'step s':>9}{'cpu s':>8}{'pairs/s':>10}{'real tok/s':>12}{'fwd/real':>10}"
        f"{'peak mem':>11}{'vs st_mnrl':>12}{'vs st_cmnrl':>13}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r['contender']:<15}{r['batch_size']:>7}{r['median_step_s']:>9.3f}{r['median_process_cpu_s']:>8.2f}"
            f"{r['pairs_per_s']:>10,.1f}"
            f"{r['real_tokens_per_s']:>12,.0f}{r['forward_tokens_per_real_token']:>10.2f}"
            f"{format_memory(r['peak_memory_bytes']):>11}{format_ratio(r['vs_st_mnrl']):>12}"
            f"{format_ratio(r['vs_st_cmnrl']):>13}"
        )
    return "\n".join(lines)


def target_lines(results: list[dict[str, Any]], device: str) -> list[str]:
    """Check the issue's targets against the measured ratios, one line each; ``[info]`` lines have no target.

    GPU: uncached >= 1.5x MNRL at no more memory; cached <= 8 GiB and >= 65% of our uncached speed. CPU: not slower
    than MNRL (and CMNRL for the cached step). Information: the padding-free step vs MNRL, and what the length-sorted
    chunks buy over one padded forward.
    """
    by_key = {(r["contender"], r["batch_size"]): r for r in results}
    lines = []

    def compare(ours_name: str, theirs_name: str, batch: int, floor: float | None, memory_cap: bool = False) -> None:
        ours, theirs = by_key.get((ours_name, batch)), by_key.get((theirs_name, batch))
        if not ours or not theirs:
            return
        speed = ours["pairs_per_s"] / theirs["pairs_per_s"]
        ok = floor is None or speed >= floor
        text = f"{ours_name} / {theirs_name} at batch {batch}: {speed:.2f}x pairs/s"
        text += "" if floor is None else f" (target >= {floor:g}x)"
        if ours["peak_memory_bytes"] and theirs["peak_memory_bytes"]:
            memory = ours["peak_memory_bytes"] / theirs["peak_memory_bytes"]
            ok = ok and (memory <= 1.0 or not memory_cap)
            text += f", {memory:.2f}x memory" + (" (target <= 1x)" if memory_cap else "")
        lines.append(f"  [{'info' if floor is None else 'ok' if ok else 'MISS'}] {text}")

    gpu = device == "cuda"
    for batch in sorted({r["batch_size"] for r in results}):
        compare("ours_uncached", "st_mnrl", batch, 1.5 if gpu else 1.0, memory_cap=gpu)
        compare("ours_cached", "st_cmnrl", batch, 1.0)
        compare("ours_cached", "ours_uncached", batch, 0.65)
        cached = by_key.get(("ours_cached", batch))
        if gpu and cached and cached["peak_memory_bytes"] is not None:
            peak = cached["peak_memory_bytes"] / GIB
            lines.append(f"  [{'ok' if peak <= 8 else 'MISS'}] ours_cached at batch {batch}: {peak:.2f} GiB (<= 8)")
        compare("ours_packed", "st_mnrl", batch, None)
        compare("ours_uncached", "ours_padded", batch, None)
    return lines


def budget_text(args: argparse.Namespace) -> str:
    """The token budgets ``ours_uncached`` and ``ours_cached`` run with, resolved as the trainer resolves them."""
    device = torch.device(args.device)
    parts = []
    for flag, value, kind, contender in (
        ("--forward-token-budget", args.forward_token_budget, "forward", "ours_uncached forward chunks"),
        ("--token-budget", args.token_budget, "cache", "ours_cached mini-batches"),
    ):
        source = f"library default on {device.type}" if value is None else flag
        parts.append(f"{contender} {resolve_token_budget(value, kind, device)} tokens ({source})")
    return "; ".join(parts)


def report(bench: Bench, results: list[dict[str, Any]], embedding_difference: float) -> str:
    args = bench.args
    config = SIZES[args.size]
    lines = [
        f"device {args.device}, {torch.get_num_threads()} torch thread(s), precision {args.precision}; BERT "
        f"'{args.size}' ({config['hidden_size']} hidden, {config['num_hidden_layers']} layers, "
        f"{config['num_attention_heads']} heads), random init (seed {args.seed}) shared by both libraries",
        f"same model check: max |embedding diff| = {embedding_difference:.2e} (fp32, eval); same tokens",
        f"text lengths uniform in [{args.min_len}, {args.max_len}] tokens; InfoNCE / MNRL, cosine, temperature "
        f"{TEMPERATURE} (scale {1 / TEMPERATURE:g}); AdamW lr {LEARNING_RATE}",
        f"st_cmnrl mini-batch {args.mini_batch_size} rows; {budget_text(args)}; ours_padded: one padded forward "
        "(forward_token_budget=0); ours_packed: unpad_inputs=True (no padding, varlen attention)",
        f"timing: median of {args.steps} steps after {args.warmup} warmup; step = forward + loss + backward + "
        "AdamW step; tokenization EXCLUDED (done before the timer for every contender)",
        f"memory: {results[0]['memory_method'] if results else 'n/a'}; torch {torch.__version__}, transformers "
        f"{transformers.__version__}, sentence-transformers {sentence_transformers.__version__}",
        "",
        table(results),
        "",
        "targets:",
        *target_lines(results, args.device),
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", choices=tuple(SIZES), help="BERT config (default: tiny on cpu, base on cuda)")
    parser.add_argument("--batch-size", type=int, help="pairs per step for uncached contenders")
    parser.add_argument(
        "--cached-batch-size",
        type=lambda text: [int(value) for value in text.split(",")],
        help="comma-separated pairs per step for cached contenders (st_cmnrl, ours_cached)",
    )
    parser.add_argument("--mini-batch-size", type=int, help="st_cmnrl rows per mini-batch")
    parser.add_argument(
        "--token-budget", type=int, help="ours_cached padded tokens per mini-batch (default: the library's)"
    )
    parser.add_argument(
        "--forward-token-budget", type=int, help="ours_uncached padded tokens per chunk (default: the library's)"
    )
    parser.add_argument("--steps", type=int, help="timed steps per contender")
    parser.add_argument("--warmup", type=int, help="untimed steps before them")
    parser.add_argument("--min-len", type=int, default=16, help="shortest text in tokens ([CLS]/[SEP] included)")
    parser.add_argument("--max-len", type=int, default=128, help="longest text in tokens")
    parser.add_argument("--precision", choices=("fp32", "bf16"))
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help=f"comma-separated subset of {CONTENDERS}")
    parser.add_argument("--isolation", choices=("fork", "none"), help="fork: one child per contender (CPU memory)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write one JSON line per contender and batch size here")
    args = parser.parse_args(argv)
    for key, value in DEVICE_DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.contenders = [name.strip() for name in args.contenders.split(",") if name.strip()]
    unknown = sorted(set(args.contenders) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown contenders {unknown}; choose from {CONTENDERS}")
    if args.steps < 1 or args.warmup < 0:
        parser.error("need --steps >= 1 and --warmup >= 0")
    if not 3 <= args.min_len <= args.max_len:
        parser.error("need 3 <= --min-len <= --max-len (every text has [CLS], [SEP] and at least one word)")
    if args.token_budget is not None and args.token_budget < args.max_len:
        parser.error("--token-budget must hold one row of --max-len tokens")
    if args.forward_token_budget is not None and args.forward_token_budget < 0:
        parser.error("--forward-token-budget must be >= 0 (0: one padded forward, as ours_padded)")
    if args.device == "cuda" and args.isolation == "fork":
        parser.error("--isolation fork is CPU only (CUDA cannot be used in a forked child)")
    return args


def caller(args: argparse.Namespace) -> Callable[..., Any]:
    """How to call a job: in a forked child under ``--isolation fork``, else directly."""
    return run_isolated if args.isolation == "fork" else (lambda function, *rest: function(*rest))


def run_all(bench: Bench) -> tuple[list[dict[str, Any]], list[str]]:
    """Measure every selected contender at each of its batch sizes; a failure is recorded and the run goes on."""
    args = bench.args
    run = caller(args)
    results, failures = [], []
    for contender, batch_size in jobs(args):
        try:
            result = run(measure, bench, contender, batch_size)
        except Exception as error:  # keep the other contenders' numbers (a GPU run is expensive)
            failures.append(f"{contender} at batch {batch_size}: {error}")
            print(f"[failed] {failures[-1]}", file=sys.stderr, flush=True)
            continue
        finally:
            if args.device == "cuda":
                gc.collect()
        results.append(result)
        print(
            f"[done] {contender} batch {batch_size}: {result['median_step_s']:.3f} s/step, "
            f"{result['pairs_per_s']:,.1f} pairs/s, peak {format_memory(result['peak_memory_bytes'])}",
            file=sys.stderr,
            flush=True,
        )
        if args.json:  # partial results survive a run that is cut short; rewritten with ratios at the end
            with args.json.open("a") as file:
                file.write(json.dumps(result) + "\n")
    return results, failures


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run every selected contender and print the table; returns one result dict per contender and batch size.

    Raises ``RuntimeError`` after printing the table when a contender failed.
    """
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if args.json:
        args.json.write_text("")
    with tempfile.TemporaryDirectory(prefix="hf_contrastive_bench_") as workdir:
        tokenizer = build_tokenizer(args.seed)
        bench = Bench(args, Path(workdir) / "checkpoint", tokenizer, make_batches(args, tokenizer))
        difference = caller(args)(prepare_checkpoint, bench)
        results, failures = run_all(bench)
    add_ratios(results)
    shared = {
        "device": args.device,
        "size": args.size,
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "warmup": args.warmup,
        "min_len": args.min_len,
        "max_len": args.max_len,
        "tokenization": "excluded",
        "embedding_max_abs_diff": difference,
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }
    results = [{**result, **shared} for result in results]
    print(report(bench, results, difference))
    if args.json:
        args.json.write_text("".join(json.dumps(result) + "\n" for result in results))
    if failures:
        raise RuntimeError("contenders failed:\n" + "\n".join(failures))
    return results


if __name__ == "__main__":
    main()
