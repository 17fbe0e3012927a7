"""Tokens/s of our contrastive search against greedy decoding and against transformers 4.55's built-in one, one run.

The peer is the contrastive search that shipped inside ``generate()`` up to transformers 4.55 (later releases moved
it to a Hub repository). It needs its own interpreter, outside this repository::

    python -m venv /work/venvs/tf455 --system-site-packages
    /work/venvs/tf455/bin/pip install "transformers==4.55.*"

Then, from the repository root::

    OMP_NUM_THREADS=2 python benchmarks/contrastive_search.py                      # GPT-2 12-layer/768, batch 1 and 8
    python benchmarks/contrastive_search.py --sizes small --batch-sizes 1 --repeats 1    # quick look
    python benchmarks/contrastive_search.py --device cuda --dtype bfloat16 --batch-sizes 1 8 32
    python benchmarks/contrastive_search.py --peer-python none                     # ours and greedy only

Every contender decodes the same randomly initialised GPT-2 (one seeded checkpoint, saved once and loaded by both
libraries) from the same left-padded random prompts (lengths uniform in [``--min-prompt``, ``--max-prompt``]),
``--new-tokens`` tokens each (no end-of-sequence stop, so every row generates all of them), ``top_k`` /
``penalty_alpha`` from the flags (5 / 0.6, the paper's setting):

- ``greedy``: ``model.generate(do_sample=False)`` of the installed transformers (the ceiling to compare with);
- ``ours``: :func:`hf_contrastive.generation.contrastive_search`;
- ``floor``: :func:`candidate_forward_floor`, the forwards any exact contrastive search must run (k new tokens per
  row per step, the LM head on one row) and nothing else: ours / floor is our decoding overhead, floor / greedy the
  machine's ceiling for ours / greedy;
- ``peer``: ``model.generate(penalty_alpha=, top_k=)`` of transformers 4.55, in a worker process started with
  ``--peer-python`` that loads the same checkpoint and waits for commands on stdin (JSON lines).

The machine may be shared, so the contenders are interleaved: each repeat runs greedy, ours, floor and peer back to
back (the worker is idle while the others run), after one warm-up call each; the median of ``--repeats`` is
reported.
tokens/s = batch x new tokens / seconds (prefill included). The run also reports how many generated tokens the peer
and ours agree on (same weights and algorithm: equal up to floating-point ties) and checks that both greedy runs
agree, which shows the two processes decode the same model.

Measured on the shared 2-core CPU (``OMP_NUM_THREADS=2``, GPT-2 12-layer/768 random init, 128 new tokens, k = 5,
alpha = 0.6, ``--repeats 5``; the machine's load from other jobs moves the absolute numbers and the ratios to greedy)::

    | batch | greedy tok/s | ours tok/s | floor tok/s | peer tok/s | ours/greedy | floor/greedy | ours/floor | ours/peer |
    | 1     | 38.39        | 22.50      | 22.57       | 17.27      | 0.59        | 0.59         | 1.00       | 1.30      |
    | 8     | 132.51       | 80.25      | 82.84       | 50.60      | 0.61        | 0.63         | 0.97       | 1.59      |

Both implementations pick the same 128 tokens. Ours is within 3% of the floor; the floor / greedy ratio is the
machine's (its k-row GEMMs against greedy's one-row ones): 0.59-0.73 on this CPU depending on its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

SIZES = {
    "tiny": {"n_layer": 2, "n_embd": 128, "n_head": 2},
    "small": {"n_layer": 6, "n_embd": 512, "n_head": 8},
    "base": {"n_layer": 12, "n_embd": 768, "n_head": 12},
}
VOCAB_SIZE = 50257
CONTENDERS = ("greedy", "ours", "floor", "peer")


# ------------------------------------------------------------------------------------------------------ shared
def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load_model(path: str, device: str, dtype: str):
    """The checkpoint as an eval-mode GPT-2 LM on ``device`` (in either process), end-of-sequence switched off."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)  # the dtype argument has a different name in 4.55
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.to(device=device, dtype=getattr(torch, dtype)).eval()


def timed(device: str, decode) -> tuple[float, torch.Tensor]:
    synchronize(device)
    start = time.perf_counter()
    sequences = decode()
    synchronize(device)
    return time.perf_counter() - start, sequences


def hf_generate(model, prompts: dict[str, torch.Tensor], new_tokens: int, **options) -> torch.Tensor:
    return model.generate(
        **prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, **options
    )


