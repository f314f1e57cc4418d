"""Aux-loss-free balancing: the bias update evens out a skewed load, agrees across data-parallel ranks, and runs
once per optimizer step under the Trainer through ExpertBiasUpdateCallback."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modeling_deepseek_mini import DeepseekMiniConfig, DeepseekMiniForCausalLM


def skew_router(model, input_ids, experts=(0, 1), strength=4.0) -> None:
    """Push the first MoE layer's router towards `experts`: raise their logits along the layer's mean input."""
    moe = model.moe_layers()[0]
    captured = []
    handle = moe.register_forward_hook(lambda module, args, out: captured.append(args[0].detach()))
    with torch.no_grad():
        model(input_ids=input_ids)
    handle.remove()
    direction = captured[0].reshape(-1, captured[0].shape[-1]).mean(0)
    with torch.no_grad():
        for e in experts:
            moe.gate.weight[e] += strength * direction / direction.norm() ** 2


def test_bias_updates_reduce_a_skewed_load_step_after_step(tiny_model):
    model = tiny_model(bias_update_speed=0.02).train()
    with torch.no_grad():
        for moe in model.moe_layers():
            moe.gate.e_score_correction_bias.zero_()
    input_ids = torch.randint(3, 500, (4, 32), generator=torch.Generator().manual_seed(0))
    skew_router(model, input_ids)
    imbalance = []
    for _ in range(30):  # the weights stay fixed: only the bias moves
        model(input_ids=input_ids, labels=input_ids).loss.backward()
        imbalance.append(model.update_expert_bias()[1]["max_over_mean"])
    assert imbalance[0] > 2.5  # two of eight experts take most of the load
    windows = [sum(imbalance[i : i + 5]) / 5 for i in range(0, 20, 5)]
    assert all(later < earlier for earlier, later in zip(windows, windows[1:])), imbalance  # falls while skewed
    assert max(imbalance[20:]) < 1.7, imbalance  # then stays near balance (sign updates oscillate around it)
    bias = model.moe_layers()[0].gate.e_score_correction_bias
    assert bias[0] < 0 and bias[1] < 0  # the overloaded experts were pushed down
    assert model.expert_load_stats() == {}  # counters reset after each update


def test_bias_does_not_move_without_counted_tokens_or_with_zero_speed(tiny_model):
    model = tiny_model(bias_update_speed=0.0).train()
    before = [moe.gate.e_score_correction_bias.clone() for moe in model.moe_layers()]
    assert model.update_expert_bias() == {}  # nothing counted yet
    input_ids = torch.randint(3, 500, (2, 8))
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    stats = model.update_expert_bias()
    assert set(stats) == {1, 2} and stats[1]["tokens"] == 16 * model.config.num_experts_per_tok
    assert all(torch.equal(b, moe.gate.e_score_correction_bias) for b, moe in zip(before, model.moe_layers()))


def _rank_worker(rank: int, world_size: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        torch.manual_seed(0)  # same model on both ranks
        model = DeepseekMiniForCausalLM(DeepseekMiniConfig.from_preset("tiny", bias_update_speed=0.01)).train()
        generator = torch.Generator().manual_seed(100 + rank)  # different data, so different local loads
        for _ in range(2):
            input_ids = torch.randint(3, 500, (2, 6 + 10 * rank), generator=generator)
            model(input_ids=input_ids, labels=input_ids).loss.backward()
            local = torch.stack([moe.expert_load.clone() for moe in model.moe_layers()])
            model.update_expert_bias()
            biases = torch.stack([moe.gate.e_score_correction_bias.clone() for moe in model.moe_layers()])
            torch.save({"local": local, "biases": biases}, os.path.join(out_dir, f"rank{rank}_{_}.pt"))
    finally:
        dist.destroy_process_group()


def test_biases_stay_identical_across_data_parallel_ranks(tmp_path):
    # spawn, not fork: forking a process that other tests may have filled with threads can deadlock. The workers
    # re-import this module, so its top-level imports stay light (Trainer-side imports live inside the tests).
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    gamma, expected = 0.01, torch.zeros(2, 8)
    for step in range(2):
        ranks = [torch.load(tmp_path / f"rank{r}_{step}.pt") for r in range(2)]
        assert not torch.equal(ranks[0]["local"], ranks[1]["local"])  # the ranks saw different loads
        assert torch.equal(ranks[0]["biases"], ranks[1]["biases"])
        total = (ranks[0]["local"] + ranks[1]["local"]).float()  # the update follows the global load
        expected += gamma * torch.sign(total.mean(-1, keepdim=True) - total)
        torch.testing.assert_close(ranks[0]["biases"], expected)
        local_only = gamma * torch.sign(ranks[0]["local"].float().mean(-1, keepdim=True) - ranks[0]["local"].float())
        assert step > 0 or not torch.equal(ranks[0]["biases"], local_only)


def test_callback_with_trainer_updates_once_per_optimizer_step(tiny_model, tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from modeling_deepseek_mini import ExpertBiasUpdateCallback

    model = tiny_model(vocab_size=64)
    rows = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(32):  # a learnable stream: arithmetic progressions modulo 64
        start, step = torch.randint(0, 64, (2,), generator=generator).tolist()
        ids = [(start + (step % 5 + 1) * j) % 64 for j in range(24)]
        rows.append({"input_ids": ids, "labels": ids})
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=12,
        learning_rate=5e-3, logging_steps=4, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0,
    )  # fmt: skip
    updates = []
    update = model.update_expert_bias
    model.update_expert_bias = lambda: updates.append(update()) or updates[-1]
    bias_before = model.moe_layers()[0].gate.e_score_correction_bias.clone()
    trainer = Trainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), callbacks=[ExpertBiasUpdateCallback()]
    )
    trainer.train()

    assert len(updates) == 12  # one per optimizer step
    tokens_per_step = 2 * 4 * 24 * model.config.num_experts_per_tok  # both micro-batches counted
    assert all(stats[1]["tokens"] == tokens_per_step for stats in updates)
    assert not torch.equal(bias_before, model.moe_layers()[0].gate.e_score_correction_bias)
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 3 and losses[-1] < losses[0]
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert all({"moe/imbalance/layer_1", "moe/imbalance/layer_2", "moe/imbalance/mean"} <= set(row) for row in logged)
    assert all(row["moe/imbalance/mean"] >= 1.0 for row in logged)


def test_callback_is_a_noop_without_moe_bias(tiny_model):
    from transformers import TrainerControl, TrainerState

    from modeling_deepseek_mini import ExpertBiasUpdateCallback

    callback = ExpertBiasUpdateCallback()
    state, control = TrainerState(), TrainerControl()
    dense = tiny_model(first_k_dense_replace=2, num_nextn_predict_layers=0)  # no MoE layer at all
    assert dense.moe_layers() == []

    class Wrapper(torch.nn.Module):  # like DDP: the model is under `.module`
        def __init__(self, module):
            super().__init__()
            self.module = module

    for model in (torch.nn.Linear(2, 2), Wrapper(dense), None):
        callback.on_step_end(None, state, control, model=model)
    logs = {"loss": 1.0}
    callback.on_log(None, state, control, logs=logs)
    assert logs == {"loss": 1.0}


@pytest.mark.parametrize("wrap", [True, False])
def test_callback_unwraps_data_parallel_wrappers(tiny_model, wrap):
    from transformers import TrainerControl, TrainerState

    from modeling_deepseek_mini import ExpertBiasUpdateCallback

    model = tiny_model().train()
    input_ids = torch.randint(3, 500, (2, 8))
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    before = model.moe_layers()[0].gate.e_score_correction_bias.clone()
    target = model
    if wrap:  # like DDP / DeepSpeed: the model is under `.module`
        target = torch.nn.Module()
        target.module = model
    callback = ExpertBiasUpdateCallback()
    callback.on_step_end(None, TrainerState(), TrainerControl(), model=target)
    assert not torch.equal(before, model.moe_layers()[0].gate.e_score_correction_bias)
    logs = {}
    callback.on_log(None, TrainerState(), TrainerControl(), logs=logs)
    assert set(logs) == {"moe/imbalance/layer_1", "moe/imbalance/layer_2", "moe/imbalance/mean"}
