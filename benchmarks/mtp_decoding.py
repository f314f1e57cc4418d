"""MTP speculative decoding against plain greedy `generate`: acceptance and speed-up, same model, same prompts.

    python benchmarks/mtp_decoding.py                                   # shipped tiny base, CPU, ~1 min
    python benchmarks/mtp_decoding.py --model outputs/pipeline/sft --out benchmarks/results/mtp-decoding-sft.json

Prompts: the first `--problems` test prompts of the built-in task (recipes.lib.task.make_splits), left-padded in
batches of each `--batch-sizes`. Each repeat decodes every batch with `generate(do_sample=False)` and with
`generate_with_mtp`, the two interleaved (A B A B ...) so that load from other processes falls on both alike; times are
the process's CPU time on one thread. The speed-up is the ratio of the medians over repeats (the first, a warm-up, is
left out). Both must return the same tokens (checked). Prints a Markdown table; writes every sample to `--out`.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer

from modeling_deepseek_mini import DeepseekMiniForCausalLM
from recipes.lib.task import make_splits

TINY_BASE = Path(__file__).resolve().parents[1] / "recipes" / "assets" / "tiny-base"


def batches(tokenizer, prompts: list[str], size: int) -> list[dict]:
    """The prompts in left-padded batches of `size`: {input_ids, attention_mask} each."""
    encoded = [
        tokenizer(
            prompts[i : i + size], return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
        )
        for i in range(0, len(prompts), size)
    ]
    return [{"input_ids": e["input_ids"], "attention_mask": e["attention_mask"]} for e in encoded]


def task_prompts(problems: int) -> list[str]:
    """The first `problems` test prompts of the built-in task (R1-Zero's template), as the MTP benchmarks read them."""
    sizes = {"n_train": 0, "n_test": problems, "n_validation": 0, "n_ood": 0}
    return list(make_splits(seed=0, **sizes)["test"]["prompt"])


def acceptance(outputs) -> dict:
    """Drafted, agreed, accepted and rounds summed over `generate_with_mtp` outputs, and the two acceptance rates."""
    stats = {key: sum(getattr(o, key) for o in outputs) for key in ("drafted", "agreed", "accepted", "rounds")}
    return stats | {
        "acceptance_rate": stats["accepted"] / max(stats["drafted"], 1),
        "row_acceptance_rate": stats["agreed"] / max(stats["drafted"], 1),
    }


def timed(fn, clock=time.process_time) -> tuple[float, object]:
    start = clock()
    out = fn()
    return clock() - start, out


def measure(model, inputs: list[dict], max_new_tokens: int, repeats: int, clock=time.process_time) -> dict:
    """Interleaved repeats of plain and speculative greedy decoding over all batches: times, tokens, acceptance.

    `clock` gives the seconds (default: this process's CPU time); `benchmarks/bench_vs_transformers.py --sections mtp`
    passes its own.
    """
    samples = {"generate": [], "generate_with_mtp": []}
    stats = {}
    for _ in range(repeats + 1):
        plain_time, plain = timed(
            lambda: [model.generate(**b, max_new_tokens=max_new_tokens, do_sample=False) for b in inputs], clock
        )
        spec_time, spec = timed(
            lambda: [model.generate_with_mtp(**b, max_new_tokens=max_new_tokens) for b in inputs], clock
        )
        samples["generate"].append(plain_time)
        samples["generate_with_mtp"].append(spec_time)
        if any(not torch.equal(p, s.sequences) for p, s in zip(plain, spec)):
            raise AssertionError("generate_with_mtp returned other tokens than generate(do_sample=False).")
        new_tokens = sum(
            int((p[:, b["input_ids"].shape[1] :] != model.generation_config.pad_token_id).sum())
            for p, b in zip(plain, inputs)
        )
        stats = acceptance(spec) | {"new_tokens": new_tokens}
    medians = {name: statistics.median(times[1:]) for name, times in samples.items()}
    return {
        "samples_s": samples,
        "median_s": medians,
        "speedup": medians["generate"] / medians["generate_with_mtp"],
        **stats,
    }


def format_table(rows: dict[int, dict]) -> str:
    lines = [
        "| batch | new tokens | drafted | accepted | acceptance | per row (before the batch minimum) | "
        "generate (s) | generate_with_mtp (s) | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for batch, r in rows.items():
        lines.append(
            f"| {batch} | {r['new_tokens']} | {r['drafted']} | {r['accepted']} | {r['acceptance_rate']:.3f} | "
            f"{r['row_acceptance_rate']:.3f} | {r['median_s']['generate']:.3f} | "
            f"{r['median_s']['generate_with_mtp']:.3f} | {r['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(TINY_BASE), help="A DeepseekMini checkpoint folder with MTP modules.")
    parser.add_argument("--problems", type=int, default=16, help="Test prompts of the built-in task.")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3, help="Timed repeats after one warm-up.")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results (default: none).")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = DeepseekMiniForCausalLM.from_pretrained(args.model).eval()
    prompts = task_prompts(args.problems)
    rows = {
        b: measure(model, batches(tokenizer, prompts, b), args.max_new_tokens, args.repeats) for b in args.batch_sizes
    }
    print(format_table(rows))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "model": args.model,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "environment": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
                "threads": 1,
                "load_average": os.getloadavg(),
            },
            "rows": {str(b): r for b, r in rows.items()},
        }
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
