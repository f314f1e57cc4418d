"""The reward-model stage: its generated preference data, and the recipe at tiny size writing a folder that the
`reward_model` reward loads."""

import json
import math

import pytest

import rewards
from recipes.lib.general_chat import (
    FACTS,
    REJECTION_KINDS,
    fact_split,
    make_all_scenario_splits,
    make_general_chat,
    make_preference_pairs,
    make_preference_splits,
)


def test_heldout_facts_never_appear_in_training():
    train, heldout = fact_split(heldout=False), fact_split(heldout=True)
    assert set(train).isdisjoint(heldout) and len(train) + len(heldout) == len(FACTS)
    splits = make_preference_splits(n_train=60, n_test=30)
    train_questions = {row["prompt"][-1]["content"] for row in splits["train"]}
    heldout_facts = {question for _, question, _ in heldout}
    assert not any(q.endswith(f) for q in train_questions for f in heldout_facts)


def test_preference_pairs_cover_every_kind_and_both_views():
    pairs = make_preference_pairs(40, seed=3)
    assert make_preference_pairs(40, seed=3)[:] == pairs[:]  # deterministic
    assert {row["kind"] for row in pairs} == set(REJECTION_KINDS)
    for row in pairs:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert chosen != rejected
        if row["view"] == "summary":
            assert "<think>" not in chosen + rejected and row["kind"] != "rude_thinking"
        else:
            assert chosen.startswith("<think>")
    assert all(row["view"] == "full" for row in pairs if row["kind"] == "rude_thinking")


def test_general_chat_is_in_r1_format():
    chat = make_general_chat(5)
    fmt = rewards.get_reward_func("format")
    replies = [row[-1]["content"] for row in chat["messages"]]
    assert fmt(completions=replies) == [1.0] * 5
    assert chat[0]["messages"][0]["role"] == "system"


def test_all_scenario_splits_mix_reasoning_and_general_rows():
    splits = make_all_scenario_splits(n_train=40, n_test=10, general_share=0.25)
    train = splits["train"]
    assert sorted(set(train["scenario"])) == ["general", "reasoning"]
    assert train["scenario"].count("general") == 10 and len(splits["test"]) == 10
    for row in train:
        assert (row["solution"] == "") == (row["scenario"] == "general")
        assert row["prompt"].endswith("Assistant: ")


@pytest.mark.parametrize("share, scenarios", [(0.0, ["reasoning"]), (1.0, ["general"])])
def test_all_scenario_splits_can_be_all_one_scenario(share, scenarios):
    splits = make_all_scenario_splits(n_train=8, n_test=4, general_share=share)
    assert [sorted(set(split["scenario"])) for split in splits.values()] == [scenarios, scenarios]
    assert [len(split) for split in splits.values()] == [8, 4]
    with pytest.raises(ValueError, match=r"general_share must be in \[0, 1\]"):
        make_all_scenario_splits(general_share=1.5)


def run_recipe(tmp_path, *overrides):
    from recipes.lib.cli import parse_recipe_args
    from recipes.reward_model import DEFAULT_CONFIG, main, make_parser

    argv = [
        "--output_dir",
        str(tmp_path / "rm"),
        "--builtin_train_size",
        "32",
        "--builtin_test_size",
        "20",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--save_strategy",
        "no",
        "--logging_steps",
        "1",
        *overrides,
    ]
    return main(*parse_recipe_args(make_parser(), DEFAULT_CONFIG, argv))


def test_recipe_trains_and_writes_a_loadable_reward_model(tmp_path):
    _, metrics = run_recipe(tmp_path)
    out = tmp_path / "rm"
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "stage.json"} <= {
        p.name for p in out.iterdir()
    }
    stage = json.loads((out / "stage.json").read_text())
    assert stage["stage"] == "reward_model" and stage["metrics"] == pytest.approx(metrics)
    assert metrics["heldout_pairs"] == 20 and 0.0 <= metrics["pairwise_accuracy"] <= 1.0
    assert {f"pairwise_accuracy/{kind}" for kind in REJECTION_KINDS} <= set(metrics)
    assert "## deepseek-mini stage: reward_model" in (out / "README.md").read_text()

    judge = rewards.get_reward_func("reward_model", model=str(out), judge="summary")
    scores = judge(
        prompts=[[{"role": "user", "content": "What color is grass?"}]],
        completions=[[{"role": "assistant", "content": "<think>\nx\n</think>\n<answer>\nGreen.\n</answer>"}]],
    )
    assert len(scores) == 1 and math.isfinite(scores[0])


def test_a_dataset_without_pairs_fails_before_training(tmp_path):
    from datasets import Dataset

    data = tmp_path / "not-pairs.jsonl"
    Dataset.from_list([{"text": "hello"}]).to_json(str(data))
    with pytest.raises(ValueError, match=r"needs the dataset column\(s\) \['chosen', 'rejected'\]"):
        run_recipe(tmp_path, "--dataset_name", str(data))


def test_the_reward_model_config_parses():
    from recipes.lib.cli import parse_recipe_args
    from recipes.reward_model import DEFAULT_CONFIG, make_parser

    script_args, _, model_args = parse_recipe_args(make_parser(), DEFAULT_CONFIG, [])
    assert script_args.preset == "llama-tiny" and model_args.model_name_or_path is None
