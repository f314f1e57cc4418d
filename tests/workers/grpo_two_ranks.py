"""Run by tests/test_grpo_recipe.py under `accelerate launch --config_file recipes/accelerate/cpu_multi.yaml`:
two GRPO steps of a tiny DeepseekMini on each rank, then each rank writes its world size and routing biases."""

import json
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer

from modeling_deepseek_mini import DeepseekMiniConfig, DeepseekMiniForCausalLM
from recipes.lib.cli import end_process_group
from recipes.lib.grpo_trainer import DeepseekGRPOConfig, DeepseekGRPOTrainer
from recipes.lib.task import make_splits

tokenizer_path, output_dir = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
torch.manual_seed(0)
config = DeepseekMiniConfig.from_preset(
    "tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
)
model = DeepseekMiniForCausalLM(config)
args = DeepseekGRPOConfig(
    output_dir=output_dir,
    max_steps=2,
    per_device_train_batch_size=8,
    num_generations=4,
    max_completion_length=12,
    learning_rate=1e-2,
    save_strategy="no",
    report_to="none",
    seed=0,
    expert_bias_update_speed=0.01,
    use_cpu=True,
    bf16=False,
)
trainer = DeepseekGRPOTrainer(
    model=model,
    reward_funcs=["format"],
    args=args,
    train_dataset=make_splits(0, 32, 4)["train"],
    processing_class=tokenizer,
)
trainer.train()
rank = trainer.accelerator.process_index
biases = {f"layer_{m.layer_idx}": m.gate.e_score_correction_bias.contiguous() for m in model.model.moe_layers()}
save_file(biases, f"{output_dir}/bias_rank{rank}.safetensors")
with open(f"{output_dir}/world_rank{rank}.json", "w") as f:
    json.dump({"world_size": trainer.accelerator.num_processes}, f)
end_process_group()
