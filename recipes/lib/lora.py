"""LoRA settings from TRL's `--use_peft` / `--lora_*` flags, with DeepseekMini's default targets leaving out the MTP
modules (TRL's losses never run them, so adapters there would not train)."""

import re

from peft import LoraConfig
from torch import nn
from trl import ModelConfig, get_peft_config


def mtp_module_names(model: nn.Module) -> list[str]:
    """The names, as `model.named_modules()` gives them, of DeepseekMini's multi-token-prediction modules; [] for a
    model without them (Qwen2, Llama, or `num_nextn_predict_layers: 0`)."""
    mtp = {id(layer) for module in model.modules() for layer in getattr(module, "mtp_layers", ())}
    return [name for name, module in model.named_modules() if id(module) in mtp]


def peft_config_for(model: nn.Module, model_args: ModelConfig) -> LoraConfig | None:
    """TRL's `get_peft_config(model_args)` (None without `--use_peft`). Without `--lora_target_modules`, a model with
    MTP modules gets adapters on every linear projection of the main model (peft's "all-linear": attention, dense MLPs,
    shared experts; not the head) and none inside the MTP modules; a list the user gives is used as given."""
    peft_config = get_peft_config(model_args)
    names = mtp_module_names(model)
    if peft_config is None or model_args.lora_target_modules is not None or not names:
        return peft_config
    peft_config.target_modules = "all-linear"
    peft_config.exclude_modules = rf"({'|'.join(map(re.escape, names))})\..*"  # everything inside an MTP module
    return peft_config
