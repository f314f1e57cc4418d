"""Question 2 of docs/research.md: pure RL against supervised fine-tuning of the same base, at matched training compute.

    python experiments/rl_vs_sft.py run --teacher_runs outputs/seeds-pipeline-v3   # 3 seeds (R1's traces from there)
    python experiments/rl_vs_sft.py report          # -> docs/results/research/rl-vs-sft.json, tables on stdout

The arms are stages of one pipeline YAML (experiments/configs/rl_vs_sft.yaml), all from the shipped tiny base, each
trained on the same number of forward+backward tokens (GRPO's, about 230K; the SFT stages stop there with
`max_train_tokens`): `grpo` (R1-Zero), `sft_gold` (SFT on the task's correct chains of thought), `rft` (SFT on the
base's own correct samples, as many sampled as GRPO samples), `sft_then_grpo` (half the budget each) and
`distill_r1` (SFT on the curated traces of R1, the default pipeline's final model, from `--teacher_runs` of the same
seed: R1's distillation question asked of this base). `benchmarks/seeds.py` runs it over training seeds; the
pipeline measures every arm on the test and out-of-distribution splits (greedy and R1's pass@1).

`run` then reads from each seed's folders what each arm cost (`compute`: forward+backward tokens from the trainer
states; generated tokens apart: GRPO's completions, and the samples rejection sampling drew) and which writing style
its greedy test answers follow (`styles`: the share of each persona of the task, `persona_of`), into
`rl-vs-sft-runs.json`. `report` gives per arm the mean [95% interval] over seeds of accuracy, compute and styles,
and each arm minus GRPO paired by seed.
"""

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from seeds import add_seed_arguments, compare, interval, seeds_command, shown  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

from recipes.lib.evaluation import generate_completions  # noqa: E402
from recipes.lib.task import OPENERS, persona_of  # noqa: E402
from recipes.pipeline import BASE, heldout_problems, load_config, load_policy  # noqa: E402

CONFIG = ROOT / "experiments" / "configs" / "rl_vs_sft.yaml"
RESULTS = ROOT / "docs" / "results" / "research"
RL = "grpo"
ARMS = {  # arm -> the stages it trains, in order (their tokens add up), and where its samples came from
    "grpo": {"stages": ["grpo"], "sampled_by": "grpo"},
    "sft_gold": {"stages": ["sft_gold"], "sampled_by": None},
    "rft": {"stages": ["rft"], "sampled_by": "base_samples"},
    "sft_then_grpo": {"stages": ["sft_half", "sft_then_grpo"], "sampled_by": "sft_then_grpo"},
    "distill_r1": {"stages": ["distill_r1"], "sampled_by": None},
}
STYLES = (*OPENERS, "format_breaker", "other")
REPORTED = ("accuracy", "pass@1", "ood_accuracy", "format_compliance", "mean_completion_tokens")


def trained_tokens(stage: Path) -> int:
    """Tokens through forward and backward in a finished training stage (prompt and completion, no padding)."""
    return json.loads((stage / "trainer_state.json").read_text())["num_input_tokens_seen"]


def generated_tokens(stage: Path) -> float:
    """Tokens a stage sampled: rejection sampling's count, or a GRPO run's completions (mean length over its logged
    steps, weighted by the steps each log covers, times its completions per step and its steps)."""
    record = json.loads((stage / "stage.json").read_text())
    if "generated_tokens" in record.get("metrics", {}):
        return record["metrics"]["generated_tokens"]
    state = json.loads((stage / "trainer_state.json").read_text())
    logged = [row for row in state["log_history"] if "completions/mean_length" in row]
    spans = [row["step"] - previous["step"] for previous, row in zip([{"step": 0}, *logged], logged)]
    mean_length = sum(row["completions/mean_length"] * span for row, span in zip(logged, spans)) / sum(spans)
    return mean_length * state["train_batch_size"] * state["global_step"]


def compute(run: Path) -> dict:
    """Per arm of one seed's run: forward+backward tokens of its stages, and the tokens sampled for it."""
    return {
        arm: {
            "trained_tokens": sum(trained_tokens(run / stage) for stage in spec["stages"]),
            "generated_tokens": generated_tokens(run / spec["sampled_by"]) if spec["sampled_by"] else 0,
        }
        for arm, spec in ARMS.items()
    }


def styles(run: Path, settings: list[str], seed: int) -> dict:
    """Per arm (and the base): the share of its greedy answers to the test problems that follow each persona."""
    config = load_config(CONFIG, output_dir=str(run), settings=settings, seed=seed)
    templates = {stage.name: stage.eval_prompt_template for stage in config.stages}
    models = {BASE: (config.base_model, config.eval.base_prompt_template)}
    models |= {arm: (str(run / spec["stages"][-1]), templates[spec["stages"][-1]]) for arm, spec in ARMS.items()}
    shares = {}
    for name, (path, template) in models.items():
        problems = heldout_problems(config.eval, config.eval.dataset_test_split, template)
        tokenizer, model = load_policy(path, trust_remote_code=config.trust_remote_code)
        texts, _ = generate_completions(model, tokenizer, problems["prompt"], max_new_tokens=config.eval.max_new_tokens)
        counts = Counter(persona_of(text) for text in texts)
        shares[name] = {style: counts[style] / len(texts) for style in STYLES}
    return shares


