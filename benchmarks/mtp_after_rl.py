"""MTP drafting after RL: acceptance of greedy speculative decoding for the base, for GRPO policies as RL left them
(MTP modules frozen), and for the same policies after the MTP refresh (`recipes.lib.mtp_sync.refresh_mtp`).

    python benchmarks/mtp_after_rl.py --policies outputs/seeds-grpo/seed-0 outputs/seeds-grpo/seed-1 \\
        outputs/seeds-grpo/seed-2 --out docs/results/mtp-acceptance-after-rl.json

Acceptance: `generate_with_mtp` (greedy) on the first `--problems` test prompts of the built-in task in left-padded
batches of `--batch-size` (benchmarks/mtp_decoding.py's prompts, batches and counts); accepted / drafted drafts, and
per row before the batch minimum. The refresh runs in memory on the policy as `recipes/grpo.py` runs it after
training: the built-in train split's prompts, seed 0, the policy's completions at `--refresh-temperature` (0:
greedy) up to `--max-new-tokens`. The policy folders are only read. Checked: the refresh changes no parameter outside
the MTP modules and the greedy output stays token for token the same. One thread; CPU times are the process's.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import transformers
from mtp_decoding import TINY_BASE, acceptance, batches, task_prompts
from transformers import AutoTokenizer

from modeling_deepseek_mini import DeepseekMiniForCausalLM
from recipes.lib.mtp_sync import refresh_mtp
from recipes.lib.task import make_splits


def drafting(model, inputs: list[dict], max_new_tokens: int) -> tuple[dict, list[torch.Tensor]]:
    """Acceptance of greedy MTP drafting over the batches, and the sequences it produced."""
    outputs = [model.generate_with_mtp(**b, max_new_tokens=max_new_tokens) for b in inputs]
    return acceptance(outputs), [o.sequences for o in outputs]


def main_weights(model) -> dict[str, torch.Tensor]:
    """Every tensor of the state dict outside the MTP modules, copied."""
    mtp = {f"model.layers.{i}." for i in model.config.mtp_layer_indices}
    return {k: v.clone() for k, v in model.state_dict().items() if not any(k.startswith(p) for p in mtp)}


def measure_policy(path: str, train_prompts: list[str], test_prompts: list[str], args, refresh: bool = True) -> dict:
    """Acceptance of the model at `path`; with `refresh` (and --refresh-steps > 0) also after the MTP refresh."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = DeepseekMiniForCausalLM.from_pretrained(path).eval()
    inputs = batches(tokenizer, test_prompts, args.batch_size)
    before, sequences = drafting(model, inputs, args.max_new_tokens)
    row = {"model": path, "before": before}
    if not (refresh and args.refresh_steps):
        return row
    main = main_weights(model)
    start = time.process_time()
    record = refresh_mtp(
        model,
        tokenizer,
        train_prompts,
        steps=args.refresh_steps,
        learning_rate=args.refresh_learning_rate,
        batch_size=args.refresh_batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.refresh_temperature,
        seed=0,
    )
    refresh_cpu_s = time.process_time() - start
    after, refreshed_sequences = drafting(model, inputs, args.max_new_tokens)
    if any(not torch.equal(v, model.state_dict()[k]) for k, v in main.items()):
        raise AssertionError(f"{path}: the refresh changed parameters outside the MTP modules.")
    if any(not torch.equal(a, b) for a, b in zip(sequences, refreshed_sequences)):
        raise AssertionError(f"{path}: greedy output changed after the refresh.")
    return row | {"after": after, "refresh": record.as_record() | {"cpu_s": refresh_cpu_s}}


def format_table(rows: list[dict]) -> str:
    lines = [
        "| model | drafted | acceptance (RL as left) | per row | acceptance (after refresh) | per row | "
        "held-out MTP loss before -> after | refresh CPU (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, a, f = r["before"], r.get("after"), r.get("refresh")
        cells = [Path(r["model"]).name, str(b["drafted"])]
        cells += [f"{b['acceptance_rate']:.3f}", f"{b['row_acceptance_rate']:.3f}"]
        if a is None:
            cells += ["-", "-", "-", "-"]
        else:
            cells += [
                f"{a['acceptance_rate']:.3f}",
                f"{a['row_acceptance_rate']:.3f}",
                f"{f['loss_before']:.4f} -> {f['loss_after']:.4f}",
                f"{f['cpu_s']:.0f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_measurement_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of the acceptance measurement and the refresh (shared with benchmarks/mtp_per_stage.py)."""
    parser.add_argument("--problems", type=int, default=64, help="Test prompts of the built-in task.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96, help="Decoding and refresh completion budget.")
    parser.add_argument("--train-size", type=int, default=2000, help="Built-in train prompts (seed 0), as in GRPO.")
    parser.add_argument("--refresh-steps", type=int, default=50, help="0: measure the policies as RL left them only.")
    parser.add_argument("--refresh-learning-rate", type=float, default=1e-3)
    parser.add_argument("--refresh-batch-size", type=int, default=16)
    parser.add_argument("--refresh-temperature", type=float, default=0.0, help="0: greedy completions.")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results (default: none).")
    return parser


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=str(TINY_BASE), help="The base the policies started from (measured only).")
    parser.add_argument("--policies", nargs="+", required=True, help="GRPO output folders (read only).")
    return add_measurement_args(parser).parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    test_prompts = task_prompts(args.problems)
    sizes = {"n_train": args.train_size, "n_test": 0, "n_validation": 0, "n_ood": 0}
    train_prompts = list(make_splits(seed=0, **sizes)["train"]["prompt"])
    rows = [measure_policy(args.base, train_prompts, test_prompts, args, refresh=False)]
    rows += [measure_policy(path, train_prompts, test_prompts, args) for path in args.policies]
    print(format_table(rows))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "environment": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
                "threads": 1,
            },
            "rows": rows,
        }
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
