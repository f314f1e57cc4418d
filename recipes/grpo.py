"""R1-Zero and R1's reasoning RL: GRPO with rule rewards (and reward models), as a runnable recipe.

    accelerate launch recipes/grpo.py                                    # the embedded default, on any machine
    accelerate launch recipes/grpo.py --config recipes/configs/grpo_qwen2.5-0.5b_gsm8k.yaml
    accelerate launch recipes/grpo.py --learning_rate 1e-5 --reward_funcs accuracy format language_consistency

With no `--config`, `recipes/configs/grpo_tiny.yaml` is used: the tiny DeepseekMini base that the project ships
learns the built-in arithmetic task from rule rewards alone, and the run ends with a before/after table on the
held-out split and plots of reward, accuracy and completion length over steps. For a model with multi-token-prediction
modules (frozen during RL), the stage ends by retraining them alone on the policy's own text (`--mtp_refresh_steps`,
recipes/lib/mtp_sync.py) so that speculative decoding keeps its acceptance. Flags override the YAML.
"""

import logging
import os
from dataclasses import dataclass, field
from functools import partial

from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, ScriptArguments, TrlParser

from recipes.lib.cli import CONFIGS_DIR, TINY_BASE, parse_recipe_args, run_entry_point
from recipes.lib.data import BUILTIN_DATASET, load_any_dataset, split_of
from recipes.lib.evaluation import format_comparison_table
from recipes.lib.grpo_trainer import DeepseekGRPOConfig, DeepseekGRPOTrainer, resolve_reward_funcs
from recipes.lib.heldout import heldout_metrics, measured_before, reasoning_vocabulary, save_heldout
from recipes.lib.inputs import UserInputError, check_inputs
from recipes.lib.lora import peft_config_for
from recipes.lib.plots import plot_training_curves
from recipes.lib.prompts import PROMPT_TEMPLATE_HELP, PromptArguments, build_prompts
from recipes.lib.stage import StageArguments, finish_stage, prepare_stage, train_stage

logger = logging.getLogger(__name__)


@dataclass
class GRPOScriptArguments(ScriptArguments, PromptArguments, StageArguments):
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


EVALUATION_TITLES = {
    "heldout": "Held-out test split:",
    "ood": "Out of distribution (more addends than any training problem):",
}


def check_gold_column(reward_funcs: list, train_dataset, script_args: GRPOScriptArguments) -> None:
    """Refuse a train split without the gold answers that a reward reads (the column `build_prompts` names
    'solution'), naming the flag that maps it: a user's own data most often calls it something else."""
    readers = [
        name
        for name, func in zip(script_args.reward_funcs, reward_funcs, strict=True)
        if "solution" in getattr(func, "required_columns", ())
    ]
    if readers and "solution" not in train_dataset.column_names:
        raise UserInputError(
            f"--solution_column {script_args.solution_column}: {script_args.dataset_name} has no such column for the "
            f"reward(s) {readers} (it has {train_dataset.column_names}); name its gold answers with --solution_column."
        )


def heldout_evaluations(dataset: dict, script_args: GRPOScriptArguments) -> dict:
    """The held-out splits measured before and after training, by name (`EVALUATION_TITLES`), each cut to its first
    `eval_max_samples` problems: the test split, and the out-of-distribution one where the dataset has it."""
    if script_args.dataset_test_split not in dataset:
        raise UserInputError(
            f"--dataset_test_split {script_args.dataset_test_split}: {script_args.dataset_name} has no such split (it "
            f"has {list(dataset)}); name the held-out split with --dataset_test_split <split>, or --eval_heldout false."
        )
    names = {"heldout": script_args.dataset_test_split}
    if script_args.eval_ood_split and script_args.eval_ood_split in dataset:
        names["ood"] = script_args.eval_ood_split
    return {
        name: dataset[split].select(range(min(len(dataset[split]), script_args.eval_max_samples)))
        for name, split in names.items()
    }


def main(script_args, training_args, model_args):
    check_inputs(script_args, training_args, model_args)  # a wrong path or reward name fails before any loading
    run = prepare_stage(script_args, training_args, model_args)

    # Data
    builtin = {
        "seed": script_args.builtin_seed,
        "n_train": script_args.builtin_train_size,
        "n_test": script_args.builtin_test_size,
    }
    dataset = load_any_dataset(script_args.dataset_name, script_args.dataset_config, builtin_kwargs=builtin)
    dataset = {split: build_prompts(dataset[split], script_args) for split in dataset}
    train_dataset = split_of(
        dataset, script_args.dataset_train_split, flag="dataset_train_split", dataset_name=script_args.dataset_name
    )
    reward_funcs = resolve_reward_funcs(script_args.reward_funcs, training_args.reward_params)
    check_gold_column(reward_funcs, train_dataset, script_args)  # before the held-out split: the data must fit first
    # name of the evaluation -> its problems: `heldout` (the test split), and `ood` where the dataset has one
    evaluations = heldout_evaluations(dataset, script_args) if script_args.eval_heldout else {}
    protocol = {
        "max_new_tokens": training_args.max_completion_length,
        "r1_samples": script_args.eval_r1_samples,
        "seed": training_args.seed,  # a run's sampling noise is part of its seed's outcome
        "reflection_phrases": training_args.reflection_phrases,
        "vocabulary": reasoning_vocabulary(script_args.dataset_name),
    }

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

    # Trainer (it checks the rewards against the columns)
    trainer = DeepseekGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config_for(model, model_args),
    )

    # Held-out tables, before (kept on disk so a resumed run compares against the true start)
    before = {}
    if trainer.accelerator.is_main_process:
        for name, split in evaluations.items():
            measure = partial(heldout_metrics, trainer, tokenizer, split, **protocol)
            before[name] = measured_before(training_args.output_dir, f"{name}_before", measure)

    # Train
    train_stage(trainer, run)

    # MTP refresh: RL moved the policy but never ran its MTP modules; retrain them on its own completions
    mtp_refresh = trainer.refresh_mtp_modules() if trainer.accelerator.is_main_process else None

    # Held-out tables, after; plots
    after = None
    if script_args.eval_heldout and trainer.accelerator.is_main_process:
        after = {}
        for name, split in evaluations.items():
            after[name] = heldout_metrics(trainer, tokenizer, split, **protocol)
            save_heldout(training_args.output_dir, f"{name}_after", after[name])
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
        run,
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
            "mtp_refresh_steps": training_args.mtp_refresh_steps,
        },
        metrics=None if after is None else card_metrics(after),
        training=None if mtp_refresh is None else {"mtp_refresh": mtp_refresh},
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
    run_entry_point(lambda: main(*parse_recipe_args(make_parser(), DEFAULT_CONFIG)))
