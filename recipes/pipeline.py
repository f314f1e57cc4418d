"""The DeepSeek-R1 pipeline, stage by stage, each stage feeding the next, ending with one table on the held-out split.

    python recipes/pipeline.py                                             # the embedded default, on a CPU, offline
    python recipes/pipeline.py --config recipes/configs/pipeline/qwen2.5-1.5b.yaml
    python recipes/pipeline.py --output_dir outputs/r1-tiny --hub_prefix me/deepseek-mini-tiny   # push every stage

With no `--config`, `recipes/configs/pipeline/tiny.yaml` runs R1-Zero (GRPO on the base) and R1's four stages
(cold-start SFT -> reasoning RL with language consistency -> rejection sampling + general data -> SFT of the base ->
all-scenario RL with a reward model trained here), then distils the result into small Qwen2 and Llama students.

The YAML lists the stages in order. Each names a recipe (`grpo`, `sft`, `rejection_sampling`, `reward_model`,
`distill`, `general_data`), optionally that recipe's YAML (`config`, default its embedded one), and flags (`args`)
that override it. `${name}` in a flag stands for the output folder of the earlier stage `name` (`${base}` for the
base model): that is how a stage feeds the next. Stage `name` writes `<output_dir>/<name>`. Every stage's command
line is parsed by its recipe's parser, and its models, data and reward names checked, before the first stage runs,
so a mistake in a late stage costs seconds.

Stages run in this process, one after another, by calling each recipe's `main` with its parsed arguments: one
import of torch/transformers/TRL instead of one per stage (about 10 s each on a CPU), and the recipes share no state
but what they read from disk. Every stage is therefore also a plain command, logged before it runs
(`python recipes/<recipe>.py --config ... --output_dir ...`), to rerun it alone or under `accelerate launch` on
several GPUs; the pipeline itself runs on one process (one GPU or the CPU).

Resuming: a stage that finished carries `_pipeline_done.json` in its folder and is not run again (delete the folder
to redo it); a stage that failed runs again and its recipe resumes from the last complete checkpoint in its folder.

After each stage that yields a policy, and for the base, the model answers the held-out problems greedily and, with
`eval.r1_samples`, under R1's protocol (pass@1 over that many samples at T=0.6, top-p 0.95), on the test split and
out of distribution, and is scored with the project's rewards (`recipes.lib.evaluation`); the scores are cached in
`<output_dir>/eval` with the settings that produced them, and measured again when the settings change.

Choosing a setting on the validation split, one stage at a time, without retraining what comes before it:

    python recipes/pipeline.py --set eval.dataset_test_split=validation --set eval.ood_split= \
        --set rs_sft.num_train_epochs=1 --until rs_sft --reuse outputs/pipeline-tiny --output_dir outputs/rs-sft-1

`--set STAGE.FLAG=VALUE` (or `eval.KEY=VALUE`) overrides the YAML, the value read as YAML; `--until STAGE` stops
after that stage; `--reuse DIR` links, instead of training, every stage that the run in DIR finished with the same
command line and whose inputs are reused too (here every stage before rs_sft), with its measurement when the
settings match.
The pipeline ends with `results.json`, `results.md` (one row per stage: accuracy, format compliance, language
consistency, mean completion length, reflection rate) and `plots/stages.png`.

With `--hub_prefix me/name`, every stage pushes its finished folder to `me/name-<stage>` (models with their card and
`stage.json`, rejection sampling's data as a dataset repo).
"""

import argparse
import gc
import hashlib
import json
import logging
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from recipes import distill, general_data, grpo, rejection_sampling, reward_model, sft
from recipes.lib.cli import CONFIGS_DIR, TINY_BASE, parse_recipe_args, run_entry_point, strict
from recipes.lib.data import BUILTIN_DATASET
from recipes.lib.evaluation import evaluate_protocols, format_metric
from recipes.lib.heldout import HeldoutArguments, load_heldout, reasoning_vocabulary
from recipes.lib.inputs import (
    UserInputError,
    check_hub_id,
    check_inputs,
    check_known_keys,
    check_local_path,
    read_yaml,
)
from recipes.lib.plots import plot_stage_metrics
from recipes.lib.prompts import PROMPT_TEMPLATES
from recipes.lib.stage import LOG_FORMAT

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = CONFIGS_DIR / "pipeline" / "tiny.yaml"
DONE_MARKER = "_pipeline_done.json"  # "_*" files stay local when a folder is pushed
BASE = "base"
REFERENCE = re.compile(r"\$\{(\w+)\}")

