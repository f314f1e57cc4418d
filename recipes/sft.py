"""Supervised fine-tuning with TRL's SFTTrainer: R1's cold start, the SFT on rejection-sampled data, distillation.

    accelerate launch recipes/sft.py                                     # the embedded default: cold-start SFT
    accelerate launch recipes/sft.py --dataset_name outputs/rejection-sampling --stage rs_sft --output_dir out/rs
    accelerate launch recipes/sft.py --model_name_or_path Qwen/Qwen2.5-0.5B --dataset_name open-r1/OpenR1-Math-220k

Data are conversations (`messages`) or `prompt`/`completion` pairs. The loss covers the assistant's turns only
(`assistant_only_loss`, which reads the `{% generation %}` markers of the tokenizer's chat template), or the
completion only for plain-text pairs (`assistant_only_loss: false`; TRL then masks the prompt). Any causal LM
works: DeepseekMini (its routing biases keep being balanced, and its multi-token-prediction modules trained, during
SFT: `DeepseekSFTTrainer`), Qwen2, Llama.

With `dataset_name: builtin` the data are the embedded default's cold-start set: readable long chains of thought for
the arithmetic task, written by the task's careful and self-correcting personas (the analogue of DeepSeek-R1's
curated cold-start data), with the R1 system prompt.

After training, the model is measured on the held-out split of `eval_dataset_name` (accuracy, format, language
consistency, length, reflection rate); the numbers go to the model card and `stage.json`.
"""

import logging
from dataclasses import dataclass, field

from datasets import DatasetDict
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

import modeling_deepseek_mini  # noqa: F401  (registers DeepseekMini with the Auto classes)
from recipes.lib.cli import CONFIGS_DIR, TINY_BASE, parse_recipe_args, run_entry_point
from recipes.lib.data import BUILTIN_DATASET, load_any_dataset, split_of
from recipes.lib.heldout import HeldoutArguments, load_heldout, report_heldout_after
from recipes.lib.inputs import check_inputs
from recipes.lib.lora import peft_config_for
from recipes.lib.sft_trainer import check_sft_data, make_sft_trainer
from recipes.lib.stage import StageArguments, finish_stage, prepare_stage, train_stage
from recipes.lib.task import make_cold_start

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = CONFIGS_DIR / "sft_tiny.yaml"


@dataclass
class SFTScriptArguments(ScriptArguments, HeldoutArguments, StageArguments):
    """Data, stage name and held-out evaluation of the SFT recipe (TRL's ScriptArguments: dataset_name, splits...)."""

    dataset_name: str = field(
        default=BUILTIN_DATASET,
        metadata={
            "help": f"'{BUILTIN_DATASET}' for the cold-start set of the arithmetic task, a Hub id, a "
            ".json/.jsonl/.parquet/.csv file, or a folder saved with `save_to_disk` (e.g. rejection sampling's "
            "output). Columns: `messages`, or `prompt` and `completion`."
        },
    )
    stage: str = field(
        default="cold_start_sft",
        metadata={"help": "Name of this stage in the model card and stage.json: cold_start_sft, rs_sft, distill..."},
    )
    builtin_train_size: int = field(default=1000, metadata={"help": "Samples of the built-in cold-start set."})
    max_train_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Stop once this many tokens (prompt and completion, padding excluded) have gone through forward "
            "and backward: a compute budget matched to another run (GRPO logs the same count as `num_tokens`). "
            "num_train_epochs or max_steps must be large enough to reach it; unset: no budget."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.stage:
            raise ValueError("stage must name this stage, e.g. cold_start_sft, rs_sft or distill.")
        if self.max_train_tokens is not None and self.max_train_tokens <= 0:
            raise ValueError(f"max_train_tokens must be a positive token count, got {self.max_train_tokens}.")


def load_sft_data(script_args: SFTScriptArguments) -> DatasetDict:
    """The SFT splits: the built-in cold-start set, or any dataset `load_any_dataset` reads."""
    if script_args.dataset_name == BUILTIN_DATASET:
        return DatasetDict(train=make_cold_start(script_args.builtin_train_size, seed=script_args.builtin_seed))
    return load_any_dataset(script_args.dataset_name, script_args.dataset_config)


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig):
    check_inputs(script_args, training_args, model_args)  # a wrong path or reward name fails before any loading
    if script_args.max_train_tokens is not None:  # the budget counts trained tokens, as GRPO's num_tokens does
        training_args.include_num_input_tokens_seen = "non_padding"
    run = prepare_stage(script_args, training_args, model_args)
    model_name = model_args.model_name_or_path or str(TINY_BASE)

    # Data
    dataset = load_sft_data(script_args)
    train_dataset = split_of(
        dataset, script_args.dataset_train_split, flag="dataset_train_split", dataset_name=script_args.dataset_name
    )
    check_sft_data(train_dataset, training_args)
    eval_dataset = dataset.get(script_args.dataset_test_split) if training_args.eval_strategy != "no" else None
    heldout = load_heldout(script_args, script_args.dataset_test_split)

    # Model
    tokenizer = AutoTokenizer.from_pretrained(
        model_name, revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code
    )
    if training_args.assistant_only_loss and not tokenizer.chat_template:
        raise ValueError(
            f"The tokenizer of {model_name} has no chat template, which assistant_only_loss needs: "
            "set --chat_template_path, or --assistant_only_loss false."
        )
    model = AutoModelForCausalLM.from_pretrained(
        model_name,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )

    # Trainer
    trainer = make_sft_trainer(
        model,
        tokenizer,
        train_dataset,
        training_args,
        eval_dataset,
        peft_config_for(model, model_args),
        max_train_tokens=script_args.max_train_tokens,
    )

    # Train
    train_stage(trainer, run)

    # Held-out measurement
    metrics = report_heldout_after(trainer, tokenizer, heldout, script_args, training_args.output_dir)

    # Save, card, push
    finish_stage(
        trainer,
        training_args,
        run,
        stage=script_args.stage,
        parent=model_name,
        dataset=script_args.dataset_name,
        hyperparameters={
            "train_samples": len(train_dataset),
            "learning_rate": training_args.learning_rate,
            "num_train_epochs": training_args.num_train_epochs,
            "max_steps": training_args.max_steps,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
            "max_length": training_args.max_length,
            "assistant_only_loss": training_args.assistant_only_loss,
            "packing": training_args.packing,
            "max_train_tokens": script_args.max_train_tokens,
        },
        metrics=metrics,
    )
    return trainer


def make_parser() -> TrlParser:
    return TrlParser((SFTScriptArguments, SFTConfig, ModelConfig))


if __name__ == "__main__":
    run_entry_point(lambda: main(*parse_recipe_args(make_parser(), DEFAULT_CONFIG)))
