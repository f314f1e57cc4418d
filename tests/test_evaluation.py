"""recipes/lib/evaluation.py: the held-out metrics on hand-written completions, batched generation, the table."""

import math

import pytest
import torch

from recipes.lib.evaluation import (
    evaluate_heldout,
    evaluate_protocols,
    format_comparison_table,
    generate_completions,
    is_reflective,
    score_completions,
)
from recipes.lib.task import make_prompt, make_splits

PROBLEM = "What is 7 + 5 + 9?"
CORRECT = "<think>\nLet me add.\n7 + 5 = 12\n12 + 9 = 21\n</think>\n<answer>\n21\n</answer>"
WRONG = "<think>\nThis is easy.\n</think>\n<answer>\n20\n</answer>"
NO_TAGS = "7 + 5 = 12\n12 + 9 = 21\nThe answer is 21."
CORRECT_UNTAGGED = "7 + 5 = 12, 12 + 9 = 21: \\boxed{21}"  # right, but not in R1's format
CHINESE = "<think>\n我们 相加.\n7 加 5 等于 12\n12 + 9 = 21\n</think>\n<answer>\n21\n</answer>"
REFLECTIVE = (
    "<think>\nLet me think.\n7 + 5 = 13\nWait, 7 + 5 = 12, not 13.\n12 + 9 = 21\n</think>\n<answer>\n21\n</answer>"
)


def score(completions):
    return score_completions(
        [make_prompt(PROBLEM)] * len(completions),
        completions,
        ["21"] * len(completions),
        completion_tokens=list(range(1, len(completions) + 1)),
    )


def test_metrics_of_hand_written_completions():
    assert score([CORRECT]) == {
        "accuracy": 1.0,
        "format_compliance": 1.0,
        "correct_and_well_formed": 1.0,
        "language_consistency": 1.0,
        "reflection_rate": 0.0,
        "mean_completion_tokens": 1.0,
    }
    wrong = score([WRONG])
    assert wrong["accuracy"] == 0.0 and wrong["format_compliance"] == 1.0
    no_tags = score([NO_TAGS])
    assert no_tags["accuracy"] == 0.0 and no_tags["format_compliance"] == 0.0
    assert math.isnan(no_tags["language_consistency"])  # no reasoning block: nothing to judge
    chinese = score([CHINESE])
    assert chinese["accuracy"] == 1.0 and chinese["format_compliance"] == 1.0
    assert chinese["language_consistency"] == pytest.approx(0.0)  # "我们 相加 加 等于": 6 Han words, no English word
    reflective = score([REFLECTIVE])
    assert reflective["reflection_rate"] == 1.0 and reflective["accuracy"] == 1.0


def test_metrics_average_over_completions():
    metrics = score([CORRECT, WRONG, NO_TAGS, CHINESE, REFLECTIVE, CORRECT_UNTAGGED])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["format_compliance"] == pytest.approx(4 / 6)
    assert metrics["correct_and_well_formed"] == pytest.approx(3 / 6)
    assert metrics["reflection_rate"] == pytest.approx(1 / 6)
    assert metrics["mean_completion_tokens"] == pytest.approx(3.5)
    # Mean over the four completions with worded reasoning: CORRECT, WRONG, REFLECTIVE are English, CHINESE is not.
    assert metrics["language_consistency"] == pytest.approx(3 / 4)


def test_reflection_phrases_match_whole_words_ignoring_case():
    assert is_reflective("Wait, 12 + 9 = 21.")
    assert is_reflective("so LET ME CHECK that")
    assert not is_reflective("I await the answer.")
    assert not is_reflective("12 + 9 = 21")
    assert is_reflective("Hmm, hold on.", phrases=["hold on"])
    assert not is_reflective("Wait.", phrases=["hold on"])


def test_comparison_table_shows_percent_points_and_counts():
    before = {"accuracy": 0.3, "format_compliance": 0.7, "mean_completion_tokens": 30.0}
    after = {"accuracy": 0.85, "format_compliance": 0.99, "mean_completion_tokens": 42.5}
    table = format_comparison_table(before, after)
    assert "| accuracy | 30.0% | 85.0% | +55.0 pts |" in table
    assert "| format_compliance | 70.0% | 99.0% | +29.0 pts |" in table
    assert "| mean_completion_tokens | 30.0 | 42.5 | +12.5 |" in table


def test_several_samples_per_problem_give_pass1_and_its_standard_error():
    # Problem 0: one of two samples right; problem 1: both right. pass@1 = (0.5 + 1) / 2; per-problem scores
    # 0.5 and 1.0 have sample variance 0.125, so the standard error is sqrt(0.125 / 2) = 0.25.
    metrics = score_completions(
        [make_prompt(PROBLEM)] * 4, [CORRECT, WRONG, CORRECT, REFLECTIVE], ["21"] * 4, samples_per_problem=2
    )
    assert metrics["accuracy"] == pytest.approx(0.75) and metrics["accuracy_stderr"] == pytest.approx(0.25)
    assert "accuracy_stderr" not in score([CORRECT, WRONG])  # only when asked for
    with pytest.raises(ValueError, match="runs of samples_per_problem=2"):
        score_completions([make_prompt(PROBLEM)] * 3, [CORRECT] * 3, ["21"] * 3, samples_per_problem=2)
    table = format_comparison_table(
        {"accuracy": 0.5, "accuracy_stderr": 0.02}, {"accuracy": 0.9, "accuracy_stderr": 0.0125}
    )
    assert "| accuracy | 50.0% ± 2.0 | 90.0% ± 1.2 | +40.0 pts |" in table
    assert "stderr" not in table  # shown next to its metric, not as a row of its own