TABLE_METRICS = (
    "accuracy",
    "pass@1",
    "ood_accuracy",
    "ood_pass@1",
    "format_compliance",
    "language_consistency",
    "mean_completion_tokens",
    "reflection_rate",
    "unknown_word_rate",
)
"""The table's columns: greedy accuracy and R1's pass@1 on test and out of distribution, then the test split's
greedy format, language, length and reflection."""
NOTE_METRICS = ("kept_reasoning", "general", "pairwise_accuracy")
"""Facts from `stage.json` shown in the table for stages that yield no policy (data, reward model)."""


# ------------------------------------------------------------------------------------------------------------------
# Recipes


def parse_trl_recipe(module, argv: list[str]) -> tuple:
    """A recipe's arguments as `TrlParser` reads them through `parse_recipe_args` (its embedded YAML unless
    `--config`)."""
    return parse_recipe_args(module.make_parser(), module.DEFAULT_CONFIG, argv)


@dataclass(frozen=True)
class Recipe:
    """How the pipeline runs a recipe and what its output is."""

    script: str  # the file that runs it alone
    parse: Callable[[list[str]], tuple]  # its arguments from a command line; fails on a bad flag or value
    main: Callable[..., object]  # runs it on the arguments `parse` returned
    policy: bool  # its output is a causal LM that answers the held-out problems
    hub_id_flag: str | None  # the flag naming its Hub repo (None: it does not push)
    loads_models: bool = True  # takes `--trust_remote_code`, which the pipeline sets for every stage
    default_config: Path | None = None  # the YAML its flags override when the stage names none

    def run(self, argv: list[str]) -> None:
        self.main(*self.parse(argv))


RECIPES = {
    "grpo": Recipe(
        "recipes/grpo.py", partial(parse_trl_recipe, grpo), grpo.main, True, "hub_model_id", True, grpo.DEFAULT_CONFIG
    ),
    "sft": Recipe(
        "recipes/sft.py", partial(parse_trl_recipe, sft), sft.main, True, "hub_model_id", True, sft.DEFAULT_CONFIG
    ),
    "distill": Recipe(
        "recipes/distill.py",
        partial(parse_trl_recipe, distill),
        distill.main,
        True,
        "hub_model_id",
        True,
        distill.DEFAULT_CONFIG,
    ),
    "reward_model": Recipe(
        "recipes/reward_model.py",
        partial(parse_trl_recipe, reward_model),
        reward_model.main,
        False,
        "hub_model_id",
        default_config=reward_model.DEFAULT_CONFIG,
    ),
    "rejection_sampling": Recipe(
        "recipes/rejection_sampling.py",
        rejection_sampling.parse_args,
        rejection_sampling.main,
        False,
        "hub_dataset_id",
        default_config=rejection_sampling.DEFAULT_CONFIG,
    ),
    "general_data": Recipe(
        "recipes/general_data.py",
        lambda argv: (general_data.make_parser().parse_args(argv),),
        general_data.main,
        False,
        None,
        loads_models=False,
    ),
}


# ------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class StageSpec:
    """One stage of the pipeline YAML."""

    name: str
    recipe: str
    config: str | None = None  # the recipe's YAML (a path, or a name under recipes/configs/); None: its default
    args: dict = field(default_factory=dict)  # flag -> value; `${stage}` is that stage's output folder
    eval_prompt_template: str = "chat"  # how held-out prompts are built for this stage's model

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"Stage {self.name!r}: unknown recipe {self.recipe!r}; choose one of {sorted(RECIPES)}.")
        if self.eval_prompt_template not in PROMPT_TEMPLATES:
            raise ValueError(f"Stage {self.name!r}: eval_prompt_template must be one of {PROMPT_TEMPLATES}.")
        if "output_dir" in self.args:
            raise ValueError(
                f"Stage {self.name!r}: leave output_dir out of args; the stage writes <output_dir>/{self.name}."
            )


