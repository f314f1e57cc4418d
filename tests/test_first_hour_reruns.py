"""A user's first hour, reruns and use (issue 17, items 2 and 3): a rerun into a finished stage is refused unless
`--overwrite true`, a resume with changed hyperparameters is refused naming the flag, `stage.json` records what ran;
a checkpoint is chatted with through `transformers.pipeline` as its card shows, prompted exactly as in training."""

import builtins
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import DatasetDict
from safetensors.torch import load_file
from transformers import AutoTokenizer, GenerationMixin

from recipes.lib.cli import TINY_BASE, parse_recipe_args
from recipes.lib.stage import USAGE_PROBLEM, RerunRefusedError, run_arguments, usage_example
from recipes.lib.task import R1_ZERO_SYSTEM_PROMPT, R1_ZERO_TEMPLATE, make_cold_start
from recipes.sft import DEFAULT_CONFIG, main, make_parser


def sft_args(out: Path, model: str, data: Path, *extra: str):
    """A two-step SFT run of `model` that saves a checkpoint at every step and measures nothing."""
    argv = ["--model_name_or_path", model, "--dataset_name", str(data), "--output_dir", str(out)]
    argv += ["--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_heldout", "false"]
    argv += ["--save_strategy", "steps", "--save_steps", "1", "--logging_steps", "1", "--report_to", "none"]
    return parse_recipe_args(make_parser(), DEFAULT_CONFIG, [*argv, *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(model, data, output folder) of a finished two-step cold-start SFT stage of the shipped base."""
    root = tmp_path_factory.mktemp("reruns")
    data = root / "data"
    DatasetDict(train=make_cold_start(8)).save_to_disk(str(data))
    model = str(TINY_BASE)
    main(*sft_args(root / "out", model, data))
    return model, data, root / "out"


@pytest.fixture
def stage_copy(finished, tmp_path):
    """A private copy of the finished stage's folder."""
    model, data, out = finished
    shutil.copytree(out, tmp_path / "out")
    return model, data, tmp_path / "out"


def stage_record(out: Path) -> dict:
    return json.loads((out / "stage.json").read_text())


# ----------------------------------------------------------------------------------------------------------------
# Reruns lose nothing


def test_a_rerun_into_a_finished_stage_is_refused_before_any_work(stage_copy):
    model, data, out = stage_copy
    weights = (out / "model.safetensors").read_bytes()
    with pytest.raises(RerunRefusedError) as error:
        main(*sft_args(out, model, data, "--learning_rate", "1e-3"))
    message = str(error.value)
    assert "\n" not in message and "finished stage" in message and "--overwrite true" in message
    assert "--output_dir" in message
    assert (out / "model.safetensors").read_bytes() == weights
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-1", "checkpoint-2"}


def test_overwrite_retrains_from_the_start_and_records_what_ran(stage_copy, resumed_from):
    model, data, out = stage_copy
    trainer = main(*sft_args(out, model, data, "--learning_rate", "1e-3", "--overwrite", "true"))
    assert resumed_from == [] and trainer.state.global_step == 2
    record = stage_record(out)
    assert record["hyperparameters"]["learning_rate"] == 1e-3
    assert record["training"] == {"steps": 2, "resumed_from": None}
    saved = json.loads((out / "checkpoint-2" / "run_args.json").read_text())
    assert saved["learning_rate"] == 1e-3


def test_a_resume_with_a_changed_hyperparameter_is_refused_naming_the_flag(stage_copy):
    model, data, out = stage_copy
    shutil.rmtree(out / "checkpoint-2")  # as if killed after checkpoint-1
    (out / "stage.json").unlink()
    with pytest.raises(RerunRefusedError) as error:
        main(*sft_args(out, model, data, "--learning_rate", "1e-3", "--max_length", "64"))
    message = str(error.value)
    assert "checkpoint-1" in message and "--learning_rate 0.0005 (now 0.001)" in message
    assert "--max_length" in message and "--overwrite true" in message and "--save_steps" not in message
    assert not (out / "checkpoint-2").exists()


def test_a_resume_continues_the_run_and_stage_json_records_it(stage_copy, resumed_from):
    model, data, out = stage_copy
    shutil.rmtree(out / "checkpoint-2")
    (out / "stage.json").unlink()
    trainer = main(*sft_args(out, model, data, "--logging_steps", "2"))  # where it logs is not a hyperparameter
    assert resumed_from == [str(out / "checkpoint-1")] and trainer.state.global_step == 2
    assert stage_record(out)["training"] == {"steps": 2, "resumed_from": str(out / "checkpoint-1")}
    assert stage_record(out)["hyperparameters"]["learning_rate"] == 5e-4


def test_a_run_stopped_after_its_last_checkpoint_finishes_without_a_step_past_the_end(stage_copy, resumed_from):
    model, data, out = stage_copy
    (out / "stage.json").unlink()  # as if stopped during the measurement after training
    trainer = main(*sft_args(out, model, data))
    assert resumed_from == [str(out / "checkpoint-2")] and trainer.state.global_step == 2
    saved, last = load_file(out / "model.safetensors"), load_file(out / "checkpoint-2" / "model.safetensors")
    assert saved.keys() == last.keys() and all(torch.equal(saved[name], last[name]) for name in last)
    assert stage_record(out)["training"] == {"steps": 2, "resumed_from": str(out / "checkpoint-2")}


def test_run_arguments_are_stable_and_leave_out_where_a_run_is_saved(tmp_path):
    first = run_arguments(*sft_args(tmp_path / "a", "m", tmp_path))
    second = run_arguments(*sft_args(tmp_path / "b", "m", tmp_path, "--save_steps", "7", "--push_to_hub", "true"))
    assert first == second
    assert {"learning_rate", "max_steps", "model_name_or_path", "dataset_name", "seed"} <= set(first)
    assert not {"output_dir", "overwrite", "save_steps", "logging_dir", "hub_token", "local_rank"} & set(first)


# ----------------------------------------------------------------------------------------------------------------
# A trained checkpoint is usable as it is


@pytest.fixture
def no_prompt(monkeypatch):
    """Fail the test if anything asks the terminal a question (transformers' "run the custom code? [y/N]")."""
    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail(f"asked on the terminal: {a}"))


def test_the_chat_template_adds_the_instruction_and_equals_the_training_prompt(no_prompt):
    tokenizer = AutoTokenizer.from_pretrained(TINY_BASE, trust_remote_code=True)
    user = [{"role": "user", "content": USAGE_PROBLEM}]
    training_prompt = R1_ZERO_TEMPLATE.format(problem=USAGE_PROBLEM)
    assert tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == training_prompt
    explicit = [{"role": "system", "content": R1_ZERO_SYSTEM_PROMPT}, *user]
    assert tokenizer.apply_chat_template(explicit, tokenize=False, add_generation_prompt=True) == training_prompt
    own = [{"role": "system", "content": "Be brief."}, *user]
    assert R1_ZERO_SYSTEM_PROMPT not in tokenizer.apply_chat_template(own, tokenize=False)


def test_the_tokenizer_needs_no_remote_code(no_prompt):
    """The tokenizer files name no code (`TokenizersBackend`, no `auto_map`): it loads with remote code refused as
    with it allowed, and neither asks on the terminal. (Left unset, `trust_remote_code` makes transformers read the
    model's `auto_map` in config.json and ask: give it.)"""
    config = json.loads((TINY_BASE / "tokenizer_config.json").read_text())
    assert "auto_map" not in config and config["tokenizer_class"] == "TokenizersBackend"
    refused = AutoTokenizer.from_pretrained(TINY_BASE, trust_remote_code=False)
    trusted = AutoTokenizer.from_pretrained(TINY_BASE, trust_remote_code=True)
    assert refused.chat_template == trusted.chat_template and refused.get_vocab() == trusted.get_vocab()


def python_block(card: str) -> str:
    """The card's copy-paste example: its one ```python block."""
    (block,) = re.findall(r"```python\n(.*?)```", card, re.DOTALL)
    return block


def test_the_card_example_prompts_the_trained_stage_as_in_training(finished, monkeypatch, capsys, no_prompt):
    """The example in the card of a stage trained from the shipped base runs as written: the pipeline feeds the model
    the training prompt's tokens, and the reply is the model's chain of thought."""
    _, _, out = finished
    card = (out / "README.md").read_text()
    assert "## Use it" in card and "## Quick start" not in card  # TRL's example, model "None", is replaced
    example = python_block(card)
    assert example == usage_example(str(out))
    fed, generate = [], GenerationMixin.generate
    monkeypatch.setattr(
        GenerationMixin, "generate", lambda self, **kw: fed.append(kw["input_ids"]) or generate(self, **kw)
    )
    exec(example, {})
    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    assert [ids[0].tolist() for ids in fed] == [tokenizer(R1_ZERO_TEMPLATE.format(problem=USAGE_PROBLEM))["input_ids"]]
    reply = capsys.readouterr().out
    assert reply.startswith("<think>") and "21 + 4 = 25" in reply  # its greedy chain adds 8 + 6 + 7 + 4


def test_the_card_example_runs_in_a_fresh_interpreter_without_a_question(finished):
    """As a user pastes it: a new interpreter with no terminal to answer "run the custom code? [y/N]"."""
    _, _, out = finished
    example = python_block((out / "README.md").read_text())
    result = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("<think>") and "Do you wish" not in result.stdout + result.stderr