class ScriptedLM(torch.nn.Module):
    """A stand-in causal LM for `generate_completions`: always writes `script`, then end-of-text, then padding.

    It records the batches it is given, so the test can check left padding and batching.
    """

    def __init__(self, script_ids: list[int], eos_id: int, pad_id: int):
        super().__init__()
        self.script, self.eos, self.pad = script_ids + [eos_id], eos_id, pad_id
        self.device = torch.device("cpu")
        self.batches = []

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, eos_token_id, **sampling):
        self.batches.append((input_ids, attention_mask, sampling))
        new = (self.script + [pad_token_id] * max_new_tokens)[:max_new_tokens]
        return torch.cat([input_ids, torch.tensor([new] * len(input_ids))], dim=1)


@pytest.fixture(scope="module")
def tokenizer():
    from recipes.lib.task import make_corpus
    from recipes.pretrain import build_tokenizer

    return build_tokenizer(make_corpus(seed=0, n_docs=200)["text"])


def test_generation_is_batched_left_padded_and_cut_at_eos(tokenizer):
    script = tokenizer(CORRECT, add_special_tokens=False)["input_ids"]
    model = ScriptedLM(script, tokenizer.eos_token_id, tokenizer.pad_token_id)
    prompts = [make_prompt("What is 1 + 2 + 3?"), make_prompt("What is 10 + 20 + 30 + 40 + 50?"), make_prompt(PROBLEM)]
    texts, lengths = generate_completions(model, tokenizer, prompts, max_new_tokens=len(script) + 5, batch_size=2)
    assert texts == [CORRECT] * 3
    assert lengths == [len(script) + 1] * 3  # the end-of-text token counts
    assert [len(ids) for ids, _, _ in model.batches] == [2, 1]
    first_ids, first_mask, sampling = model.batches[0]
    assert first_mask[0, 0] == 0 and first_mask[0, -1] == 1  # the shorter prompt is padded on the left
    assert sampling == {"do_sample": False}
    texts, lengths = generate_completions(model, tokenizer, prompts[:1], max_new_tokens=4, greedy=False)
    assert lengths == [4] and texts == [tokenizer.decode(script[:4])]  # unfinished: cut at the budget
    assert model.batches[-1][2] == {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


def test_bad_arguments_say_what_to_change(tokenizer):
    model = ScriptedLM([], tokenizer.eos_token_id, tokenizer.pad_token_id)
    with pytest.raises(ValueError, match="temperature > 0"):
        generate_completions(model, tokenizer, ["x"], max_new_tokens=4, greedy=False, temperature=0.0)
    with pytest.raises(ValueError, match="0 < top_p <= 1"):
        generate_completions(model, tokenizer, ["x"], max_new_tokens=4, greedy=False, top_p=0.0)
    with pytest.raises(ValueError, match="r1_samples must be >= 0"):
        evaluate_protocols(model, tokenizer, make_splits(n_train=0, n_test=3)["test"], r1_samples=-1)
    with pytest.raises(ValueError, match="columns"):
        evaluate_heldout(model, tokenizer, make_splits(n_train=0, n_test=3)["test"].remove_columns("solution"))


def test_evaluate_heldout_scores_a_scripted_model(tokenizer):
    """A model that always answers 21 is right exactly on the held-out problems whose sum is 21."""
    test = make_splits(seed=0, n_train=0, n_test=30)["test"]
    model = ScriptedLM(
        tokenizer(CORRECT, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id, tokenizer.pad_token_id
    )
    metrics = evaluate_heldout(model, tokenizer, test, max_new_tokens=64)
    assert metrics["accuracy"] == pytest.approx(test["solution"].count("21") / 30)
    assert metrics["format_compliance"] == 1.0 and metrics["reflection_rate"] == 0.0


def test_evaluate_heldout_answers_each_problem_k_times(tokenizer):
    test = make_splits(seed=0, n_train=0, n_test=5)["test"]
    model = ScriptedLM(
        tokenizer(CORRECT, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id, tokenizer.pad_token_id
    )
    metrics = evaluate_heldout(
        model, tokenizer, test, max_new_tokens=64, greedy=False, samples_per_problem=3, batch_size=4
    )
    assert sum(len(ids) for ids, _, _ in model.batches) == 15
    assert metrics["accuracy"] == pytest.approx(test["solution"].count("21") / 5)
    assert metrics["accuracy_stderr"] >= 0.0
    with pytest.raises(ValueError, match="1 with greedy"):
        evaluate_heldout(model, tokenizer, test, greedy=True, samples_per_problem=2)


def test_both_protocols_greedy_and_r1s_pass_at_1(tokenizer):
    """Greedy metrics, then k samples per problem at R1's T=0.6, top-p 0.95 for pass@1; k=0 measures greedy only."""
    test = make_splits(seed=0, n_train=0, n_test=6)["test"]
    model = ScriptedLM(
        tokenizer(CORRECT, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id, tokenizer.pad_token_id
    )
    metrics = evaluate_protocols(model, tokenizer, test, max_new_tokens=64, r1_samples=3, batch_size=64)
    assert [(len(ids), sampling) for ids, _, sampling in model.batches] == [
        (6, {"do_sample": False}),
        (18, {"do_sample": True, "temperature": 0.6, "top_k": 0, "top_p": 0.95}),
    ]
    share_21 = test["solution"].count("21") / 6
    assert metrics["accuracy"] == pytest.approx(share_21) and metrics["pass@1"] == pytest.approx(share_21)
    assert metrics["pass@1_stderr"] >= 0.0 and metrics["format_compliance"] == 1.0
    assert "| pass@1 |" in format_comparison_table(metrics, metrics)
    model.batches.clear()
    greedy_only = evaluate_protocols(model, tokenizer, test, max_new_tokens=64, r1_samples=0)
    assert "pass@1" not in greedy_only and len(model.batches) == 1