@dataclass
class EvalSettings:
    """The held-out measurement shared by every row of the final table."""

    dataset_name: str = BUILTIN_DATASET  # a dataset with a test split of problems and gold answers
    dataset_test_split: str = "test"
    problem_column: str = "problem"
    solution_column: str = "solution"
    gold_answer_regex: str | None = None  # first group = the gold answer inside `solution_column`
    builtin_seed: int = 0
    builtin_test_size: int = 100
    max_samples: int = 100
    ood_split: str = "ood"  # measured too, its metrics prefixed `ood_` ('' for none; the built-in task has one)
    max_new_tokens: int = 128
    r1_samples: int = 4  # R1's protocol next to greedy: pass@1 over this many samples at T=0.6, top-p 0.95 (0: none)
    base_prompt_template: str = "r1_zero"  # the base model was pretrained on R1-Zero's plain-text template

    def __post_init__(self):
        if self.r1_samples < 0:
            raise ValueError(f"eval.r1_samples must be >= 0 (0 measures greedy decoding only), got {self.r1_samples}.")

    def splits(self) -> dict[str, str]:
        """Metric prefix -> split: the test split unprefixed, the out-of-distribution one as `ood_`."""
        return {"": self.dataset_test_split, **({"ood_": self.ood_split} if self.ood_split else {})}


@dataclass
class PipelineConfig:
    """A pipeline YAML: where it writes, what it starts from, how it measures, and its stages in order."""

    output_dir: str
    stages: list[StageSpec]
    base_model: str | None = None  # None: the shipped tiny base
    eval: EvalSettings = field(default_factory=EvalSettings)
    hub_prefix: str | None = None  # push every stage to `<hub_prefix>-<stage>`
    seed: int = 0  # every stage's `--seed` and the measurement's sampling seed: one run of the pipeline per seed
    trust_remote_code: bool = False  # run a model folder's own code: one choice for every stage and measurement

    def __post_init__(self):
        self.stages = [s if isinstance(s, StageSpec) else StageSpec(**s) for s in self.stages]
        if not isinstance(self.eval, EvalSettings):
            unknown = sorted(set(self.eval) - {f.name for f in fields(EvalSettings)})
            if unknown:
                raise ValueError(
                    f"eval has no setting {unknown}: choose among {[f.name for f in fields(EvalSettings)]} (every row "
                    "is measured greedily and, with r1_samples, under R1's protocol)."
                )
            self.eval = EvalSettings(**self.eval)
        self.base_model = self.base_model or str(TINY_BASE)
        known = {BASE}
        for stage in self.stages:
            if stage.name in known:
                raise ValueError(f"Stage name {stage.name!r} is used twice (or is the reserved name {BASE!r}).")
            unknown = sorted(set(REFERENCE.findall(json.dumps(stage.args))) - known)
            if unknown:
                raise ValueError(
                    f"Stage {stage.name!r} refers to ${{{unknown[0]}}}, which is not an earlier stage; "
                    f"it can use {sorted(known)}."
                )
            for flag in ("trust_remote_code", "seed"):
                if flag in stage.args:
                    raise ValueError(
                        f"Stage {stage.name!r} sets {flag}: set it once, at the top of the pipeline YAML or with "
                        f"--{flag}, and every stage and measurement follows it."
                    )
            known.add(stage.name)


