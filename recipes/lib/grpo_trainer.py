"""`DeepseekGRPOTrainer`: TRL's GRPOTrainer with rewards by name, R1's signals in the logs and DeepSeekMoE balancing.

Everything stock TRL offers (loss types, beta and the reference model, num_iterations, scale_rewards, vLLM, PEFT)
is inherited unchanged; this subclass only adds:

- rewards given by registry name (`"accuracy"`) or dotted path (`"my_pkg.rewards:my_reward"`), with per-reward
  parameters from `reward_params`, checked against the dataset columns before training starts;
- R1's signals logged at every step: accuracy, format compliance, language consistency and reflection rate
  (TRL already logs the completion lengths and the per-reward means);
- for models with DeepSeekMoE routing biases (DeepseekMini): the auxiliary-loss-free bias update once per
  optimizer step (speed `expert_bias_update_speed`, 0 freezes it) and per-layer expert-load imbalance in the logs.
  GRPO's loss runs only the backbone (TRL's fused LM head), so the MTP modules are not run, and are frozen, during RL;
  `refresh_mtp_modules` (the recipe calls it after training) retrains them on the policy's own completions
  (`recipes.lib.mtp_sync`), so that speculative decoding with them keeps its acceptance.

Any other causal LM (Qwen2, Llama, with or without LoRA) trains exactly as with `trl.GRPOTrainer`.
"""

import json
import logging
import math
import os
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig, GRPOTrainer

import rewards
from modeling_deepseek_mini import ExpertBiasUpdateCallback
from recipes.lib.data_parallel import UnreachedParametersCallback, tolerate_unreached_parameters
from recipes.lib.evaluation import DEFAULT_REFLECTION_PHRASES, is_reflective
from recipes.lib.mtp_sync import check_refresh_settings, find_mtp_model, refresh_mtp

logger = logging.getLogger(__name__)


@dataclass
class DeepseekGRPOConfig(GRPOConfig):
    """GRPOConfig plus the knobs of `DeepseekGRPOTrainer`. Every GRPOConfig field keeps its TRL meaning."""

    reward_params: dict | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments per reward, by reward name, e.g. {'cosine': {'max_len': 256}, "
            "'language_consistency': {'language': 'en'}}. A JSON string is accepted on the command line."
        },
    )
    reflection_phrases: list[str] = field(
        default_factory=lambda: list(DEFAULT_REFLECTION_PHRASES),
        metadata={
            "help": "Self-checking phrases (case-insensitive) that make a completion count toward the logged "
            "reflection rate `r1/reflection_rate`."
        },
    )
    signal_language: str = field(
        default="en",
        metadata={"help": "Target language of the logged `r1/language_consistency` signal."},
    )
    expert_bias_update_speed: float | None = field(
        default=None,
        metadata={
            "help": "Speed gamma of DeepSeekMoE's auxiliary-loss-free bias update during RL (b_i += gamma * "
            "sign(mean_load - load_i) once per optimizer step). None keeps the model config's value; 0 freezes "
            "the biases. Ignored for models without routing biases."
        },
    )
    mtp_refresh_steps: int = field(
        default=50,
        metadata={
            "help": "After training, steps of the MTP refresh: the multi-token-prediction modules alone (frozen "
            "during RL) train on the model's own MTP loss over the policy's completions of the training prompts, "
            "so that speculative decoding with them keeps its acceptance (docs/model.md). 0 turns it off; ignored "
            "for models without MTP modules and with --use_peft (the adapter holds no MTP weights)."
        },
    )
    mtp_refresh_learning_rate: float = field(
        default=1e-3, metadata={"help": "AdamW learning rate of the MTP refresh (constant, no weight decay)."}
    )
    mtp_refresh_batch_size: int = field(
        default=16, metadata={"help": "Completions per step of the MTP refresh, generated fresh by the policy."}
    )
    mtp_refresh_temperature: float = field(
        default=0.0,
        metadata={
            "help": "Temperature of the policy's completions that the MTP refresh trains on: 0 (greedy) fits greedy "
            "speculative decoding best (measured, docs/model.md); T > 0 fits speculative sampling at T."
        },
    )

    def __post_init__(self):
        if isinstance(self.reward_params, str):
            try:
                self.reward_params = json.loads(self.reward_params)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f'reward_params must be a JSON object such as \'{{"cosine": {{"max_len": 256}}}}\', '
                    f"got {self.reward_params!r}: {error}"
                ) from None
        if self.reward_params is not None and not isinstance(self.reward_params, dict):
            raise ValueError(f"reward_params must map reward names to keyword arguments, got {self.reward_params!r}.")
        if self.expert_bias_update_speed is not None and self.expert_bias_update_speed < 0:
            raise ValueError(
                f"expert_bias_update_speed must be >= 0 (0 freezes the routing biases), got "
                f"{self.expert_bias_update_speed}."
            )
        self.check_group_size()
        check_refresh_settings(
            self.mtp_refresh_steps,
            self.mtp_refresh_learning_rate,
            self.mtp_refresh_batch_size,
            self.mtp_refresh_temperature,
        )
        super().__post_init__()

    def check_group_size(self) -> None:
        """Refuse a batch that cannot hold whole groups of `num_generations` completions, in the flags the user sets.

        Unless `generation_batch_size` or `steps_per_generation` is given (TRL checks those and names them), TRL
        generates per_device_train_batch_size x gradient_accumulation_steps x processes completions at a time, and
        GRPO's advantages need every prompt's whole group among them.
        """
        if self.num_generations < 2:
            raise ValueError(
                f"--num_generations {self.num_generations}: write 2 or more; GRPO's advantage compares a prompt's "
                "completions with each other."
            )
        if self.generation_batch_size is not None or self.steps_per_generation is not None:
            return
        batch, steps = self.per_device_train_batch_size, self.gradient_accumulation_steps
        processes = int(os.environ.get("WORLD_SIZE", "1"))  # what `accelerate launch` starts
        if (batch * steps * processes) % self.num_generations:
            per_step = self.num_generations // math.gcd(self.num_generations, steps * processes)
            raise ValueError(
                f"--per_device_train_batch_size {batch} x --gradient_accumulation_steps {steps} x {processes} "
                f"process(es) must be a multiple of --num_generations {self.num_generations}: e.g. "
                f"--per_device_train_batch_size {per_step * math.ceil(batch / per_step)}."
            )


