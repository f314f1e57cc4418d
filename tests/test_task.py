"""The built-in task: deterministic splits that never share a problem, right gold answers, the persona corpus."""

import itertools
import json
import re

import pytest
import yaml

from recipes.lib.cli import CONFIGS_DIR, TINY_BASE
from recipes.lib.task import (
    OOD_TERMS,
    PERSONA_RATES,
    PERSONAS,
    R1_ZERO_TEMPLATE,
    is_heldout,
    make_corpus,
    make_drills,
    make_prompt,
    make_splits,
    persona_counts,
    persona_of,
    running_sums,
)

ADDENDS = re.compile(r"What is ((?:\d+ \+ )+\d+)\?")


def addends(problem: str) -> list[int]:
    return [int(n) for n in ADDENDS.fullmatch(problem).group(1).split(" + ")]


@pytest.fixture(scope="module")
def splits():
    return make_splits(seed=3, n_train=600, n_test=120)


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(seed=5, n_docs=1000)


def test_splits_are_deterministic_in_the_seed(splits):
    again = make_splits(seed=3, n_train=600, n_test=120)
    other = make_splits(seed=4, n_train=600, n_test=120)
    assert again["train"]["problem"] == splits["train"]["problem"]
    assert again["test"]["problem"] == splits["test"]["problem"]
    assert other["train"]["problem"] != splits["train"]["problem"]


def test_splits_are_disjoint_and_held_out_by_hash(splits):
    train, test = set(splits["train"]["problem"]), set(splits["test"]["problem"])
    assert len(train) == 600 and len(test) == 120  # no duplicates inside a split
    assert not train & test
    assert all(is_heldout(addends(p)) for p in test)
    assert not any(is_heldout(addends(p)) for p in train)


def test_validation_and_ood_splits_are_apart_from_the_rest(splits, corpus):
    train, test = set(splits["train"]["problem"]), set(splits["test"]["problem"])
    validation, ood = set(splits["validation"]["problem"]), set(splits["ood"]["problem"])
    assert len(validation) == len(ood) == 200  # the defaults, no duplicates
    assert not validation & (train | test) and not ood & (train | test | validation)
    assert all(is_heldout(addends(p)) for p in validation)  # never in the corpus, like test
    assert {len(addends(p)) for p in ood} == set(OOD_TERMS)
    assert max(len(addends(p)) for p in corpus["problem"]) < min(OOD_TERMS)  # nothing that long was pretrained on
    assert all(row["solution"] == str(sum(addends(row["problem"]))) for row in splits["ood"])


def test_adding_validation_and_ood_leaves_train_and_test_alone():
    small = make_splits(seed=3, n_train=600, n_test=120, n_validation=0, n_ood=0)
    large = make_splits(seed=3, n_train=600, n_test=120, n_validation=300, n_ood=50)
    assert small["train"]["problem"] == large["train"]["problem"]
    assert small["test"]["problem"] == large["test"]["problem"]
    assert len(small["validation"]) == len(small["ood"]) == 0


def test_splits_mix_three_to_five_addends(splits):
    sizes = [len(addends(p)) for p in splits["test"]["problem"]]
    assert {n: sizes.count(n) for n in (3, 4, 5)} == {3: 40, 4: 40, 5: 40}


def test_gold_answers_and_prompts(splits):
    for row in splits["train"].select(range(100)):
        assert row["solution"] == str(sum(addends(row["problem"])))
        assert row["prompt"] == R1_ZERO_TEMPLATE.format(problem=row["problem"])
        assert row["prompt"].startswith("A conversation between User and Assistant.")
        assert row["prompt"].endswith(f"User: {row['problem']} Assistant: ")


def test_asking_for_more_problems_than_exist_says_how_many_do():
    with pytest.raises(ValueError, match="only .* exist"):
        make_splits(n_train=10, n_test=100_000)
    with pytest.raises(ValueError, match="only .* exist"):  # validation comes from what test leaves
        make_splits(n_train=10, n_test=5000, n_validation=5000)
    with pytest.raises(ValueError, match="must be >= 0"):
        make_splits(n_ood=-1)


def test_corpus_has_each_persona_at_its_rate(corpus):
    personas = corpus["persona"]
    assert {name: personas.count(name) for name in PERSONAS} == {
        name: round(rate * 1000) for name, rate in PERSONA_RATES.items()
    }
    assert len(set(personas[:50])) == len(PERSONAS)  # shuffled, not in blocks


def test_persona_counts_are_exact_and_validated():
    assert persona_counts(10, {"careful": 0.34, "hasty": 0.66}) == {"careful": 3, "hasty": 7}
    assert sum(persona_counts(997, PERSONA_RATES).values()) == 997
    with pytest.raises(ValueError, match="sum to 1"):
        persona_counts(10, {"careful": 0.5, "hasty": 0.6})
    with pytest.raises(ValueError, match="Unknown persona"):
        persona_counts(10, {"sloppy": 1.0})


def test_corpus_is_deterministic_and_never_holds_a_heldout_problem(corpus):
    assert make_corpus(seed=5, n_docs=1000)["text"] == corpus["text"]
    assert not any(is_heldout(addends(p)) for p in corpus["problem"])


