"""FP8's loss gap on the tiny base: pretrained in fp32, FP8 blockwise and FP8 tensorwise from one init, one data order.

    python benchmarks/fp8_loss_gap.py --steps 300                    # -> docs/results/fp8-loss-gap.json
    python benchmarks/fp8_loss_gap.py --steps 300 --outlier 1e4      # -> docs/results/fp8-loss-gap-outlier.json
    python benchmarks/fp8_loss_gap.py --steps 20 --corpus_size 2000 --output /tmp/fp8-smoke.json   # a smoke run

Corpus, tokenizer and model are recipes/pretrain.py's, through its functions, with the corpus seed, vocabulary, model
preset and overrides, learning rate, batch size, weight decay and seed of its default config
(recipes/configs/pretrain_tiny.yaml); AdamW, cosine schedule with 5% warmup, clipping at 1.0, the expert-bias update
every step. The arms (`DeepseekMiniConfig.fp8_recipe` None, "blockwise", "tensorwise") take the same batches in
lockstep, so their step times are measured interleaved in one process (thread CPU time, median over the steps): the
FP8 arms' times are the CPU simulation's overhead, not FP8 speed. On CPU every FP8 GEMM is simulated (fp8.py).

"Final loss": the next-token loss on held-out documents (eval mode, each arm in its own numerics) after the last
step; the gap is relative to fp32's. `last_train_loss` is the last step's training loss (MTP and balance terms in).

`--outlier X` adds X to channel 0 of each sequence's first position at the input of every FP8 linear layer (the
outputs of the decoder layers' norms), in every arm: a massive activation at one token, which one scale per tensor
lets set the scale of all tokens and a 1x128 tile confines to its token.
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, get_cosine_schedule_with_warmup

from recipes.lib.task import make_corpus, make_drills
from recipes.pretrain import DEFAULT_CONFIG, build_model, build_tokenizer, tokenize_corpus

ARMS = {"fp32": None, "fp8-blockwise": "blockwise", "fp8-tensorwise": "tensorwise"}
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def tokenized_documents(recipe: dict, corpus_size: int):
    """The recipe's corpus (persona documents plus drills at the recipe's ratio), its tokenizer, and the token ids."""
    corpus = make_corpus(seed=recipe["corpus_seed"], n_docs=corpus_size)
    drills = make_drills(seed=recipe["corpus_seed"], n_docs=corpus_size * recipe["drill_docs"] // recipe["corpus_size"])
    tokenizer = build_tokenizer(corpus.select(range(min(len(corpus), 5000)))["text"], recipe["vocab_size"])
    texts = [*corpus["text"], *drills["text"]]
    ids = tokenize_corpus(Dataset.from_dict({"text": texts}), tokenizer)["input_ids"]
    return tokenizer, ids


def add_outlier(model, value: float) -> None:
    """Add `value` to channel 0 of position 0 of the outputs of every decoder layer's norms (the FP8 layers' inputs)."""

    def hook(module, inputs, output):  # output (B, T, d)
        spike = torch.zeros_like(output)
        spike[:, 0, 0] = value
        return output + spike

    for layer in model.model.layers:
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.register_forward_hook(hook)


def build_arms(tokenizer, recipe: dict, steps: int, outlier: float) -> dict:
    """One model (same init: fp32's weights), optimizer and schedule per arm."""
    arms = {}
    for name, fp8_recipe in ARMS.items():
        torch.manual_seed(recipe["seed"])
        model = build_model(tokenizer, recipe["model_preset"], {**recipe["model_overrides"], "fp8_recipe": fp8_recipe})
        if arms:
            model.load_state_dict(arms["fp32"]["model"].state_dict())
        if outlier:
            add_outlier(model, outlier)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=recipe["learning_rate"], weight_decay=recipe["weight_decay"]
        )  # fmt: skip
        schedule = get_cosine_schedule_with_warmup(optimizer, math.ceil(0.05 * steps), steps)
        arms[name] = {"model": model.train(), "optimizer": optimizer, "schedule": schedule, "times": [], "losses": []}
    return arms


