"""ExpertBiasUpdateCallback: aux-loss-free balancing for any transformers Trainer (TRL's included)."""

from transformers import TrainerCallback


def _unwrap(model):
    """The model that owns `update_expert_bias`, under DDP / DeepSpeed / torch.compile wrappers (PEFT forwards it)."""
    while model is not None and not hasattr(model, "update_expert_bias"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
    return model


class ExpertBiasUpdateCallback(TrainerCallback):
    """Calls `model.update_expert_bias()` once per optimizer step and logs the per-layer load imbalance.

    The update sums the token counts of all gradient-accumulation micro-batches and all data-parallel ranks, so every
    rank applies the same bias change. Logged keys (averaged over the steps since the previous log):
    `moe/imbalance/layer_{i}` (max load / mean load of MoE layer i; 1.0 is perfect balance) and `moe/imbalance/mean`.
    A model without `update_expert_bias` (or without MoE layers) makes this callback a no-op.

    Trainer calls `on_log` of reporting integrations (wandb, tensorboard...) before the callbacks passed by the user;
    for those to receive the `moe/*` keys, put this callback first:
    `trainer.callback_handler.callbacks.insert(0, ExpertBiasUpdateCallback())`. The console and `state.log_history`
    receive them either way.
    """

    def __init__(self):
        self._sums: dict[int, float] = {}
        self._steps: dict[int, int] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        model = _unwrap(model)
        if model is None:
            return
        for layer_idx, stats in model.update_expert_bias().items():
            self._sums[layer_idx] = self._sums.get(layer_idx, 0.0) + stats["max_over_mean"]
            self._steps[layer_idx] = self._steps.get(layer_idx, 0) + 1

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or not self._sums:
            return
        imbalance = {f"moe/imbalance/layer_{i}": self._sums[i] / self._steps[i] for i in sorted(self._sums)}
        imbalance["moe/imbalance/mean"] = sum(imbalance.values()) / len(imbalance)
        logs.update(imbalance)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(imbalance)
        self._sums, self._steps = {}, {}
