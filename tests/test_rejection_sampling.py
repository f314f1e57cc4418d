"""Rejection sampling: each filter alone (a case it removes, a case it keeps), scoring with the rewards registry,
batched sampling, general-data mixing, and the whole recipe on the shipped tiny base."""

import json
import random
from pathlib import Path

import pytest
from datasets import load_from_disk

from recipes.lib.filters import (
    FILTERS,
    Sample,
    apply_filters,
    cap_per_prompt,
    deduplicate,
    is_correct,
    is_finished,
    is_language_consistent,
    is_not_repetitive,
    is_well_formed,
    is_within_length,
    score_samples,
)
from recipes.lib.sampling import RejectionSamplingArguments, SamplingConfig, to_messages
from recipes.lib.task import PERSONAS, R1_ZERO_SYSTEM_PROMPT, problem_text
from recipes.rejection_sampling import general_count

NUMBERS = (7, 5, 9)
PROMPT = [{"role": "system", "content": R1_ZERO_SYSTEM_PROMPT}, {"role": "user", "content": problem_text(NUMBERS)}]


def sample(text: str = "", *, index: int = 0, tokens: int = 10, finished: bool = True, **scores) -> Sample:
    return Sample(prompt_index=index, completion=text, num_tokens=tokens, finished=finished, scores=scores)


def scored(texts: list[str]) -> list[Sample]:
    samples = [sample(text) for text in texts]
    score_samples(samples, [PROMPT], [str(sum(NUMBERS))])
    return samples


# ------------------------------------------------------------------------------------------------------------------
# Each filter alone


def test_correct_keeps_a_verified_answer_and_removes_a_wrong_or_unjudged_one():
    assert is_correct(sample(accuracy=1.0))
    assert not is_correct(sample(accuracy=0.0))
    assert not is_correct(sample(accuracy=None))


def test_well_formed_removes_a_broken_format():
    assert is_well_formed(sample(format=1.0))
    assert not is_well_formed(sample(format=0.0))


def test_language_consistent_uses_the_threshold():
    assert is_language_consistent(sample(language_consistency=0.97), 0.95)
    assert not is_language_consistent(sample(language_consistency=0.6), 0.95)
    assert not is_language_consistent(sample(language_consistency=None), 0.95)


def test_finished_removes_a_completion_cut_by_the_budget():
    assert is_finished(sample(finished=True))
    assert not is_finished(sample(finished=False))


def test_within_length_caps_the_token_count():
    assert is_within_length(sample(tokens=128), 128)
    assert not is_within_length(sample(tokens=129), 128)


def test_not_repetitive_reads_the_repetition_score():
    assert is_not_repetitive(sample(repetition=-0.1), 0.5)
    assert not is_not_repetitive(sample(repetition=-0.8), 0.5)


def test_dedup_compares_normalised_text_within_a_prompt():
    kept = deduplicate(
        [
            sample("<think>\n7 + 5 = 12\n</think>", index=0),
            sample("<THINK> 7 + 5  = 12 </think>", index=0),  # same text up to case and whitespace
            sample("<think>\n7 + 5 = 12\n</think>", index=1),  # same text, another prompt
            sample("<think>\n5 + 7 = 12\n</think>", index=0),
        ]
    )
    assert [(s.prompt_index, s.completion) for s in kept] == [
        (0, "<think>\n7 + 5 = 12\n</think>"),
        (1, "<think>\n7 + 5 = 12\n</think>"),
        (0, "<think>\n5 + 7 = 12\n</think>"),
    ]


def test_per_prompt_cap_keeps_the_first_ones():
    kept = cap_per_prompt([sample(str(i), index=i % 2) for i in range(7)], 2)
    assert [s.completion for s in kept] == ["0", "1", "2", "3"]


# ------------------------------------------------------------------------------------------------------------------
# Scores from the rewards registry, on completions written by the task's personas


def right_chain(persona: str) -> str:
    """A chain of `persona` for NUMBERS whose answer is right (the personas slip now and then)."""
    chains = (PERSONAS[persona](NUMBERS, random.Random(seed)) for seed in range(100))
    return next(chain for chain in chains if chain.endswith(f"<answer>\n{sum(NUMBERS)}\n</answer>"))


