"""The SFT recipe: cold-start data, assistant-only loss, DeepseekMini / Qwen2 / Llama at tiny size, a Hub-ready
folder, resuming from a checkpoint, and the push checked offline."""

import json
import shutil
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoConfig, AutoTokenizer
from trl import SFTConfig

import rewards
from recipes.lib.cli import parse_recipe_args
from recipes.lib.sft_trainer import check_sft_data, make_sft_trainer
from recipes.lib.task import make_cold_start
from recipes.sft import DEFAULT_CONFIG, main, make_parser


def parse(*argv):
    """The recipe's own command-line path: the tiny default YAML, then these flags."""
    return parse_recipe_args(make_parser(), DEFAULT_CONFIG, list(argv))


def small_run(tmp_path, *argv):
    """Arguments of a two-step run that measures 4 held-out problems."""
    return parse(
        "--output_dir",
        str(tmp_path / "out"),
        "--builtin_train_size",
        "16",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--save_strategy",
        "no",
        "--logging_steps",
        "1",
        "--eval_max_samples",
        "4",
        "--eval_max_new_tokens",
        "16",
        *argv,
    )


def test_cold_start_chains_are_correct_well_formed_and_english():
    data = make_cold_start(40, seed=1)
    replies = [row[-1]["content"] for row in data["messages"]]
    assert rewards.get_reward_func("accuracy")(completions=replies, solution=data["solution"]) == [1.0] * 40
    assert rewards.get_reward_func("format")(completions=replies) == [1.0] * 40
    assert rewards.get_reward_func("language_consistency")(completions=replies) == [1.0] * 40
    assert any("not" in reply for reply in replies)  # some chains caught and corrected a slip


@pytest.mark.parametrize(
    "rows, assistant_only, message",
    [
        ([{"text": "hi"}], False, "`messages` column or `prompt` and `completion`"),
        ([{"prompt": "What is 1 + 1?", "completion": "2"}], True, "--assistant_only_loss false"),
    ],
)
def test_data_that_the_loss_cannot_use_fails_before_training(rows, assistant_only, message):
    args = SFTConfig(
        output_dir="unused", use_cpu=True, bf16=False, activation_checkpointing=True, assistant_only_loss=assistant_only
    )
    with pytest.raises(ValueError, match=message):
        check_sft_data(Dataset.from_list(rows), args)


