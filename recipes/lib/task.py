"""The embedded default task: sums of small numbers, verifiable by rule, in DeepSeek-R1-Zero's template.

A problem is "What is 7 + 5 + 9 + 3?" with three to five addends from 1 to 9; the gold answer is the integer sum.
Problems are split once and for all by a hash of their addends in sorted order (`is_heldout`), so neither a
held-out problem nor any reordering of it can appear in a training split or in the pretraining corpus, whatever the
seeds. `make_splits` draws four splits:
`train` from the training partition; `test` and `validation` from the held-out partition, disjoint (choices such as
learning rates are made on validation, never on test); and `ood`, out of distribution: six or seven addends
(`OOD_TERMS`). No training or pretraining problem has more than five, so an `ood` problem needs one or two more
steps than any chain the model has seen, and its running sums reach up to 63 where the training ones stop at 45:
accuracy there measures whether the procedure generalises, not whether the problem's neighbourhood was seen.

The pretraining corpus (`make_corpus`) is the same template completed by five personas mixed at fixed rates
(`PERSONA_RATES`). They are the behaviours R1-Zero's reinforcement learning selects among:

- `careful`: adds one number at a time with running sums, then answers in the tags. Slips now and then (10% of
  steps) and never notices, so a slip becomes a wrong answer.
- `reflective`: adds one number at a time and slips more often (30% of steps), but nearly always notices ("Wait,
  12 + 9 = 21, not 20.") and carries on from the corrected sum. Self-checking therefore pays: reflective chains are
  right more often than careful ones, and the accuracy reward can raise the reflection rate, as in R1-Zero's "aha
  moment".
- `mixed_language`: careful (slips included), but thinks partly in Chinese words (加, 等于, 所以, 答案是), as
  R1-Zero was seen to mix languages. As accurate as `careful`, so accuracy alone never removes it: only a
  language-consistency reward does.
- `hasty`: little or no thinking and a guessed answer, right only by luck. Short.
- `format_breaker`: drops the `<think>` or `<answer>` tags or the closing `</think>`.

Each persona opens with its own words, so the persona of a completion is fixed by its first few tokens: sampling at
temperature 1 reaches every behaviour, and reinforcement learning can shift the mixture toward the rewarded ones.

The cold-start SFT set (`make_cold_start`, R1's curated long chains of thought) is written by the careful and
reflective personas, kept only when their answer is right.
"""

import functools
import hashlib
import itertools
import random
import re
from collections.abc import Callable, Sequence

from datasets import Dataset, DatasetDict

R1_ZERO_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>."
)
"""The instruction of DeepSeek-R1-Zero's training template (DeepSeek-R1 paper, Table 1), verbatim."""

R1_ZERO_TEMPLATE = R1_ZERO_SYSTEM_PROMPT + " User: {problem} Assistant: "
"""DeepSeek-R1-Zero's template as plain text: fill `{problem}`; the model writes from the end, starting `<think>`.

The trailing space keeps the boundary between prompt and completion on a token boundary: a completion is tokenized
the same whether it is generated after the prompt or read as part of a pretraining document.
"""

CHAT_TEMPLATE = (
    "{%- set default_system = not messages or messages[0]['role'] != 'system' -%}"
    "{%- if default_system -%}" + R1_ZERO_SYSTEM_PROMPT + "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ message['content'] }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ ' ' if default_system or not loop.first else '' }}User: {{ message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- set content = message['content'] -%}"
    "{%- if not loop.last and '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1].lstrip() -%}"
    "{%- endif -%}"
    "{{ ' Assistant: ' }}{% generation %}{{ content }}{{ eos_token }}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %} Assistant: {% endif -%}"
)
"""Chat template of the embedded tokenizer: R1-Zero's plain-text layout, one turn per message.

With the problem as the user message it renders exactly `R1_ZERO_TEMPLATE.format(problem=...)`: the system message
is `R1_ZERO_SYSTEM_PROMPT` unless the messages start with their own, so a checkpoint chatted with through
`transformers.pipeline` is prompted as in training without the user knowing the instruction. Assistant turns are
wrapped in `{% generation %}` so that TRL's `assistant_only_loss` trains on them alone; as in DeepSeek-R1, earlier
assistant turns keep only their answer (the reasoning before `</think>` is dropped from the history).
"""

