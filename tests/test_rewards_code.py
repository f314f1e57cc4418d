"""The code reward: program extraction, test-case schema, scoring (hostile programs: tests/test_sandbox.py)."""

import json
import sys
import time

import pytest

from rewards import SandboxHarnessError, SandboxUnavailableError, check_columns, get_reward_func
from rewards import sandbox as sandbox_module
from rewards.execution import extract_program, parse_test_cases, same_output

CASES = [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10"}, {"input": "0 0\n", "output": "0\n"}]
SUM = "a, b = map(int, input().split())\nprint(a + b)"


def answer(program: str) -> str:
    return f"<think>sum the two numbers</think>\n<answer>\n```python\n{program}\n```\n</answer>"


@pytest.fixture(scope="module")
def code():
    reward = get_reward_func("code", timeout_s=3.0, max_workers=2)
    yield reward
    reward.sandbox.close()


def test_extract_program():
    assert extract_program(answer(SUM)) == SUM + "\n"
    two_blocks = "```python\nprint(1)\n```\ntext\n```py\nprint(2)\n```"
    assert extract_program(two_blocks) == "print(2)\n"
    assert extract_program("<think>```python\nprint('thinking')\n```</think>print(3)") == "print(3)"
    assert extract_program(None) == ""


def test_parse_test_cases_schema():
    assert parse_test_cases(CASES) == [("1 2\n", "3\n"), ("5 5\n", "10"), ("0 0\n", "0\n")]
    assert parse_test_cases(json.dumps(CASES)) == parse_test_cases(CASES)
    assert parse_test_cases({"language": "python", "test_cases": CASES}) == parse_test_cases(CASES)
    for bad in (None, "", "not json", [], [{"input": "1"}], [{"output": 3}], {"cases": CASES}, 7):
        assert parse_test_cases(bad) is None, bad
    assert same_output("3  \n\n", "3") and not same_output("3 4", "34")


def test_scores(code):
    completions = [
        answer(SUM),  # passes all three
        answer("a, b = map(int, input().split())\nprint(a * b)"),  # passes only 0 0 -> 0
        answer("print(("),  # syntax error
        "<think>no code</think><answer>I do not know</answer>",  # prose runs as Python: error
        None,
        [{"role": "assistant", "content": answer(SUM)}],  # conversational
    ]
    out = code(completions=completions, test_cases=[CASES] * 6)
    assert out == pytest.approx([1.0, 1 / 3, 0.0, 0.0, 0.0, 1.0])


def test_all_or_nothing_and_unusable_tests():
    reward = get_reward_func("code", scoring="all", timeout_s=3.0, max_workers=2)
    product = answer("a, b = map(int, input().split())\nprint(a * b)")
    out = reward(completions=[answer(SUM), product, answer(SUM)], test_cases=[CASES, CASES, "broken json"])
    assert out == [1.0, 0.0, None]
    with pytest.raises(ValueError, match="scoring must be one of"):
        get_reward_func("code", scoring="some")


def test_timeout_stops_remaining_cases(code):
    slow = answer("import time\ntime.sleep(60)")
    start = time.monotonic()
    [score] = code(completions=[slow], test_cases=[CASES])
    assert score == 0.0
    assert time.monotonic() - start < 2 * code.sandbox.config.timeout_s  # one timeout, not one per case


def test_required_column():
    reward = get_reward_func("code", column="verification_info")
    with pytest.raises(ValueError, match="reward 'code' needs the dataset column 'verification_info'"):
        check_columns([reward], ["prompt", "test_cases"])


def test_no_real_isolation_refuses_to_run(monkeypatch, caplog):
    """Fail closed: where no backend works, the reward cannot be built (before training) and says how to fix it;
    'audit' runs only when named, with a warning."""
    monkeypatch.setattr(sandbox_module, "backend_unavailable", lambda backend, python: f"{backend} is off in this test")
    for isolation in ("auto", "bubblewrap", "namespaces"):
        with pytest.raises(SandboxUnavailableError, match="apt install bubblewrap") as error:
            get_reward_func("code", isolation=isolation)
        assert "is off in this test" in str(error.value)
    with caplog.at_level("WARNING", logger="rewards.sandbox"):
        audit = get_reward_func("code", isolation="audit", timeout_s=3.0, max_workers=1)
    assert "not an isolation" in caplog.text
    assert audit(completions=[answer(SUM)], test_cases=[CASES]) == [1.0]
    audit.sandbox.close()


def test_a_missing_bwrap_is_reported(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert sandbox_module.backend_unavailable.__wrapped__("bubblewrap", sys.executable) == "bwrap is not installed"


def test_harness_failures_are_counted_and_raise_past_the_rate(code, monkeypatch, caplog):
    """A run whose program never started (here: a view naming a path that does not exist, so the backend cannot
    build it) is the harness's failure: None, counted, logged, and an error once they pass the rate."""
    view = sandbox_module.interpreter_view(code.sandbox.config.python)
    broken = {**view, "read_only": [*view["read_only"], "/nonexistent-path-for-this-test"]}
    monkeypatch.setattr(sandbox_module, "interpreter_view", lambda python: broken)
    reward = get_reward_func("code", timeout_s=3.0, max_workers=2, isolation=code.isolation)
    with caplog.at_level("WARNING", logger="rewards.execution"):
        assert reward(completions=[answer(SUM)] * 2, test_cases=[CASES] * 2) == [None, None]
    assert (reward.samples, reward.harness_failures) == (2, 2)
    assert caplog.text.count("harness failure") == 2
    with pytest.raises(SandboxHarnessError, match="failed on 4 of 4 samples"):
        reward(completions=[answer(SUM)] * 2, test_cases=[CASES] * 2)
    reward.sandbox.close()
