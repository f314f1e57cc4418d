"""Answer checking: math-verify with a hard time bound from any thread, and a normalised exact match.

math-verify bounds its own time with SIGALRM, which works only in a process's main thread; TRL runs async reward
functions on an event-loop thread, and a huge exponent such as 10^{10^{10^{10}}} can keep sympy busy in C code that
a signal cannot interrupt. `MathVerifier` therefore runs math-verify in worker processes (`_math_worker.py`), where
a SIGALRM timer stops most runaway parses early (the gold, then the answer, each get 45% of `timeout_s`), and the
parent kills the worker at `timeout_s` when that was not enough: the pair then counts as wrong and a fresh worker
starts at once, its imports overlapping with the caller's work.
"""

import json
import logging
import math
import os
import queue
import re
import selectors
import signal
import subprocess
import sys
import time
import unicodedata
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

logger = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("_math_worker.py")
STARTUP_TIMEOUT_S = 120.0  # importing sympy on a busy 2-core machine
INNER_BUDGET = 0.45  # share of timeout_s the worker's SIGALRM timer gives each step; the kill comes at 1.0


class VerifierProcess:
    """One math-verify worker process; `ask` gives each pair `timeout_s` of wall time. Not thread-safe."""

    def __init__(self, timeout_s: float, memory_mb: int):
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.process: subprocess.Popen | None = None
        self.ready = False

    def launch(self):
        """Start the process without waiting for it: its imports (about a second) overlap with the caller's work."""
        budget = INNER_BUDGET * self.timeout_s  # the worker's own timer, for the gold and again for the answer
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(WORKER_SCRIPT), str(budget), str(self.memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # a Ctrl-C meant for the trainer does not kill it mid-answer
        )
        self.ready = False

    def wait_ready(self):
        if self.read_line(time.monotonic() + STARTUP_TIMEOUT_S) != "ready":
            self.stop()
            raise RuntimeError(
                f"The math-verify worker ({WORKER_SCRIPT}) did not start; check that math-verify is "
                f"installed: `{sys.executable} -c 'import math_verify'`."
            )
        self.ready = True

    def ask(self, gold: str, answer: str | None) -> bool | None:
        if self.process is None or self.process.poll() is not None:
            self.stop()
            self.launch()
        if not self.ready:
            self.wait_ready()
        deadline = time.monotonic() + self.timeout_s
        try:
            self.process.stdin.write(json.dumps([gold, answer]) + "\n")
            self.process.stdin.flush()
            line = self.read_line(deadline)
        except OSError:  # the worker died (e.g. out of memory) before reading the pair
            line = None
        if line is None:  # timed out or crashed: replace it, count the answer as wrong
            logger.debug("math-verify gave no verdict within %.1f s for answer %.200r", self.timeout_s, answer)
            self.stop()
            self.launch()
            return False
        return json.loads(line)

    def read_line(self, deadline: float) -> str | None:
        """One line of the worker's stdout, or None at the deadline or EOF (the worker writes whole lines)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(max(0.0, deadline - time.monotonic())):
                return None
        line = self.process.stdout.readline()
        return line.strip() if line else None

    def stop(self):
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.process = None


def stop_all(workers: list[VerifierProcess]):
    for worker in workers:
        worker.stop()


class MathVerifier:
    """`verifier(pairs)` -> one verdict per (gold, answer) pair: True, False, or None when the gold cannot be parsed.

    The gold is parsed first; an answer of None (nothing extracted) is False. Each distinct pair takes at most
    `timeout_s` of wall time on one of `num_workers` worker processes (started lazily, each limited to
    `memory_mb` of address space). Callable from any thread.
    """

    def __init__(self, timeout_s: float = 3.0, num_workers: int = 2, memory_mb: int = 2048):
        if timeout_s <= 0 or not math.isfinite(timeout_s):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s}.")
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}.")
        if memory_mb < 512:
            raise ValueError(f"memory_mb must be at least 512 (sympy needs it), got {memory_mb}.")
        self.timeout_s, self.num_workers, self.memory_mb = timeout_s, num_workers, memory_mb
        self._setup()

    def _setup(self):
        self._workers = [VerifierProcess(self.timeout_s, self.memory_mb) for _ in range(self.num_workers)]
        self._idle: queue.Queue[VerifierProcess] = queue.Queue()
        for worker in self._workers:
            self._idle.put(worker)
        self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="math-verify")
        self._finalizer = weakref.finalize(self, stop_all, self._workers)

    def __call__(self, pairs: Sequence[tuple[str, str | None]]) -> list[bool | None]:
        unique = list(dict.fromkeys(pairs))  # a group's completions often agree on an answer
        verdicts = dict(zip(unique, self._pool.map(self._ask, unique)))
        return [verdicts[pair] for pair in pairs]

    def _ask(self, pair: tuple[str, str | None]) -> bool | None:
        worker = self._idle.get()
        try:
            return worker.ask(*pair)
        finally:
            self._idle.put(worker)

    def close(self):
        self._pool.shutdown(wait=True)
        self._finalizer()

    def __getstate__(self):  # picklable: worker processes are not carried over, new ones start on first use
        return {"timeout_s": self.timeout_s, "num_workers": self.num_workers, "memory_mb": self.memory_mb}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._setup()


_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_EDGE_PUNCTUATION = " \t\n.,;:!?\"'`"


def normalize_exact(answer: str) -> str:
    """Normalise a non-math answer for exact match: NFKC, casefold, \\text{...} unwrapped, $ removed, whitespace
    collapsed, punctuation and quotes trimmed at both ends."""
    answer = unicodedata.normalize("NFKC", answer)
    answer = _TEXT_WRAPPER.sub(r"\1", answer).replace("$", "")
    return " ".join(answer.casefold().split()).strip(_EDGE_PUNCTUATION)