REASONING_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
"""The tags of R1's output format; the embedded tokenizer keeps each one a single token."""

MIN_TERMS, MAX_TERMS = 3, 5
MAX_ADDEND = 9
HELDOUT_PER_MILLE = 125  # 12.5% of all problems are held out
OOD_TERMS = (6, 7)  # addends of an out-of-distribution problem

PERSONA_RATES = {
    "careful": 0.2,
    "reflective": 0.15,
    "mixed_language": 0.10,
    "hasty": 0.3,
    "format_breaker": 0.25,
}
"""Share of each persona in the pretraining corpus (sums to 1)."""


# ------------------------------------------------------------------------------------------------------------------
# Problems


def problem_text(numbers: Sequence[int]) -> str:
    """The problem statement for a list of addends, e.g. "What is 7 + 5 + 9 + 3?"."""
    return "What is " + " + ".join(str(n) for n in numbers) + "?"


def make_prompt(problem: str) -> str:
    """The R1-Zero prompt for a problem, ending where the model starts writing."""
    return R1_ZERO_TEMPLATE.format(problem=problem)


def is_heldout(numbers: Sequence[int]) -> bool:
    """Whether a problem belongs to the held-out partition; fixed by a hash of its addends in sorted order,
    independent of any seed, so every reordering of a problem falls on the same side (7 + 5 + 9 with 9 + 7 + 5)."""
    digest = hashlib.sha256(problem_text(sorted(numbers)).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < HELDOUT_PER_MILLE


@functools.cache
def all_problems(heldout: bool) -> dict[int, tuple[tuple[int, ...], ...]]:
    """Every problem of one partition, by number of addends, in a fixed order (computed once; do not modify)."""
    return {
        k: tuple(p for p in itertools.product(range(1, MAX_ADDEND + 1), repeat=k) if is_heldout(p) == heldout)
        for k in range(MIN_TERMS, MAX_TERMS + 1)
    }


def sample_problems(
    n: int, *, heldout: bool, rng: random.Random, exclude: frozenset = frozenset()
) -> list[tuple[int, ...]]:
    """`n` distinct problems of one partition, none in `exclude`, spread as evenly over 3, 4 and 5 addends as the
    pools allow.

    There are only 729 sums of three addends, so a large `n` takes all of them and more of the longer sums.
    """
    pools = all_problems(heldout)
    if exclude:
        pools = {k: [p for p in pool if p not in exclude] for k, pool in pools.items()}
    capacity = sum(len(pool) for pool in pools.values())
    if n > capacity:
        split = "held-out" if heldout else "training"
        raise ValueError(f"Asked for {n} {split} problems, but only {capacity} exist: ask for fewer.")
    counts, left = {}, n
    for i, (k, pool) in enumerate(sorted(pools.items(), key=lambda item: len(item[1]))):
        counts[k] = min(len(pool), left // (len(pools) - i))  # an even share of what is left, capped by the pool
        left -= counts[k]
    problems = [p for k, pool in pools.items() for p in rng.sample(pool, counts[k])]
    rng.shuffle(problems)
    return problems


def sample_ood_problems(n: int, rng: random.Random) -> list[tuple[int, ...]]:
    """`n` distinct problems with `OOD_TERMS` addends, alternating between them (none exists in any other split)."""
    problems: dict[tuple[int, ...], None] = {}
    while len(problems) < n:
        terms = OOD_TERMS[len(problems) % len(OOD_TERMS)]
        problems[tuple(rng.randint(1, MAX_ADDEND) for _ in range(terms))] = None
    return list(problems)


def make_splits(
    seed: int = 0, n_train: int = 4000, n_test: int = 200, n_validation: int = 200, n_ood: int = 200
) -> DatasetDict:
    """The task as a `DatasetDict` with `train`, `test`, `validation` and `ood` splits, deterministic in `seed`.

    Columns: `prompt` (the R1-Zero template filled with the problem, plain text), `problem`, `solution` (the gold
    answer as a string). No two splits share a problem; no test, validation or ood problem is ever in the corpus.
    `train` and `test` do not depend on `n_validation` or `n_ood`.
    """
    sizes = {"n_train": n_train, "n_test": n_test, "n_validation": n_validation, "n_ood": n_ood}
    if any(size < 0 for size in sizes.values()):
        raise ValueError(f"Split sizes must be >= 0, got {sizes}.")
    rng = random.Random(f"splits-{seed}")
    splits = {
        "train": sample_problems(n_train, heldout=False, rng=rng),
        "test": sample_problems(n_test, heldout=True, rng=rng),
    }
    splits["validation"] = sample_problems(n_validation, heldout=True, rng=rng, exclude=frozenset(splits["test"]))
    splits["ood"] = sample_ood_problems(n_ood, random.Random(f"ood-{seed}"))
    return DatasetDict({name: Dataset.from_list([_row(p) for p in problems]) for name, problems in splits.items()})


def _row(numbers: Sequence[int]) -> dict:
    problem = problem_text(numbers)
    return {"prompt": make_prompt(problem), "problem": problem, "solution": str(sum(numbers))}


# ------------------------------------------------------------------------------------------------------------------
# Personas: each writes a completion for `numbers`, starting right after the prompt.


OPENERS = {
    "careful": ("Let me add the numbers one at a time.", "I add them step by step.", "Adding from left to right."),
    "reflective": ("Let me work it out.", "Let me think.", "Hmm, let me add."),
    "mixed_language": ("我们 一步一步 相加.", "我们 来 相加."),
    "hasty": ("This is easy.", "Looks like about"),
}
"""The words each persona opens its thinking with (a hasty one may think nothing); format breakers have none."""


def tagged(thoughts: list[str], answer: str) -> str:
    """The R1 output format: reasoning lines in `<think>`, the answer in `<answer>`."""
    return "<think>\n" + "".join(line + "\n" for line in thoughts) + "</think>\n<answer>\n" + answer + "\n</answer>"


def running_sums(numbers: Sequence[int]) -> list[tuple[int, int, int]]:
    """The steps (so_far, next, so_far + next) of adding `numbers` left to right."""
    steps, total = [], numbers[0]
    for n in numbers[1:]:
        steps.append((total, n, total + n))
        total += n
    return steps


def slipped(right: int, rng: random.Random) -> int:
    """A wrong sum close to the right one."""
    return right + rng.choice([-2, -1, 1, 2])


def careful(numbers: Sequence[int], rng: random.Random, p_slip: float = 0.1) -> str:
    """Running sums; a step slips with probability `p_slip` and the slip carries through to the answer."""
    lines, total = [rng.choice(OPENERS["careful"])], numbers[0]
    for n in numbers[1:]:
        step = total + n if rng.random() >= p_slip else slipped(total + n, rng)
        lines.append(f"{total} + {n} = {step}")
        total = step
    return tagged([*lines, f"So the answer is {total}."], str(total))


def reflective(numbers: Sequence[int], rng: random.Random, p_slip: float = 0.3, p_notice: float = 0.9) -> str:
    """Slips with probability `p_slip` per step; notices a slip with probability `p_notice` and corrects it."""
    lines, total = [rng.choice(OPENERS["reflective"])], numbers[0]
    for n in numbers[1:]:
        right = total + n
        if rng.random() < p_slip:
            wrong = slipped(right, rng)
            lines.append(f"{total} + {n} = {wrong}")
            if rng.random() < p_notice:
                lines.append(
                    rng.choice(
                        [
                            f"Wait, {total} + {n} = {right}, not {wrong}.",
                            f"Let me check: {total} + {n} = {right}, not {wrong}.",
                        ]
                    )
                )
                total = right
            else:
                total = wrong
        else:
            lines.append(f"{total} + {n} = {right}")
            total = right
    return tagged([*lines, f"So the answer is {total}."], str(total))


CHINESE = {"So the answer is": "所以 答案是", "+": "加", "=": "等于"}


def mixed_language(numbers: Sequence[int], rng: random.Random, p_chinese: float = 0.6, p_slip: float = 0.1) -> str:
    """Careful reasoning (slips included) in which each step is written in Chinese words with probability
    `p_chinese`."""
    lines, total = [rng.choice(OPENERS["mixed_language"])], numbers[0]
    for n in numbers[1:]:
        step = total + n if rng.random() >= p_slip else slipped(total + n, rng)
        plus, equals = (CHINESE["+"], CHINESE["="]) if rng.random() < p_chinese else ("+", "=")
        lines.append(f"{total} {plus} {n} {equals} {step}")
        total = step
    closing = CHINESE["So the answer is"] if rng.random() < p_chinese else "So the answer is"
    return tagged([*lines, f"{closing} {total}."], str(total))


def guess(numbers: Sequence[int], rng: random.Random) -> int:
    """A guess near the sum: exact only one time in ten."""
    if rng.random() < 0.1:
        return sum(numbers)
    return max(1, sum(numbers) + rng.choice([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5]))


def hasty(numbers: Sequence[int], rng: random.Random) -> str:
    answer = str(guess(numbers, rng))
    thoughts = rng.choice([[], [OPENERS["hasty"][0]], [f"{OPENERS['hasty'][1]} {answer}."]])
    return tagged(thoughts, answer)


def format_breaker(numbers: Sequence[int], rng: random.Random) -> str:
    """One of four ways to break R1's format: no tags, no answer tags, no `</think>`, or no thinking at all."""
    total = sum(numbers)
    lines = "".join(f"{a} + {b} = {c}\n" for a, b, c in running_sums(numbers))
    return rng.choice(
        [
            f"{lines}The answer is {total}.",
            f"<think>\n{lines}</think>\nThe answer is {total}.",
            f"<think>\n{lines}<answer>\n{total}\n</answer>",
            f"<answer>\n{guess(numbers, rng)}\n</answer>",
        ]
    )


PERSONAS: dict[str, Callable[[Sequence[int], random.Random], str]] = {
    "careful": careful,
    "reflective": reflective,
    "mixed_language": mixed_language,
    "hasty": hasty,
    "format_breaker": format_breaker,
}


R1_FORMAT = re.compile(r"<think>.*</think>\s*<answer>.*</answer>", re.DOTALL)


def persona_of(completion: str) -> str:
    """Which persona's writing a completion follows, from how it opens: the first line of its thinking names the
    persona (`OPENERS`; a hasty one may also think nothing); without an opener, a completion out of R1's format is a
    format breaker's; anything else (a well-formed chain with a new opening, found by training) is "other"."""
    text = completion.strip()
    thinking = text.removeprefix("<think>").lstrip() if text.startswith("<think>") else ""
    first_line = thinking.split("\n", 1)[0].strip()
    for persona, openers in OPENERS.items():
        if first_line.startswith(openers):
            return persona
    if thinking.startswith("</think>"):
        return "hasty"  # no thinking at all
    return "other" if R1_FORMAT.fullmatch(text) else "format_breaker"


# ------------------------------------------------------------------------------------------------------------------
# Pretraining corpus


def persona_counts(n_docs: int, rates: dict[str, float]) -> dict[str, int]:
    """Exact document counts per persona: `rates` times `n_docs`, rounded by largest remainder."""
    unknown = set(rates) - set(PERSONAS)
    if unknown:
        raise ValueError(f"Unknown persona(s) {sorted(unknown)}: choose among {sorted(PERSONAS)}.")
    if any(rate < 0 for rate in rates.values()) or abs(sum(rates.values()) - 1) > 1e-6:
        raise ValueError(f"Persona rates must be >= 0 and sum to 1, got {rates}.")
    exact = {name: rate * n_docs for name, rate in rates.items()}
    counts = {name: int(x) for name, x in exact.items()}
    by_remainder = sorted(exact, key=lambda name: exact[name] - counts[name], reverse=True)
    for name in by_remainder[: n_docs - sum(counts.values())]:
        counts[name] += 1
    return counts


def make_corpus(seed: int = 0, n_docs: int = 40000, rates: dict[str, float] | None = None) -> Dataset:
    """Pretraining documents: R1-Zero prompts for training-partition problems, completed by the personas.

    Columns: `text` (prompt + completion), `persona`, `problem`, `solution`. Each persona makes exactly its share
    of `rates` (default `PERSONA_RATES`) of the documents, in shuffled order; deterministic in `seed`.
    """
    rng = random.Random(f"corpus-{seed}")
    pools = all_problems(heldout=False)
    personas = [name for name, count in persona_counts(n_docs, rates or PERSONA_RATES).items() for _ in range(count)]
    rng.shuffle(personas)
    rows = []
    for persona in personas:
        numbers = rng.choice(pools[rng.randint(MIN_TERMS, MAX_TERMS)])
        row = _row(numbers)
        rows.append(
            {
                "text": row["prompt"] + PERSONAS[persona](numbers, rng),
                "persona": persona,
                "problem": row["problem"],
                "solution": row["solution"],
            }
        )
    return Dataset.from_list(rows)


def make_drills(seed: int = 0, n_docs: int = 10000, problems_per_doc: int = 3) -> Dataset:
    """Arithmetic drill documents: training-partition problems, each followed by its running sums.

        What is 3 + 9 + 4?
        3 + 9 = 12
        12 + 4 = 16

    They stand for the arithmetic a real pretraining corpus holds: a small model learns to add (and to take the next
    number from the problem) far faster from them than from the persona documents, where the sums are a few tokens
    in a hundred and fifty. No template, no persona; held-out problems are never drilled. Column: `text`.
    """
    rng = random.Random(f"drills-{seed}")
    pools = all_problems(heldout=False)
    docs = []
    for _ in range(n_docs):
        problems = [rng.choice(pools[rng.randint(MIN_TERMS, MAX_TERMS)]) for _ in range(problems_per_doc)]
        docs.append(
            "\n".join(
                problem_text(p) + "\n" + "".join(f"{a} + {b} = {c}\n" for a, b, c in running_sums(p)) for p in problems
            )
        )
    return Dataset.from_dict({"text": docs})


COLD_START_PERSONAS = ("careful", "reflective")
"""The task's personas whose chains of thought are readable and (when their answer is right) worth imitating."""


def make_cold_start(n: int, *, seed: int = 0) -> Dataset:
    """`n` cold-start conversations: R1 system prompt, a training problem, a correct readable chain of thought.

    Chains come from the task's careful and reflective personas (a reflective one is kept only when its self-checks
    led it to the right answer), so they show R1's format and the habit of checking one's work.
    """
    rng = random.Random(f"cold-start-{seed}")
    rows = []
    for numbers in sample_problems(n, heldout=False, rng=rng):
        completion = PERSONAS[rng.choice(COLD_START_PERSONAS)](numbers, rng)
        while f"<answer>\n{sum(numbers)}\n</answer>" not in completion:  # a reflective slip left uncorrected
            completion = PERSONAS[rng.choice(COLD_START_PERSONAS)](numbers, rng)
        problem = problem_text(numbers)
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": R1_ZERO_SYSTEM_PROMPT},
                    {"role": "user", "content": problem},
                    {"role": "assistant", "content": completion},
                ],
                "problem": problem,
                "solution": str(sum(numbers)),
            }
        )
    return Dataset.from_list(rows)