def test_scores_remove_what_r1_removes_and_keep_a_careful_chain():
    careful = right_chain("careful")
    mixed = right_chain("mixed_language")
    assert "加" in mixed or "答案" in mixed  # a right answer, reasoned partly in Chinese
    wrong = "<think>\nThis is easy.\n</think>\n<answer>\n20\n</answer>"
    broken = f"{careful}\nThat was easy."  # right, but text after </answer> breaks the format
    looping = "<think>\n" + "7 + 5 = 12 and 12 + 9 = 21 " * 12 + "\n</think>\n<answer>\n21\n</answer>"
    samples = scored([careful, mixed, wrong, broken, looping])
    args = RejectionSamplingArguments(general_ratio=0.0, general_dataset_name=None, max_completion_tokens=128)

    assert samples[0].scores == {"accuracy": 1.0, "format": 1.0, "language_consistency": 1.0, "repetition": 0.0}
    assert not is_correct(samples[2])
    assert not is_well_formed(samples[3])
    assert not is_language_consistent(samples[1], args.min_language_consistency)
    assert not is_not_repetitive(samples[4], args.max_repeat_ratio)
    kept, removed = apply_filters(samples, args)
    assert [s.completion for s in kept] == [careful]
    assert removed["correct"] == 1 and removed["well_formed"] == 1
    assert removed["language_consistent"] == 1 and removed["not_repetitive"] == 1


def test_apply_filters_counts_each_removal_once_in_order():
    samples = [
        sample("a", accuracy=0.0, format=0.0),  # removed by `correct`, the first filter
        sample("b", accuracy=1.0, format=0.0),  # removed by `well_formed`
        sample("c", accuracy=1.0, format=1.0, language_consistency=1.0, repetition=0.0, tokens=300),
        sample("d", accuracy=1.0, format=1.0, language_consistency=1.0, repetition=0.0),
        sample("D", accuracy=1.0, format=1.0, language_consistency=1.0, repetition=0.0),
    ]
    args = RejectionSamplingArguments(general_ratio=0.0, general_dataset_name=None, max_completion_tokens=128)
    kept, removed = apply_filters(samples, args)
    assert [s.completion for s in kept] == ["d"]
    assert removed == {
        "correct": 1,
        "well_formed": 1,
        "language_consistent": 0,
        "finished": 0,
        "within_length": 1,
        "not_repetitive": 0,
        "readable": 0,
        "dedup": 1,
        "per_prompt_cap": 0,
    }
    assert list(removed) == list(FILTERS)


# ------------------------------------------------------------------------------------------------------------------
# Configuration, messages, mixing


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"filters": ["correct", "shiny"]}, "Unknown filter"),
        ({"general_ratio": 1.0}, "general_ratio"),
        ({"prompt_template": "jinja"}, "prompt_template"),
        ({"push_to_hub": True}, "hub_dataset_id"),
        ({"gold_answer_regex": "no group"}, "capture group"),
        ({"vocabulary_file": "no/such/words.txt"}, "vocabulary_file 'no/such/words.txt': no such file"),
    ],
)
def test_bad_arguments_fail_with_what_to_change(bad, message):
    with pytest.raises(ValueError, match=message):
        RejectionSamplingArguments(**bad)


def test_sampling_config_rejects_a_zero_temperature():
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=0.0)


def test_messages_append_the_completion_to_the_prompt():
    assert to_messages(PROMPT, "x") == [*PROMPT, {"role": "assistant", "content": "x"}]
    assert to_messages("plain prompt", "x") == [
        {"role": "user", "content": "plain prompt"},
        {"role": "assistant", "content": "x"},
    ]


@pytest.mark.parametrize("n_reasoning, ratio, expected", [(30, 0.25, 10), (30, 0.0, 0), (10, 0.5, 10)])
def test_general_count_makes_the_requested_share(n_reasoning, ratio, expected):
    assert general_count(n_reasoning, ratio) == expected


# ------------------------------------------------------------------------------------------------------------------
# Sampling and the whole recipe