def load_config(path: str | Path, *, settings: list[str] = (), until: str | None = None, **overrides) -> PipelineConfig:
    """The pipeline YAML at `path`, with top-level keys replaced by `overrides` where they are not None, then the
    `settings` (`STAGE.FLAG=VALUE`, `eval.KEY=VALUE`) applied, and the stages after `until` dropped; a syntax error,
    a misspelled key or a wrong value fails as a `UserInputError` that starts with the file."""
    values = read_yaml(path)
    values.update({key: value for key, value in overrides.items() if value is not None})
    check_known_keys(values, {f.name for f in fields(PipelineConfig)}, where=str(path))
    stages = [s for s in values.get("stages") or [] if isinstance(s, dict)]
    for stage in stages:
        check_known_keys(stage, {f.name for f in fields(StageSpec)}, where=f"{path}, stage {stage.get('name')!r}")
    for setting in settings:
        apply_setting(values, setting)
    if until is not None:
        names = [stage.get("name") for stage in stages]
        if until not in names:
            raise UserInputError(f"--until {until}: no such stage in {path}; its stages are {names}.")
        values["stages"] = stages[: names.index(until) + 1]
    try:
        return PipelineConfig(**values)
    except (TypeError, ValueError) as error:
        raise UserInputError(f"{path}: {error}") from None


def apply_setting(values: dict, setting: str) -> None:
    """Apply one `--set`: `STAGE.FLAG=VALUE` sets a flag of a stage's `args`, `eval.KEY=VALUE` a measurement
    setting; VALUE is read as YAML (`3`, `2e-4`, `true`, `[a, b]`), an empty one as the empty string. The flag
    itself is checked later, by the stage's recipe, with the stage's other flags."""
    target, equals, text = setting.partition("=")
    section, dot, key = target.partition(".")
    if not (equals and dot and section and key):
        raise UserInputError(
            f"--set {setting}: write STAGE.FLAG=VALUE (e.g. rs_sft.num_train_epochs=2) or eval.KEY=VALUE."
        )
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        raise UserInputError(f"--set {setting}: {text!r} does not parse as a YAML value; quote it.") from None
    if section == "eval":
        values["eval"] = {**(values.get("eval") or {}), key: value}
        return
    stage = next((s for s in values.get("stages") or [] if isinstance(s, dict) and s.get("name") == section), None)
    if stage is None:
        names = [s.get("name") for s in values.get("stages") or [] if isinstance(s, dict)]
        raise UserInputError(f"--set {setting}: no stage {section!r}; write one of {names}, or eval.")
    stage["args"] = {**(stage.get("args") or {}), key: value}


# ------------------------------------------------------------------------------------------------------------------
# Stage command lines


