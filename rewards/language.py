"""Language consistency: the share of the chain of thought written in the target language, offline.

Words are classified by Unicode script. A word is a run of two or more letters of one alphabetic script (Latin,
Cyrillic, Greek, Arabic, Hebrew, Devanagari, Thai, Hangul, Armenian), or one character of a logographic script
(Han, Hiragana, Katakana: Chinese has no spaces, and a character is the closest unit to a word). Digits,
punctuation, symbols, $...$ math, LaTeX command names and single letters (math variables such as x or alpha) are
neutral: they count for no language. Letters of scripts not listed count as words of another language.
"""

import re
from collections.abc import Iterable
from pathlib import Path

from .registry import RewardFunction, register_reward
from .text import completion_text, extract_think

SCRIPTS = {
    "latin": "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff",
    "greek": "\u0370-\u03ff\u1f00-\u1fff",
    "cyrillic": "\u0400-\u052f",
    "armenian": "\u0530-\u058f",
    "hebrew": "\u0590-\u05ff",
    "arabic": "\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff",
    "devanagari": "\u0900-\u097f",
    "thai": "\u0e00-\u0e7f",
    "hangul": "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af",
    "hiragana": "\u3040-\u309f",
    "katakana": "\u30a0-\u30ff",
    "han": "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f",
}
LOGOGRAPHIC = frozenset({"han", "hiragana", "katakana"})
LANGUAGES = {
    **{
        code: ("latin",)
        for code in (
            "en",
            "fr",
            "de",
            "es",
            "it",
            "pt",
            "nl",
            "sv",
            "da",
            "no",
            "fi",
            "pl",
            "cs",
            "ro",
            "hu",
            "tr",
            "vi",
            "id",
            "ms",
        )
    },
    **{code: ("cyrillic",) for code in ("ru", "uk", "bg", "sr", "kk")},
    **{code: ("arabic",) for code in ("ar", "fa", "ur")},
    **{code: ("devanagari",) for code in ("hi", "mr", "ne")},
    "zh": ("han",),
    "ja": ("han", "hiragana", "katakana"),
    "ko": ("hangul",),
    "el": ("greek",),
    "he": ("hebrew",),
    "th": ("thai",),
    "hy": ("armenian",),
}

NEUTRAL_SPANS = re.compile(r"\$[^$]*\$|\\[A-Za-z]+")  # inline math and LaTeX command names
WORDS = {
    name: re.compile(f"[{chars}]" if name in LOGOGRAPHIC else f"[{chars}]{{2,}}") for name, chars in SCRIPTS.items()
}
OTHER_WORDS = re.compile(f"(?:(?![{''.join(SCRIPTS.values())}])[^\\W\\d_]){{2,}}")


def script_words(text: str) -> dict[str, list[str]]:
    """The words of `text` by script ("other" for letters of unlisted scripts); neutral spans removed first."""
    text = NEUTRAL_SPANS.sub(" ", text)
    words = {name: pattern.findall(text) for name, pattern in WORDS.items()}
    words["other"] = OTHER_WORDS.findall(text)
    return words


def target_share(text: str, scripts: tuple[str, ...], vocabulary: frozenset[str] | None) -> float | None:
    """Target-language words / all words in `text`; None when it has no words. With a vocabulary, a word of an
    alphabetic target script counts as target only if its lower-case form is in the vocabulary."""
    words = script_words(text)
    total = sum(map(len, words.values()))
    if total == 0:
        return None
    target = 0
    for script in scripts:
        if vocabulary is None or script in LOGOGRAPHIC:
            target += len(words[script])
        else:
            target += sum(word.casefold() in vocabulary for word in words[script])
    return target / total


def load_vocabulary(vocabulary: str | Iterable[str] | None) -> frozenset[str] | None:
    if vocabulary is None:
        return None
    if isinstance(vocabulary, str):
        path = Path(vocabulary)
        if not path.is_file():
            raise ValueError(f"language_consistency: vocabulary {vocabulary!r} is not a file (one word per line).")
        vocabulary = path.read_text(encoding="utf-8").split()
    words = frozenset(word.strip().casefold() for word in vocabulary if word.strip())
    if not words:
        raise ValueError("language_consistency: the vocabulary is empty.")
    return words


@register_reward("language_consistency")
class LanguageConsistency(RewardFunction):
    """R1's language consistency reward: the proportion of target-language words in the chain of thought.

    Formula: r = |target-language words in CoT| / |words in CoT| (module docstring: what a word is; neutral
    tokens count for no language). The CoT is the text inside <think>...</think>, or before </think> when the prompt
    opened the block. A CoT without words (absent, empty, only math) scores `empty_score` (default 0.0: a response
    that does not reason in words earns no language reward). `language`: an ISO 639-1 code (en, zh, ja, ru, ...)
    or a script name (latin, han, cyrillic, ...). `vocabulary`: a word list (list, or a file with one word per
    line) to tell apart languages that share a script (e.g. English from French). Works offline.
    Source: DeepSeek-R1 (arXiv:2501.12948), Sec. 2.3.2.
    """

    def __init__(self, language: str = "en", vocabulary: str | list[str] | None = None, empty_score: float = 0.0):
        if language in LANGUAGES:
            self.scripts = LANGUAGES[language]
        elif language in SCRIPTS:
            self.scripts = (language,)
        else:
            raise ValueError(
                f"language_consistency: unknown language {language!r}. Use one of "
                f"{sorted(LANGUAGES)} or a script: {sorted(SCRIPTS)}."
            )
        self.language = language
        self.vocabulary = load_vocabulary(vocabulary)
        self.empty_score = float(empty_score)

    def __call__(self, completions, **kwargs) -> list[float]:
        rewards = []
        for completion in completions:
            share = target_share(extract_think(completion_text(completion)) or "", self.scripts, self.vocabulary)
            rewards.append(self.empty_score if share is None else share)
        return rewards