def resolve_reward_funcs(reward_funcs, reward_params: dict | None) -> list:
    """Turn registry names and dotted paths into reward callables; pass callables (built already, with their
    `reward_params`) and reward-model ids through.

    A string naming a local folder or a Hub repository ('org/name') is left for TRL, which loads it as a reward
    model; any other string goes to the rewards registry (a registered name or a 'module:attribute' path), which
    rejects an unknown name at once, listing the known ones.
    """
    reward_funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
    params = reward_params or {}
    names = {func if isinstance(func, str) else getattr(func, "__name__", None) for func in reward_funcs}
    unknown = set(params) - names
    if unknown:
        raise ValueError(
            f"reward_params names {sorted(unknown)}, which are not among reward_funcs {reward_funcs}. "
            "Add them to reward_funcs or remove their parameters."
        )
    return [
        rewards.get_reward_func(func, **params.get(func, {}))
        if isinstance(func, str) and not is_model_id(func)
        else func
        for func in reward_funcs
    ]


def is_model_id(name: str) -> bool:
    """Whether a reward given as a string is a reward model (local folder or Hub 'org/name') rather than a reward."""
    return os.path.isdir(name) or ("/" in name and ":" not in name)


def find_expert_bias_model(model):
    """The module that owns DeepSeekMoE routing biases (`update_expert_bias`), under any wrapper; None if absent."""
    return next((module for module in model.modules() if hasattr(module, "update_expert_bias")), None)


def freeze_mtp_modules(model) -> None:
    """Freeze the multi-token-prediction modules, which GRPO's loss never runs (TRL's fused head reads the backbone),
    and say so in the log.

    RL trains the policy's next-token distribution, which is all that MTP's extra predictions would be trained
    against here too; frozen, they take no optimizer state and data-parallel training does not wait for gradients
    they never get. (What any other loss leaves out is named by `recipes.lib.data_parallel`.)
    """
    frozen = 0
    for module in model.modules():
        for mtp_layer in getattr(module, "mtp_layers", ()):  # DeepseekMini backbones list their MTP modules
            frozen += sum(p.numel() for p in mtp_layer.parameters() if p.requires_grad)
            mtp_layer.requires_grad_(False)
    if frozen:
        logger.warning(
            f"GRPO's loss does not run the multi-token-prediction modules: their {frozen:,} parameters are frozen "
            "and saved as they were loaded."
        )


