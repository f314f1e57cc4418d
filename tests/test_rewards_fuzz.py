"""Property-based tests: every rule reward returns one finite float (or None where it skips) per completion, for
any completion, prompt, gold answer and token ids, within a bounded time per call. The worst time per call seen
over the fuzzing is printed at the end of the module (and asserted below PER_CALL_LIMIT_S).

reward_model and code have their own targeted tests (test_rewards_reward_model.py, test_sandbox.py).
"""

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewards import get_reward_func

PER_CALL_LIMIT_S = 5.0
MAX_EXAMPLES = 40

PATHOLOGICAL = [
    "\\frac{" * 10_000,
    "<answer>" + "\\frac{" * 10_000 + "</answer>",
    "<answer>10^{10^{10^{10}}}</answer>",
    "\\boxed{10^{10^{10^{10}}}}",
    "<think>x</think><answer>9^{9^{9^{9}}}!</answer>",
    "<answer>" + "(" * 5_000 + "</answer>",
    "<answer>" + "9" * 100_000 + "</answer>",
    "\\boxed{" + "{" * (1 << 20),
    "\\boxed{" * 100_000,
    "<think>" * 50_000 + "</think>" * 50_000,
    "<answer><answer>1</answer></answer>",
    "<think><answer></think></answer>",
    "a " * 500_000,
    "中" * 350_000,
    "x" * (1 << 20),
    bytes(range(256)) * 4096,
    "$" * 100_000,
    "\\(" * 100_000,
    "Step 1:\n" * 100_000,
    "\x00\ud800\udfff" * 1_000,
]
PIECES = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "\\boxed{",
    "{",
    "}",
    "\\frac{",
    "^{",
    "10",
    "0.5",
    "x",
    " ",
    "\n",
    "中文",
    "Ж",
    "α",
    "$",
    "\\",
    "Step 1:",
    "First,",
    "```python\n",
    "```",
]

texts = st.one_of(
    st.none(),
    st.text(max_size=300),
    st.binary(max_size=300),
    st.lists(st.sampled_from(PIECES), max_size=60).map("".join),
    st.sampled_from(PATHOLOGICAL),
)
completions = st.one_of(texts, texts.map(lambda t: [{"role": "assistant", "content": t}]))
golds = st.one_of(
    st.sampled_from(
        ["2", "0.5", "\\frac{1}{2}", "x^2", "not math", "", "10^{10^{10^{10}}}", "\\frac{" * 1_000, None, 7]
    ),
    st.text(max_size=40),
)
prompts = st.one_of(
    st.text(max_size=40),
    st.just("Assistant: <think>\n"),
    st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=20)}), min_size=1, max_size=2),
)
token_ids = st.one_of(st.lists(st.integers(0, 50), max_size=200), st.just([1] * 100_000))
batches = st.lists(st.tuples(completions, golds, prompts, token_ids), min_size=1, max_size=2)

# name -> (registry name, params, may return None)
FUZZED = {
    "accuracy": ("accuracy", {"timeout_s": 1.0}, True),
    "accuracy_exact": ("accuracy", {"mode": "exact"}, True),
    "cosine": ("cosine", {"max_len": 100, "timeout_s": 1.0}, True),
    "length": ("length", {"timeout_s": 1.0}, True),
    "format": ("format", {}, False),
    "tag_count": ("tag_count", {}, False),
    "reasoning_steps": ("reasoning_steps", {}, False),
    "language_consistency_en": ("language_consistency", {"language": "en"}, False),
    "language_consistency_zh": ("language_consistency", {"language": "zh"}, False),
    "repetition_words": ("repetition", {}, False),
    "repetition_tokens": ("repetition", {"unit": "tokens"}, False),
    "soft_overlong": ("soft_overlong", {"max_completion_len": 64, "soft_punish_cache": 16}, False),
}


@pytest.fixture(scope="module")
def worst_times(request):
    worst = {}
    yield worst
    lines = [f"  {name:28s} {seconds * 1000:8.1f} ms" for name, seconds in sorted(worst.items())]
    message = (
        "\nworst time per reward call (random batches of 1-2, and each pathological input alone):\n"
        + "\n".join(lines)
        + f"\n  overall worst: {max(worst.values(), default=0.0):.2f} s"
    )
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(message)


def check_output(out, n: int, may_skip: bool):
    assert len(out) == n
    for value in out:
        assert (value is None and may_skip) or (isinstance(value, float) and math.isfinite(value)), value


@pytest.mark.parametrize("case", list(FUZZED))
def test_pathological_inputs(case, worst_times):
    """Each pathological input alone (plain and conversational), against a math gold and a pathological gold."""
    name, params, may_skip = FUZZED[case]
    reward = get_reward_func(name, **params)
    key = f"{case} (pathological)"
    worst_times[key] = 0.0
    try:
        for text in PATHOLOGICAL:
            for completion, gold in ((text, "2"), ([{"role": "assistant", "content": text}], "\\frac{" * 1_000)):
                start = time.monotonic()
                out = reward(
                    prompts=["Assistant: <think>\n"],
                    completions=[completion],
                    completion_ids=[[3] * 70],
                    solution=[gold],
                )
                elapsed = time.monotonic() - start
                worst_times[key] = max(worst_times[key], elapsed)
                check_output(out, 1, may_skip)
                assert elapsed < PER_CALL_LIMIT_S, (repr(text[:40]), elapsed)
    finally:
        close(reward)


def close(reward):
    verifier = getattr(getattr(reward, "checker", None), "verifier", None)
    if verifier is not None:
        verifier.close()


@pytest.mark.parametrize("case", list(FUZZED))
def test_reward_is_total_and_bounded_in_time(case, worst_times):
    name, params, may_skip = FUZZED[case]
    reward = get_reward_func(name, **params)
    worst_times[case] = 0.0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(batch=batches)
    def check(batch):
        batch_completions, batch_golds, batch_prompts, batch_ids = (list(column) for column in zip(*batch))
        start = time.monotonic()
        out = reward(
            prompts=batch_prompts,
            completions=batch_completions,
            completion_ids=batch_ids,
            solution=batch_golds,
            trainer_state=None,
            log_extra=lambda *a: None,
            log_metric=lambda *a: None,
        )
        elapsed = time.monotonic() - start
        worst_times[case] = max(worst_times[case], elapsed)
        check_output(out, len(batch), may_skip)
        assert elapsed < PER_CALL_LIMIT_S

    try:
        check()
    finally:
        close(reward)