def candidate_forward_floor(model, prompts: dict[str, torch.Tensor], new_tokens: int, top_k: int) -> torch.Tensor:
    """What any exact contrastive search must compute, and nothing else: the prefill, then per step one forward of
    ``top_k`` new tokens per row (random ids) and the LM head on one row, in the preallocated cache ours uses.

    Ours minus this is our decoding overhead (scoring, cache moves, masks, stopping); greedy / this is the ceiling of
    ours / greedy on the machine. Returns the prompts (there is nothing to compare).
    """
    from transformers import DynamicCache

    from hf_contrastive.generation.contrastive_search import _PreallocatedLayer

    input_ids, attention_mask = prompts["input_ids"], prompts["attention_mask"]
    batch, width = input_ids.shape
    cache = DynamicCache(config=model.config)
    cache.layers = [_PreallocatedLayer(width + new_tokens + top_k) for _ in cache.layers]
    body, head = model.base_model, model.get_output_embeddings()
    position = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = body(input_ids, attention_mask=attention_mask, position_ids=position, cache=cache).last_hidden_state
    head(hidden[:, -1:])
    next_position = position[:, -1:] + 1
    for _ in range(new_tokens):
        candidates = torch.randint(1, model.config.vocab_size, (batch, top_k), device=input_ids.device)
        hidden = body(candidates, position_ids=next_position.expand(batch, top_k), cache=cache).last_hidden_state
        head(hidden[:, :1])
        cache.crop(-(top_k - 1))
        next_position = next_position + 1
    return input_ids


# ------------------------------------------------------------------------------------------------------ peer worker
def peer_worker() -> None:
    """Serve the peer in its own interpreter: ``load`` a checkpoint, then ``run`` greedy or contrastive on a prompt file.

    Imports nothing from hf_contrastive (that needs transformers 5); replies one JSON line per command.
    """
    import transformers

    model = device = None
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "load":
            torch.set_num_threads(command["threads"])
            device = command["device"]
            model = load_model(command["path"], device, command["dtype"])
            reply: dict[str, Any] = {"transformers": transformers.__version__}
        else:
            prompts = {key: value.to(device) for key, value in torch.load(command["prompts"]).items()}
            options = {"penalty_alpha": command["alpha"], "top_k": command["top_k"]} if command["contrastive"] else {}
            with torch.no_grad():
                seconds, sequences = timed(
                    device,
                    lambda: hf_generate(model, prompts, command["new_tokens"], **options),  # noqa: B023
                )
            reply = {"seconds": seconds, "sequences": sequences.cpu().tolist()}
        print(json.dumps(reply), flush=True)


class Peer:
    """The parent's handle on the worker process."""

    def __init__(self, python: str, checkpoint: str, args: argparse.Namespace) -> None:
        environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TRANSFORMERS_VERBOSITY": "error"}
        self.process = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "--peer-worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        reply = self.ask(
            {"cmd": "load", "path": checkpoint, "device": args.device, "dtype": args.dtype, "threads": args.threads}
        )
        self.version = reply["transformers"]

    def ask(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"The peer worker exited (code {self.process.wait()}); see its stderr above.")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


