"""A learned reward: any AutoModelForSequenceClassification scores the response (or its summary)."""

import math
from typing import Any

from .registry import RewardFunction, register_reward
from .text import completion_text, content_text, strip_think

JUDGES = ("full", "summary")
DTYPES = ("float32", "float16", "bfloat16")
NORMALIZATIONS = ("none", "sigmoid")
CHARS_PER_TOKEN_BOUND = 16  # texts are cut to max_length * this many characters before tokenising (cheap bound)


@register_reward("reward_model")
class RewardModel(RewardFunction):
    """Scores each response with a sequence-classification reward model: r = f(logit_0(prompt, judged text)).

    judge="full" scores the whole response; judge="summary" only the text after </think> (R1 judges helpfulness on
    the summary and harmlessness on the whole response, so a recipe lists this reward twice under two names, e.g.
    a user factory per model). With include_prompt, the prompt and the judged text go through the tokenizer's chat
    template as a user/assistant exchange when it has one, else they are concatenated. Inputs are truncated from
    the left to max_length tokens (the response's end is kept). normalize="sigmoid" maps the logit to (0, 1).
    The model (local path or Hub id) loads on first use, once; scoring is batched, under torch.inference_mode.
    Source: DeepSeek-R1 (arXiv:2501.12948), Sec. 2.3.4 "Reinforcement Learning for all Scenarios".
    """

    def __init__(
        self,
        model: str,
        judge: str = "full",
        include_prompt: bool = True,
        normalize: str = "none",
        batch_size: int = 8,
        max_length: int = 1024,
        device: str | None = None,
        trust_remote_code: bool = False,
        dtype: str = "float32",
    ):
        if judge not in JUDGES:
            raise ValueError(f"reward_model: judge must be one of {JUDGES}, got {judge!r}.")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"reward_model: normalize must be one of {NORMALIZATIONS}, got {normalize!r}.")
        if dtype not in DTYPES:
            raise ValueError(f"reward_model: dtype must be one of {DTYPES}, got {dtype!r}.")
        if batch_size < 1 or max_length < 8:
            raise ValueError(
                f"reward_model: batch_size must be >= 1 and max_length >= 8, got {batch_size}, {max_length}."
            )
        self.model_name, self.judge, self.include_prompt, self.normalize = model, judge, include_prompt, normalize
        self.batch_size, self.max_length, self.device = batch_size, max_length, device
        self.trust_remote_code, self.dtype = trust_remote_code, dtype
        self.model = self.tokenizer = None

    def load(self):
        """Load the model and tokenizer once (lazily: building the reward list stays cheap)."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.model_name, trust_remote_code=self.trust_remote_code)
        tokenizer.truncation_side = "left"
        model = AutoModelForSequenceClassification.from_pretrained(
            self.model_name, num_labels=1, dtype=getattr(torch, self.dtype), trust_remote_code=self.trust_remote_code
        )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        model.config.pad_token_id = tokenizer.pad_token_id
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.tokenizer = model.to(device).eval(), tokenizer

    def judged_text(self, completion: Any) -> str:
        text = completion_text(completion)
        text = strip_think(text) if self.judge == "summary" else text
        return text[-self.max_length * CHARS_PER_TOKEN_BOUND :]

    def model_input(self, prompt: Any, response: str) -> str:
        """The text the reward model reads for one (prompt, response) pair."""
        if not self.include_prompt or prompt is None:
            return response or self.tokenizer.eos_token or " "  # an empty response still needs one token
        if isinstance(prompt, (list, tuple)):
            messages = [
                {"role": m.get("role", "user"), "content": content_text(m.get("content"))}
                for m in prompt
                if isinstance(m, dict)
            ]
        else:
            messages = [{"role": "user", "content": content_text(prompt)}]
        messages = [{**m, "content": m["content"][-self.max_length * CHARS_PER_TOKEN_BOUND :]} for m in messages]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                messages + [{"role": "assistant", "content": response}], tokenize=False
            )
        return "\n".join(m["content"] for m in messages) + "\n" + response

    def __call__(self, completions, prompts=None, **kwargs) -> list[float]:
        import torch

        if self.model is None:
            self.load()
        prompts = prompts if prompts is not None else [None] * len(completions)
        texts = [self.model_input(p, self.judged_text(c)) for p, c in zip(prompts, completions)]
        scores = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.model.device)
            with torch.inference_mode():
                logits = self.model(**batch).logits[:, 0].float()  # (B,)
            scores += logits.tolist()
        if self.normalize == "sigmoid":
            return [1.0 / (1.0 + math.exp(-s)) if s > -700 else 0.0 for s in scores]
        return scores

    def __getstate__(self):  # picklable: the model is reloaded on first use
        return {**self.__dict__, "model": None, "tokenizer": None}
