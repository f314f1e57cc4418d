"""The code reward: run the program a completion wrote against test cases, in the local sandbox."""

import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from .registry import RewardFunction, column, register_reward
from .sandbox import Sandbox, SandboxConfig
from .text import answer_region, completion_text

logger = logging.getLogger(__name__)

FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
SCORINGS = ("fraction", "all")


def extract_program(text: str) -> str:
    """The last ```python fenced block of the answer region (see `answer_region`), else the region's text."""
    region = answer_region(text)
    blocks = FENCE.findall(region)
    return blocks[-1] if blocks else region.strip()


def parse_test_cases(value: Any) -> list[tuple[str, str]] | None:
    """The test-case column's value as [(stdin, expected stdout)]; None when it is not a usable test list.

    Accepted: a list of {"input": str, "output": str}, a dict holding that list under "test_cases" (open-r1's
    verification_info), or either of those as a JSON string.
    """
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, Mapping):
        value = value.get("test_cases")
    if not isinstance(value, list) or not value:
        return None
    cases = []
    for case in value:
        if not isinstance(case, Mapping) or not isinstance(case.get("input", ""), str):
            return None
        if not isinstance(case.get("output"), str):
            return None
        cases.append((case.get("input", ""), case["output"]))
    return cases


def same_output(actual: str, expected: str) -> bool:
    """Outputs agree line by line, ignoring trailing whitespace on each line and trailing blank lines."""

    def lines(text):
        return [line.rstrip() for line in text.rstrip().splitlines()]

    return lines(actual) == lines(expected)


@register_reward("code")
class Code(RewardFunction):
    """Runs the completion's program on each test case in `rewards.sandbox` and scores the passes.

    Formula: scoring="fraction": r = passed / |cases|; scoring="all": r = 1[passed == |cases|]. A case passes when
    the program exits 0 within the limits and its stdout equals the expected output (trailing whitespace ignored).
    Time: each case runs within `timeout_s`, and all of a completion's cases within `completion_timeout_s`; a case
    that would pass the completion's budget is cut short at it, and the cases after it fail.
    Program: the last ```python block of the answer (<answer> block, else the text after </think>), else the answer
    text. Test cases: the dataset column `column` (default "test_cases"; schema in `parse_test_cases`). None when
    a row's test cases are unusable or the sandbox itself failed (not the program's fault). After a case times out
    the program's remaining cases are not run (they count as failed). Source: DeepSeek-R1 (arXiv:2501.12948)
    Sec. 2.2.2 (compiler feedback on predefined test cases); open-r1 `code_reward` (there in E2B; here local).

    Params: column, scoring, timeout_s, completion_timeout_s (default 4 x timeout_s), memory_mb, max_processes,
    max_code_chars, max_workers (parallel runs), isolation ("auto" | "namespaces" | "audit").
    """

    def __init__(
        self,
        column: str = "test_cases",
        scoring: str = "fraction",
        timeout_s: float = 5.0,
        completion_timeout_s: float | None = None,
        memory_mb: int = 512,
        max_processes: int = 16,
        max_code_chars: int = 100_000,
        max_workers: int | None = None,
        isolation: str = "auto",
    ):
        if scoring not in SCORINGS:
            raise ValueError(f"code: scoring must be one of {SCORINGS}, got {scoring!r}.")
        if max_code_chars < 1:
            raise ValueError(f"code: max_code_chars must be positive, got {max_code_chars}.")
        self.completion_timeout_s = 4 * timeout_s if completion_timeout_s is None else completion_timeout_s
        if self.completion_timeout_s <= 0:
            raise ValueError(f"code: completion_timeout_s must be positive, got {completion_timeout_s}.")
        self.column, self.scoring, self.max_code_chars = column, scoring, max_code_chars
        self.required_columns = (column,)
        config = SandboxConfig(
            timeout_s=timeout_s,
            cpu_time_s=max(1, round(timeout_s)),
            memory_mb=memory_mb,
            max_processes=max_processes,
            isolation=isolation,
        )
        self.sandbox = Sandbox(config, max_workers=max_workers)

    def __call__(self, completions, **kwargs) -> list[float | None]:
        programs = [extract_program(completion_text(c)) for c in completions]
        tests = [parse_test_cases(value) for value in column(kwargs, self.column, self.__name__, len(programs))]
        for value, cases in zip(kwargs[self.column], tests):
            if cases is None:
                logger.warning("code: unusable test cases %.200r; the sample is skipped (reward None).", value)
        return self.sandbox.map(self.score, zip(programs, tests))

    def score(self, job: tuple[str, list[tuple[str, str]] | None]) -> float | None:
        program, cases = job
        if cases is None:
            return None
        if not program or len(program) > self.max_code_chars:
            return 0.0
        passed, deadline = 0, time.monotonic() + self.completion_timeout_s
        for stdin, expected in cases:
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # the completion's budget is spent: the cases left fail
                break
            result = self.sandbox.run(program, stdin, timeout_s=remaining)
            if result.status == "setup_failed":
                logger.warning("code: the sandbox could not start (%s); the sample is skipped.", result.detail)
                return None
            if result.ok and same_output(result.stdout, expected):
                passed += 1
            elif result.status == "timeout" or self.scoring == "all":
                break
        if self.scoring == "all":
            return float(passed == len(cases))
        return passed / len(cases)
