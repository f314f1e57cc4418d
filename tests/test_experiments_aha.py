"""experiments/aha_moment.py: the variant's personas behave as designed (a checker is always right, a guesser only
near), its splits keep held-out problems out of the corpus, and the experiment runs end to end at a tiny size."""

import importlib.util
import json
import random
import re
from pathlib import Path

import pytest

from recipes.lib.task import R1_FORMAT

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "aha_moment.py"
spec = importlib.util.spec_from_file_location("aha_moment", SCRIPT)
aha = importlib.util.module_from_spec(spec)
spec.loader.exec_module(aha)

ANSWER = re.compile(r"<answer>\n(\d+)\n</answer>$")


@pytest.fixture(scope="module")
def splits():
    return aha.make_splits(seed=0)


def test_splits_hold_out_test_and_validation_and_answer_right(splits):
    problems = {split: set(splits[split]["problem"]) for split in splits}
    assert len(problems["test"]) == aha.HELDOUT["test"] and len(problems["validation"]) == aha.HELDOUT["validation"]
    assert not (problems["test"] & problems["train"]) and not (problems["validation"] & problems["train"])
    assert not problems["test"] & problems["validation"]
    for row in splits["train"]:
        minuend, subtrahend = map(int, re.fullmatch(r"What is (\d+) - (\d+)\?", row["problem"]).groups())
        assert int(row["solution"]) == minuend - subtrahend and row["prompt"].endswith(row["problem"] + " Assistant: ")


@pytest.mark.parametrize("task", list(aha.VARIANTS))
def test_personas_behave_as_designed(task):
    rng, offsets = random.Random(0), aha.VARIANTS[task]
    answers = [(a, b) for a in aha.ANSWERS for b in aha.SUBTRAHENDS]
    checks = [aha.checker(a, b, rng, offsets) for a, b in answers]
    assert all(R1_FORMAT.fullmatch(c) and ANSWER.search(c).group(1) == str(a) for c, (a, _) in zip(checks, answers))
    assert all(aha.CHECK.search(c) for c in checks)
    wrong_first = sum("Wait," in c for c in checks) / len(checks)
    guesses = [int(ANSWER.search(aha.guesser(a, b, rng, offsets)).group(1)) - a for a, b in answers]
    assert set(guesses) == set(offsets)
    if task == "subtraction":
        assert 0.7 < wrong_first < 0.9  # four first guesses in five miss
    else:
        assert wrong_first == 1 and max(guesses) < 0  # every guess misses, low: the checker climbs to the answer
        assert all(c.count("Try ") <= 1 + len(offsets) for c in checks)  # at most 4 tries
    assert not any(R1_FORMAT.fullmatch(aha.format_breaker(a, b, rng, offsets)) for a, b in answers)


def test_corpus_uses_training_problems_at_the_persona_rates(splits):
    corpus = aha.make_corpus(splits["train"], 1000, aha.VARIANTS["subtraction"])
    assert {name: corpus["persona"].count(name) for name in aha.PERSONAS} == {
        name: round(rate * 1000) for name, rate in aha.PERSONA_RATES.items()
    }
    held_out = set(splits["test"]["problem"]) | set(splits["validation"]["problem"])
    assert not any(problem in text for text in corpus["text"] for problem in held_out)


def test_the_experiment_runs_end_to_end_at_a_tiny_size(tmp_path):
    work, results = tmp_path / "work", tmp_path / "results"
    results.mkdir()
    pretrain = "--max_steps 3 --drill_docs 50 --tokenizer_docs 100 --save_strategy no"
    grpo = "--max_steps 2 --per_device_train_batch_size 16 --eval_max_samples 8 --eval_r1_samples 0"
    aha.main(["run", "--tasks", "subtraction_low", "--seeds", "0", "--jobs", "1", "--corpus_size", "200", "--work",
              str(work), "--results", str(results), "--pretrain_flag", pretrain, "--flag", grpo])  # fmt: skip
    assert (work / "subtraction_low" / "base" / "model.safetensors").exists()
    aha.main(["report", "--tasks", "subtraction_low", "--work", str(work), "--results", str(results)])
    result = json.loads((results / "aha-moment.json").read_text())["subtraction_low"]
    assert result["seeds"] == [0]
    curves = result["curves"]
    assert [p["step"] for p in curves["accuracy"]] == [1, 2] == [p["step"] for p in curves["checking_rate"]]
    assert all(0 <= p["mean"] <= 1 for name in ("accuracy", "reflection_rate", "checking_rate") for p in curves[name])
    assert set(result["heldout"]) >= {"accuracy", "reflection_rate"} and (results / "aha-moment.png").exists()
