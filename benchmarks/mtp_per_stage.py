"""MTP drafting through R1's pipeline: the acceptance of greedy speculative decoding after every stage that is a
DeepseekMini with MTP modules, as the stage left it, and for the RL stages also after the MTP refresh.

    python benchmarks/mtp_per_stage.py --runs outputs/validation/pipeline-chosen/seed-0 \\
        outputs/validation/pipeline-chosen/seed-1 outputs/validation/pipeline-chosen/seed-2 \\
        --out docs/results/mtp-acceptance-per-stage.json

`--runs` are output folders of `recipes/pipeline.py` (only read). Each stage's model drafts on the first `--problems`
test prompts of the built-in task, prompted as the pipeline measures that stage (R1-Zero's template for the base and
R1-Zero, the chat template after the cold start), in left-padded batches of `--batch-size`
(benchmarks/mtp_after_rl.py's measurement). SFT stages train the MTP modules with the model (the model's own loss);
GRPO stages leave them frozen, so for them the refresh of `recipes/grpo.py` (`--mtp_refresh_steps`) is run in memory
as well, on the built-in train prompts in the stage's template, and the acceptance measured again. Stages without
MTP modules (the distilled students, the reward model) and folders that are not models are skipped. One thread.
"""

import argparse
import json
from pathlib import Path

import torch
from mtp_after_rl import add_measurement_args, format_table, measure_policy
from transformers import AutoConfig, AutoTokenizer

from recipes.lib.evaluation import render_prompts
from recipes.lib.heldout import HeldoutArguments
from recipes.lib.prompts import build_prompts
from recipes.lib.task import make_splits
from recipes.pipeline import BASE, DEFAULT_CONFIG, load_config

RL_RECIPE = "grpo"


def stages_with_mtp(run: Path) -> list[dict]:
    """The run's DeepseekMini models with MTP modules, in pipeline order: name, folder, prompt template, recipe."""
    config = load_config(DEFAULT_CONFIG, output_dir=str(run))
    candidates = [
        {"stage": BASE, "path": config.base_model, "template": config.eval.base_prompt_template, "recipe": ""}
    ]
    candidates += [
        {"stage": s.name, "path": str(run / s.name), "template": s.eval_prompt_template, "recipe": s.recipe}
        for s in config.stages
    ]
    found = []
    for candidate in candidates:
        folder = Path(candidate["path"])
        if not (folder / "config.json").exists():
            continue
        model_config = AutoConfig.from_pretrained(folder)
        if getattr(model_config, "num_nextn_predict_layers", 0) > 0:
            found.append(candidate)
    return found


def prompts_in(template: str, split: str, size: int, tokenizer) -> list[str]:
    """The built-in task's first `size` problems of `split` (seed 0) as text prompts in `template`."""
    sizes = {"n_train": 0, "n_test": 0, "n_validation": 0, "n_ood": 0} | {f"n_{split}": size}
    rows = build_prompts(make_splits(seed=0, **sizes)[split], HeldoutArguments(prompt_template=template))
    return render_prompts(tokenizer, rows["prompt"])


def measure_run(run: Path, args) -> list[dict]:
    rows = []
    for stage in stages_with_mtp(run):
        tokenizer = AutoTokenizer.from_pretrained(stage["path"])
        test = prompts_in(stage["template"], "test", args.problems, tokenizer)
        train = prompts_in(stage["template"], "train", args.train_size, tokenizer)
        row = measure_policy(stage["path"], train, test, args, refresh=stage["recipe"] == RL_RECIPE)
        rows.append(row | {"stage": stage["stage"], "run": str(run)})
        print(f"{run} {stage['stage']}: acceptance {row['before']['acceptance_rate']:.3f}", flush=True)
    return rows


def summary_table(rows: list[dict]) -> str:
    """Per stage, over runs: mean acceptance as left (and after the refresh), min-max in brackets."""

    def spread(values: list[float]) -> str:
        return f"{sum(values) / len(values):.3f} [{min(values):.3f}, {max(values):.3f}]" if values else "-"

    stages = list(dict.fromkeys(row["stage"] for row in rows))
    lines = [
        "| stage | runs | acceptance as the stage left it | per row | after the MTP refresh | per row |",
        "|---|---:|---|---|---|---|",
    ]
    for stage in stages:
        of = [row for row in rows if row["stage"] == stage]
        refreshed = [row["after"] for row in of if "after" in row]
        cells = [stage, str(len(of))]
        cells += [spread([row["before"][key] for row in of]) for key in ("acceptance_rate", "row_acceptance_rate")]
        cells += [spread([after[key] for after in refreshed]) for key in ("acceptance_rate", "row_acceptance_rate")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="recipes/pipeline.py output folders.")
    args = add_measurement_args(parser).parse_args(argv)
    torch.set_num_threads(1)
    rows = [row for run in args.runs for row in measure_run(run, args)]
    print(format_table(rows))
    print(summary_table(rows))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        settings = {
            k: [str(r) for r in v] if k == "runs" else str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
        }
        args.out.write_text(json.dumps({"args": settings, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
