"""Train a reward model with TRL's RewardTrainer: the judge of general prompts in R1's all-scenario RL stage.

    accelerate launch recipes/reward_model.py                              # the embedded default, offline
    accelerate launch recipes/reward_model.py --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \
        --dataset_name trl-lib/ultrafeedback_binarized --output_dir outputs/rm-qwen

The model is an `AutoModelForSequenceClassification` with one output (the reward): loaded from
`model_name_or_path`, or, when that is unset, built from a small named shape (`preset`) around a tokenizer
(`tokenizer_name_or_path`, by default the one the project ships). The data are preference pairs (`chosen`,
`rejected`, optionally an explicit `prompt`), conversational or plain text, as RewardTrainer reads them.

With `dataset_name: builtin` the pairs are generated (`recipes.lib.general_chat.make_preference_splits`): helpful,
polite, on-topic answers to everyday questions preferred over off-topic, rude or empty ones, some seen whole and some
as their summary after `</think>`. The held-out pairs ask about subjects no training pair mentions; the pairwise
accuracy on them (overall and per kind of bad answer) goes to the model card and `stage.json`.
"""

import logging
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import ModelConfig, RewardConfig, RewardTrainer, ScriptArguments, TrlParser
from trl.data_utils import is_conversational

from recipes.lib.cli import CONFIGS_DIR, TINY_BASE, parse_recipe_args, run_entry_point
from recipes.lib.data import BUILTIN_DATASET, load_any_dataset, require_columns, split_of
from recipes.lib.data_parallel import UnreachedParametersCallback, tolerate_unreached_parameters
from recipes.lib.general_chat import make_preference_splits
from recipes.lib.inputs import check_inputs
from recipes.lib.lora import peft_config_for
from recipes.lib.presets import TINY_CAUSAL_LM_PRESETS, config_from_preset
from recipes.lib.stage import StageArguments, finish_stage, prepare_stage, train_stage

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = CONFIGS_DIR / "reward_model_tiny.yaml"


@dataclass
class RewardModelScriptArguments(ScriptArguments, StageArguments):
    """Data, model shape and held-out evaluation of the reward-model recipe."""

    dataset_name: str = field(
        default=BUILTIN_DATASET,
        metadata={
            "help": f"'{BUILTIN_DATASET}' for the generated preference pairs, a Hub id, a data file or a saved folder "
            "with `chosen` and `rejected` columns (and optionally `prompt`)."
        },
    )
    preset: str = field(
        default="llama-tiny",
        metadata={
            "help": f"Shape of a reward model built from a config when model_name_or_path is unset: one of "
            f"{sorted(TINY_CAUSAL_LM_PRESETS)}."
        },
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Tokenizer of a preset-built reward model; None uses the project's shipped tokenizer."},
    )
    builtin_seed: int = field(default=0, metadata={"help": "Seed of the generated preference pairs."})
    builtin_train_size: int = field(default=1000, metadata={"help": "Generated training pairs."})
    builtin_test_size: int = field(default=200, metadata={"help": "Generated held-out pairs."})
    kind_column: str = field(
        default="kind",
        metadata={
            "help": "Column that names the kind of each held-out pair, for accuracy per kind (skipped if absent)."
        },
    )

    def __post_init__(self):
        if self.preset not in TINY_CAUSAL_LM_PRESETS:
            raise ValueError(f"preset must be one of {sorted(TINY_CAUSAL_LM_PRESETS)}, got {self.preset!r}.")
        if self.builtin_train_size < 1 or self.builtin_test_size < 0:
            raise ValueError("builtin_train_size must be >= 1 and builtin_test_size >= 0.")


def load_preferences(script_args: RewardModelScriptArguments):
    """The preference splits: generated for 'builtin', else any dataset `load_any_dataset` reads."""
    if script_args.dataset_name == BUILTIN_DATASET:
        return make_preference_splits(
            script_args.builtin_seed, script_args.builtin_train_size, script_args.builtin_test_size
        )
    return load_any_dataset(script_args.dataset_name, script_args.dataset_config)


def load_reward_model(
    script_args: RewardModelScriptArguments, model_args: ModelConfig, trust_remote_code: bool = False
):
    """(model with one output, tokenizer, parent): from `model_name_or_path`, or built from `preset`."""
    if model_args.model_name_or_path is not None:
        name = model_args.model_name_or_path
        tokenizer = AutoTokenizer.from_pretrained(
            name, revision=model_args.model_revision, trust_remote_code=trust_remote_code
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            name,
            num_labels=1,
            revision=model_args.model_revision,
            trust_remote_code=trust_remote_code,
            attn_implementation=model_args.attn_implementation,
            dtype=model_args.dtype,
        )
        return model, tokenizer, name
    tokenizer_name = script_args.tokenizer_name_or_path or str(TINY_BASE)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name, trust_remote_code=trust_remote_code)
    config = config_from_preset(script_args.preset, tokenizer, num_labels=1)
    model = AutoModelForSequenceClassification.from_config(config)
    return model, tokenizer, f"{script_args.preset} (built from a config, tokenizer {tokenizer_name})"


