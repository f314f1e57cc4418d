"""Rewards on the shape of a response: format (R1-Zero's template), tag_count, reasoning_steps."""

import re

from .registry import RewardFunction, register_reward
from .text import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, completion_text, think_prefix

TEMPLATE = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
STEP_MARKERS = re.compile(r"(Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,)", re.MULTILINE)


def with_prefix(completions, prompts, think_prefilled: bool | None) -> list[str]:
    """Each completion's text, preceded by the part of the think block its prompt opened (see `think_prefix`).

    think_prefilled=None detects it from the prompt; True forces "<think>\\n" (a chat template that adds it
    invisibly); False never prepends.
    """
    texts = [completion_text(c) for c in completions]
    if think_prefilled is False:
        return texts
    if think_prefilled is True:
        return [THINK_OPEN + "\n" + text for text in texts]
    if prompts is None:
        return texts
    return [think_prefix(prompt) + text for prompt, text in zip(prompts, texts)]


def follows_template(text: str) -> bool:
    """<think>...</think> then <answer>...</answer> and nothing else, each tag exactly once (no nesting)."""
    if any(text.count(tag) != 1 for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)):
        return False
    return TEMPLATE.fullmatch(text) is not None


@register_reward("format")
class Format(RewardFunction):
    """R1-Zero's format reward: 1.0 for "<think>...</think> <answer>...</answer>" with nothing after, else 0.0.

    Formula: r = 1[text matches \\s*<think>.*?</think>\\s*<answer>.*?</answer>\\s* with each tag exactly once].
    When the prompt ends with "<think>" (the completion starts inside the think block), the prompt's "<think>" is
    counted as part of the response; `think_prefilled` overrides the detection. Source: DeepSeek-R1
    (arXiv:2501.12948), Sec. 2.2.1 (Table 1, the template) and 2.2.2 "Format rewards".
    """

    def __init__(self, think_prefilled: bool | None = None):
        self.think_prefilled = think_prefilled

    def __call__(self, completions, prompts=None, **kwargs) -> list[float]:
        texts = with_prefix(completions, prompts, self.think_prefilled)
        return [float(follows_template(text)) for text in texts]


@register_reward("tag_count")
class TagCount(RewardFunction):
    """Partial format credit: 0.25 for each of "<think>\\n", "\\n</think>\\n", "\\n<answer>\\n", "\\n</answer>"
    that appears exactly once.

    Formula: r = 0.25 * sum_tag 1[count(tag) == 1]. A "<think>" the prompt opened counts (see `Format`).
    Source: open-r1 `tag_count_reward` (adapted from willccbb's GRPO demo).
    """

    TAGS = (THINK_OPEN + "\n", "\n" + THINK_CLOSE + "\n", "\n" + ANSWER_OPEN + "\n", "\n" + ANSWER_CLOSE)

    def __init__(self, think_prefilled: bool | None = None):
        self.think_prefilled = think_prefilled

    def __call__(self, completions, prompts=None, **kwargs) -> list[float]:
        texts = with_prefix(completions, prompts, self.think_prefilled)
        return [0.25 * sum(text.count(tag) == 1 for tag in self.TAGS) for text in texts]


@register_reward("reasoning_steps")
class ReasoningSteps(RewardFunction):
    """Rewards explicit step-by-step reasoning: min(1, n / min_steps) for n step markers in the completion.

    Markers: "Step k:", a numbered item "k." at a line start, a "-" or "*" bullet after a newline, and
    "First,", "Second,", "Next,", "Finally,". Source: open-r1 `reasoning_steps_reward` (min_steps = 3 there;
    here numbered items count at every line start, not only at the start of the text).
    """

    def __init__(self, min_steps: int = 3):
        if min_steps < 1:
            raise ValueError(f"reasoning_steps: min_steps must be at least 1, got {min_steps}.")
        self.min_steps = min_steps

    def __call__(self, completions, **kwargs) -> list[float]:
        texts = [completion_text(c) for c in completions]
        return [min(1.0, len(STEP_MARKERS.findall(text)) / self.min_steps) for text in texts]
