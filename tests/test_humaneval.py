"""HumanEval's 164 problems through the `code` reward, on every isolation usable here: each canonical completion
scores 1.0 and each broken one (the canonical result, perturbed) 0.0, never None. The adaptation of HumanEval to
stdin/stdout test cases is benchmarks/humaneval.py's; its CLI measures throughput."""

import importlib.util
from pathlib import Path

import pytest
from sandbox_backends import backend_params

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "humaneval.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("humaneval_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


humaneval = load_benchmark()


@pytest.fixture(scope="module")
def problems():
    return humaneval.load_problems()


@pytest.fixture(scope="module", params=backend_params())
def reward(request):
    reward = humaneval.make_reward(request.param, workers=2, timeout_s=5.0)
    yield reward
    reward.sandbox.close()


def wrong_scores(reward, problems, make_completion, expected: float) -> dict:
    """{task_id: score} of the completions that did not score `expected`."""
    scores = humaneval.score(reward, problems, make_completion)
    assert len(scores) == len(problems) == 164
    return {task: value for task, value in scores.items() if value != expected}


@pytest.mark.parametrize("value", [True, False, 0, -2.5, "", "a", [], [1, 2], (), ("a", None), {}, {"a": [1]}, None])
def test_perturbed_values_differ(value):
    assert humaneval.perturbed(value) != value


def test_canonical_completions_score_one(reward, problems):
    wrong = wrong_scores(reward, problems, humaneval.canonical_completion, 1.0)
    assert not wrong, f"{len(wrong)} canonical completions did not score 1.0 (task_id: score): {wrong}"


def test_broken_completions_score_zero(reward, problems):
    wrong = wrong_scores(reward, problems, humaneval.broken_completion, 0.0)
    assert not wrong, f"{len(wrong)} broken completions did not score 0.0 (task_id: score): {wrong}"