def test_transformers_sampling_gives_k_samples_per_prompt_with_finish_flags(tiny_causal_lm_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recipes.lib.sampling import sample_with_transformers

    path = tiny_causal_lm_path("qwen2")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    prompts = [PROMPT, [{"role": "user", "content": "Hi"}], "plain text prompt"]
    samples = sample_with_transformers(
        model, tokenizer, prompts, SamplingConfig(num_generations=3, max_new_tokens=12, generation_batch_size=2)
    )
    assert [s.prompt_index for s in samples] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for s in samples:
        assert 1 <= s.num_tokens <= 12
        assert s.finished or s.num_tokens == 12  # an unfinished sample used the whole budget


def test_recipe_writes_and_pushes_a_scored_messages_dataset_with_filter_stats(tmp_path, monkeypatch):
    from datasets import Dataset
    from huggingface_hub import HfApi
    from trl import ModelConfig

    from recipes.rejection_sampling import main

    pushed = []
    monkeypatch.setattr(
        Dataset, "push_to_hub", lambda self, repo_id, **kw: pushed.append(("rows", repo_id, kw, len(self)))
    )
    monkeypatch.setattr(
        HfApi,
        "upload_file",
        lambda self, **kw: pushed.append(
            (
                "file",
                kw["repo_id"],
                kw["path_in_repo"],
                kw["repo_type"],
                json.loads(Path(kw["path_or_fileobj"]).read_text()),
            )
        ),
    )
    out = tmp_path / "rs"
    # 96 samples: enough that a base right a few percent of the time yields some to keep
    args = RejectionSamplingArguments(
        max_prompts=16,
        builtin_train_size=200,
        output_dir=str(out),
        general_ratio=0.25,
        max_completion_tokens=96,
        push_to_hub=True,
        hub_dataset_id="me/rs-data",
    )
    dataset = main(args, SamplingConfig(num_generations=6, max_new_tokens=96, trust_remote_code=True), ModelConfig())

    stats = json.loads((out / "filter_stats.json").read_text())
    assert stats["sampled"] == 96
    assert stats["sampled"] - sum(stats["removed"].values()) == stats["kept_reasoning"] > 0
    reloaded = load_from_disk(str(out))
    assert len(reloaded) == len(dataset) == stats["kept_reasoning"] + stats["general"]
    assert stats["general"] == general_count(stats["kept_reasoning"], 0.25)
    reasoning = reloaded.filter(lambda row: row["source"] == "reasoning")
    for row in reasoning:
        assert row["accuracy"] == 1.0 and row["format"] == 1.0 and row["language_consistency"] >= 0.95
        assert row["messages"][-1]["role"] == "assistant" and row["messages"][0]["content"] == R1_ZERO_SYSTEM_PROMPT
    assert len((out / "data.jsonl").read_text().splitlines()) == len(reloaded)
    assert json.loads((out / "stage.json").read_text())["stage"] == "rejection_sampling"

    assert pushed[0] == ("rows", "me/rs-data", {"private": False}, len(reloaded))
    assert [call[:4] for call in pushed[1:]] == [
        ("file", "me/rs-data", "filter_stats.json", "dataset"),
        ("file", "me/rs-data", "stage.json", "dataset"),
    ]
    assert pushed[1][4] == stats


def test_the_default_config_parses():
    from recipes.rejection_sampling import DEFAULT_CONFIG, make_parser

    script_args, sampling, _ = make_parser().parse_args_and_config(["--config", str(DEFAULT_CONFIG)])
    assert script_args.filters == list(FILTERS) and sampling.num_generations == 8


def test_a_rerun_into_finished_data_is_refused_unless_overwrite(tmp_path, monkeypatch):
    from recipes import rejection_sampling
    from recipes.lib.stage import RerunRefusedError

    out = tmp_path / "rs"
    out.mkdir()
    (out / "stage.json").write_text("{}")  # what a finished run leaves last
    argv = ["--output_dir", str(out), "--max_prompts", "2"]
    with pytest.raises(RerunRefusedError, match="holds finished data .*--overwrite true"):
        rejection_sampling.main(*rejection_sampling.parse_args(argv))

    def sampled(*args):
        raise RuntimeError("sampling started")

    monkeypatch.setattr(rejection_sampling, "sample_and_filter", sampled)
    with pytest.raises(RuntimeError, match="sampling started"):
        rejection_sampling.main(*rejection_sampling.parse_args([*argv, "--overwrite", "true"]))
