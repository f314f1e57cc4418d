"""Distillation: the teacher's curated traces, students built from Qwen2 / Llama presets with their own tokenizer,
and logit-level distillation (GKD) only where teacher and student share a vocabulary."""

import json

import pytest
import torch
from datasets import DatasetDict, load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from recipes.distill import DEFAULT_CONFIG, check_shared_vocabulary, main, make_parser
from recipes.lib.cli import TINY_BASE, parse_recipe_args
from recipes.lib.task import make_cold_start


def parse(tmp_path, *argv):
    """The recipe's command-line path (the tiny default YAML) for a one-step run without held-out measurement."""
    return parse_recipe_args(
        make_parser(),
        DEFAULT_CONFIG,
        [
            "--output_dir",
            str(tmp_path / "student"),
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--save_strategy",
            "no",
            "--logging_steps",
            "1",
            "--eval_heldout",
            "false",
            *argv,
        ],
    )


@pytest.fixture(scope="module")
def traces_path(tmp_path_factory):
    """A small curated-traces dataset in rejection sampling's `messages` format."""
    path = tmp_path_factory.mktemp("traces")
    DatasetDict(train=make_cold_start(8)).save_to_disk(str(path))
    return str(path)


def test_a_student_with_its_own_tokenizer_learns_from_text_traces(tmp_path, traces_path, offline_chat_tokenizer_path):
    trainer = main(
        *parse(
            tmp_path,
            "--dataset_name",
            traces_path,
            "--student_preset",
            "llama-tiny",
            "--student_tokenizer_name_or_path",
            offline_chat_tokenizer_path,
        )
    )
    out = tmp_path / "student"
    student = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert student.config.model_type == "llama"
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(offline_chat_tokenizer_path).get_vocab()
    assert (
        tokenizer.get_vocab() != AutoTokenizer.from_pretrained(TINY_BASE, trust_remote_code=True).get_vocab()
    )  # re-tokenised text
    assert trainer.state.global_step == 1
    stage = json.loads((out / "stage.json").read_text())
    assert stage["stage"] == "distill" and stage["hyperparameters"]["distillation_loss"] == "sft"
    assert stage["parent"].startswith("llama-tiny") and stage["dataset"] == traces_path
    assert (out / "model.safetensors").exists() and "## deepseek-mini stage: distill" in (out / "README.md").read_text()


def assistant_loss(model, tokenizer, messages) -> float:
    """The next-token loss on the assistant's turn of one conversation, tokenised by `tokenizer`'s chat template."""
    encoded = tokenizer.apply_chat_template(
        messages, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    labels = encoded["input_ids"].masked_fill(encoded["assistant_masks"] == 0, -100)
    with torch.no_grad():
        return model(input_ids=encoded["input_ids"], labels=labels).loss.item()


def test_a_reloaded_qwen2_student_keeps_the_loss_it_trained_to(tmp_path, traces_path):
    """A Qwen2 folder reloads its tokenizer as Qwen2Tokenizer, whatever tokenizer it was trained with: the student
    must train on the sequences that tokenizer gives, or the saved model meets other ones and answers garbage."""
    trainer = main(
        *parse(
            tmp_path,
            "--dataset_name",
            traces_path,
            "--student_preset",
            "qwen2-tiny",
            "--max_steps",
            "30",
            "--logging_steps",
            "10",
        )
    )
    out = tmp_path / "student"
    student, tokenizer = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    traces = load_from_disk(traces_path)["train"]["messages"]
    assert tokenizer.apply_chat_template(traces[0]) == trainer.processing_class.apply_chat_template(traces[0])
    last_logged = [log["loss"] for log in trainer.state.log_history if "loss" in log][-1]
    reloaded = sum(assistant_loss(student, tokenizer, trace) for trace in traces) / len(traces)
    assert reloaded < 1.2 * last_logged  # trained on other sequences, it was ~1.5x


def test_the_teacher_writes_curated_traces_when_no_dataset_is_given(tmp_path):
    main(*parse(tmp_path, "--max_prompts", "16", "--trace_num_generations", "6", "--trace_max_new_tokens", "96"))
    traces = tmp_path / "student" / "traces"
    stats = json.loads((traces / "filter_stats.json").read_text())
    assert stats["sampled"] == 96 and 0 < stats["kept_reasoning"] <= 16  # at most one per prompt
    stage = json.loads((tmp_path / "student" / "stage.json").read_text())
    assert stage["hyperparameters"]["traces"] == stats["kept_reasoning"]
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "student").config.model_type == "qwen2"


def test_gkd_matches_the_teacher_logits_when_the_vocabulary_is_shared(tmp_path, traces_path):
    trainer = main(
        *parse(
            tmp_path,
            "--dataset_name",
            traces_path,
            "--distillation_loss",
            "gkd",
            "--lmbda",
            "0.0",
            "--beta",
            "0.5",
            "--max_length",
            "256",
            "--student_preset",
            "llama-tiny",
        )
    )
    assert type(trainer).__name__ == "GKDTrainer"
    assert trainer.state.log_history[0]["loss"] > 0
    assert json.loads((tmp_path / "student" / "stage.json").read_text())["hyperparameters"]["lmbda"] == 0.0


def test_gkd_with_different_vocabularies_fails_before_training(tmp_path, traces_path, offline_chat_tokenizer_path):
    with pytest.raises(ValueError, match="share a vocabulary"):
        main(
            *parse(
                tmp_path,
                "--dataset_name",
                traces_path,
                "--distillation_loss",
                "gkd",
                "--student_tokenizer_name_or_path",
                offline_chat_tokenizer_path,
            )
        )
    assert not (tmp_path / "student" / "model.safetensors").exists()
    teacher = AutoTokenizer.from_pretrained(TINY_BASE, trust_remote_code=True)
    check_shared_vocabulary(teacher, teacher)  # the same tokenizer passes


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--distillation_loss", "kl"], "distillation_loss"),
        (["--student_preset", "gpt-huge"], "student_preset"),
        (["--trace_num_generations", "0"], ">= 1"),
    ],
)
def test_bad_arguments_fail_with_what_to_change(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        parse(tmp_path, *bad)


@pytest.mark.parametrize("config", sorted(p.name for p in DEFAULT_CONFIG.parent.glob("distill_*.yaml")))
def test_every_distill_config_parses(config):
    script_args, training_args, _ = parse_recipe_args(
        make_parser(), DEFAULT_CONFIG.parent / config, ["--config", str(DEFAULT_CONFIG.parent / config)]
    )
    assert script_args.distillation_loss in ("sft", "gkd") and training_args.output_dir
