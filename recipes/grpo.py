"""R1-Zero and R1's reasoning RL: GRPO with rule rewards (and reward models), as a runnable recipe.

    accelerate launch recipes/grpo.py                                    # the embedded default, on any machine
    accelerate launch recipes/grpo.py --config recipes/configs/grpo_qwen2.5-0.5b_gsm8k.yaml
    accelerate launch recipes/grpo.py --learning_rate 1e-5 --reward_funcs accuracy format language_consistency

With no `--config`, `recipes/configs/grpo_tiny.yaml` is used: the tiny DeepseekMini base that the project ships
learns the built-in arithmetic task from rule rewards alone, and the run ends with a before/after table on the
held-out split and plots of reward, accuracy and completion length over steps. Flags override the YAML.
"""

import json
import logging
import os
import re
from dataclasses import dataclass, field

import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from recipes.checkpoints import resume_checkpoint
from recipes.common import (
    BUILTIN_DATASET,
    CONFIGS_DIR,
    TINY_BASE,
    finish_stage,
    load_any_dataset,
    parse_recipe_args,
    require_columns,
)
from recipes.evaluation import evaluate_protocols, format_comparison_table
from recipes.grpo_trainer import DeepseekGRPOConfig, DeepseekGRPOTrainer
from recipes.plots import plot_training_curves
from recipes.task import R1_ZERO_SYSTEM_PROMPT, R1_ZERO_TEMPLATE

logger = logging.getLogger(__name__)

PROMPT_TEMPLATES = ("r1_zero", "chat", "none")


PROMPT_TEMPLATE_HELP = {
    "help": "How prompts are built from `problem_column`: 'r1_zero' (R1-Zero's plain-text template), 'chat' (the "
    "tokenizer's chat template with the R1-Zero instructions as system prompt) or 'none' (the data already has a "
    "`prompt` column). Use the template the checkpoint was trained with."
}


@dataclass
class PromptArguments:
    """How prompts and gold answers are built from a dataset's problems (`build_prompts`); shared by the recipes
    that prompt a model: GRPO, rejection sampling, and the held-out measurement of SFT and distillation."""

    prompt_template: str = field(default="chat", metadata=PROMPT_TEMPLATE_HELP)
    problem_column: str = field(default="problem", metadata={"help": "Column holding the problem text."})
    solution_column: str = field(
        default="solution", metadata={"help": "Column holding the gold answer; renamed to `solution` for the rewards."}
    )
    gold_answer_regex: str | None = field(
        default=None,
        metadata={
            "help": "Regular expression whose first group extracts the gold answer from `solution_column`, e.g. "
            "'####\\s*(.+)$' for GSM8K. None keeps the column as it is."
        },
    )

    def __post_init__(self):
        if self.prompt_template not in PROMPT_TEMPLATES:
            raise ValueError(f"prompt_template must be one of {PROMPT_TEMPLATES}, got {self.prompt_template!r}.")
        if self.gold_answer_regex is not None:
            try:
                groups = re.compile(self.gold_answer_regex).groups
            except re.error as error:
                raise ValueError(
                    f"gold_answer_regex {self.gold_answer_regex!r} is not a valid regex: {error}"
                ) from None
            if groups < 1:
                raise ValueError(f"gold_answer_regex {self.gold_answer_regex!r} needs one capture group.")


