"""Pure helpers that turn whatever a model wrote into the pieces rewards score.

Every function here accepts any input (None, bytes, conversational messages, 1 MB strings) without raising and
runs in time linear in the input's length.
"""

from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


def content_text(content: Any) -> str:
    """A message's `content`: a string, or a list of parts ({"type": "text", "text": ...}) joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, (bytes, bytearray)):
        return bytes(content).decode("utf-8", errors="replace")
    if isinstance(content, (list, tuple)):
        parts = [part.get("text") if isinstance(part, dict) else part for part in content]
        return "".join(part for part in parts if isinstance(part, str))
    return ""


def completion_text(completion: Any) -> str:
    """The text of one completion, plain (a string) or conversational ([{"role": "assistant", "content": ...}]).

    A conversational completion's text is its assistant messages' contents joined by newlines; None, non-text
    and unknown shapes give "" (a reward then scores it as an empty answer).
    """
    if completion is None:
        return ""
    if isinstance(completion, (str, bytes, bytearray)):
        return content_text(completion)
    if isinstance(completion, dict):
        return content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        return "\n".join(content_text(m.get("content")) for m in messages if m.get("role", "assistant") == "assistant")
    return ""


def prompt_tail(prompt: Any) -> str:
    """The end of a prompt: the string itself, or the last message's content for a conversational prompt."""
    if isinstance(prompt, (list, tuple)):
        messages = [m for m in prompt if isinstance(m, dict)]
        return content_text(messages[-1].get("content")) if messages else ""
    if isinstance(prompt, dict):
        return content_text(prompt.get("content"))
    return content_text(prompt) if prompt is not None else ""


def think_prefix(prompt: Any) -> str:
    """The part of the think block the prompt already opened, e.g. "<think>\\n", or "" when it did not.

    Templates such as DeepSeek-R1's end the generation prompt with "<think>\\n"; the completion then starts inside
    the think block. Prepending this prefix to the completion gives the text the format rewards expect.
    """
    tail = prompt_tail(prompt)
    start = tail.rfind(THINK_OPEN)
    if start < 0 or tail[start:].strip() != THINK_OPEN:
        return ""
    return tail[start:]


def extract_think(text: Any) -> str | None:
    """The chain of thought: the text inside <think>...</think>, or before </think> when the prompt opened the block.

    An unterminated <think> runs to the end of the text. None when the text has neither tag.
    """
    text = completion_text(text)
    start = text.find(THINK_OPEN)
    if start >= 0:
        start += len(THINK_OPEN)
        end = text.find(THINK_CLOSE, start)
        return text[start:] if end < 0 else text[start:end]
    end = text.find(THINK_CLOSE)
    return text[:end] if end >= 0 else None


def strip_think(text: Any) -> str:
    """The response without its chain of thought: the text after the last </think> (R1's "summary").

    An unterminated <think> leaves nothing; a text without think tags is returned whole.
    """
    text = completion_text(text)
    end = text.rfind(THINK_CLOSE)
    if end >= 0:
        return text[end + len(THINK_CLOSE) :]
    start = text.find(THINK_OPEN)
    return text[:start] if start >= 0 else text


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}) with balanced braces; None if absent or unclosed."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0 or text[start:brace].strip() not in ("\\boxed", "\\fbox"):
        return None
    depth, i = 0, brace
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # an escaped brace (\{ or \}) is content, not structure
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : i]
        i += 1
    return None


def extract_answer(text: Any) -> str | None:
    """The final answer: the content of the last <answer>...</answer>, else of the last \\boxed{...}, in the
    response after the chain of thought (`strip_think`: an answer inside an unfinished <think> is no answer); else
    None."""
    text = strip_think(text)
    end = text.rfind(ANSWER_CLOSE)
    if end >= 0:
        start = text.rfind(ANSWER_OPEN, 0, end)
        if start >= 0:
            return text[start + len(ANSWER_OPEN) : end].strip()
    boxed = last_boxed(text)
    return boxed.strip() if boxed is not None else None


def answer_region(text: Any) -> str:
    """Where a final answer lives: the last <answer> block, else the text after the think block, else the text."""
    text = completion_text(text)
    end = text.rfind(ANSWER_CLOSE)
    if end >= 0:
        start = text.rfind(ANSWER_OPEN, 0, end)
        if start >= 0:
            return text[start + len(ANSWER_OPEN) : end]
    return strip_think(text)
