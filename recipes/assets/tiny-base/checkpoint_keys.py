"""Checkpoint keys of the routed experts: one tensor per expert on disk, stacked in memory.

DeepSeek's and transformers' checkpoints hold `mlp.experts.{e}.{gate,up,down}_proj.weight`; `DeepseekMiniExperts`
holds `gate_up_proj` (E, 2I, d) (gate rows first) and `down_proj` (E, d, I). `from_pretrained` / `save_pretrained`
convert through transformers' weight converters (`register_per_expert_conversion`); a plain `load_state_dict` of a
saved file goes through `stack_per_expert_keys`. It ships inside every checkpoint next to the modeling file.
"""

import torch
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import Concatenate, MergeModulelist, WeightConverter


def register_per_expert_conversion(model_type: str) -> None:
    """Have transformers stack the per-expert tensors when loading `model_type` and split them again when saving
    (the `qwen2_moe` pattern transformers uses for DeepseekV3), also for custom code loaded with trust_remote_code."""
    register_checkpoint_conversion_mapping(
        model_type,
        [
            WeightConverter(
                source_patterns=["mlp.experts.*.gate_proj.weight", "mlp.experts.*.up_proj.weight"],
                target_patterns="mlp.experts.gate_up_proj",
                operations=[MergeModulelist(dim=0), Concatenate(dim=1)],
            ),
            WeightConverter(
                source_patterns="mlp.experts.*.down_proj.weight",
                target_patterns="mlp.experts.down_proj",
                operations=[MergeModulelist(dim=0)],
            ),
        ],
        overwrite=True,
    )


def stack_per_expert_keys(module, state_dict, prefix, *args) -> None:
    """Load-time hook: stack the on-disk per-expert tensors `{prefix}{e}.{gate,up,down}_proj.weight` into the
    in-memory `gate_up_proj` (E, 2I, d) and `down_proj` (E, d, I), in place in `state_dict`.

    `from_pretrained` converts them itself; a plain `load_state_dict` of a saved file (the HF Trainer resuming from a
    checkpoint, a user loading `model.safetensors`) goes through this hook. Keys already stacked pass unchanged.
    """
    E = module.gate_up_proj.shape[0]
    names = [f"{prefix}{e}.{proj}_proj.weight" for proj in ("gate", "up", "down") for e in range(E)]
    if not all(name in state_dict for name in names):
        return
    gate, up, down = (
        [state_dict.pop(f"{prefix}{e}.{proj}_proj.weight") for e in range(E)] for proj in ("gate", "up", "down")
    )
    state_dict[f"{prefix}gate_up_proj"] = torch.stack([torch.cat([g, u]) for g, u in zip(gate, up)])  # (E, 2I, d)
    state_dict[f"{prefix}down_proj"] = torch.stack(down)  # (E, d, I)
