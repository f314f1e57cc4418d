"""Penalties that shape length and degenerate text: repetition (n-grams) and soft_overlong (DAPO)."""

from .registry import RewardFunction, register_reward
from .text import completion_text

UNITS = ("words", "tokens")


def need_completion_ids(completion_ids, reward: str, n: int) -> list:
    if completion_ids is None:
        raise ValueError(
            f"Reward '{reward}' counts tokens and needs completion_ids; TRL passes them, a direct call "
            "must pass completion_ids=[[token ids], ...]."
        )
    if len(completion_ids) != n:
        raise ValueError(f"Reward '{reward}': {len(completion_ids)} completion_ids for {n} completions.")
    return [ids.tolist() if hasattr(ids, "tolist") else list(ids or []) for ids in completion_ids]  # tensors too


def repeated_fraction(units: list, n: int) -> float:
    """1 - (distinct n-grams / n-grams); 0.0 when there are fewer than n units."""
    if len(units) < n:
        return 0.0
    ngrams = list(zip(*(units[i:] for i in range(n))))
    return 1.0 - len(set(ngrams)) / len(ngrams)


@register_reward("repetition")
class Repetition(RewardFunction):
    """N-gram repetition penalty: max_penalty times the fraction of repeated n-grams.

    Formula: r = max_penalty * (1 - |distinct n-grams| / |n-grams|), in [max_penalty, 0]; 0.0 with fewer than n
    units. unit="words": lower-cased whitespace-split words of the completion (open-r1); unit="tokens": the
    completion's token ids (TRL's variant, language-agnostic). Source: Yeo et al., "Demystifying Long
    Chain-of-Thought Reasoning in LLMs" (arXiv:2502.03373), Appendix, "repetition penalty"; open-r1
    `get_repetition_penalty_reward`.
    """

    def __init__(self, ngram_size: int = 3, max_penalty: float = -1.0, unit: str = "words"):
        if ngram_size < 1:
            raise ValueError(f"repetition: ngram_size must be at least 1, got {ngram_size}.")
        if max_penalty > 0:
            raise ValueError(f"repetition: max_penalty is a penalty and must be <= 0, got {max_penalty}.")
        if unit not in UNITS:
            raise ValueError(f"repetition: unit must be one of {UNITS}, got {unit!r}.")
        self.ngram_size, self.max_penalty, self.unit = ngram_size, max_penalty, unit

    def __call__(self, completions, completion_ids=None, **kwargs) -> list[float]:
        if self.unit == "tokens":
            sequences = need_completion_ids(completion_ids, self.__name__, len(completions))
        else:
            sequences = [completion_text(c).lower().split() for c in completions]
        fractions = [repeated_fraction(units, self.ngram_size) for units in sequences]
        return [self.max_penalty * f if f else 0.0 for f in fractions]


@register_reward("soft_overlong")
class SoftOverlong(RewardFunction):
    """DAPO's soft overlong punishment on the completion's token count L.

    Formula: r = 0 if L <= L_max - L_cache; ((L_max - L_cache) - L) / L_cache if L_max - L_cache < L <= L_max;
    -1 if L > L_max, with L_max = max_completion_len and L_cache = soft_punish_cache. Needs completion_ids.
    Source: DAPO (arXiv:2503.14476), Sec. 3.4 "Overlong Reward Shaping", Eq. 13.
    """

    def __init__(self, max_completion_len: int, soft_punish_cache: int):
        if max_completion_len < 1:
            raise ValueError(f"soft_overlong: max_completion_len must be positive, got {max_completion_len}.")
        if not 0 <= soft_punish_cache <= max_completion_len:
            raise ValueError(
                f"soft_overlong: soft_punish_cache must be in [0, max_completion_len="
                f"{max_completion_len}], got {soft_punish_cache}."
            )
        self.max_completion_len, self.soft_punish_cache = max_completion_len, soft_punish_cache

    def __call__(self, completions, completion_ids=None, **kwargs) -> list[float]:
        ids = need_completion_ids(completion_ids, self.__name__, len(completions))
        start = self.max_completion_len - self.soft_punish_cache
        rewards = []
        for length in map(len, ids):
            if length <= start:
                rewards.append(0.0)
            elif length <= self.max_completion_len:
                rewards.append((start - length) / self.soft_punish_cache)
            else:
                rewards.append(-1.0)
        return rewards
