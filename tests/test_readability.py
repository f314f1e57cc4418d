"""Readability: the built-in task's vocabulary, misspelled reasoning words, opening lines, the held-out metric and the
`readable` filter of rejection sampling."""

import random

from recipes.lib.evaluation import score_completions
from recipes.lib.filters import Sample, apply_filters
from recipes.lib.general_chat import make_general_chat, make_preference_pairs
from recipes.lib.readability import builtin_vocabulary, opener, top_openers, unknown_words, vocabulary_of
from recipes.lib.sampling import RejectionSamplingArguments
from recipes.lib.task import PERSONAS, make_cold_start, make_corpus

TYPO = "<think>\nAdding from left to rime.\n3 + 4 = 7\n</think>\n<answer>\n7\n</answer>"
CLEAN = "<think>\nAdding from left to right.\n3 + 4 = 7\n</think>\n<answer>\n7\n</answer>"


def test_the_builtin_vocabulary_holds_every_word_of_larger_samples_of_the_task_s_data():
    more = vocabulary_of(
        [
            *make_corpus(seed=1, n_docs=12000)["text"],
            *(m["content"] for messages in make_cold_start(2000, seed=1)["messages"] for m in messages),
            *(m["content"] for messages in make_general_chat(2000, seed=1)["messages"] for m in messages),
            *(m["content"] for turn in make_preference_pairs(2000, seed=1)["rejected"] for m in turn),
        ]
    )
    assert more == builtin_vocabulary()
    assert {"adding", "right", "wait", "答", "加"} <= builtin_vocabulary() and "rime" not in builtin_vocabulary()


def test_every_persona_reasons_in_the_vocabulary_and_a_misspelling_is_named():
    vocabulary = builtin_vocabulary()
    for name, persona in PERSONAS.items():
        assert all(not unknown_words(persona((3, 4, 8), random.Random(seed)), vocabulary) for seed in range(50)), name
    assert unknown_words(TYPO, vocabulary) == ["rime"]
    assert unknown_words(CLEAN + " zzyzx", vocabulary) == []  # after </think>: the answer, not the reasoning
    assert unknown_words("Adding frm left", vocabulary) == ["frm"]  # no tags: the whole text is the reasoning


def test_openers_are_the_first_reasoning_lines_by_frequency():
    assert opener(TYPO) == "Adding from left to rime." and opener("<think>\n\n</think>") == ""
    assert top_openers([TYPO, TYPO, CLEAN, "<think>\nLet me think.\n</think>"], k=2) == [
        ("Adding from left to rime.", 0.5),
        ("Adding from left to right.", 0.25),
    ]


def test_the_heldout_metrics_count_completions_with_an_unknown_word_given_a_vocabulary():
    prompts, solutions = ["What is 3 + 4?"] * 4, ["7"] * 4
    metrics = score_completions(prompts, [TYPO, CLEAN, CLEAN, CLEAN], solutions, vocabulary=builtin_vocabulary())
    assert metrics["unknown_word_rate"] == 0.25 and metrics["accuracy"] == 1.0
    assert "unknown_word_rate" not in score_completions(prompts, [TYPO] * 4, solutions)


def kept(texts: list[str], **arguments) -> list[str]:
    samples = [Sample(prompt_index=i, completion=t, num_tokens=10, finished=True) for i, t in enumerate(texts)]
    args = RejectionSamplingArguments(filters=["readable"], general_ratio=0.0, general_dataset_name=None, **arguments)
    return [s.completion for s in apply_filters(samples, args)[0]]


def test_the_readable_filter_drops_a_misspelled_sample_with_the_task_s_or_a_given_vocabulary(tmp_path):
    assert kept([TYPO, CLEAN]) == [CLEAN]  # the built-in task: its vocabulary
    words = tmp_path / "words.txt"
    words.write_text("adding\nfrom\nleft\nto\nrime\n")
    assert kept([TYPO, CLEAN], dataset_name="me/data", vocabulary_file=str(words)) == [TYPO]
    assert kept([TYPO, CLEAN], dataset_name="me/data") == [TYPO, CLEAN]  # no vocabulary known: nothing to judge by