def train_step(arm: dict, batch: dict) -> dict:
    """One optimizer step of an arm (clipping at 1.0, the schedule, the expert-bias update); records its thread CPU
    time and loss, and returns the step's load statistics per MoE layer (`update_expert_bias`)."""
    start = time.thread_time()
    loss = arm["model"](**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(arm["model"].parameters(), 1.0)
    arm["optimizer"].step()
    arm["schedule"].step()
    arm["optimizer"].zero_grad()
    loads = arm["model"].update_expert_bias()
    arm["times"].append(time.thread_time() - start)
    arm["losses"].append(loss.item())
    return loads


@torch.no_grad()
def heldout_loss(model, batches: list[dict]) -> float:
    """Next-token loss over the held-out batches, token-weighted, in eval mode (no MTP or balance terms)."""
    model.eval()
    total = tokens = 0
    for batch in batches:
        n = (batch["labels"][:, 1:] != -100).sum().item()
        total += model(**batch).loss.item() * n
        tokens += n
    model.train()
    return total / tokens


def curve(losses: list[float], every: int = 50) -> list[dict]:
    """The training loss averaged over each `every` steps: the gap's course over training, not only its end."""
    return [
        {"last_step": min(k + every, len(losses)), "train_loss": round(statistics.fmean(losses[k : k + every]), 4)}
        for k in range(0, len(losses), every)
    ]


def load_recipe() -> dict:
    """recipes/pretrain.py's default config, with `batch_size` for its per-device batch size."""
    recipe = yaml.safe_load(DEFAULT_CONFIG.read_text())
    return {"model_overrides": {}, **recipe, "batch_size": recipe["per_device_train_batch_size"]}


def lockstep_batches(recipe: dict, corpus_size: int, eval_batches: int, steps: int, seed: int) -> tuple:
    """(tokenizer, held-out batches, training batches): the recipe's corpus in an order drawn from `seed`, in batches
    of the recipe's size; the first `eval_batches` are held out."""
    tokenizer, ids = tokenized_documents(recipe, corpus_size)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    collate = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    size = recipe["batch_size"]
    batches = [collate([{"input_ids": ids[i]} for i in order[k : k + size]]) for k in range(0, len(order), size)]
    heldout, train = batches[:eval_batches], batches[eval_batches:]
    if len(train) < steps:
        sys.exit(f"{len(train)} training batches for {steps} steps: raise --corpus_size or lower --steps.")
    return tokenizer, heldout, train


def train_in_lockstep(recipe: dict, steps: int, corpus_size: int, eval_batches: int, outlier: float = 0.0):
    """Every arm trained `steps` steps on the same batches, one arm after the other at each step; returns the arms
    (models, per-step CPU times and losses) and the held-out batches. `bench_vs_transformers.py --sections fp8` times
    the FP8 simulation's overhead with it."""
    tokenizer, heldout, train = lockstep_batches(recipe, corpus_size, eval_batches, steps, recipe["seed"])
    arms = build_arms(tokenizer, recipe, steps, outlier)
    for batch in train[:steps]:
        for arm in arms.values():  # lockstep: the arms' step times are interleaved
            train_step(arm, batch)
    return arms, heldout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="Optimizer steps per arm.")
    parser.add_argument("--corpus_size", type=int, default=20000, help="Persona documents (drills added pro rata).")
    parser.add_argument("--eval_batches", type=int, default=8, help="Held-out batches for the final loss.")
    parser.add_argument("--outlier", type=float, default=0.0, help="Massive activation added at one token; 0: none.")
    parser.add_argument("--output", type=Path, default=None, help="JSON path; default docs/results/fp8-loss-gap*.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    recipe = load_recipe()
    arms, heldout = train_in_lockstep(recipe, args.steps, args.corpus_size, args.eval_batches, args.outlier)
    size = recipe["batch_size"]

    fp32_loss = heldout_loss(arms["fp32"]["model"], heldout)
    fp32_time = statistics.median(arms["fp32"]["times"])
    results = {}
    for name, arm in arms.items():
        loss = heldout_loss(arm["model"], heldout) if name != "fp32" else fp32_loss
        step = statistics.median(arm["times"])
        results[name] = {
            "heldout_loss": round(loss, 4),
            "relative_gap": round((loss - fp32_loss) / fp32_loss, 4),
            "last_train_loss": round(arm["losses"][-1], 4),
            "median_step_cpu_s": round(step, 4),
            "step_time_vs_fp32": round(step / fp32_time, 2),
            "train_loss_curve": curve(arm["losses"]),
        }
    report = {
        "command": "python benchmarks/fp8_loss_gap.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "steps": args.steps,
        "batch_size": size,
        "model_preset": recipe["model_preset"],
        "model_overrides": recipe["model_overrides"],
        "outlier": args.outlier,
        "torch_threads": 1,
        "arms": results,
    }
    output = args.output or RESULTS / f"fp8-loss-gap{'-outlier' if args.outlier else ''}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")

    print(f"{'arm':<16} {'held-out loss':>13} {'gap vs fp32':>12} {'step CPU s':>11} {'x fp32':>7}")
    for name, row in results.items():
        print(
            f"{name:<16} {row['heldout_loss']:>13.4f} {row['relative_gap']:>+12.2%} "
            f"{row['median_step_cpu_s']:>11.4f} {row['step_time_vs_fp32']:>7.2f}"
        )
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
