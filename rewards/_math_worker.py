"""Worker process of `rewards.verifier.MathVerifier`: math-verify behind a line-based JSON protocol.

Started as `python -I _math_worker.py <budget_s> <memory_mb>`. It prints "ready", then answers each stdin line
`[gold, answer]` with one stdout line: `true`/`false`, or `null` when the gold cannot be parsed. An answer with
words outside LaTeX commands (`is_prose`) is `false` without parsing: prose is not reduced to the number in it.
Parsing the gold, and parsing plus verifying the answer, each get `budget_s` of wall time from a SIGALRM timer
(this is the process's main thread, so signals work); the parent adds a hard bound by killing the process when a
computation sits in C code that a signal cannot interrupt. It never imports the project.
"""

import json
import logging
import re
import resource
import signal
import sys

DELIMITED = re.compile(r"\$|\\boxed|\\\(|\\\[")  # $...$, \boxed{...}, \(...\), \[...\]
PROSE = re.compile(r"(?<!\\)\b[A-Za-z]{2,}\s+[A-Za-z]{2,}\b")  # two words in a row, not LaTeX commands
LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
WORD = re.compile(r"[A-Za-z]{2,}")
ONE_TEXT = re.compile(r"\s*\\(?:text|textbf|mathrm|mbox)\s*\{[^{}]*\}\s*")  # the whole answer is one \text{...}
GOLD_CACHE_SIZE = 4096


def is_prose(answer):
    """Words outside LaTeX commands: "13 or 12", "13 percent of 12", "The answer is 12", "5\text{ cm}". A whole
    answer that is one \text{...} (a name, a word) is an answer, not prose."""
    return not ONE_TEXT.fullmatch(answer) and bool(WORD.search(LATEX_COMMAND.sub(" ", answer)))


class OverBudget(BaseException):
    """Raised by the timer; a BaseException so that sympy's `except Exception` blocks do not swallow it."""


def over_budget(signum, frame):
    raise OverBudget


def within(budget_s, fn, *args):
    """fn(*args), or None when it takes longer than budget_s or fails (math-verify's errors, MemoryError, ...)."""
    signal.setitimer(signal.ITIMER_REAL, budget_s)
    try:
        return fn(*args)
    except (Exception, OverBudget):  # noqa: BLE001  (any failure of math-verify on junk is "no result")
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def main():
    budget_s, memory_mb = float(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))  # huge integers raise MemoryError
    logging.disable(logging.CRITICAL)  # math-verify warns on every failed parse
    signal.signal(signal.SIGALRM, over_budget)
    from math_verify import parse, verify

    def parse_math(text):
        """A bare expression ("2^{10}", "3x", "\\sqrt{2}") is parsed whole, as LaTeX in $...$; delimited math and
        prose ("The answer is 42") go through math-verify's default extraction, which finds the math in them."""
        if DELIMITED.search(text) or PROSE.search(text):
            return parse(text, parsing_timeout=None)
        return parse(f"${text}$", parsing_timeout=None) or parse(text, parsing_timeout=None)

    def check(gold_parsed, answer):
        if is_prose(answer):
            return False
        answer_parsed = parse_math(answer)
        return bool(answer_parsed) and bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))

    golds = {}  # gold -> parsed ([] when it cannot be parsed within the budget): G completions share one gold
    print("ready", flush=True)
    for line in sys.stdin:
        gold, answer = json.loads(line)
        if gold not in golds:
            if len(golds) >= GOLD_CACHE_SIZE:
                golds.clear()
            golds[gold] = within(budget_s, parse_math, gold) or []
        if not golds[gold]:
            verdict = None
        else:
            verdict = answer is not None and bool(within(budget_s, check, golds[gold], answer))
        print(json.dumps(verdict), flush=True)


if __name__ == "__main__":
    main()
