"""Keep DeepSeek-V3's multi-token-prediction (MTP) modules in step with a policy that RL has moved: `refresh_mtp`.

GRPO's loss never runs the MTP modules (TRL's fused head reads the backbone), so RL leaves them frozen
(`recipes.lib.grpo_trainer.freeze_mtp_modules`) while the main model they draft for moves away: their inputs (the
main model's last hidden state) and the text they must predict (the policy's own) both change. The refresh brings
them back after training: the policy completes training prompts, and the MTP modules alone train on the model's own
MTP loss over prompt + completion, teacher forced on the policy's text. The main model runs without gradients and its
weights stay bit-identical.

Which text: greedy completions (temperature 0, the default) teach the drafts the policy's argmax on the prefixes
greedy decoding visits, which is what greedy speculative decoding accepts; sampled ones (temperature T) teach the
policy's whole distribution at T (the expected cross-entropy against sampled tokens is the cross-entropy against the
policy's next-token distribution: a distillation without a second loss), which is what speculative sampling at T
needs. docs/model.md has the measured acceptance of both.
"""

import logging
import math
from dataclasses import asdict, dataclass

import torch

from recipes.lib.evaluation import render_prompts

logger = logging.getLogger(__name__)


@dataclass
class MTPRefresh:
    """What `refresh_mtp` did: its settings, and the MTP loss on held-out completions of the policy before and
    after (the same completions, sampled once from prompts it does not train on)."""

    steps: int
    learning_rate: float
    batch_size: int
    temperature: float
    max_new_tokens: int
    trained_parameters: int
    loss_before: float
    loss_after: float

    def as_record(self) -> dict:
        return asdict(self)


def find_mtp_model(model):
    """The DeepseekMini causal LM (with `mtp_loss` and MTP modules) under any wrapper (PEFT, DDP); None if absent."""
    return next(
        (
            module
            for module in model.modules()
            if hasattr(module, "mtp_loss") and getattr(getattr(module, "model", None), "mtp_layers", None)
        ),
        None,
    )


@torch.no_grad()
def sample_policy_text(model, tokenizer, prompts: list, max_new_tokens: int, temperature: float) -> dict:
    """The policy's completions of `prompts` (plain strings or conversations), one each (no top-k or top-p when
    sampling), as a training batch:
    `input_ids` (B, P + n) left-padded prompt then completion, `attention_mask` (1 on the prompt and on the completion
    up to its first EOS), `position_ids`, and `labels` (-100 outside the completion). temperature 0: greedy."""
    texts = render_prompts(tokenizer, prompts)
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    batch = batch.to(model.device)
    sampling = {"do_sample": False} if temperature == 0 else {"do_sample": True, "temperature": temperature, "top_k": 0}
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else model.generation_config.eos_token_id
    output = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos,
        **sampling,
    )
    P = batch["input_ids"].shape[1]
    completion = output[:, P:]  # (B, n)
    is_eos = torch.isin(completion, torch.as_tensor(eos, device=completion.device).flatten())
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0  # strictly after the first EOS
    attention_mask = torch.cat([batch["attention_mask"], (~after_eos).long()], 1)  # (B, P + n)
    labels = output.masked_fill(attention_mask == 0, -100)
    labels[:, :P] = -100
    return {
        "input_ids": output,
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        "labels": labels,
    }


def mtp_objective(model, batch: dict) -> torch.Tensor:
    """The model's own MTP loss (plus its MTP modules' balance loss) on a batch, with the main model run without
    gradients: only the MTP modules receive any."""
    with torch.no_grad():
        embeds = model.model.embed_tokens(batch["input_ids"])  # (B, T, d)
        h = model.model(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            use_cache=False,
        ).last_hidden_state  # (B, T, d): h^0, normed
    loss, aux_loss = model.mtp_loss(h, embeds, batch["attention_mask"], batch["position_ids"], batch["labels"])
    return loss if aux_loss is None else loss + aux_loss


def check_refresh_settings(steps: int, learning_rate: float, batch_size: int, temperature: float) -> None:
    """Refuse settings the refresh cannot run with, naming the flag to change."""
    if steps < 0:
        raise ValueError(f"--mtp_refresh_steps must be >= 0 (0 turns the MTP refresh off), got {steps}.")
    if not learning_rate > 0 or not math.isfinite(learning_rate):
        raise ValueError(f"--mtp_refresh_learning_rate must be a positive number, got {learning_rate}.")
    if batch_size < 1:
        raise ValueError(f"--mtp_refresh_batch_size must be >= 1, got {batch_size}.")
    if temperature < 0:
        raise ValueError(f"--mtp_refresh_temperature must be >= 0 (0: greedy completions), got {temperature}.")


def refresh_mtp(
    model,
    tokenizer,
    prompts: list,
    *,
    steps: int,
    learning_rate: float = 1e-3,
    batch_size: int = 16,
    max_new_tokens: int = 96,
    temperature: float = 0.0,
    seed: int = 0,
) -> MTPRefresh:
    """Train only the MTP modules of `model` for `steps` AdamW steps on the policy's own completions of `prompts`.

    Each step has the policy complete `batch_size` prompts (taken in a seeded order, cycling) at `temperature`
    (0: greedy) and minimises the model's MTP loss on them, the main model frozen and run without gradients, in eval
    mode (no expert-load counting, so the routing biases stay too). The first `batch_size` prompts of that order (half
    the prompts, when there are fewer than 2 x `batch_size`) are held out: their completions, generated once, measure
    the MTP loss before and after. Every parameter outside the MTP modules, every `requires_grad` flag and the
    train/eval mode are as they were on return. The caller's random state is untouched.
    """
    check_refresh_settings(steps, learning_rate, batch_size, temperature)
    lm = find_mtp_model(model)
    if lm is None:
        raise ValueError("refresh_mtp needs a model with multi-token-prediction modules (DeepseekMini, D >= 1).")
    if len(prompts) < 2:
        raise ValueError(f"refresh_mtp holds out prompts to measure the loss and trains on others: got {len(prompts)}.")
    mtp_parameters = [p for layer in lm.model.mtp_layers for p in layer.parameters()]
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    model.eval()
    model.requires_grad_(False)
    for p in mtp_parameters:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(mtp_parameters, lr=learning_rate, weight_decay=0.0)

    def sample(indices) -> dict:
        return sample_policy_text(lm, tokenizer, [prompts[i] for i in indices], max_new_tokens, temperature)

    def heldout_loss() -> float:
        with torch.no_grad():
            return float(mtp_objective(lm, heldout))

    try:
        with torch.random.fork_rng(devices=[lm.device] if lm.device.type == "cuda" else []):
            torch.manual_seed(seed)
            order = torch.randperm(len(prompts)).tolist()
            n_heldout = min(batch_size, len(prompts) // 2)
            heldout, train = sample(order[:n_heldout]), order[n_heldout:]
            loss_before = heldout_loss()
            for step in range(steps):
                indices = [train[(step * batch_size + j) % len(train)] for j in range(batch_size)]  # cycling
                loss = mtp_objective(lm, sample(indices))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(mtp_parameters, 1.0)
                optimizer.step()
            loss_after = heldout_loss()
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = None
        model.train(was_training)
    result = MTPRefresh(
        steps=steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        trained_parameters=sum(p.numel() for p in mtp_parameters),
        loss_before=loss_before,
        loss_after=loss_after,
    )
    logger.warning(
        f"MTP refresh: {steps} steps on the policy's own completions, the MTP modules' "
        f"{result.trained_parameters:,} parameters only; held-out MTP loss {loss_before:.4f} -> {loss_after:.4f}."
    )
    return result