# ------------------------------------------------------------------------------------------------------ parent
def make_prompts(batch_size: int, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Left-padded random prompts (pad id 0), lengths uniform in [min_prompt, max_prompt]; seeded per batch size."""
    generator = torch.Generator().manual_seed(args.seed * 1000 + batch_size)
    lengths = torch.randint(args.min_prompt, args.max_prompt + 1, (batch_size,), generator=generator)
    width = int(lengths.max())
    input_ids = torch.randint(1, VOCAB_SIZE, (batch_size, width), generator=generator)
    attention_mask = (torch.arange(width)[None, :] >= width - lengths[:, None]).long()
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask}


def build_checkpoint(size: str, folder: str, seed: int) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB_SIZE, n_positions=1024, **SIZES[size])
    GPT2LMHeadModel(config).save_pretrained(folder)


def agreement(first: list[list[int]], second: list[list[int]], prompt_width: int) -> float:
    """Share of generated positions where two runs chose the same token."""
    pairs = [(a, b) for row_a, row_b in zip(first, second) for a, b in zip(row_a[prompt_width:], row_b[prompt_width:])]
    return sum(a == b for a, b in pairs) / len(pairs)


def measure(size: str, batch_size: int, args: argparse.Namespace, model, peer: Peer | None, folder: str) -> dict:
    """Interleaved timings of the contenders on one (size, batch) setting, with the agreement checks."""
    from hf_contrastive.generation import contrastive_search

    prompts = make_prompts(batch_size, args)
    prompt_file = os.path.join(folder, f"prompts-{batch_size}.pt")
    torch.save(prompts, prompt_file)
    on_device = {key: value.to(args.device) for key, value in prompts.items()}

    def run(contender: str) -> tuple[float, list[list[int]]]:
        if contender == "peer":
            reply = peer.ask(
                {
                    "cmd": "run",
                    "prompts": prompt_file,
                    "contrastive": True,
                    "new_tokens": args.new_tokens,
                    "alpha": args.alpha,
                    "top_k": args.top_k,
                }
            )
            return reply["seconds"], reply["sequences"]
        with torch.no_grad():
            if contender == "greedy":
                seconds, sequences = timed(args.device, lambda: hf_generate(model, on_device, args.new_tokens))
            elif contender == "floor":
                seconds, sequences = timed(
                    args.device, lambda: candidate_forward_floor(model, on_device, args.new_tokens, args.top_k)
                )
            else:
                seconds, sequences = timed(
                    args.device,
                    lambda: contrastive_search(
                        model, **on_device, top_k=args.top_k, penalty_alpha=args.alpha, max_new_tokens=args.new_tokens
                    ),
                )
        return seconds, sequences.cpu().tolist()

    contenders = [name for name in CONTENDERS if name != "peer" or peer is not None]
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    outputs: dict[str, list[list[int]]] = {}
    for repeat in range(args.repeats + 1):  # repeat 0 warms up
        for name in contenders:
            elapsed, outputs[name] = run(name)
            if repeat:
                seconds[name].append(elapsed)
    tokens = batch_size * args.new_tokens
    result = {
        "size": size,
        "batch_size": batch_size,
        "new_tokens": args.new_tokens,
        "top_k": args.top_k,
        "penalty_alpha": args.alpha,
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        **{f"{name}_tokens_per_s": tokens / statistics.median(values) for name, values in seconds.items()},
    }
    result["ours_vs_greedy"] = result["ours_tokens_per_s"] / result["greedy_tokens_per_s"]
    result["ours_vs_floor"] = result["ours_tokens_per_s"] / result["floor_tokens_per_s"]
    result["floor_vs_greedy"] = result["floor_tokens_per_s"] / result["greedy_tokens_per_s"]
    if peer is not None:
        width = prompts["input_ids"].shape[1]
        peer_greedy = peer.ask(
            {"cmd": "run", "prompts": prompt_file, "contrastive": False, "new_tokens": args.new_tokens}
        )["sequences"]
        result["peer_vs_greedy"] = result["peer_tokens_per_s"] / result["greedy_tokens_per_s"]
        result["ours_vs_peer"] = result["ours_tokens_per_s"] / result["peer_tokens_per_s"]
        result["greedy_agreement_with_peer"] = agreement(outputs["greedy"], peer_greedy, width)
        result["token_agreement_with_peer"] = agreement(outputs["ours"], outputs["peer"], width)
    return result


def table(results: list[dict]) -> str:
    columns = ("greedy tok/s", "ours tok/s", "floor tok/s", "peer tok/s", "ours/greedy", "floor/greedy", "ours/floor")
    header = "| size | batch | " + " | ".join(columns) + " | peer/greedy | ours/peer | agree |"
    lines = [header, "|" + " --- |" * (len(columns) + 5)]
    for r in results:
        keys = ("peer_tokens_per_s", "peer_vs_greedy", "ours_vs_peer", "token_agreement_with_peer")
        peer = [f"{r[key]:.2f}" if key in r else "-" for key in keys]
        lines.append(
            f"| {r['size']} | {r['batch_size']} | {r['greedy_tokens_per_s']:.2f} | {r['ours_tokens_per_s']:.2f} | "
            f"{r['floor_tokens_per_s']:.2f} | {peer[0]} | {r['ours_vs_greedy']:.2f} | {r['floor_vs_greedy']:.2f} | "
            f"{r['ours_vs_floor']:.2f} | {peer[1]} | {peer[2]} | {peer[3]} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["base"], choices=list(SIZES))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--min-prompt", type=int, default=16)
    parser.add_argument("--max-prompt", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per contender (after one warm-up).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument(
        "--peer-python",
        default="/work/venvs/tf455/bin/python",
        help="Interpreter with transformers 4.55 for the peer; 'none' skips it.",
    )
    parser.add_argument("--json", type=Path, help="Append one JSON line per setting to this file.")
    parser.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.peer_worker:
        peer_worker()
        return []
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this benchmark belongs to
    torch.set_num_threads(args.threads)
    use_peer = args.peer_python != "none"
    if use_peer and not Path(args.peer_python).exists():
        raise SystemExit(f"No peer interpreter at {args.peer_python}: create it (see the docstring) or pass none.")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            checkpoint = os.path.join(folder, size)
            build_checkpoint(size, checkpoint, args.seed)
            model = load_model(checkpoint, args.device, args.dtype)
            peer = Peer(args.peer_python, checkpoint, args) if use_peer else None
            try:
                for batch_size in args.batch_sizes:
                    result = measure(size, batch_size, args, model, peer, folder)
                    results.append(result)
                    print(json.dumps(result), flush=True)
                    if args.json:
                        with args.json.open("a") as handle:
                            handle.write(json.dumps(result) + "\n")
            finally:
                if peer is not None:
                    print(f"peer: transformers {peer.version}", flush=True)
                    peer.close()
    print(table(results))
    return results


if __name__ == "__main__":
    main()
