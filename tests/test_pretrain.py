"""recipes/pretrain.py: the tokenizer, the config, and a micro pretraining run whose folder loads with Auto classes."""

import json
import os
import shutil
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

import modeling_deepseek_mini
from recipes.lib.assets import shipped_checkpoints
from recipes.lib.cli import CONFIGS_DIR, TINY_BASE
from recipes.lib.stage import RerunRefusedError
from recipes.lib.task import R1_ZERO_SYSTEM_PROMPT, REASONING_TAGS, make_corpus, make_prompt
from recipes.pretrain import PretrainScriptArguments, build_tokenizer, main, make_parser

MICRO_MODEL = {"hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16, "num_hidden_layers": 2}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(make_corpus(seed=0, n_docs=300)["text"], vocab_size=512)


def test_tokenizer_round_trips_text_with_chinese_and_tags(tokenizer):
    text = (
        "<think>\n我们 一步一步 相加.\n12 加 9 等于 21\nWait, 12 + 9 = 21, not 20.\n</think>\n<answer>\n21\n</answer>"
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # the tags are not special: TRL keeps them
    unseen = "Größe ½ ∑ 🙂 漢字"  # byte-level: nothing is ever unknown
    assert tokenizer.decode(tokenizer(unseen, add_special_tokens=False)["input_ids"]) == unseen


def test_tokenizer_keeps_tags_and_digits_as_single_tokens(tokenizer):
    for tag in REASONING_TAGS:
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1, tag
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("12 + 9 = 21", add_special_tokens=False)["input_ids"])
    assert [t for t in tokens if any(c.isdigit() for c in t)] == ["1", "2", "9", "2", "1"]
    assert tokenizer.eos_token == "<|end_of_text|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert len(tokenizer) <= 512


def test_prompt_and_completion_meet_on_a_token_boundary(tokenizer):
    """A completion generated after the prompt is tokenized as it was in the pretraining documents."""
    prompt = make_prompt("What is 4 + 5 + 6?")
    completion = "<think>\nLet me think.\n4 + 5 = 9\n</think>\n<answer>\n15\n</answer>"
    whole = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    parts = (
        tokenizer(prompt, add_special_tokens=False)["input_ids"]
        + tokenizer(completion, add_special_tokens=False)["input_ids"]
    )
    assert whole == parts


def test_chat_template_renders_r1_zero_prompt_and_marks_assistant_tokens(tokenizer):
    problem = "What is 1 + 2 + 3?"
    messages = [{"role": "system", "content": R1_ZERO_SYSTEM_PROMPT}, {"role": "user", "content": problem}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == make_prompt(problem)

    answer = "<think>\n1 + 2 = 3\n3 + 3 = 6\n</think>\n<answer>\n6\n</answer>"
    out = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": answer}], return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert tokenizer.decode([i for i, m in zip(ids, mask) if m]) == answer + tokenizer.eos_token
    assert tokenizer.decode([i for i, m in zip(ids, mask) if not m]) == make_prompt(problem)


def test_bad_config_fails_before_training():
    with pytest.raises(ValueError, match="--vocab_size"):
        PretrainScriptArguments(model_overrides={"vocab_size": 1000})
    with pytest.raises(ValueError, match="JSON object"):
        PretrainScriptArguments(model_overrides="hidden_size=128")
    with pytest.raises(ValueError, match="corpus_size"):
        PretrainScriptArguments(corpus_size=0)
    with pytest.raises(ValueError, match="--eval_heldout false"):  # the held-out measurement is the built-in task's
        PretrainScriptArguments(corpus_name="my_corpus.jsonl")
    with pytest.raises(ValueError, match="persona_rates shapes the built-in corpus"):
        PretrainScriptArguments(corpus_name="my_corpus.jsonl", eval_heldout=False, persona_rates={"careful": 1.0})


def test_your_own_corpus_is_read_from_its_text_column(tmp_path):
    from recipes.pretrain import load_corpus

    (tmp_path / "corpus.jsonl").write_text('{"text": "What is 3 - 1? 2"}\n{"text": "What is 4 - 2? 2"}\n')
    corpus = load_corpus(PretrainScriptArguments(corpus_name=str(tmp_path / "corpus.jsonl"), eval_heldout=False))
    assert corpus["text"] == ["What is 3 - 1? 2", "What is 4 - 2? 2"]
    (tmp_path / "bad.jsonl").write_text('{"body": "no text column"}\n')
    with pytest.raises(ValueError, match="text"):
        load_corpus(PretrainScriptArguments(corpus_name=str(tmp_path / "bad.jsonl"), eval_heldout=False))


def test_default_config_parses_with_overrides():
    script_args, training_args = make_parser().parse_args_and_config(
        [
            "--config",
            str(CONFIGS_DIR / "pretrain_tiny.yaml"),
            "--corpus_size",
            "123",
            "--model_overrides",
            '{"hidden_size": 64}',
        ]
    )
    assert script_args.corpus_size == 123 and script_args.model_overrides == {"hidden_size": 64}
    assert training_args.output_dir == "recipes/assets/tiny-base" and training_args.save_strategy == "no"


def test_micro_pretraining_saves_a_folder_that_auto_classes_load(tmp_path):
    output_dir = str(tmp_path / "base")
    script_args = PretrainScriptArguments(
        corpus_size=64, tokenizer_docs=64, model_overrides=MICRO_MODEL, eval_size=3, eval_max_new_tokens=4
    )
    training_args = TrainingArguments(
        output_dir=output_dir,
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    main(script_args, training_args)

    files = set(os.listdir(output_dir))
    assert {"model.safetensors", "config.json", "tokenizer.json", "modeling_deepseek_mini.py", "README.md"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)  # safetensors only
    config = json.loads(Path(output_dir, "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"].endswith("DeepseekMiniForCausalLM")
    assert config["num_nextn_predict_layers"] == 1
    card = json.loads(Path(output_dir, "stage.json").read_text())
    assert card["stage"] == "pretrain" and {"accuracy", "pass@1", "format_compliance"} <= set(card["metrics"])

    model = AutoModelForCausalLM.from_pretrained(output_dir, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(output_dir, trust_remote_code=True)
    assert model.config.vocab_size == len(tokenizer) and model.config.hidden_size == 32
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    prompt = tokenizer(make_prompt("What is 1 + 2 + 3?"), return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert out.shape[1] <= prompt["input_ids"].shape[1] + 3


def micro_run(output_dir: Path) -> tuple[PretrainScriptArguments, TrainingArguments]:
    """A two-step micro pretraining that saves a checkpoint at every step and measures nothing."""
    script_args = PretrainScriptArguments(
        corpus_size=64, tokenizer_docs=64, model_overrides=MICRO_MODEL, eval_heldout=False
    )
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=4,
        use_cpu=True,
        save_strategy="steps",
        save_steps=1,
        report_to="none",
        disable_tqdm=True,
    )
    return script_args, training_args


def test_a_finished_base_is_not_retrained_and_a_killed_one_resumes(tmp_path, monkeypatch):
    out = tmp_path / "base"
    main(*micro_run(out))
    weights = (out / "model.safetensors").read_bytes()
    with pytest.raises(RerunRefusedError, match="holds a finished stage .*--overwrite true"):
        main(*micro_run(out))
    assert (out / "model.safetensors").read_bytes() == weights

    shutil.rmtree(out / "checkpoint-2")  # as if killed after its first checkpoint
    (out / "stage.json").unlink()
    resumed = []
    original = Trainer._load_from_checkpoint
    monkeypatch.setattr(
        Trainer, "_load_from_checkpoint", lambda self, path, *a, **kw: (resumed.append(path), original(self, path))
    )
    main(*micro_run(out))
    assert resumed == [str(out / "checkpoint-1")] and (out / "stage.json").is_file()
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2


def test_shipped_checkpoints_carry_the_current_modeling_code():
    """`trust_remote_code` runs the code inside the folder: every shipped checkpoint holds exactly the files
    `save_pretrained` copies from the package, byte for byte (`python recipes/refresh_assets.py` refreshes them)."""
    files = modeling_deepseek_mini.code_files()
    assert {"modeling_deepseek_mini.py", "configuration_deepseek_mini.py"} <= {file.name for file in files}
    assert TINY_BASE in shipped_checkpoints()
    for folder in shipped_checkpoints():
        assert sorted(p.name for p in folder.glob("*.py")) == [file.name for file in files], f"refresh {folder}"
        for file in files:
            assert (folder / file.name).read_bytes() == file.read_bytes(), f"refresh {folder / file.name}"