def report(record: dict, per_seed: list[dict]) -> dict:
    """Per arm: its metrics, compute and styles over seeds, and its metrics minus GRPO's, paired by seed."""
    summary = record["summary"]["stages"]
    result = {}
    for arm, spec in ARMS.items():
        final = spec["stages"][-1]
        result[arm] = {
            "metrics": {name: summary[final][name] for name in REPORTED if name in summary[final]},
            "compute": {
                kind: interval([seed["compute"][arm][kind] for seed in per_seed])
                for kind in ("trained_tokens", "generated_tokens")
            },
            "styles": {style: interval([seed["styles"][arm][style] for seed in per_seed]) for style in STYLES},
            "minus_grpo": {} if arm == RL else {
                name: stats for name, stats in compare(record, record, RL, final).items() if name in REPORTED
            },
        }  # fmt: skip
    result["base"] = {"styles": {style: interval([s["styles"][BASE][style] for s in per_seed]) for style in STYLES}}
    return result


def markdown(result: dict) -> str:
    arms = list(ARMS)
    lines = [
        "| arm | " + " | ".join(REPORTED) + " | trained tokens | generated tokens |",
        "|---|" + "---:|" * (len(REPORTED) + 2),
    ]
    for arm in arms:
        row = result[arm]
        cells = [shown(row["metrics"][n], n != "mean_completion_tokens", False) if n in row["metrics"] else ""
                 for n in REPORTED]  # fmt: skip
        cells += [f"{row['compute'][kind]['mean'] / 1e3:.0f}K" for kind in ("trained_tokens", "generated_tokens")]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "| arm minus grpo | " + " | ".join(REPORTED) + " |", "|---|" + "---:|" * len(REPORTED)]
    for arm in arms[1:]:
        change = result[arm]["minus_grpo"]
        cells = [shown(change[n], n != "mean_completion_tokens", True) if n in change else "" for n in REPORTED]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "| greedy test answers in the style of | " + " | ".join(STYLES) + " |"]
    lines.append("|---|" + "---:|" * len(STYLES))
    for name in ["base", *arms]:
        shares = result[name]["styles"]
        lines.append(f"| {name} | " + " | ".join(f"{100 * shares[s]['mean']:.1f}" for s in STYLES) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["run", "report"])
    add_seed_arguments(parser)
    parser.add_argument("--teacher_runs", type=Path, default=Path("outputs/seeds-pipeline-v3"),
                        help="The default pipeline's runs over the same seeds (DIR/seed-N): R1's traces.")  # fmt: skip
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="STAGE.FLAG=VALUE",
                        help="More pipeline settings (e.g. a shrunk run); repeatable.")  # fmt: skip
    parser.add_argument("--results", type=Path, default=RESULTS, help="Folder of the seeds record and the report.")
    parser.add_argument("--runs", type=Path, default=Path("outputs/research/rl-vs-sft"), help="The seeds' runs.")
    args = parser.parse_args(argv)
    record_path, runs_path = args.results / "rl-vs-sft-seeds.json", args.results / "rl-vs-sft-runs.json"
    traces = args.teacher_runs.resolve() / "seed-{seed}" / "distill_qwen2" / "traces"
    settings = [f"distill_r1.dataset_name={traces}", *args.extra]
    if args.action == "run":
        flags = [part for setting in settings for part in ("--set", setting)]
        pipeline = [sys.executable, str(ROOT / "recipes" / "pipeline.py"), "--config", str(CONFIG), *flags]
        subprocess.run(seeds_command(args.seeds, args.jobs, args.runs, record_path, pipeline), check=True)
        record = json.loads(record_path.read_text())
        seeded = [[s.replace("{seed}", str(row["seed"])) for s in settings] for row in record["per_seed"]]
        per_seed = [
            {"seed": row["seed"], "compute": compute(args.runs / f"seed-{row['seed']}"),
             "styles": styles(args.runs / f"seed-{row['seed']}", seed_settings, row["seed"])}
            for row, seed_settings in zip(record["per_seed"], seeded)
        ]  # fmt: skip
        runs_path.write_text(json.dumps(per_seed, indent=1) + "\n")
        return
    result = report(json.loads(record_path.read_text()), json.loads(runs_path.read_text()))
    (args.results / "rl-vs-sft.json").write_text(json.dumps(result, indent=1) + "\n")
    print("Each arm over seeds, mean [95% interval] (points; tokens for the length); then each arm minus GRPO, paired "
          "by seed; then the writing style of the greedy test answers (% of answers, mean over seeds).\n")  # fmt: skip
    print(markdown(result))


if __name__ == "__main__":
    main()
