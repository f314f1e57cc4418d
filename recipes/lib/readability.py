"""Readability of the reasoning: words the task never writes, and the lines a model opens its reasoning with.

DeepSeek-R1's later stages exist because R1-Zero's reasoning was hard to read. On the built-in task a misspelling
is easy to define: every word the data ever shows a model (pretraining personas, cold-start chains, general chat) is
in `builtin_vocabulary()`, so a reasoning word outside it is one the model made up, such as "rime" for "right" in
"Adding from left to rime.". The held-out table reports the share of completions that contain one
(`unknown_word_rate`); rejection sampling and distillation can drop such samples (the `readable` filter) so that a
slip sampled at temperature 1 is not taught to the next model.

A word is as language consistency reads it (`rewards.language.script_words`): two or more letters of one alphabetic
script, or one logographic character; digits and symbols are no words.
"""

from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

from recipes.lib.general_chat import make_general_chat, make_preference_pairs
from recipes.lib.task import make_cold_start, make_corpus
from rewards.language import script_words
from rewards.text import completion_text, extract_think


def words(text: str) -> list[str]:
    """The words of `text`, case-folded."""
    return [word.casefold() for found in script_words(text).values() for word in found]


def vocabulary_of(texts: Iterable[str]) -> frozenset[str]:
    return frozenset(word for text in texts for word in words(text))


@lru_cache(maxsize=1)
def builtin_vocabulary() -> frozenset[str]:
    """Every word of the built-in task's data: each persona's templates, the cold-start chains, the general chat and
    the preference pairs (samples large enough that every template appears; a test checks the count is stable)."""
    chat = make_general_chat(400)
    pairs = make_preference_pairs(400)
    return vocabulary_of(
        [
            *make_corpus(seed=0, n_docs=4000)["text"],
            *(message["content"] for messages in make_cold_start(400)["messages"] for message in messages),
            *(message["content"] for messages in chat["messages"] for message in messages),
            *(message["content"] for column in ("chosen", "rejected") for turn in pairs[column] for message in turn),
        ]
    )


def reasoning(completion) -> str:
    """The chain of thought of a completion, or its whole text when it has no `<think>` block."""
    think = extract_think(completion)
    return completion_text(completion) if think is None else think


def unknown_words(completion, vocabulary: frozenset[str]) -> list[str]:
    """The reasoning's words that are not in `vocabulary`, in order."""
    return [word for word in words(reasoning(completion)) if word not in vocabulary]


def is_readable(completion, vocabulary: frozenset[str]) -> bool:
    return not unknown_words(completion, vocabulary)


def opener(completion) -> str:
    """The first non-empty line of the reasoning ("" when there is none)."""
    return next((line.strip() for line in reasoning(completion).splitlines() if line.strip()), "")


def top_openers(completions: Sequence, k: int = 3) -> list[tuple[str, float]]:
    """The `k` most frequent opening lines with their share of the completions."""
    counts = Counter(opener(completion) for completion in completions)
    return [(line, count / len(completions)) for line, count in counts.most_common(k)] if completions else []
