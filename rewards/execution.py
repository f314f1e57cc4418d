"""The code reward: run the program a completion wrote against test cases, in the local sandbox."""

import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from .registry import RewardFunction, column, register_reward
from .sandbox import Sandbox, SandboxConfig, SandboxHarnessError
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
    the program exits 0 within the limits and its stdout equals the expected output (trailing whitespace ignored);
    the expected outputs stay in this process (the program gets only each case's input, on stdin).
    Bounds per completion: each case runs within `timeout_s`, all of a completion's cases within
    `completion_timeout_s` (a case that would pass that budget is cut short at it, and the cases after it fail), and
    each run within `memory_mb`; the pool's runs together within `pool_memory_mb`.
    Program: the last ```python block of the answer (<answer> block, else the text after </think>), else the answer
    text. Test cases: the dataset column `column` (default "test_cases"; schema in `parse_test_cases`). After a case
    times out the program's remaining cases are not run (they count as failed). None only when a row's test cases
    are unusable or the sandbox's harness failed (never for anything the program does); harness failures are
    counted (`harness_failures`), logged, and raise SandboxHarnessError once they pass `max_harness_failure_rate` of
    the samples scored (and at least 3). Source: DeepSeek-R1 (arXiv:2501.12948)
    Sec. 2.2.2 (compiler feedback on predefined test cases); open-r1 `code_reward` (there in E2B; here local).

    Params: column, scoring, timeout_s, completion_timeout_s (default 4 x timeout_s), memory_mb, max_processes,
    max_code_chars, max_workers (parallel runs), pool_memory_mb (default half of this machine's memory),
    isolation ("auto" | "bubblewrap" | "namespaces" | "audit"; "auto" raises SandboxUnavailableError where no
    real isolation works: "audit" only by name), max_harness_failure_rate.
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
        pool_memory_mb: int | None = None,
        isolation: str = "auto",
        max_harness_failure_rate: float = 0.02,
    ):
        if scoring not in SCORINGS:
            raise ValueError(f"code: scoring must be one of {SCORINGS}, got {scoring!r}.")
        if max_code_chars < 1:
            raise ValueError(f"code: max_code_chars must be positive, got {max_code_chars}.")
        self.completion_timeout_s = 4 * timeout_s if completion_timeout_s is None else completion_timeout_s
        if self.completion_timeout_s <= 0:
            raise ValueError(f"code: completion_timeout_s must be positive, got {completion_timeout_s}.")
        if not 0 <= max_harness_failure_rate < 1:
            raise ValueError(f"code: max_harness_failure_rate must be in [0, 1), got {max_harness_failure_rate}.")
        self.column, self.scoring, self.max_code_chars = column, scoring, max_code_chars
        self.max_harness_failure_rate = max_harness_failure_rate
        self.samples, self.harness_failures = 0, 0
        self.required_columns = (column,)
        config = SandboxConfig(
            timeout_s=timeout_s,
            cpu_time_s=max(1, round(timeout_s)),
            memory_mb=memory_mb,
            max_processes=max_processes,
            isolation=isolation,
        )
        self.sandbox = Sandbox(config, max_workers=max_workers, pool_memory_mb=pool_memory_mb)
        self.isolation = self.sandbox.isolation  # resolved now: no isolation here fails before training starts

    def __call__(self, completions, **kwargs) -> list[float | None]:
        programs = [extract_program(completion_text(c)) for c in completions]
        tests = [parse_test_cases(value) for value in column(kwargs, self.column, self.__name__, len(programs))]
        for value, cases in zip(kwargs[self.column], tests):
            if cases is None:
                logger.warning("code: unusable test cases %.200r; the sample is skipped (reward None).", value)
        outcomes = self.sandbox.map(self.score, zip(programs, tests))
        self.samples += sum(cases is not None for cases in tests)
        self.harness_failures += sum(failed for _, failed in outcomes)
        if self.harness_failures >= 3 and self.harness_failures > self.max_harness_failure_rate * self.samples:
            raise SandboxHarnessError(
                f"code: the sandbox's harness failed on {self.harness_failures} of {self.samples} samples (more "
                f"than max_harness_failure_rate={self.max_harness_failure_rate}); the warnings above say why."
            )
        return [score for score, _ in outcomes]

    def score(self, job: tuple[str, list[tuple[str, str]] | None]) -> tuple[float | None, bool]:
        """(reward, whether the sandbox's harness failed) of one completion."""
        program, cases = job
        if cases is None:
            return None, False
        if not program or len(program) > self.max_code_chars:
            return 0.0, False
        passed, deadline = 0, time.monotonic() + self.completion_timeout_s
        for stdin, expected in cases:
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # the completion's budget is spent: the cases left fail
                break
            result = self.sandbox.run(program, stdin, timeout_s=remaining)
            if result.status == "setup_failed":
                logger.warning("code: harness failure, the sample is skipped (reward None): %s", result.detail)
                return None, True
            if result.ok and same_output(result.stdout, expected):
                passed += 1
            elif result.status == "timeout" or self.scoring == "all":
                break
        if self.scoring == "all":
            return float(passed == len(cases)), False
        return passed / len(cases), False