class DeepseekGRPOTrainer(GRPOTrainer):
    """GRPO for R1-Zero-style reasoning RL; see the module docstring for what it adds to `trl.GRPOTrainer`."""

    _tag_names = ["trl", "grpo", "deepseek-mini"]

    def __init__(self, model, reward_funcs, args: DeepseekGRPOConfig | None = None, train_dataset=None, **kwargs):
        args = args if args is not None else DeepseekGRPOConfig(output_dir="deepseek-grpo")
        if not isinstance(args, DeepseekGRPOConfig):
            raise TypeError(f"DeepseekGRPOTrainer needs a DeepseekGRPOConfig, got {type(args).__name__}.")
        reward_funcs = resolve_reward_funcs(reward_funcs, args.reward_params)
        if train_dataset is not None and hasattr(train_dataset, "column_names"):
            rewards.check_columns([f for f in reward_funcs if callable(f)], train_dataset.column_names)
        tolerate_unreached_parameters(args)  # any launch mode, any model: see recipes/lib/data_parallel.py
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset, **kwargs)
        self.add_callback(UnreachedParametersCallback())

        self._signal_format = rewards.get_reward_func("format")
        self._signal_accuracy = rewards.get_reward_func("accuracy")
        # As the held-out measurement reads it: a completion whose reasoning has no words says nothing (NaN, left out)
        self._signal_language = rewards.get_reward_func(
            "language_consistency", language=args.signal_language, empty_score=math.nan
        )
        freeze_mtp_modules(self.model)
        expert_bias_model = find_expert_bias_model(self.model)
        if expert_bias_model is not None:
            if args.expert_bias_update_speed is not None:
                expert_bias_model.config.bias_update_speed = args.expert_bias_update_speed
            # First, so that reporting integrations (tensorboard, wandb) also receive its moe/imbalance/* keys
            self.callback_handler.callbacks.insert(0, ExpertBiasUpdateCallback())

    def refresh_mtp_modules(self) -> dict | None:
        """After training: bring the MTP modules, frozen during RL, in step with the trained policy
        (`recipes.lib.mtp_sync.refresh_mtp` on the train split's prompts, the `mtp_refresh_*` settings, completions
        up to `max_completion_length`). Returns what it did, for the stage record; None when off, for a
        model without MTP modules, or with PEFT (the adapter saved holds no MTP weights)."""
        args = self.args
        model = self.accelerator.unwrap_model(self.model)
        if args.mtp_refresh_steps == 0 or find_mtp_model(model) is None:
            return None
        if getattr(model, "peft_config", None):
            logger.warning(
                "MTP refresh skipped: with --use_peft the saved adapter holds no MTP weights, so the refreshed "
                "modules would be lost. Merge the adapter and refresh the merged model instead."
            )
            return None
        needed = (args.mtp_refresh_steps + 1) * args.mtp_refresh_batch_size
        prompts = self.train_dataset.select(range(min(len(self.train_dataset), needed)))["prompt"]
        return refresh_mtp(
            model,
            self.processing_class,
            prompts,
            steps=args.mtp_refresh_steps,
            learning_rate=args.mtp_refresh_learning_rate,
            batch_size=args.mtp_refresh_batch_size,
            max_new_tokens=args.max_completion_length,
            temperature=args.mtp_refresh_temperature,
            seed=args.seed,
        ).as_record()

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._log_r1_signals(inputs, prompts, completions, rewards_per_func)
        return rewards_per_func

    def _log_r1_signals(self, inputs, prompts, completions, rewards_per_func) -> None:
        """Log accuracy, format compliance, language consistency and reflection rate of this batch's completions.

        Accuracy reuses the `accuracy` reward when it is one of the rewards (already gathered over processes);
        otherwise it is computed when the data has a `solution` column.
        """
        mode = "train" if self.model.training else "eval"
        columns = {
            key: [example[key] for example in inputs] for key in inputs[0] if key not in ("prompt", "completion")
        }
        texts = [rewards.completion_text(c) for c in completions]
        local = {
            "r1/format_compliance": [
                float(r == 1.0) for r in self._signal_format(prompts=prompts, completions=completions)
            ],
            "r1/reflection_rate": [float(is_reflective(t, self.args.reflection_phrases)) for t in texts],
            "r1/language_consistency": self._signal_language(prompts=prompts, completions=completions),
        }
        if "accuracy" in self.reward_func_names:
            accuracy = rewards_per_func[:, self.reward_func_names.index("accuracy")]  # (B*G,) all processes
            scored = accuracy[~accuracy.isnan()]
            self._metrics[mode]["r1/accuracy"].append(
                (scored == 1.0).float().mean().item() if len(scored) else torch.nan
            )
        elif "solution" in columns:
            local["r1/accuracy"] = self._signal_accuracy(
                prompts=prompts, completions=completions, solution=columns["solution"]
            )
        for name, values in local.items():
            values = torch.tensor(
                [torch.nan if v is None else float(v) for v in values], device=self.accelerator.device
            )
            self._metrics[mode][name].append(torch.nanmean(self.accelerator.gather(values)).item())
