"""Scores and filters of rejection sampling: which sampled completions are worth training on (DeepSeek-R1, 2.3.3).

Every sample is scored with the project's rewards (`SCORE_REWARDS`) and then filtered by small named functions, in
the order of `RejectionSamplingArguments.filters`:

- `correct`: the verified answer is right (accuracy == 1);
- `well_formed`: R1's `<think> ... </think> <answer> ... </answer>` format is followed (format reward > 0);
- `language_consistent`: the reasoning is in the target language (language consistency >= a threshold);
- `finished`: the completion ended with an end-of-sequence token (not cut off by `max_new_tokens`);
- `within_length`: at most `max_completion_tokens` tokens;
- `not_repetitive`: the share of repeated word n-grams is at most `max_repeat_ratio`;
- `readable`: no word of the reasoning is outside the vocabulary (`recipes.lib.readability`: the built-in task's
  words for its prompts, `vocabulary_file` otherwise; without one the filter keeps everything and says so), so that
  a misspelling sampled at temperature 1 is not taught to the next model;
- `dedup`: one copy of each completion per prompt (text compared after lower-casing and collapsing whitespace);
- `per_prompt_cap`: at most `max_per_prompt` completions per prompt.
"""

import re
from collections import Counter
from dataclasses import dataclass, field

import rewards
from recipes.lib.readability import is_readable

SCORE_REWARDS = ("accuracy", "format", "language_consistency", "repetition")
"""Rewards every sample is scored with (from the `rewards` registry); the scores travel with the sample into the
dataset. `repetition` is minus the share of repeated word n-grams, in [-1, 0]."""


@dataclass
class Sample:
    """One completion of one prompt, with what the filters read."""

    prompt_index: int
    completion: str
    num_tokens: int  # generated tokens, the end-of-sequence token included
    finished: bool  # ended with an end-of-sequence token rather than at the budget
    scores: dict = field(default_factory=dict)


def as_completion(prompt, text: str):
    """A completion as TRL hands it to reward functions: a message list for conversational prompts, else text."""
    return text if isinstance(prompt, str) else [{"role": "assistant", "content": text}]


def score_samples(
    samples: list[Sample], prompts: list, solutions: list, *, language: str = "en", ngram_size: int = 4
) -> None:
    """Add the `SCORE_REWARDS` scores to every sample (in place); a reward that cannot judge gives None."""
    funcs = {
        "accuracy": rewards.get_reward_func("accuracy"),
        "format": rewards.get_reward_func("format"),
        "language_consistency": rewards.get_reward_func("language_consistency", language=language),
        "repetition": rewards.get_reward_func("repetition", ngram_size=ngram_size, max_penalty=-1.0),
    }
    sample_prompts = [prompts[s.prompt_index] for s in samples]
    completions = [as_completion(p, s.completion) for p, s in zip(sample_prompts, samples)]
    columns = {"solution": [solutions[s.prompt_index] for s in samples]}
    for name, func in funcs.items():
        values = func(prompts=sample_prompts, completions=completions, **(columns if name == "accuracy" else {}))
        for sample, value in zip(samples, values):
            sample.scores[name] = value


# ------------------------------------------------------------------------------------------------------------------
# Filters: each keeps a sample (True) or removes it (False); `dedup` and `per_prompt_cap` look at the whole list.


def normalize_text(text: str) -> str:
    """Lower-cased, whitespace-collapsed text: two completions equal under it are duplicates."""
    return re.sub(r"\s+", " ", text).strip().lower()


def is_correct(sample: Sample) -> bool:
    return sample.scores.get("accuracy") == 1.0


def is_well_formed(sample: Sample) -> bool:
    return (sample.scores.get("format") or 0.0) > 0.0


def is_language_consistent(sample: Sample, min_score: float) -> bool:
    score = sample.scores.get("language_consistency")
    return score is not None and score >= min_score


def is_finished(sample: Sample) -> bool:
    return sample.finished


def is_within_length(sample: Sample, max_tokens: int) -> bool:
    return sample.num_tokens <= max_tokens


def is_not_repetitive(sample: Sample, max_ratio: float) -> bool:
    return -(sample.scores.get("repetition") or 0.0) <= max_ratio  # the score is minus the repeated share


def deduplicate(samples: list[Sample]) -> list[Sample]:
    """Keep the first of the completions of a prompt that are equal after `normalize_text`."""
    seen, kept = set(), []
    for sample in samples:
        key = (sample.prompt_index, normalize_text(sample.completion))
        if key not in seen:
            seen.add(key)
            kept.append(sample)
    return kept


def cap_per_prompt(samples: list[Sample], max_per_prompt: int) -> list[Sample]:
    """Keep at most `max_per_prompt` completions of each prompt (the first ones)."""
    counts, kept = Counter(), []
    for sample in samples:
        if counts[sample.prompt_index] < max_per_prompt:
            counts[sample.prompt_index] += 1
            kept.append(sample)
    return kept


FILTERS = {
    "correct": lambda samples, args: [s for s in samples if is_correct(s)],
    "well_formed": lambda samples, args: [s for s in samples if is_well_formed(s)],
    "language_consistent": lambda samples, args: [
        s for s in samples if is_language_consistent(s, args.min_language_consistency)
    ],
    "finished": lambda samples, args: [s for s in samples if is_finished(s)],
    "within_length": lambda samples, args: [
        s for s in samples if args.max_completion_tokens is None or is_within_length(s, args.max_completion_tokens)
    ],
    "not_repetitive": lambda samples, args: [s for s in samples if is_not_repetitive(s, args.max_repeat_ratio)],
    "readable": lambda samples, args: [
        s for s in samples if args.vocabulary is None or is_readable(s.completion, args.vocabulary)
    ],
    "dedup": lambda samples, args: deduplicate(samples),
    "per_prompt_cap": lambda samples, args: cap_per_prompt(samples, args.max_per_prompt),
}
"""Filter name -> (samples, RejectionSamplingArguments) -> kept samples."""


def apply_filters(samples: list[Sample], script_args) -> tuple[list[Sample], dict]:
    """Run `script_args.filters` (a `RejectionSamplingArguments`'s) in order; return the kept samples and how many
    each filter removed."""
    removed = {}
    for name in script_args.filters:
        kept = FILTERS[name](samples, script_args)
        removed[name] = len(samples) - len(kept)
        samples = kept
    return samples, removed


def mean_score(samples: list[Sample], name: str) -> float | None:
    """Mean of one score over the samples it could judge (None where it judged none)."""
    judged = [s.scores[name] for s in samples if s.scores.get(name) is not None]
    return sum(judged) / len(judged) if judged else None
