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

import json
import logging
import os
import random
from dataclasses import dataclass, field

import torch
import transformers
from datasets import Dataset, DatasetDict
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, set_seed
from trl import ModelConfig, ScriptArguments, SFTConfig, SFTTrainer, TrlParser, get_peft_config
from trl.data_utils import is_conversational
from trl.trainer.utils import entropy_from_logits

import modeling_deepseek_mini  # noqa: F401  (registers DeepseekMini with the Auto classes)
from modeling_deepseek_mini import ExpertBiasUpdateCallback
from recipes.checkpoints import resume_checkpoint
from recipes.common import (
    BUILTIN_DATASET,
    CONFIGS_DIR,
    TINY_BASE,
    finish_stage,
    load_any_dataset,
    parse_recipe_args,
)
from recipes.data_parallel import UnreachedParametersCallback, tolerate_unreached_parameters
from recipes.evaluation import evaluate_heldout
from recipes.grpo import PromptArguments, build_prompts
from recipes.grpo_trainer import find_expert_bias_model
from recipes.task import PERSONAS, R1_ZERO_SYSTEM_PROMPT, problem_text, sample_problems

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = CONFIGS_DIR / "sft_tiny.yaml"

COLD_START_PERSONAS = ("careful", "reflective")
"""The task's personas whose chains of thought are readable and (when their answer is right) worth imitating."""


@dataclass
class HeldoutArguments(PromptArguments):
    """The held-out measurement after training, shared by the SFT and distillation recipes (PromptArguments: how
    the held-out prompts are built)."""

    builtin_seed: int = field(default=0, metadata={"help": "Seed of the built-in task's splits (and built-in data)."})
    builtin_test_size: int = field(default=100, metadata={"help": "Held-out problems of the built-in task."})
    eval_heldout: bool = field(
        default=True, metadata={"help": "Measure the model on held-out problems after training (`eval_dataset_name`)."}
    )
    eval_dataset_name: str = field(
        default=BUILTIN_DATASET,
        metadata={
            "help": "Dataset whose `dataset_test_split` (with `problem` and `solution` columns) measures the model "
            f"after training; '{BUILTIN_DATASET}' is the arithmetic task's held-out split."
        },
    )
    eval_max_samples: int = field(default=100, metadata={"help": "Held-out problems measured after training."})
    eval_max_new_tokens: int = field(default=128, metadata={"help": "Generation budget of the held-out measurement."})

    def __post_init__(self):
        super().__post_init__()
        if self.eval_max_samples < 1 or self.eval_max_new_tokens < 1:
            raise ValueError("eval_max_samples and eval_max_new_tokens must be >= 1 (or set --eval_heldout false).")


@dataclass
class SFTScriptArguments(ScriptArguments, HeldoutArguments):
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

    def __post_init__(self):
        super().__post_init__()
        if not self.stage:
            raise ValueError("stage must name this stage, e.g. cold_start_sft, rs_sft or distill.")


# ------------------------------------------------------------------------------------------------------------------
# Data


def make_cold_start(n: int, *, seed: int = 0) -> Dataset:
    """`n` cold-start conversations: R1 system prompt, a training problem, a correct readable chain of thought.

    Chains come from the task's careful and reflective personas (a reflective one is kept only when its self-checks
    led it to the right answer), so they show R1's format and the habit of checking one's work.
    """
    rng = random.Random(f"cold-start-{seed}")
    rows = []
    for numbers in sample_problems(n, heldout=False, rng=rng):
        completion = PERSONAS[rng.choice(COLD_START_PERSONAS)](numbers, rng)
        while f"<answer>\n{sum(numbers)}\n</answer>" not in completion:  # a reflective slip left uncorrected
            completion = PERSONAS[rng.choice(COLD_START_PERSONAS)](numbers, rng)
        problem = problem_text(numbers)
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": R1_ZERO_SYSTEM_PROMPT},
                    {"role": "user", "content": problem},
                    {"role": "assistant", "content": completion},
                ],
                "problem": problem,
                "solution": str(sum(numbers)),
            }
        )
    return Dataset.from_list(rows)


