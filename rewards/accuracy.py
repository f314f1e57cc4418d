"""Rewards built on answer correctness: accuracy, cosine (length-scaled correctness), length (Kimi 1.5)."""

import math
import re
from collections import defaultdict

from .registry import RewardFunction, column, register_reward
from .text import completion_text, extract_answer, strip_think
from .verifier import MathVerifier, normalize_exact

MODES = ("auto", "integer", "math", "exact")
INTEGER = re.compile(r"[+-]?(?:\d+|\d{1,3}(?:,\d{3})+)")  # 1234, -7, 1,234 (thousands separators of three)


class AnswerChecker:
    """Extracts each completion's final answer and checks it against the gold: True, False, or None (bad gold).

    Extraction, in the response after the chain of thought (an unclosed <think> leaves none): the last
    <answer>...</answer>, else the last \\boxed{...}; or, with `answer_pattern`, the last match of that regex (its
    first group if it has one); keep the pattern linear-time. Answers longer than `max_answer_chars` are wrong.
    mode="integer": the answer must be one integer and nothing else (`INTEGER`: digits with an optional sign, or
    thousands separators in groups of three); an expression ("7 + 5 + 9"), an equation ("20 = 21"), a unit or
    percent sign, or several candidates is wrong. None when the gold is not an integer.
    mode="math": math-verify (`MathVerifier`: gold parsed first, None if it cannot be parsed; `timeout_s` per
    pair). An answer with words outside LaTeX commands (prose, "13 or 12", "13 percent of 12", a unit written as
    a word) is wrong, not reduced to its last number; a whole answer that is one \\text{...} is compared as text.
    mode="auto" (default): "integer" for a gold that is an integer, "math" otherwise.
    mode="exact": normalised string equality (`normalize_exact`); None for an empty gold.
    """

    def __init__(
        self, mode: str, answer_pattern: str | None, timeout_s: float, num_workers: int, max_answer_chars: int
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        if max_answer_chars < 1:
            raise ValueError(f"max_answer_chars must be positive, got {max_answer_chars}.")
        try:
            self.pattern = re.compile(answer_pattern) if answer_pattern is not None else None
        except (re.error, TypeError) as error:
            raise ValueError(f"answer_pattern {answer_pattern!r} is not a valid regular expression: {error}.") from None
        self.mode = mode
        self.max_answer_chars = max_answer_chars
        self.verifier = MathVerifier(timeout_s, num_workers) if mode in ("auto", "math") else None

    def extract(self, text: str) -> str | None:
        if self.pattern is None:
            answer = extract_answer(text)
        else:
            match = next(reversed(list(self.pattern.finditer(strip_think(text)))), None)  # the last one
            answer = None if match is None else match.group(1 if self.pattern.groups else 0)
        if answer is None or len(answer) > self.max_answer_chars:
            return None
        return answer

    def __call__(self, texts: list[str], golds: list) -> list[bool | None]:
        answers = [self.extract(text) for text in texts]
        golds = [None if gold is None else str(gold) for gold in golds]
        modes = [self.mode_for(gold) for gold in golds]
        to_verify = [(g, a) for g, a, mode in zip(golds, answers, modes) if mode == "math" and g is not None]
        verdicts = iter(self.verifier(to_verify) if to_verify else [])
        checks = {"integer": integer_verdict, "exact": exact_verdict}
        return [
            (None if gold is None else next(verdicts)) if mode == "math" else checks[mode](gold, answer)
            for gold, answer, mode in zip(golds, answers, modes)
        ]

    def mode_for(self, gold: str | None) -> str:
        if self.mode != "auto":
            return self.mode
        return "integer" if gold is not None and INTEGER.fullmatch(gold.strip()) else "math"


def integer_verdict(gold: str | None, answer: str | None) -> bool | None:
    if gold is None or not INTEGER.fullmatch(gold.strip()):
        return None
    return answer is not None and bool(INTEGER.fullmatch(answer.strip())) and as_int(answer) == as_int(gold)


def as_int(text: str) -> int:
    return int(text.strip().replace(",", ""))


def exact_verdict(gold: str | None, answer: str | None) -> bool | None:
    gold = normalize_exact(gold) if gold is not None else ""
    if not gold:
        return None
    return answer is not None and normalize_exact(answer) == gold


@register_reward("accuracy")
class Accuracy(RewardFunction):
    """R1's accuracy reward: 1.0 if the final answer equals the gold answer, else 0.0; None if the gold is unusable.

    Formula: r = 1[verify(gold, extract(completion))]. Source: DeepSeek-R1 (arXiv:2501.12948), Sec. 2.2.2,
    "Accuracy rewards"; math-verify as in open-r1 / TRL's accuracy_reward. See `AnswerChecker` for extraction,
    modes and time bounds.

    Params: column (gold answers, default "solution"), mode ("auto" | "integer" | "math" | "exact"), answer_pattern,
    timeout_s (wall time per answer check), num_workers (math-verify processes), max_answer_chars.
    """

    def __init__(
        self,
        column: str = "solution",
        mode: str = "auto",
        answer_pattern: str | None = None,
        timeout_s: float = 3.0,
        num_workers: int = 2,
        max_answer_chars: int = 1000,
    ):
        self.column = column
        self.required_columns = (column,)
        self.checker = AnswerChecker(mode, answer_pattern, timeout_s, num_workers, max_answer_chars)

    def __call__(self, completions, log_extra=None, **kwargs) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        golds = column(kwargs, self.column, self.__name__, len(texts))
        verdicts = self.checker(texts, golds)
        if log_extra is not None:
            log_extra("extracted_answer", [str(self.checker.extract(t))[:200] for t in texts])
        return [None if v is None else float(v) for v in verdicts]


@register_reward("cosine")
class Cosine(RewardFunction):
    """Length-scaled correctness on a cosine schedule: short correct answers earn most, short wrong ones lose most.

    Formula: r(L) = v_min + (v_max - v_min) * (1 + cos(pi * min(L, max_len) / max_len)) / 2, with
    (v_min, v_max) = (min_value_correct, max_value_correct) for a correct answer and
    (max_value_wrong, min_value_wrong) for a wrong one; L is the completion's length in tokens (len of
    completion_ids) when TRL passes them, else in characters. Lengths past max_len are clamped (cos is periodic).
    None when the gold is unusable. Source: Yeo et al., "Demystifying Long Chain-of-Thought Reasoning in LLMs"
    (arXiv:2502.03373), Sec. 4.2 / Appendix, "cosine reward"; defaults as in open-r1.
    """

    def __init__(
        self,
        max_len: int,
        min_value_wrong: float = -1.0,
        max_value_wrong: float = -0.5,
        min_value_correct: float = 0.5,
        max_value_correct: float = 1.0,
        column: str = "solution",
        mode: str = "auto",
        answer_pattern: str | None = None,
        timeout_s: float = 3.0,
        num_workers: int = 2,
    ):
        if max_len < 1:
            raise ValueError(f"cosine: max_len must be a positive length (tokens, or characters), got {max_len}.")
        self.max_len = max_len
        self.wrong = (max_value_wrong, min_value_wrong)
        self.correct = (min_value_correct, max_value_correct)
        self.column = column
        self.required_columns = (column,)
        self.checker = AnswerChecker(mode, answer_pattern, timeout_s, num_workers, 1000)

    def __call__(self, completions, completion_ids=None, **kwargs) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        verdicts = self.checker(texts, column(kwargs, self.column, self.__name__, len(texts)))
        rewards = []
        for verdict, length in zip(verdicts, lengths(texts, completion_ids)):
            if verdict is None:
                rewards.append(None)
                continue
            v_min, v_max = self.correct if verdict else self.wrong
            progress = min(length / self.max_len, 1.0)
            rewards.append(v_min + 0.5 * (v_max - v_min) * (1.0 + math.cos(progress * math.pi)))
        return rewards


@register_reward("length")
class Length(RewardFunction):
    """Kimi 1.5's length penalty within each group of completions of one prompt.

    Formula: lambda_i = 0.5 - (L_i - L_min) / (L_max - L_min) over the group; r_i = lambda_i if answer i is correct,
    min(0, lambda_i) if wrong; 0.0 for the whole group when all lengths are equal; None when the gold is unusable.
    A group is the completions in the batch that share a prompt (all of them when no prompts are passed); a group
    that TRL splits across processes is scored within each part. L counts tokens (completion_ids) when given, else
    characters. Source: Kimi k1.5 (arXiv:2501.12599), Sec. 2.3.3 "Length Penalty"; open-r1's len_reward.
    """

    def __init__(
        self,
        column: str = "solution",
        mode: str = "auto",
        answer_pattern: str | None = None,
        timeout_s: float = 3.0,
        num_workers: int = 2,
    ):
        self.column = column
        self.required_columns = (column,)
        self.checker = AnswerChecker(mode, answer_pattern, timeout_s, num_workers, 1000)

    def __call__(self, completions, prompts=None, completion_ids=None, **kwargs) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        verdicts = self.checker(texts, column(kwargs, self.column, self.__name__, len(texts)))
        sizes = lengths(texts, completion_ids)
        groups = defaultdict(list)
        for i in range(len(texts)):
            groups[repr(prompts[i]) if prompts is not None else ""].append(i)
        rewards: list[float | None] = [0.0] * len(texts)
        for members in groups.values():
            shortest, longest = min(sizes[i] for i in members), max(sizes[i] for i in members)
            for i in members:
                if verdicts[i] is None:
                    rewards[i] = None
                elif longest > shortest:
                    scale = 0.5 - (sizes[i] - shortest) / (longest - shortest)
                    rewards[i] = scale if verdicts[i] else min(0.0, scale)
        return rewards


def lengths(texts: list[str], completion_ids) -> list[int]:
    """Completion lengths: tokens when TRL passes completion_ids, else characters."""
    if completion_ids is None:
        return [len(text) for text in texts]
    return [len(ids) if ids is not None else 0 for ids in completion_ids]