@dataclass
class GRPOScriptArguments(ScriptArguments, PromptArguments):
    """Data, rewards and evaluation of the GRPO recipe (TRL's ScriptArguments: dataset_name, splits, ...;
    PromptArguments: prompt template and columns, R1-Zero's template by default)."""

    dataset_name: str = field(
        default=BUILTIN_DATASET,
        metadata={
            "help": f"'{BUILTIN_DATASET}' for the project's arithmetic task, a Hub dataset id, a local "
            ".json/.jsonl/.parquet/.csv file, or a folder saved with `save_to_disk`."
        },
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={
            "help": "Rewards by registry name (see `rewards.list_rewards()`; open-r1's and TRL's names are aliases, "
            "`rewards.aliases`) or dotted path 'my_pkg.my_module:my_reward'; any other string is loaded as a reward "
            "model id or path. Weights go in `reward_weights`, parameters in `reward_params`."
        },
    )
    prompt_template: str = field(default="r1_zero", metadata=PROMPT_TEMPLATE_HELP)
    builtin_seed: int = field(default=0, metadata={"help": "Seed of the built-in task's train and held-out splits."})
    builtin_train_size: int = field(default=2000, metadata={"help": "Train problems of the built-in task."})
    builtin_test_size: int = field(default=200, metadata={"help": "Held-out problems of the built-in task."})
    eval_heldout: bool = field(
        default=True,
        metadata={"help": "Evaluate on `dataset_test_split` before and after training and print a table."},
    )
    eval_max_samples: int = field(default=200, metadata={"help": "Held-out problems used for that table."})
    eval_ood_split: str = field(
        default="ood",
        metadata={
            "help": "A split evaluated next to the test split, as out of distribution (the built-in task's `ood`: "
            "six or seven addends); skipped when the dataset has no such split, '' for none."
        },
    )
    stage: str = field(
        default="grpo",
        metadata={"help": "Name of this stage in the model card and stage.json (e.g. r1_zero, reasoning_rl)."},
    )
    eval_r1_samples: int = field(
        default=4,
        metadata={
            "help": "Samples per problem for R1's protocol (T=0.6, top-p 0.95, pass@1), measured next to greedy "
            "decoding; 0 for greedy only."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.reward_funcs:
            raise ValueError("reward_funcs is empty: name at least one reward, e.g. --reward_funcs accuracy format.")


def build_prompts(dataset, script_args):
    """Add the `prompt` column from the problem text and name the gold column `solution`."""
    if script_args.solution_column != "solution" and script_args.solution_column in dataset.column_names:
        dataset = dataset.rename_column(script_args.solution_column, "solution")
    if script_args.gold_answer_regex is not None:
        require_columns(dataset, ["solution"], where="gold_answer_regex")
        pattern = re.compile(script_args.gold_answer_regex, re.MULTILINE)
        dataset = dataset.map(lambda row: {"solution": extract_gold(row["solution"], pattern)})
    if script_args.prompt_template == "none":
        require_columns(dataset, ["prompt"], where="prompt_template='none'")
        return dataset
    require_columns(dataset, [script_args.problem_column], where=f"prompt_template={script_args.prompt_template!r}")

    def make(problem: str):
        if script_args.prompt_template == "r1_zero":
            return R1_ZERO_TEMPLATE.format(problem=problem)
        return [{"role": "system", "content": R1_ZERO_SYSTEM_PROMPT}, {"role": "user", "content": problem}]

    column = script_args.problem_column
    return dataset.map(
        lambda row: {"prompt": make(row[column])},
        remove_columns=["prompt"] if "prompt" in dataset.column_names else None,
    )


def extract_gold(solution: str, pattern: re.Pattern) -> str:
    """The first capture group of the last match of `pattern` in `solution`; the whole text when none matches."""
    matches = list(pattern.finditer(solution))
    return matches[-1].group(1).strip() if matches else solution


EVALUATION_TITLES = {
    "heldout": "Held-out test split:",
    "ood": "Out of distribution (more addends than any training problem):",
}


def heldout_metrics(model, tokenizer, dataset, script_args, training_args) -> dict:
    """R1's signals on the held-out split (accuracy, format, language consistency, length, reflection rate) under
    greedy decoding, and pass@1 under R1's protocol."""
    return evaluate_protocols(
        model,
        tokenizer,
        dataset.select(range(min(len(dataset), script_args.eval_max_samples))),
        max_new_tokens=training_args.max_completion_length,
        r1_samples=script_args.eval_r1_samples,
        seed=training_args.seed,  # a run's sampling noise is part of its seed's outcome
        reflection_phrases=training_args.reflection_phrases,
    )


def main(script_args, training_args, model_args):
    set_seed(training_args.seed)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=training_args.get_process_log_level()
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())

    # Data
    builtin = {
        "seed": script_args.builtin_seed,
        "n_train": script_args.builtin_train_size,
        "n_test": script_args.builtin_test_size,
    }
    dataset = load_any_dataset(script_args.dataset_name, script_args.dataset_config, builtin_kwargs=builtin)
    dataset = {split: build_prompts(dataset[split], script_args) for split in dataset}
    train_dataset = dataset[script_args.dataset_train_split]
    test_dataset = dataset.get(script_args.dataset_test_split)
    if script_args.eval_heldout and test_dataset is None:
        raise ValueError(
            f"eval_heldout needs a '{script_args.dataset_test_split}' split, but the dataset has {list(dataset)}. "
            "Set --dataset_test_split or --eval_heldout false."
        )
    # name of the evaluation -> split: `heldout` (the test split), and `ood` where the dataset has one
    evaluations = {"heldout": test_dataset}
    if script_args.eval_ood_split and script_args.eval_ood_split in dataset:
        evaluations["ood"] = dataset[script_args.eval_ood_split]

    # Model (the shipped tiny base unless a model is named)
    model_args.model_name_or_path = model_args.model_name_or_path or str(TINY_BASE)
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )
    model = AutoModelForCausalLM.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )

    # Trainer (rewards are resolved by name, and checked against the columns, inside)
    trainer = DeepseekGRPOTrainer(
        model=model,
        reward_funcs=script_args.reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )

    # Held-out tables, before (kept on disk so a resumed run compares against the true start)
    checkpoint = resume_checkpoint(training_args)
    before = {}
    if script_args.eval_heldout and trainer.accelerator.is_main_process:
        for name, split in evaluations.items():
            path = os.path.join(training_args.output_dir, f"{name}_before.json")
            if os.path.exists(path):
                with open(path) as f:
                    before[name] = json.load(f)
            else:
                before[name] = heldout_metrics(trainer.model, tokenizer, split, script_args, training_args)
                os.makedirs(training_args.output_dir, exist_ok=True)
                with open(path, "w") as f:
                    json.dump(before[name], f, indent=2)

    # Train
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    # Held-out tables, after; plots
    after = None
    if script_args.eval_heldout and trainer.accelerator.is_main_process:
        after = {}
        for name, split in evaluations.items():
            after[name] = heldout_metrics(trainer.model, tokenizer, split, script_args, training_args)
            with open(os.path.join(training_args.output_dir, f"{name}_after.json"), "w") as f:
                json.dump(after[name], f, indent=2)
            print(EVALUATION_TITLES[name])
            print(format_comparison_table(before[name], after[name]))
        print(
            f"(one training seed, {training_args.seed}; over several: python benchmarks/seeds.py --seeds 0 1 2 "
            "--out seeds.json -- accelerate launch recipes/grpo.py ...)"
        )
    if trainer.accelerator.is_main_process:
        plot_training_curves(trainer.state.log_history, os.path.join(training_args.output_dir, "plots"))

    # Save, card, push
    finish_stage(
        trainer,
        training_args,
        stage=script_args.stage,
        parent=model_args.model_name_or_path,
        dataset=script_args.dataset_name,
        hyperparameters={
            "reward_funcs": script_args.reward_funcs,
            "reward_weights": training_args.reward_weights,
            "learning_rate": training_args.learning_rate,
            "num_generations": training_args.num_generations,
            "beta": training_args.beta,
            "max_steps": training_args.max_steps,
            "max_completion_length": training_args.max_completion_length,
        },
        metrics=None if after is None else card_metrics(after),
    )


def card_metrics(after: dict[str, dict]) -> dict:
    """The model card's metrics: the test split's under their names, the others' prefixed (`ood_accuracy`)."""
    return {
        (key if name == "heldout" else f"{name}_{key}"): value for name, m in after.items() for key, value in m.items()
    }


def make_parser():
    return TrlParser((GRPOScriptArguments, DeepseekGRPOConfig, ModelConfig))


DEFAULT_CONFIG = CONFIGS_DIR / "grpo_tiny.yaml"

if __name__ == "__main__":
    main(*parse_recipe_args(make_parser(), DEFAULT_CONFIG))
