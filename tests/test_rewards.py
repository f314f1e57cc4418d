"""Correct, wrong and malformed cases for every rule-based reward, the text helpers, and the registry."""

import asyncio
import math
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import rewards
from rewards import check_columns, completion_text, extract_answer, extract_think, get_reward_func, get_reward_funcs
from rewards import verifier as verifier_module
from rewards.verifier import MathVerifier, normalize_exact

pytestmark = pytest.mark.canary  # also run against the newest allowed releases (.ci/run)

GOOD = "<think>\nFirst, 1 + 1 = 2.\n</think>\n<answer>\n2\n</answer>"


def conversational(texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


@pytest.fixture(scope="module")
def accuracy():
    reward = get_reward_func("accuracy", timeout_s=2.0)
    yield reward
    reward.checker.verifier.close()


# ---------------------------------------------------------------- text helpers


def test_completion_text_shapes():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "conv"}]) == "conv"
    assert (
        completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image"}]}]) == "a"
    )
    assert completion_text([{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]) == "y"
    assert completion_text(b"\xff\xfebytes") == "\ufffd\ufffdbytes"
    for junk in (None, 3, [None, 1], {"content": None}, object()):
        assert completion_text(junk) == ""


def test_extract_answer_and_think():
    assert extract_answer(GOOD) == "2"
    assert extract_answer("so \\boxed{\\frac{1}{2}} and finally \\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert extract_answer("<answer>1</answer> then <answer>3</answer>") == "3"
    assert extract_answer("\\boxed{unclosed") is None
    assert extract_answer("no answer here") is None
    assert extract_think(GOOD) == "\nFirst, 1 + 1 = 2.\n"
    assert extract_think("prefilled thoughts</think><answer>1</answer>") == "prefilled thoughts"
    assert extract_think("<think>never closed") == "never closed"
    assert extract_think("no tags") is None


# ---------------------------------------------------------------- accuracy


def test_accuracy_math(accuracy):
    completions = [
        "<think>x</think><answer>\\frac{1}{2}</answer>",  # correct, LaTeX vs decimal gold
        "The answer is \\boxed{0.5}.",  # correct, boxed fallback
        "<answer>0.25</answer>",  # wrong
        "<answer></answer>",  # empty answer
        "no answer at all",  # nothing extracted
        "<answer>0.5</answer>",  # gold unparseable -> skip
    ]
    golds = ["0.5"] * 5 + ["not math at all"]
    assert accuracy(completions=completions, solution=golds) == [1.0, 1.0, 0.0, 0.0, 0.0, None]
    assert accuracy(completions=conversational(completions), solution=golds) == [1.0, 1.0, 0.0, 0.0, 0.0, None]


# What the default check credits, for an integer gold and for a math gold; every case the review found gamed.
INTEGER_GOLD_CASES = {
    "<answer>21</answer>": 1.0,
    "<think>7 + 5 + 9</think>\n<answer>\n21\n</answer>": 1.0,
    "<answer>+21</answer>": 1.0,
    "The sum is \\boxed{21}.": 1.0,  # a boxed answer outside any think block
    "<answer>7 + 5 + 9</answer>": 0.0,  # an expression
    "<answer>20 = 21</answer>": 0.0,  # an equation
    "<answer>21%</answer>": 0.0,  # a percent sign
    "\\boxed{21\\%}": 0.0,
    "<answer>21 apples</answer>": 0.0,  # a unit
    "<answer>not sure between 13 and 21</answer>": 0.0,  # several candidates, in prose
    "<answer>20 21</answer>": 0.0,
    "<answer>candidates are 0 1 2 3 21</answer>": 0.0,
    "<answer>13 percent of 21</answer>": 0.0,  # prose is not reduced to its last number
    "<think>maybe \\boxed{21} or 13": 0.0,  # inside an unclosed think block
    "<think>so <answer>21</answer></think> <answer>13</answer>": 0.0,  # only the final answer counts
    "21": 0.0,  # no answer slot
    "<answer>21.0</answer>": 0.0,  # not an integer literal
    "<answer>2,1</answer>": 0.0,  # not thousands separators
}


def test_integer_golds_credit_a_single_final_integer(accuracy):
    completions = list(INTEGER_GOLD_CASES)
    scores = accuracy(completions=completions, solution=["21"] * len(completions))
    assert dict(zip(completions, scores)) == INTEGER_GOLD_CASES
    assert accuracy(completions=["<answer>1,021</answer>", "<answer>-3</answer>"], solution=["1021", "-3"]) == [1, 1]
    math_mode = get_reward_func("accuracy", mode="math")  # the lenient check, by name
    assert math_mode(completions=["<answer>7 + 5 + 9</answer>"], solution=["21"]) == [1.0]


def test_math_golds_refuse_prose_and_hedges(accuracy):
    cases = {
        "<answer>\\frac{1}{2}</answer>": 1.0,
        "<answer>$0.5$</answer>": 1.0,
        "\\boxed{\\dfrac{1}{2}}": 1.0,
        "<answer>The answer is 0.5</answer>": 0.0,
        "<answer>0.4 or 0.5</answer>": 0.0,
        "<answer>0.5 \\text{ or } 0.4</answer>": 0.0,
        "<answer>0.5, 0.4</answer>": 0.0,
        "<answer>0.5\\text{ cm}</answer>": 0.0,  # a unit written as a word: give the value
        "<think>\\boxed{0.5}": 0.0,
    }
    scores = accuracy(completions=list(cases), solution=["0.5"] * len(cases))
    assert dict(zip(cases, scores)) == cases
    assert accuracy(completions=["<answer>\\text{Devon}</answer>"], solution=["\\text{Devon}"]) == [1.0]


def test_accuracy_exact_mode_and_pattern():
    reward = get_reward_func("accuracy", mode="exact")
    completions = ["<answer> Paris. </answer>", "<answer>\\text{paris}</answer>", "<answer>Lyon</answer>", None]
    assert reward(completions=completions, solution=["paris"] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert reward(completions=["<answer>x</answer>"], solution=[""]) == [None]
    pattern = get_reward_func("accuracy", mode="exact", answer_pattern=r"ANSWER:\s*(\w+)")
    assert pattern(completions=["ANSWER: no\nANSWER: yes", "yes"], solution=["yes", "yes"]) == [1.0, 0.0]
    assert normalize_exact("  $\\text{New   York}$!  ") == "new york"


def test_accuracy_off_the_main_thread_and_in_an_event_loop(accuracy):
    """TRL runs async reward functions on an event-loop thread, where SIGALRM timeouts cannot work."""
    results = []
    thread = threading.Thread(target=lambda: results.append(accuracy(completions=["\\boxed{3}"], solution=["3"])))
    thread.start()
    thread.join()

    async def call():
        return accuracy(completions=["\\boxed{4}"], solution=["3"])

    assert results == [[1.0]]
    assert asyncio.run(call()) == [0.0]


def test_verifier_bounds_time_on_pathological_answers():
    verifier = MathVerifier(timeout_s=1.0, num_workers=1)
    try:
        assert verifier([("5", "5")]) == [True]  # warm: the worker has started
        start = time.monotonic()
        assert verifier([("5", "10^{10^{10^{10}}}"), ("5", "\\frac{" * 5000)]) == [False, False]
        assert time.monotonic() - start < 2 * 1.0
        assert verifier([("\\frac{" * 5000, "1")]) == [None]  # a gold that cannot be parsed in time is skipped
    finally:
        verifier.close()


def test_verifier_kills_a_worker_that_stops_answering(tmp_path, monkeypatch):
    """The hard bound: a worker stuck where no signal reaches it is killed at timeout_s and replaced."""
    stuck = tmp_path / "stuck_worker.py"
    stuck.write_text(
        "import signal, sys, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])\n"
        "print('ready', flush=True)\nsys.stdin.readline()\ntime.sleep(600)\n"
    )
    monkeypatch.setattr(verifier_module, "WORKER_SCRIPT", stuck)
    verifier = MathVerifier(timeout_s=1.0, num_workers=1)
    try:
        start = time.monotonic()
        assert verifier([("5", "5")]) == [False]
        assert time.monotonic() - start < 1.0 + 2.0  # the stub's start-up plus the timeout
        [worker] = verifier._workers
        first = worker.process
        assert verifier([("6", "6")]) == [False]
        assert first.poll() is not None and worker.process is not first  # killed and replaced
    finally:
        verifier.close()


# ---------------------------------------------------------------- format, tag_count, reasoning_steps


def test_format():
    reward = get_reward_func("format")
    completions = [
        GOOD,
        "<think>a</think>  <answer>b</answer>\n",
        "<think>a</think><answer>b</answer> trailing text",
        "<answer>b</answer><think>a</think>",
        "<think>a<think>b</think></think><answer>c</answer>",
        "<think>a</think><answer>b</answer><answer>c</answer>",
        "<think>a</think>",
        "",
    ]
    assert reward(completions=completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert reward(completions=conversational(completions[:3])) == [1.0, 1.0, 0.0]


def test_format_when_the_prompt_opens_the_think_block():
    reward = get_reward_func("format")
    inside = "reasoning\n</think>\n<answer>4</answer>"
    assert reward(prompts=["Q: 2+2?\nAssistant: <think>\n"], completions=[inside]) == [1.0]
    assert reward(prompts=["Q: 2+2?"], completions=[inside]) == [0.0]
    conv_prompt = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>"}]
    assert reward(prompts=[conv_prompt], completions=conversational([inside])) == [1.0]
    # the model re-opening the block after the prompt opened it is malformed
    assert reward(prompts=["<think>"], completions=["<think>" + inside]) == [0.0]
    assert get_reward_func("format", think_prefilled=True)(completions=[inside]) == [1.0]


def test_tag_count():
    reward = get_reward_func("tag_count")
    assert reward(completions=[GOOD, "<think>\nonly thinking", "", "<think>\n<think>\n"]) == [1.0, 0.25, 0.0, 0.0]
    assert reward(prompts=["<think>\n"], completions=["x\n</think>\n<answer>\n1\n</answer>"]) == [1.0]


def test_reasoning_steps():
    reward = get_reward_func("reasoning_steps")
    steps = "Step 1: read.\nStep 2: add.\nStep 3: check."
    listed = "Plan:\n1. read\n2. add"
    assert reward(completions=[steps, listed, "just an answer", None]) == [1.0, 2 / 3, 0.0, 0.0]


# ---------------------------------------------------------------- language consistency


def test_language_consistency_english_and_chinese():
    english = get_reward_func("language_consistency", language="en")
    chinese = get_reward_func("language_consistency", language="zh")
    pure_en = "<think>We add the two numbers and check the result.</think><answer>5</answer>"
    mixed = "<think>We add 两个 numbers 然后 check the result.</think><answer>5</answer>"
    pure_zh = "<think>我们把两个数相加。</think><answer>5</answer>"
    en, zh = english(completions=[pure_en, mixed, pure_zh]), chinese(completions=[pure_en, mixed, pure_zh])
    assert en[0] == 1.0 and 0.0 < en[1] < 1.0 and en[2] == 0.0
    assert zh[0] == 0.0 and 0.0 < zh[1] < 1.0 and zh[2] == 1.0
    assert en[1] == pytest.approx(6 / 10)  # We add numbers check the result | 两 个 然 后
    assert zh[1] == pytest.approx(4 / 10)


def test_language_consistency_neutral_tokens_and_empty_cot():
    reward = get_reward_func("language_consistency", language="en")
    math_heavy = "<think>Let x = 3, so $\\frac{x}{2} = 1.5$ and \\sqrt{x} > 1.</think><answer>1.5</answer>"
    assert reward(completions=[math_heavy]) == [1.0]  # only "Let", "so", "and" count
    assert reward(completions=["<think>12 + 7 = 19</think>", "<answer>no think</answer>", None]) == [0.0, 0.0, 0.0]
    assert get_reward_func("language_consistency", empty_score=1.0)(completions=[""]) == [1.0]
    prefilled = "我们 think here</think><answer>1</answer>"
    assert reward(completions=[prefilled]) == [pytest.approx(2 / 4)]


def test_language_consistency_vocabulary(tmp_path):
    words = tmp_path / "en.txt"
    words.write_text("the\ncat\nsat\n")
    reward = get_reward_func("language_consistency", language="en", vocabulary=str(words))
    assert reward(completions=["<think>the cat sat</think>", "<think>le chat the</think>"]) == [1.0, 1 / 3]
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        get_reward_func("language_consistency", language="xx")


# ---------------------------------------------------------------- cosine, length


def test_cosine():
    reward = get_reward_func("cosine", max_len=100, timeout_s=2.0)
    completions = ["\\boxed{3}", "\\boxed{4}", "\\boxed{3}", "\\boxed{4}", "\\boxed{3}"]
    ids = [[0] * 0, [0] * 0, [0] * 100, [0] * 100, [0] * 50]
    out = reward(completions=completions, completion_ids=ids, solution=["3"] * 5)
    assert out == pytest.approx([1.0, -1.0, 0.5, -0.5, 0.75])
    assert reward(
        completions=["\\boxed{3}"] * 2, completion_ids=[[0] * 100, [0] * 10**6], solution=["3"] * 2
    ) == pytest.approx([0.5, 0.5])  # clamped past max_len
    no_ids = reward(completions=["\\boxed{3}" + " " * 91], solution=["3"])  # 100 characters
    assert no_ids == pytest.approx([0.5])
    assert reward(completions=["\\boxed{3}"], solution=["not math"]) == [None]
    reward.checker.verifier.close()


def test_length_within_groups():
    reward = get_reward_func("length", timeout_s=2.0)
    completions = ["\\boxed{1}", "\\boxed{1}", "\\boxed{2}", "\\boxed{1}", "\\boxed{1}"]
    prompts = ["p", "p", "p", "q", "q"]
    ids = [[0] * 10, [0] * 30, [0] * 20, [0] * 5, [0] * 5]
    out = reward(prompts=prompts, completions=completions, completion_ids=ids, solution=["1"] * 5)
    assert out == pytest.approx([0.5, -0.5, 0.0, 0.0, 0.0])  # wrong answer: min(0, 0.5 - 0.5)
    reward.checker.verifier.close()


# ---------------------------------------------------------------- repetition, soft_overlong


def test_repetition():
    words = get_reward_func("repetition", ngram_size=2)
    assert words(completions=["a b c d", "a b a b a b", "", "one"]) == pytest.approx([0.0, -0.6, 0.0, 0.0])
    tokens = get_reward_func("repetition", ngram_size=2, unit="tokens")
    assert tokens(completions=[""] * 2, completion_ids=[[1, 2, 3, 4], [5] * 5]) == pytest.approx([0.0, -0.75])
    with pytest.raises(ValueError, match="needs completion_ids"):
        tokens(completions=["x"])
    with pytest.raises(ValueError, match="must be <= 0"):
        get_reward_func("repetition", max_penalty=0.5)


def test_soft_overlong():
    reward = get_reward_func("soft_overlong", max_completion_len=100, soft_punish_cache=20)
    ids = [[0] * 80, [0] * 90, [0] * 100, [0] * 101, []]
    assert reward(completions=[""] * 5, completion_ids=ids) == pytest.approx([0.0, -0.5, -1.0, -1.0, 0.0])


# ---------------------------------------------------------------- registry


def test_registry_names_params_and_errors():
    assert set(rewards.list_rewards()) >= {
        "accuracy",
        "format",
        "tag_count",
        "language_consistency",
        "reasoning_steps",
        "cosine",
        "length",
        "repetition",
        "soft_overlong",
        "code",
        "reward_model",
        "scenario",
    }
    funcs = get_reward_funcs(
        ["format", "cosine", "language_consistency"],
        {"cosine": {"max_len": 512}, "language_consistency": {"language": "zh"}},
    )
    assert [f.__name__ for f in funcs] == ["format", "cosine", "language_consistency"]
    assert funcs[1].max_len == 512 and funcs[2].scripts == ("han",)
    assert get_reward_funcs(["format"], {"format": None})[0].think_prefilled is None  # YAML `format:` (no value)
    with pytest.raises(ValueError, match="Unknown reward 'acuracy'. Known rewards: accuracy, code"):
        get_reward_funcs(["acuracy"])
    with pytest.raises(ValueError, match="missing a required argument: 'max_len'"):
        get_reward_func("cosine")
    with pytest.raises(ValueError, match="unexpected keyword argument 'max_length'.*Its params: max_len"):
        get_reward_func("cosine", max_len=3, max_length=3)
    with pytest.raises(ValueError, match="not among the rewards"):
        get_reward_funcs(["format"], {"cosine": {"max_len": 3}})
    with pytest.raises(ValueError, match="more than once"):
        get_reward_funcs(["format", "format"])


def test_register_reward_decorator():
    @rewards.register_reward("test_constant")
    class Constant(rewards.RewardFunction):
        def __init__(self, value: float = 1.0):
            self.value = value

        def __call__(self, completions, **kwargs):
            return [self.value] * len(completions)

    reward = get_reward_func("test_constant", value=0.5)
    assert reward.__name__ == "test_constant" and reward(completions=["a", "b"]) == [0.5, 0.5]
    with pytest.raises(ValueError, match="already registered"):
        rewards.register_reward("test_constant")(lambda: None)


def test_user_rewards_by_dotted_path(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        textwrap.dedent("""
        def plain(completions, solution, **kwargs):
            return [float(str(s) in str(c)) for c, s in zip(completions, solution)]

        def factory(bonus=1.0):
            def reward(completions, **kwargs):
                return [bonus] * len(completions)
            return reward

        async def asynchronous(completions, **kwargs):
            return [0.0] * len(completions)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plain, factory, asynchronous = get_reward_funcs(
        ["my_rewards:plain", "my_rewards:factory", "my_rewards:asynchronous"], {"my_rewards:factory": {"bonus": 2.0}}
    )
    assert plain.__name__ == "my_rewards:plain" and plain.required_columns == ("solution",)
    assert plain(completions=["x=1", "x=2"], solution=[1, 1]) == [1.0, 0.0]
    assert factory(completions=["a"]) == [2.0]
    assert asyncio.run(asynchronous(completions=["a"])) == [0.0]
    assert asyncio.iscoroutinefunction(type(asynchronous).__call__)  # TRL then awaits it
    with pytest.raises(ValueError, match="is a reward function, not a factory"):
        get_reward_func("my_rewards:plain", bonus=1)
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        get_reward_func("my_rewards:missing")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        get_reward_func("no_such_module:f")


REQUIRED_PARAMS = {  # what the rewards without defaults cannot be built without (models load on first call only)
    "cosine": {"max_len": 8},
    "soft_overlong": {"max_completion_len": 8, "soft_punish_cache": 2},
    "reward_model": {"model": "loaded-on-first-call"},
    "scenario": {"helpfulness_model": "loaded-on-first-call"},
}


def test_every_reward_is_named_by_its_registry_name():
    """TRL logs a reward under its `__name__`: built by name or made directly, a reward carries its registry name."""
    for name in rewards.list_rewards():
        params = REQUIRED_PARAMS.get(name, {})
        built = get_reward_func(name, **params)
        assert isinstance(built, rewards.RewardFunction), name
        assert built.__name__ == name and type(built)(**params).__name__ == name
    from rewards.formatting import Format

    assert Format().__name__ == "format" and Format.__name__ == "Format"  # the class keeps its own name


def test_ready_made_rewards_score_like_the_registered_ones():
    from rewards import accuracy_reward, format_reward

    right, wrong = GOOD, GOOD.replace("<answer>\n2", "<answer>\n3")
    assert accuracy_reward(completions=conversational([right, wrong]), solution=["2", "2"]) == [1.0, 0.0]
    assert format_reward(completions=[right, "2"]) == [1.0, 0.0]
    assert (accuracy_reward.__name__, format_reward.__name__) == ("accuracy", "format")
    assert rewards.accuracy_reward is accuracy_reward  # built once, then shared
    ready = {name for name in rewards.list_rewards() if f"{name}_reward" in dir(rewards)}
    assert ready >= {
        *("accuracy", "format", "tag_count", "reasoning_steps", "language_consistency", "length", "repetition", "code")
    }
    assert ready.isdisjoint(REQUIRED_PARAMS)
    for name in ready:
        assert getattr(rewards, f"{name}_reward").__name__ == name
    with pytest.raises(AttributeError, match="'cosine' has required params"):
        _ = rewards.cosine_reward
    assert not hasattr(rewards, "no_such_reward")


# alias -> (the class it must build, attributes its presets must set, params it cannot be built without)
ALIAS_TARGETS = {
    "repetition_penalty": ("Repetition", {"unit": "words"}, {}),
    "soft_overlong_punishment": ("SoftOverlong", {}, {"max_completion_len": 8, "soft_punish_cache": 2}),
    "binary_code": ("Code", {"scoring": "all"}, {}),
    "accuracy_reward": ("Accuracy", {}, {}),
    "reasoning_accuracy_reward": ("Accuracy", {}, {}),
    "get_cosine_scaled_reward": ("Cosine", {}, {"max_len": 8}),
    "get_repetition_penalty_reward": ("Repetition", {"unit": "tokens"}, {}),
    "get_soft_overlong_punishment": ("SoftOverlong", {"max_completion_len": 1280, "soft_punish_cache": 256}, {}),
}


def test_aliases_build_the_reward_they_name_under_the_alias():
    from rewards.aliases import ALIASES

    assert set(ALIASES) == set(ALIAS_TARGETS)
    for alias, (class_name, preset, needed) in ALIAS_TARGETS.items():
        reward = get_reward_func(alias, **needed)
        assert type(reward).__name__ == class_name and reward.__name__ == alias
        assert {key: getattr(reward, key) for key in preset} == preset, alias
    assert get_reward_func("repetition").__name__ == "repetition"  # an alias names its instance, not the class


def test_trl_aliases_score_as_trl_does():
    """The same inputs through TRL's own rewards and through their aliases here give the same scores."""
    from trl.rewards import (
        accuracy_reward,
        get_cosine_scaled_reward,
        get_repetition_penalty_reward,
        get_soft_overlong_punishment,
    )

    completions = conversational(["<think>\nadd\n</think>\n\\boxed{4}", "<think>\nadd\n</think>\n\\boxed{5}"])
    solution, ids = ["4", "4"], [[5] * 300, [1, 2, 3] * 500]
    ours = {
        name: get_reward_func(name, **params)
        for name, params in [
            ("accuracy_reward", {}),
            ("get_cosine_scaled_reward", {"max_len": 1000}),
            ("get_repetition_penalty_reward", {}),
            ("get_soft_overlong_punishment", {}),
        ]
    }
    theirs = {
        "accuracy_reward": accuracy_reward,
        "get_cosine_scaled_reward": get_cosine_scaled_reward(max_len=1000),
        "get_repetition_penalty_reward": get_repetition_penalty_reward(),
        "get_soft_overlong_punishment": get_soft_overlong_punishment(max_completion_len=1280, soft_punish_cache=256),
    }
    for name, reward in ours.items():
        kwargs = {"completions": completions, "solution": solution, "completion_ids": ids}
        assert reward(**kwargs) == pytest.approx(theirs[name](**kwargs)), name
    assert ours["accuracy_reward"](completions=completions, solution=solution) == [1.0, 0.0]


def test_check_columns_fails_before_training():
    funcs = get_reward_funcs(["format", "accuracy", "code"], {"accuracy": {"column": "answer"}})
    check_columns(funcs, ["prompt", "answer", "test_cases"])
    with pytest.raises(
        ValueError,
        match="reward 'accuracy' needs the dataset column 'answer'.*"
        "reward 'code' needs the dataset column 'test_cases'",
    ):
        check_columns(funcs, ["prompt", "solution"])
    with pytest.raises(KeyError, match="needs the dataset column 'answer'"):
        funcs[1](completions=["\\boxed{1}"], solution=["1"])


def test_trl_calling_convention(accuracy):
    """The keyword arguments GRPOTrainer passes, and the name it logs (`getattr(f, "__name__")`)."""
    funcs = [accuracy] + get_reward_funcs(
        ["format", "tag_count", "reasoning_steps", "language_consistency", "repetition", "soft_overlong"],
        {"soft_overlong": {"max_completion_len": 8, "soft_punish_cache": 2}},
    )
    logged = {}
    kwargs = {
        "prompts": [[{"role": "user", "content": "1+1?"}]] * 2,
        "completions": conversational([GOOD, "junk"]),
        "completion_ids": [[1, 2, 3], [4] * 9],
        "solution": ["2", "2"],
        "extra_column": [0, 1],
        "trainer_state": object(),
        "log_extra": lambda name, values: logged.update({name: values}),
        "log_metric": lambda name, value: None,
    }
    for func in funcs:
        out = func(**kwargs)
        assert len(out) == 2 and all(isinstance(v, float) and math.isfinite(v) for v in out), func.__name__
        assert not asyncio.iscoroutinefunction(type(func).__call__)
    assert logged["extracted_answer"] == ["2", "None"]


def test_rewards_do_not_import_other_project_packages():
    """In a fresh interpreter, since other tests in this process import everything."""
    check = (
        "import sys, rewards; rewards.get_reward_funcs(['accuracy', 'format']); "
        "print([m for m in sys.modules if m.startswith(('recipes', 'modeling_deepseek_mini'))])"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