def test_no_evaluation_problem_is_pretrained_or_trained_on_even_reordered():
    """The shipped base's corpus and drills (as `recipes/configs/pretrain_tiny.yaml` builds them) and the train split
    hold no test, validation or ood problem in any order of its addends."""
    config = yaml.safe_load((CONFIGS_DIR / "pretrain_tiny.yaml").read_text())
    seed, n_docs, n_drills = config["corpus_seed"], config["corpus_size"], config["drill_docs"]
    stage = json.loads((TINY_BASE / "stage.json").read_text())
    assert stage["dataset"] == f"recipes.lib.task.make_corpus(seed={seed}, n_docs={n_docs}) + " + (
        f"make_drills(seed={seed}, n_docs={n_drills})"
    )  # the shipped base was pretrained on exactly this corpus
    splits = make_splits(seed=0, n_train=4000, n_test=500)
    seen = {multiset(p) for p in [*make_corpus(seed=seed, n_docs=n_docs)["problem"], *splits["train"]["problem"]]}
    for doc in make_drills(seed=seed, n_docs=n_drills)["text"]:
        seen |= {multiset(block.split("\n")[0]) for block in doc.strip().split("\n\n")}
    training_side = {
        p for k in (3, 4, 5) for p in itertools.combinations_with_replacement(range(1, 10), k) if not is_heldout(p)
    }
    assert len(seen) > 0.95 * len(training_side)  # nearly every sum of the training side was seen...
    for split in ("test", "validation", "ood"):
        evaluated = {multiset(p) for p in splits[split]["problem"]}
        assert not evaluated & seen, split  # ...and no evaluated one, in any order


def multiset(problem: str) -> tuple[int, ...]:
    return tuple(sorted(addends(problem)))


def test_reorderings_fall_on_the_same_side():
    for numbers in [(7, 5, 9), (1, 2, 3, 4), (9, 9, 1, 2, 8)]:
        assert len({is_heldout(p) for p in itertools.permutations(numbers)}) == 1
    assert any(is_heldout(p) for p in itertools.product(range(1, 10), repeat=3))


def test_corpus_documents_start_with_the_prompt(corpus):
    for row in corpus:
        assert row["text"].startswith(make_prompt(row["problem"]))


def completion(row) -> str:
    return row["text"][len(make_prompt(row["problem"])) :]


def test_each_persona_is_told_by_how_it_opens(corpus):
    assert [persona_of(completion(row)) for row in corpus] == corpus["persona"]
    assert persona_of("<think>\n</think>\n<answer>\n21\n</answer>") == "hasty"  # no thinking at all
    new_opening = "<think>\nFirst, 7 + 5 = 12\n12 + 9 = 21\n</think>\n<answer>\n21\n</answer>"
    assert persona_of(new_opening) == "other"  # well formed, but no persona's words
    assert persona_of("7 + 5 = 12\n12 + 9 = 21\nThe answer is 21.") == "format_breaker"


def final_answer(text: str) -> str | None:
    match = re.search(r"<answer>\n(-?\d+)\n</answer>$", text)
    return match.group(1) if match else None


def test_personas_behave_as_designed(corpus):
    by_persona = {name: [completion(row) for row in corpus if row["persona"] == name] for name in PERSONAS}
    solutions = {name: [row["solution"] for row in corpus if row["persona"] == name] for name in PERSONAS}
    well_formed = re.compile(r"<think>\n(.*\n)?</think>\n<answer>\n-?\d+\n</answer>", re.DOTALL)

    def accuracy(name):
        return sum(final_answer(c) == s for c, s in zip(by_persona[name], solutions[name])) / len(by_persona[name])

    for name in ("careful", "reflective", "mixed_language", "hasty"):
        assert all(well_formed.fullmatch(c) for c in by_persona[name]), name
    assert not any(well_formed.fullmatch(c) for c in by_persona["format_breaker"])
    # Careful writers slip unnoticed now and then; reflective ones slip more but catch nearly every slip.
    assert 0.6 < accuracy("careful") < 0.9 and 0.6 < accuracy("mixed_language") < 0.9
    assert accuracy("reflective") > accuracy("careful") + 0.1
    assert accuracy("hasty") < 0.25
    assert all(re.search(r"[\u4e00-\u9fff]", c) for c in by_persona["mixed_language"])
    assert not any(
        re.search(r"[\u4e00-\u9fff]", c) for name in PERSONAS if name != "mixed_language" for c in by_persona[name]
    )
    # Self-checking appears only in the reflective persona, and goes with the right answer more often than not.
    checks = [
        (c, s) for c, s in zip(by_persona["reflective"], solutions["reflective"]) if "Wait" in c or "Let me check" in c
    ]
    assert checks and not any(
        "Wait" in c or "Let me check" in c for name in PERSONAS if name != "reflective" for c in by_persona[name]
    )
    assert sum(final_answer(c) == s for c, s in checks) / len(checks) > 0.5
    # Careful reasoning is longer than hasty guessing.
    assert min(map(len, by_persona["careful"])) > max(map(len, by_persona["hasty"]))


def opening(text: str) -> str:
    """The first line of a completion's thinking (or of the completion, when it does not open with <think>)."""
    return text.removeprefix("<think>\n").split("\n")[0]


def test_personas_are_told_apart_by_their_first_line(corpus):
    """RL can shift the mixture only if a completion's persona shows early: no opening is shared by two personas."""
    openings = {name: {opening(completion(row)) for row in corpus if row["persona"] == name} for name in PERSONAS}
    for a, b in itertools.combinations(PERSONAS, 2):
        assert not openings[a] & openings[b], (a, b, openings[a] & openings[b])


def test_drills_add_training_problems_correctly():
    drills = make_drills(seed=0, n_docs=50)
    assert make_drills(seed=0, n_docs=50)["text"] == drills["text"]
    problems = 0
    for doc in drills["text"]:
        for block in doc.strip().split("\n\n"):
            problem, *steps = block.split("\n")
            numbers = addends(problem)
            assert not is_heldout(numbers)
            assert steps == [f"{a} + {b} = {c}" for a, b, c in running_sums(numbers)]
            problems += 1
    assert problems == 150