def pair_texts(row: dict, tokenizer) -> tuple[str, str]:
    """The chosen and rejected sequences as RewardTrainer reads them: (prompt +) answer, through the chat template
    when conversational, else as text ending with EOS."""
    prompt = row.get("prompt")
    if is_conversational(row):
        return tuple(
            tokenizer.apply_chat_template((prompt or []) + row[key], tokenize=False) for key in ("chosen", "rejected")
        )
    return tuple((prompt or "") + row[key] + tokenizer.eos_token for key in ("chosen", "rejected"))


@torch.no_grad()
def score_texts(model, tokenizer, texts: list[str], batch_size: int = 32) -> torch.Tensor:
    """The reward model's scalar score of each text, `(N,)`."""
    model.eval()
    scores = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        )
        scores.append(model(**batch.to(model.device)).logits[:, 0].float().cpu())  # (B,)
    return torch.cat(scores)


def pairwise_accuracy(model, tokenizer, dataset, kind_column: str) -> dict:
    """Held-out share of pairs whose chosen answer scores above the rejected one, overall and per `kind_column`."""
    pairs = [pair_texts(row, tokenizer) for row in dataset]
    chosen = score_texts(model, tokenizer, [c for c, _ in pairs])  # (N,)
    rejected = score_texts(model, tokenizer, [r for _, r in pairs])  # (N,)
    right = (chosen > rejected).float()  # (N,)
    metrics = {"pairwise_accuracy": right.mean().item(), "heldout_pairs": len(pairs)}
    if kind_column in dataset.column_names:
        kinds = dataset[kind_column]
        for kind in sorted(set(kinds)):
            mask = torch.tensor([k == kind for k in kinds])
            metrics[f"pairwise_accuracy/{kind}"] = right[mask].mean().item()
    return metrics


def main(script_args: RewardModelScriptArguments, training_args: RewardConfig, model_args: ModelConfig):
    check_inputs(script_args, training_args, model_args)  # a wrong path or reward name fails before any loading
    run = prepare_stage(script_args, training_args, model_args)

    # Data
    dataset = load_preferences(script_args)
    train_dataset = split_of(
        dataset, script_args.dataset_train_split, flag="dataset_train_split", dataset_name=script_args.dataset_name
    )
    require_columns(train_dataset, ["chosen", "rejected"], where="The reward model (RewardTrainer)")
    heldout = dataset.get(script_args.dataset_test_split)

    # Model
    model, tokenizer, parent = load_reward_model(script_args, model_args, training_args.trust_remote_code)
    if tokenizer.pad_token is None:
        raise ValueError(
            f"The tokenizer of {parent} has no pad token, which batched scoring needs: set one "
            "(`tokenizer.pad_token`) and save it with the model."
        )
    model.config.pad_token_id = tokenizer.pad_token_id

    # Trainer
    trainer = RewardTrainer(
        model=model,
        args=tolerate_unreached_parameters(training_args),
        callbacks=[UnreachedParametersCallback()],
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config_for(model, model_args),
    )

    # Train
    train_stage(trainer, run)

    # Held-out pairwise accuracy
    metrics = (
        pairwise_accuracy(trainer.model, tokenizer, heldout, script_args.kind_column) if heldout is not None else None
    )
    if metrics is not None:
        trainer.log_metrics("heldout", metrics)
        trainer.save_metrics("heldout", metrics)

    # Save, card, push
    finish_stage(
        trainer,
        training_args,
        run,
        stage="reward_model",
        parent=parent,
        dataset=script_args.dataset_name,
        hyperparameters={
            "train_pairs": len(train_dataset),
            "learning_rate": training_args.learning_rate,
            "num_train_epochs": training_args.num_train_epochs,
            "max_steps": training_args.max_steps,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "max_length": training_args.max_length,
            "center_rewards_coefficient": training_args.center_rewards_coefficient,
        },
        metrics=metrics,
    )
    return trainer, metrics


def make_parser() -> TrlParser:
    return TrlParser((RewardModelScriptArguments, RewardConfig, ModelConfig))


if __name__ == "__main__":
    run_entry_point(lambda: main(*parse_recipe_args(make_parser(), DEFAULT_CONFIG)))