def test_assistant_only_loss_trains_on_the_assistant_turn_and_its_end(tiny_causal_lm_path, tmp_path):
    from transformers import AutoModelForCausalLM

    path = tiny_causal_lm_path("qwen2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = make_cold_start(2)
    args = SFTConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=True,
        assistant_only_loss=True,
        report_to=[],
    )
    trainer = make_sft_trainer(AutoModelForCausalLM.from_pretrained(path), tokenizer, data, args)
    row = trainer.train_dataset[0]
    trained = [token for token, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert tokenizer.decode(trained) == data[0]["messages"][-1]["content"] + tokenizer.eos_token
    assert trainer.callback_handler.callbacks and not any(
        type(cb).__name__ == "ExpertBiasUpdateCallback" for cb in trainer.callback_handler.callbacks
    )


def test_deepseek_sft_trainer_trains_the_mtp_modules_with_the_models_own_loss(tmp_path):
    """TRL's SFT loss never runs DeepseekMini's MTP modules; DeepseekSFTTrainer's (the model's own) does: after two
    steps every part of the MTP module outside the routed experts (which may get no token) has moved."""
    import torch
    from transformers import AutoModelForCausalLM

    from recipes.lib.cli import TINY_BASE

    model = AutoModelForCausalLM.from_pretrained(TINY_BASE, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(TINY_BASE)
    mtp_layer = model.model.mtp_layers[0]
    before = {name: p.detach().clone() for name, p in mtp_layer.named_parameters()}
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_length=256,
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        report_to=[],
    )
    trainer = make_sft_trainer(model, tokenizer, make_cold_start(4), args)
    assert trainer.mtp_loss_weight == model.config.mtp_loss_weight > 0
    trainer.train()
    moved = {name for name, p in mtp_layer.named_parameters() if not torch.equal(before[name], p.detach())}
    expected = {name for name in before if ".experts." not in name}
    assert expected and expected <= moved, sorted(expected - moved)


def test_cold_start_sft_of_the_tiny_base_writes_a_hub_ready_folder(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    uploads = []

    class RepoUrl(str):
        repo_id = "me/tiny-cold-start"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: RepoUrl(repo_id))
    monkeypatch.setattr(
        HfApi,
        "upload_folder",
        lambda self, **kw: uploads.append({**kw, "files": sorted(p.name for p in Path(kw["folder_path"]).iterdir())}),
    )
    trainer = main(*small_run(tmp_path, "--push_to_hub", "true", "--hub_model_id", "me/tiny-cold-start"))

    out = tmp_path / "out"
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "stage.json"} <= files
    assert not any(name.endswith(".bin") and name != "training_args.bin" for name in files)
    assert {"modeling_deepseek_mini.py", "configuration_deepseek_mini.py"} <= files
    assert "AutoModelForCausalLM" in json.loads((out / "config.json").read_text())["auto_map"]
    assert any(type(cb).__name__ == "ExpertBiasUpdateCallback" for cb in trainer.callback_handler.callbacks)
    stage = json.loads((out / "stage.json").read_text())
    assert stage["stage"] == "cold_start_sft" and stage["hyperparameters"]["train_samples"] == 16
    assert {"accuracy", "format_compliance", "language_consistency"} <= set(stage["metrics"])
    assert AutoConfig.from_pretrained(out, trust_remote_code=True).model_type == "deepseek_mini"

    final = uploads[-1]  # transformers pushes at save_model; the last upload carries the stage card
    assert final["repo_id"] == "me/tiny-cold-start" and final["folder_path"] == str(out)
    assert "checkpoint-*" in final["ignore_patterns"] and "stage.json" in final["files"]
    assert "## deepseek-mini stage: cold_start_sft" in (out / "README.md").read_text()


def test_llama_trains_on_plain_prompt_completion_pairs(tiny_causal_lm_path, tmp_path):
    data = tmp_path / "pairs.jsonl"
    Dataset.from_list([{"prompt": f"What is {i} + 1? ", "completion": f"{i + 1}"} for i in range(8)]).to_json(str(data))
    trainer = main(
        *small_run(
            tmp_path,
            "--model_name_or_path",
            tiny_causal_lm_path("llama"),
            "--dataset_name",
            str(data),
            "--assistant_only_loss",
            "false",
            "--eval_heldout",
            "false",
            "--stage",
            "rs_sft",
        )
    )
    assert trainer.state.global_step == 2
    stage = json.loads((tmp_path / "out" / "stage.json").read_text())
    assert stage["stage"] == "rs_sft" and "metrics" not in stage
    assert "auto_map" not in json.loads((tmp_path / "out" / "config.json").read_text())


def test_a_second_run_resumes_from_the_last_checkpoint(tiny_causal_lm_path, tmp_path, resumed_from):
    data = tmp_path / "data"
    DatasetDict(train=make_cold_start(8)).save_to_disk(str(data))
    common = [
        "--model_name_or_path",
        tiny_causal_lm_path("qwen2"),
        "--dataset_name",
        str(data),
        "--eval_heldout",
        "false",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
    ]
    main(*small_run(tmp_path, *common, "--max_steps", "3"))
    shutil.rmtree(tmp_path / "out" / "checkpoint-3")  # as if killed after checkpoint-2
    (tmp_path / "out" / "stage.json").unlink()

    trainer = main(*small_run(tmp_path, *common, "--max_steps", "3"))
    assert resumed_from == [str(tmp_path / "out" / "checkpoint-2")]
    assert trainer.state.global_step == 3


@pytest.mark.parametrize("config", sorted(p.name for p in DEFAULT_CONFIG.parent.glob("sft_*.yaml")))
def test_every_sft_config_parses(config):
    script_args, training_args, _ = parse("--config", str(DEFAULT_CONFIG.parent / config))
    assert script_args.stage and training_args.output_dir
