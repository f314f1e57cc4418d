"""DeepseekMini: DeepSeek-V3 (MLA + DeepSeekMoE + MTP) that trains on the Hugging Face stack.

    from modeling_deepseek_mini import DeepseekMiniConfig, DeepseekMiniForCausalLM, ExpertBiasUpdateCallback
    model = DeepseekMiniForCausalLM(DeepseekMiniConfig.from_preset("tiny"))

Importing this package registers the classes with AutoConfig / AutoModel / AutoModelForCausalLM, and marks them for
`register_for_auto_class`, so every `save_pretrained` copies the code next to the weights and writes `auto_map`:
the checkpoint then loads with `trust_remote_code=True` where this package is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_deepseek_mini import PRESETS, DeepseekMiniConfig, parameter_counts
from .interchange import code_files, save_as_deepseek_v3
from .modeling_deepseek_mini import DeepseekMiniForCausalLM, DeepseekMiniModel, DeepseekMiniPreTrainedModel


def _register_auto_classes() -> None:
    """Register with the Auto factories; a second registration (re-import, remote code loaded alongside) is fine."""
    AutoConfig.register(DeepseekMiniConfig.model_type, DeepseekMiniConfig, exist_ok=True)
    AutoModel.register(DeepseekMiniConfig, DeepseekMiniModel, exist_ok=True)
    AutoModelForCausalLM.register(DeepseekMiniConfig, DeepseekMiniForCausalLM, exist_ok=True)
    DeepseekMiniConfig.register_for_auto_class()
    DeepseekMiniModel.register_for_auto_class("AutoModel")
    DeepseekMiniForCausalLM.register_for_auto_class("AutoModelForCausalLM")


_register_auto_classes()


def __getattr__(name: str):
    """`ExpertBiasUpdateCallback` is imported on first use: the Trainer machinery it builds on takes seconds to import,
    which inference and remote-code loading need not pay."""
    if name == "ExpertBiasUpdateCallback":
        from .callbacks import ExpertBiasUpdateCallback

        return ExpertBiasUpdateCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "DeepseekMiniConfig",
    "DeepseekMiniForCausalLM",
    "DeepseekMiniModel",
    "DeepseekMiniPreTrainedModel",
    "ExpertBiasUpdateCallback",
    "code_files",
    "parameter_counts",
    "save_as_deepseek_v3",
]
