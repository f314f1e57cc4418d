"""`DeepseekSFTTrainer`: TRL's SFTTrainer that also trains DeepSeek-V3's multi-token-prediction modules, set up
for any launch mode (`make_sft_trainer`); used by the SFT and distillation recipes."""

import logging

import torch
from datasets import Dataset
from transformers import Trainer, TrainerCallback
from trl import SFTConfig, SFTTrainer
from trl.data_utils import is_conversational
from trl.trainer.utils import entropy_from_logits

from modeling_deepseek_mini import ExpertBiasUpdateCallback
from recipes.lib.data_parallel import UnreachedParametersCallback, tolerate_unreached_parameters
from recipes.lib.grpo_trainer import find_expert_bias_model

logger = logging.getLogger(__name__)


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


class TokenBudgetCallback(TrainerCallback):
    """Stop training once `max_tokens` tokens have gone through forward and backward (`state.num_input_tokens_seen`,
    padding excluded, kept in checkpoints): a compute budget matched to another run, such as a GRPO run's
    `num_tokens` (prompt and completion tokens, counted the same way)."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens

    def on_step_end(self, args, state, control, **kwargs):
        if state.num_input_tokens_seen >= self.max_tokens:
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if state.num_input_tokens_seen < self.max_tokens:
            logger.warning(
                f"Training ended after {state.num_input_tokens_seen} of the {self.max_tokens} tokens of "
                "max_train_tokens: raise num_train_epochs or max_steps to spend the budget."
            )


def mtp_loss_weight(model) -> float:
    """The weight of the model's own multi-token-prediction loss (DeepSeek-V3's MTP); 0 for a model without MTP
    modules (Qwen2, Llama, or a DeepseekMini with `num_nextn_predict_layers: 0` or `mtp_loss_weight: 0`)."""
    has_mtp = any(getattr(module, "mtp_layers", None) for module in model.modules())
    return float(getattr(model.config, "mtp_loss_weight", 0.0) or 0.0) if has_mtp else 0.0


class DeepseekSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer that also trains a model's multi-token-prediction modules, as DeepSeek-V3 does.

    TRL's SFT loss runs the backbone through a fused LM head (`add_fused_lm_head`) and never calls the model's own
    loss, so DeepseekMini's MTP modules are not run: with one process they were silently never trained, with
    several DDP had to cope with their missing gradients (see `recipes/lib/data_parallel.py`). For a model with MTP
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


def make_sft_trainer(
    model,
    tokenizer,
    train_dataset,
    training_args: SFTConfig,
    eval_dataset=None,
    peft_config=None,
    max_train_tokens: int | None = None,
):
    """`DeepseekSFTTrainer` (TRL's SFTTrainer, training MTP modules too), plus DeepSeekMoE's bias update when the
    model has routing biases, set up for any launch mode (`recipes/lib/data_parallel.py`); with `max_train_tokens`
    it stops at that many trained tokens (`TokenBudgetCallback`; `training_args` must count non-padding input tokens).
    """
    callbacks = [UnreachedParametersCallback()]
    if max_train_tokens is not None:
        if training_args.include_num_input_tokens_seen != "non_padding":
            raise ValueError("max_train_tokens needs include_num_input_tokens_seen='non_padding' in the SFT config.")
        callbacks.append(TokenBudgetCallback(max_train_tokens))
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