def check_sft_data(dataset: Dataset, training_args: SFTConfig) -> None:
    """Fail before training unless the data are `messages` or `prompt`/`completion`, as the loss settings need."""
    columns = dataset.column_names
    if "messages" not in columns and not {"prompt", "completion"} <= set(columns):
        raise ValueError(
            f"SFT needs a `messages` column or `prompt` and `completion` columns; the dataset has {columns}. "
            "Rename the columns in the data."
        )
    if training_args.assistant_only_loss and not is_conversational(dataset[0]):
        raise ValueError(
            "assistant_only_loss=True needs conversational data (lists of {'role', 'content'} messages), but this "
            "dataset is plain text. Set --assistant_only_loss false: TRL then trains on the completion only."
        )


def load_sft_data(script_args: SFTScriptArguments) -> DatasetDict:
    """The SFT splits: the built-in cold-start set, or any dataset `load_any_dataset` reads."""
    if script_args.dataset_name == BUILTIN_DATASET:
        return DatasetDict(train=make_cold_start(script_args.builtin_train_size, seed=script_args.builtin_seed))
    return load_any_dataset(script_args.dataset_name, script_args.dataset_config)


def load_heldout(script_args: SFTScriptArguments) -> Dataset | None:
    """The held-out problems, with prompts built as `prompt_template` says; None when evaluation is off."""
    if not script_args.eval_heldout:
        return None
    builtin = {"seed": script_args.builtin_seed, "n_train": 0, "n_test": script_args.builtin_test_size}
    splits = load_any_dataset(script_args.eval_dataset_name, builtin_kwargs=builtin)
    if script_args.dataset_test_split not in splits:
        raise ValueError(
            f"eval_dataset_name {script_args.eval_dataset_name!r} has no '{script_args.dataset_test_split}' split "
            f"(it has {list(splits)}): set --dataset_test_split, or --eval_heldout false to skip the measurement."
        )
    heldout = build_prompts(splits[script_args.dataset_test_split], script_args)
    return heldout.select(range(min(len(heldout), script_args.eval_max_samples)))


# ------------------------------------------------------------------------------------------------------------------
# Trainer


def mtp_loss_weight(model) -> float:
    """The weight of the model's own multi-token-prediction loss (DeepSeek-V3's MTP); 0 for a model without MTP
    modules (Qwen2, Llama, or a DeepseekMini with `num_nextn_predict_layers: 0` or `mtp_loss_weight: 0`)."""
    has_mtp = any(getattr(module, "mtp_layers", None) for module in model.modules())
    return float(getattr(model.config, "mtp_loss_weight", 0.0) or 0.0) if has_mtp else 0.0


class DeepseekSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer that also trains a model's multi-token-prediction modules, as DeepSeek-V3 does.

    TRL's SFT loss runs the backbone through a fused LM head (`add_fused_lm_head`) and never calls the model's own
    loss, so DeepseekMini's MTP modules are not run: with one process they were silently never trained, with
    several DDP had to cope with their missing gradients (see `recipes/data_parallel.py`). For a model with MTP
    modules, the training loss here is the model's own (`labels` passed to its forward): next-token loss
    + `mtp_loss_weight` x MTP loss + sequence-wise balance loss, exactly the objective of pretraining, on the SFT
    labels (assistant turns or completions only). This builds the full logits, as DeepSeek's training does. Every
    other case (models without MTP, evaluation, `loss_type: dft`, label smoothing, a `compute_loss_func`) is TRL's
    own path, and then whatever the loss leaves out is named in the log.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mtp_loss_weight = mtp_loss_weight(self.model)

    def trains_mtp_with_model_loss(self) -> bool:
        return (
            self.model.training
            and self.mtp_loss_weight > 0
            and self.args.loss_type == "nll"
            and self.label_smoother is None
            and self.compute_loss_func is None
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.trains_mtp_with_model_loss():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs["use_cache"] = False
        # transformers' loss: `num_items_in_batch` to the model, x processes with `average_tokens_across_devices`
        loss, outputs = Trainer.compute_loss(
            self, model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        self.log_token_metrics(outputs.logits, inputs)
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def log_token_metrics(self, logits: torch.Tensor, inputs: dict) -> None:
        """The metrics TRL's SFT loss logs (entropy, mean token accuracy, tokens seen), from the full logits."""
        labels = inputs["labels"][:, 1:]  # (B, T-1)
        mask = labels != -100
        scored = logits[:, :-1][mask]  # (N, V): the positions with a target
        gather = self.accelerator.gather_for_metrics
        num_valid = gather(mask.sum()).sum()
        entropy_sum = gather(entropy_from_logits(scored.float()).sum()).sum()
        num_correct = gather((scored.argmax(-1) == labels[mask]).sum()).sum()
        metrics = self._metrics["train"]
        metrics["entropy"].append((entropy_sum / num_valid).item() if num_valid > 0 else 0.0)
        metrics["mean_token_accuracy"].append((num_correct / num_valid).item() if num_valid > 0 else 0.0)
        if "attention_mask" in inputs:
            tokens = gather(inputs["attention_mask"].sum()).sum().item()
        else:  # padding-free batches carry position_ids instead
            tokens = gather(torch.tensor(inputs["position_ids"].size(1), device=labels.device)).sum().item()
        self._total_train_tokens += tokens // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]


def make_sft_trainer(model, tokenizer, train_dataset, training_args: SFTConfig, eval_dataset=None, peft_config=None):
    """`DeepseekSFTTrainer` (TRL's SFTTrainer, training MTP modules too), plus DeepSeekMoE's bias update when the
    model has routing biases, set up for any launch mode (`recipes/data_parallel.py`)."""
    callbacks = [UnreachedParametersCallback()]
    if find_expert_bias_model(model) is not None:
        callbacks.append(ExpertBiasUpdateCallback())
    return DeepseekSFTTrainer(
        model=model,
        args=tolerate_unreached_parameters(training_args),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def heldout_metrics(trainer, tokenizer, heldout, script_args) -> dict | None:
    """R1's signals on the held-out problems (greedy decoding), or None without held-out data."""
    if heldout is None:
        return None
    return evaluate_heldout(
        trainer.model, tokenizer, heldout, max_new_tokens=script_args.eval_max_new_tokens, greedy=True
    )


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig):
    set_seed(training_args.seed)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=training_args.get_process_log_level()
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    model_name = model_args.model_name_or_path or str(TINY_BASE)

    # Data
    dataset = load_sft_data(script_args)
    if script_args.dataset_train_split not in dataset:
        raise ValueError(f"dataset_train_split '{script_args.dataset_train_split}' not in the splits {list(dataset)}.")
    train_dataset = dataset[script_args.dataset_train_split]
    check_sft_data(train_dataset, training_args)
    eval_dataset = dataset.get(script_args.dataset_test_split) if training_args.eval_strategy != "no" else None
    heldout = load_heldout(script_args)

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
        model, tokenizer, train_dataset, training_args, eval_dataset, get_peft_config(model_args)
    )

    # Train
    train_result = trainer.train(resume_from_checkpoint=resume_checkpoint(training_args))
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    # Held-out measurement
    metrics = heldout_metrics(trainer, tokenizer, heldout, script_args) if trainer.accelerator.is_main_process else None
    if metrics is not None:
        print(json.dumps(metrics, indent=2))
        with open(os.path.join(training_args.output_dir, "heldout_after.json"), "w") as f:
            json.dump(metrics, f, indent=2)

    # Save, card, push
    finish_stage(
        trainer,
        training_args,
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
        },
        metrics=metrics,
    )
    return trainer


def make_parser() -> TrlParser:
    return TrlParser((SFTScriptArguments, SFTConfig, ModelConfig))


if __name__ == "__main__":
    main(*parse_recipe_args(make_parser(), DEFAULT_CONFIG))
