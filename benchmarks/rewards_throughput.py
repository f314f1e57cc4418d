"""Throughput of the `accuracy` and `code` rewards, in completions per second, next to the obvious peers.

    python benchmarks/rewards_throughput.py [--completions 256] [--programs 32]

accuracy: R1-style completions with distinct numeric and LaTeX answers (no two alike, so no answer is verified
from the batch's cache), half right; peer: TRL's `accuracy_reward` on the same batch (math-verify in this process,
main thread, no hard time bound). code: correct programs against 3 stdin/stdout test cases each; peer: the same
runs as a bare `subprocess.run([python, "-c", program])` with a timeout and no isolation (open-r1's evaluation
loop without E2B). Ratios matter more than absolute numbers, which depend on the machine and its load.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from rewards import get_reward_func
from rewards.execution import same_output


def accuracy_batch(n: int) -> tuple[list, list]:
    completions, golds = [], []
    for i in range(n):
        gold = f"\\frac{{{i + 1}}}{{{i + 2}}}" if i % 2 else str(i * 7)
        answer = gold if i % 4 < 2 else f"{i * 7 + 1}"
        completions.append(
            [{"role": "assistant", "content": f"<think>Working on {i}.</think><answer>{answer}</answer>"}]
        )
        golds.append(gold)
    return completions, golds


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def bench_accuracy(n: int) -> dict:
    completions, golds = accuracy_batch(n)
    reward = get_reward_func("accuracy")
    reward(completions=completions[:2], solution=golds[:2])  # start the workers outside the timing
    ours = rate(lambda: reward(completions=completions, solution=golds), n)
    result = {"accuracy_completions_per_s": round(ours, 1), "workers": reward.checker.verifier.num_workers}
    try:
        from trl.rewards import accuracy_reward
    except ImportError:
        return result
    peer = rate(lambda: accuracy_reward(completions, golds), n)
    return {**result, "trl_accuracy_reward_per_s": round(peer, 1), "ratio_vs_trl": round(ours / peer, 2)}


def bench_code(n: int) -> dict:
    cases = [{"input": f"{a} {b}\n", "output": f"{a + b}\n"} for a, b in ((1, 2), (10, 20), (-5, 5))]
    program = "a, b = map(int, input().split())\nprint(a + b)"
    completions = [f"<think>add</think><answer>\n```python\n{program}\n# {i}\n```\n</answer>" for i in range(n)]
    reward = get_reward_func("code")
    reward(completions=completions[:1], test_cases=[cases])  # the isolation probe, outside the timing
    scores = []
    ours = rate(lambda: scores.extend(reward(completions=completions, test_cases=[cases] * n)), n)
    assert scores == [1.0] * n, scores

    def bare(i):
        return all(
            same_output(
                subprocess.run(
                    [sys.executable, "-c", f"{program}\n# {i}"],
                    input=c["input"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=False,
                ).stdout,
                c["output"],
            )
            for c in cases
        )

    with ThreadPoolExecutor(reward.sandbox.max_workers) as pool:
        peer = rate(lambda: list(pool.map(bare, range(n))), n)
    return {
        "code_completions_per_s": round(ours, 2),
        "test_cases_each": len(cases),
        "sandbox_runs_per_s": round(ours * len(cases), 1),
        "isolation": reward.sandbox.isolation,
        "max_workers": reward.sandbox.max_workers,
        "bare_subprocess_per_s": round(peer, 2),
        "ratio_vs_bare_subprocess": round(ours / peer, 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--completions", type=int, default=256, help="accuracy batch size")
    parser.add_argument("--programs", type=int, default=32, help="code batch size")
    args = parser.parse_args()
    report = {"cpu_count": os.cpu_count(), **bench_accuracy(args.completions), **bench_code(args.programs)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
