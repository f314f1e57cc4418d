"""Misspelled reasoning words and opening lines in the data a pipeline run wrote: where a defect enters the chain.

    python benchmarks/readability.py outputs/pipeline-tiny [more run folders]

For each run folder: the rejection-sampling data (the reasoning-RL policy's kept samples, what SFT on rejection-sampled
data learns from) and the distillation traces (the final model's kept samples, what the students learn from). For
each, the reasoning samples whose chain of thought has a word outside the built-in task's vocabulary
(`recipes.lib.readability`), the most frequent such words, and the most frequent opening lines. General (non-
reasoning) rows are left out.
"""

import argparse
import collections
import json
from pathlib import Path

from recipes.lib.readability import builtin_vocabulary, top_openers, unknown_words

DATA_FILES = {
    "rejection sampling": Path("rejection_sampling") / "data.jsonl",
    "distillation traces": Path("distill_qwen2") / "traces" / "data.jsonl",
}


def reasoning_completions(path: Path) -> list[str]:
    """The assistant turn of every reasoning row of a `messages` data file."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row["messages"][-1]["content"] for row in rows if row.get("source", "reasoning") == "reasoning"]


def report(name: str, completions: list[str]) -> str:
    vocabulary = builtin_vocabulary()
    unknown = [unknown_words(completion, vocabulary) for completion in completions]
    flagged = sum(1 for words in unknown if words)
    words = collections.Counter(word for found in unknown for word in found).most_common(5)
    openers = ", ".join(f"{line!r} {100 * share:.1f}%" for line, share in top_openers(completions, k=3))
    return (
        f"{name}: {flagged}/{len(completions)} samples ({100 * flagged / max(len(completions), 1):.2f}%) with an "
        f"unknown word; most frequent {words}; openers {openers}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="Pipeline output folders.")
    args = parser.parse_args(argv)
    for run in args.runs:
        for name, relative in DATA_FILES.items():
            if (run / relative).is_file():
                print(f"{run} | {report(name, reasoning_completions(run / relative))}")


if __name__ == "__main__":
    main()