def as_flags(args: dict) -> list[str]:
    """`{"max_steps": 5, "reward_funcs": ["accuracy", "format"], "eval_heldout": False}` as command-line flags.

    Lists become several values, dicts a JSON string (e.g. `reward_params`), booleans `true`/`false`.
    """
    argv = []
    for key, value in args.items():
        if value is None:
            raise ValueError(f"Flag {key!r} is null: a command line cannot unset a value; leave the key out instead.")
        if isinstance(value, list):
            argv += [f"--{key}", *(str(v) for v in value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        elif isinstance(value, bool):
            argv += [f"--{key}", str(value).lower()]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def resolve_config(path: str) -> Path:
    """A recipe YAML as given, or by its name under `recipes/configs/` (`grpo_tiny.yaml`)."""
    return Path(path) if Path(path).exists() else CONFIGS_DIR / path


def stage_dir(config: PipelineConfig, name: str) -> Path:
    return Path(config.output_dir) / name


def stage_argv(config: PipelineConfig, stage: StageSpec) -> list[str]:
    """The stage's command line: its YAML, its flags with `${stage}` references resolved, its output folder, the
    pipeline's seed and `trust_remote_code` and, with a `hub_prefix`, its Hub repo."""
    folders = {BASE: config.base_model, **{s.name: str(stage_dir(config, s.name)) for s in config.stages}}
    argv = ["--config", str(resolve_config(stage.config))] if stage.config else []
    argv += [REFERENCE.sub(lambda m: folders[m.group(1)], flag) for flag in as_flags(stage.args)]
    argv += ["--output_dir", str(stage_dir(config, stage.name)), "--seed", str(config.seed)]
    if RECIPES[stage.recipe].loads_models:
        argv += ["--trust_remote_code", str(config.trust_remote_code).lower()]
    hub_id_flag = RECIPES[stage.recipe].hub_id_flag
    if config.hub_prefix and hub_id_flag:
        argv += ["--push_to_hub", "true", f"--{hub_id_flag}", f"{config.hub_prefix}-{stage.name.replace('_', '-')}"]
    return argv


# ------------------------------------------------------------------------------------------------------------------
# Running and resuming


def is_done(folder: Path) -> bool:
    return (folder / DONE_MARKER).exists()


def run_stage(config: PipelineConfig, stage: StageSpec) -> None:
    """Run the stage unless its folder says it finished; mark it finished when its recipe returns."""
    folder, argv = stage_dir(config, stage.name), stage_argv(config, stage)
    if folder.is_symlink() and is_done(folder):
        logger.info(f"Stage {stage.name}: reused from {folder.resolve()}.")
        return
    if is_done(folder):
        if json.loads((folder / DONE_MARKER).read_text())["argv"] != argv:
            logger.warning(
                f"Stage {stage.name} finished earlier with other arguments; keeping it (delete {folder} to rerun it)."
            )
        logger.info(f"Stage {stage.name}: done, skipped.")
        return
    command = shlex.join(["python", *RECIPES[stage.recipe].script.split(), *argv])
    logger.info(f"Stage {stage.name}: {command}")
    eval_cache(config, stage.name).unlink(missing_ok=True)  # measured again once it has run
    RECIPES[stage.recipe].run(argv)
    gc.collect()  # the recipe's model and trainer go before the next stage loads its own
    marker = {"stage": stage.name, "recipe": stage.recipe, "argv": argv, "config_sha256": recipe_config_digest(stage)}
    (folder / DONE_MARKER).write_text(json.dumps(marker, indent=2))


def recipe_config_digest(stage: StageSpec) -> str:
    """SHA-256 of the settings in the recipe YAML the stage's flags override (its `config`, else the recipe's embedded
    default; comments and key order aside): a stage run under other settings is not the same stage, even with the
    same command line."""
    path = resolve_config(stage.config) if stage.config else RECIPES[stage.recipe].default_config
    settings = json.dumps(read_yaml(path), sort_keys=True) if path else ""
    return hashlib.sha256(settings.encode()).hexdigest()


def reusable_stages(config: PipelineConfig, source: Path) -> list[str]:
    """The stages that the run in `source` finished with the command line this run would give them there, and whose
    input stages are all reusable too: a stage after a changed one, or fed by one, is trained again."""
    elsewhere = replace(config, output_dir=str(source))
    reused: list[str] = []
    for stage in config.stages:
        marker = stage_dir(elsewhere, stage.name) / DONE_MARKER
        inputs = set(REFERENCE.findall(json.dumps(stage.args))) - {BASE}
        record = json.loads(marker.read_text()) if marker.exists() else {}
        same = same_folders(record.get("argv", [])) == same_folders(stage_argv(elsewhere, stage)) and record.get(
            "config_sha256"
        ) == recipe_config_digest(stage)
        if same and inputs <= set(reused):
            reused.append(stage.name)
    return reused


def same_folders(argv: list[str]) -> list[str]:
    """`argv` with every existing path resolved, so that one folder written relative, absolute or through a link
    reads the same."""
    return [str(Path(arg).resolve()) if arg and Path(arg).exists() else arg for arg in argv]


def reuse_stages(config: PipelineConfig, source: Path) -> None:
    """Link every reusable stage of `source` into this run's folder (where this run has no such folder yet), with
    its cached measurement and the base's; `measure` keeps a cache only if its settings are this run's."""
    (Path(config.output_dir) / "eval").mkdir(parents=True, exist_ok=True)
    names = reusable_stages(config, source)
    for name in names:
        if not stage_dir(config, name).exists():
            stage_dir(config, name).symlink_to(stage_dir(replace(config, output_dir=str(source)), name).resolve())
    for name in [BASE, *names]:
        cached = source / "eval" / f"{name}.json"
        if cached.exists() and not eval_cache(config, name).exists():
            shutil.copyfile(cached, eval_cache(config, name))
    logger.info(f"Reused from {source}: {names or 'no stage'}.")


# ------------------------------------------------------------------------------------------------------------------
# Held-out measurement and the table


def heldout_problems(settings: EvalSettings, split: str, prompt_template: str):
    """The problems of `split`, with prompts built as `prompt_template` says (the loader of every stage's held-out
    measurement)."""
    return load_heldout(
        HeldoutArguments(
            eval_dataset_name=settings.dataset_name,
            builtin_seed=settings.builtin_seed,
            builtin_test_size=settings.builtin_test_size,
            eval_max_samples=settings.max_samples,
            prompt_template=prompt_template,
            problem_column=settings.problem_column,
            solution_column=settings.solution_column,
            gold_answer_regex=settings.gold_answer_regex,
        ),
        split,
    )


def eval_cache(config: PipelineConfig, name: str) -> Path:
    return Path(config.output_dir) / "eval" / f"{name}.json"


def load_policy(model_path: str, *, trust_remote_code: bool) -> tuple:
    """(tokenizer, model) of the folder or Hub id `model_path` on the best device. Its own code runs only with
    `trust_remote_code`; DeepseekMini folders load without it, through the classes this project registers."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=trust_remote_code).to(device)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    return tokenizer, model


def measure(config: PipelineConfig, name: str, model_path: str, prompt_template: str) -> dict:
    """R1's held-out metrics of the model at `model_path` on the test split and, prefixed `ood_`, out of
    distribution (greedy, and pass@1 under R1's protocol), cached in `eval_cache`."""
    cache, settings = eval_cache(config, name), measurement_settings(config, prompt_template)
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    if cached.get("settings") == settings:
        return cached["metrics"]
    tokenizer, model = load_policy(model_path, trust_remote_code=config.trust_remote_code)
    metrics = {}
    for prefix, split in config.eval.splits().items():
        measured = evaluate_protocols(
            model,
            tokenizer,
            heldout_problems(config.eval, split, prompt_template),
            max_new_tokens=config.eval.max_new_tokens,
            r1_samples=config.eval.r1_samples,
            seed=config.seed,
            vocabulary=reasoning_vocabulary(config.eval.dataset_name),
        )
        metrics |= {prefix + key: value for key, value in measured.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"settings": settings, "metrics": metrics}, indent=2))
    return metrics


def measurement_settings(config: PipelineConfig, prompt_template: str) -> dict:
    """What a cached measurement depends on besides the model: the `eval` settings, the seed, the prompts."""
    return {**asdict(config.eval), "seed": config.seed, "prompt_template": prompt_template}


def stage_row(config: PipelineConfig, stage: StageSpec) -> dict:
    """The table row of a finished stage: held-out metrics for a policy, a note from `stage.json` otherwise."""
    folder = stage_dir(config, stage.name)
    row = {"stage": stage.name, "recipe": stage.recipe, "output": str(folder)}
    if RECIPES[stage.recipe].policy:
        return {**row, **measure(config, stage.name, str(folder), stage.eval_prompt_template)}
    record = folder / "stage.json"
    metrics = json.loads(record.read_text()).get("metrics", {}) if record.exists() else {}
    note = ", ".join(
        f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in metrics.items()
        if key in NOTE_METRICS
    )
    return {**row, "note": note}


def format_results_table(rows: list[dict]) -> str:
    """Markdown: one row per stage; shares in percent (accuracy ± its standard error), lengths in tokens, n/a where a
    metric could not judge; a note where a stage has no policy."""
    header = ["stage", "recipe", *TABLE_METRICS, "note"]
    alignment = ["---", "---", *("---:" for _ in TABLE_METRICS), "---"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(alignment) + " |"]
    for row in rows:
        cells = [
            row["stage"],
            row["recipe"],
            *(format_metric(row, metric) for metric in TABLE_METRICS),
            row.get("note", ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(config: PipelineConfig, rows: list[dict]) -> str:
    """`results.json`, `results.md` and `plots/stages.png` in the output folder; return the Markdown table."""
    out = Path(config.output_dir)
    table = format_results_table(rows)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    (out / "results.md").write_text(f"# R1 pipeline: held-out results per stage\n\n{table}\n")
    plot_stage_metrics([row for row in rows if "accuracy" in row], TABLE_METRICS, str(out / "plots" / "stages.png"))
    return table


def check_stage_inputs(config: PipelineConfig) -> None:
    """Check every stage's input before the first stage runs, so that a mistake in a late stage costs seconds: its
    command line parsed by its recipe's parser (flags, values, YAML), then its models, data and reward names
    (`recipes.lib.inputs.check_inputs`, which loads nothing), taking earlier stages' folders as existing."""
    check_local_path(config.base_model, "base_model")
    check_hub_id(config.base_model, "base_model", "model")
    check_local_path(config.eval.dataset_name, "eval.dataset_name")
    produced = {str(stage_dir(config, stage.name)) for stage in config.stages}
    for stage in config.stages:
        argv = stage_argv(config, stage)
        try:
            check_inputs(*RECIPES[stage.recipe].parse(argv), produced=produced)
        except ValueError as error:  # a `UserInputError`, or a value refused by a recipe's own check
            raise UserInputError(
                f"Stage {stage.name!r}: {error}\n  fix its `args` in the pipeline YAML; its command line: "
                f"{shlex.join(argv)}"
            ) from None


def run_pipeline(config: PipelineConfig, reuse: Path | None = None) -> list[dict]:
    """Check every stage's input, take what can be reused from the run in `reuse`, then run (or resume) the stages
    in order, measure each policy on the held-out split, write and return the rows."""
    if reuse is not None and not reuse.is_dir():
        raise UserInputError(f"--reuse {reuse}: no such folder; give the output_dir of an earlier run.")
    check_stage_inputs(config)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    if reuse is not None:
        reuse_stages(config, reuse)
    rows = [
        {
            "stage": BASE,
            "recipe": "",
            "output": config.base_model,
            **measure(config, BASE, config.base_model, config.eval.base_prompt_template),
        }
    ]
    for stage in config.stages:
        run_stage(config, stage)
        rows.append(stage_row(config, stage))
    print(write_results(config, rows))
    return rows


def make_parser() -> argparse.ArgumentParser:
    parser = strict(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="Pipeline YAML (default: the embedded tiny one).")
    parser.add_argument("--output_dir", help="Override the YAML's output folder.")
    parser.add_argument("--base_model", help="Override the YAML's base model (a folder or a Hub id).")
    parser.add_argument("--hub_prefix", help="Push every stage to '<hub_prefix>-<stage>' (e.g. me/deepseek-mini-tiny).")
    parser.add_argument(
        "--seed", type=int, help="Every stage's seed and the measurement's (default: the YAML's, else 0)."
    )
    parser.add_argument(
        "--trust_remote_code",
        choices=["true", "false"],
        help="Run model folders' own code, in every stage and measurement (default: the YAML's, else false).",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="STAGE.FLAG=VALUE",
        help="Override a stage's flag, or eval.KEY=VALUE a measurement setting; the value is read as YAML. Repeatable.",
    )
    parser.add_argument("--until", metavar="STAGE", help="Stop after this stage (its rows are the table's last).")
    parser.add_argument(
        "--reuse",
        type=Path,
        metavar="DIR",
        help="An earlier run's output_dir: link the stages it finished with the same command line and inputs.",
    )
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the pipeline from its command line (`sys.argv[1:]` when None); a user's error raises `UserInputError`."""
    args = make_parser().parse_args(argv)
    trust = None if args.trust_remote_code is None else args.trust_remote_code == "true"
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    return run_pipeline(
        load_config(
            args.config,
            output_dir=args.output_dir,
            base_model=args.base_model,
            hub_prefix=args.hub_prefix,
            seed=args.seed,
            trust_remote_code=trust,
            settings=args.settings,
            until=args.until,
        ),
        reuse=args.reuse,
    )


if __name__ == "__main__":
    run_entry_point(main)
