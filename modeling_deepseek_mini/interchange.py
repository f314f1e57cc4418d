"""Writing checkpoints that transformers' own DeepseekV3ForCausalLM loads.

Reading goes the other way without help: `DeepseekMiniForCausalLM.from_pretrained(path)` accepts a checkpoint written
by `transformers.DeepseekV3ForCausalLM` (its `config.json`, model_type `deepseek_v3`, is translated by
`DeepseekMiniConfig.from_dict`; the per-expert weights are stacked on load).
"""

import os
from pathlib import Path

from transformers import DeepseekV3Config
from transformers.dynamic_module_utils import get_relative_import_files

from . import modeling_deepseek_mini
from .modeling_deepseek_mini import DeepseekMiniForCausalLM


def code_files() -> list[Path]:
    """The package's files that `save_pretrained` copies into every checkpoint (transformers' own rule): the modeling
    file and every file it imports relatively, recursively (the configuration file, moe_dispatch.py, ...)."""
    modeling = modeling_deepseek_mini.__file__
    return sorted(Path(f) for f in [modeling, *get_relative_import_files(modeling)])


def save_as_deepseek_v3(
    model: DeepseekMiniForCausalLM, save_directory: str, include_mtp: bool = True, **kwargs
) -> None:
    """Save `model` as a plain DeepseekV3 checkpoint (model_type `deepseek_v3`, no custom code, per-expert keys).

    The weights keep DeepSeek's layout, so the MTP modules stay at `model.layers.{num_hidden_layers + k - 1}`:
    transformers' DeepseekV3ForCausalLM does not build them and reports them as unexpected keys; pass
    `include_mtp=False` to leave them out. The training fields of the config (bias_update_speed, seq_aux_loss_alpha,
    mtp_loss_weight) are not part of DeepseekV3Config and are dropped. `kwargs` go to `save_pretrained`.
    """
    if not isinstance(model, DeepseekMiniForCausalLM):
        raise TypeError(f"save_as_deepseek_v3 expects a DeepseekMiniForCausalLM, got {type(model).__name__}.")
    state_dict = model.state_dict()
    if not include_mtp:
        mtp_prefixes = tuple(f"model.layers.{i}." for i in model.config.mtp_layer_indices)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(mtp_prefixes)}
    model.save_pretrained(save_directory, state_dict=state_dict, **kwargs)
    for file in code_files():  # save_pretrained copies the custom code; a DeepseekV3 checkpoint has none
        path = os.path.join(save_directory, file.name)
        if os.path.exists(path):
            os.remove(path)
    config = DeepseekV3Config(**model.config.to_deepseek_v3_dict())
    config.architectures = ["DeepseekV3ForCausalLM"]
    config.save_pretrained(save_directory)
