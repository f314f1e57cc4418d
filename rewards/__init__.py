"""Reward functions for the R1 pipeline, as plug-ins selected by name.

    from rewards import get_reward_funcs, check_columns
    funcs = get_reward_funcs(["accuracy", "format", "cosine"], {"cosine": {"max_len": 512}})
    check_columns(funcs, dataset.column_names)   # fails before training if a needed column is missing
    GRPOTrainer(..., reward_funcs=funcs)

or, with their default params, as TRL's and open-r1's rewards are imported:

    from rewards import accuracy_reward, format_reward
    GRPOTrainer(..., reward_funcs=[accuracy_reward, format_reward])

docs/rewards.md lists every reward with its formula and source, and what the code sandbox enforces.
"""

from . import accuracy, execution, formatting, language, penalties, reward_model, scenario  # noqa: F401  (registers)
from .registry import (
    RewardFunc,
    RewardFunction,
    check_columns,
    get_reward_func,
    get_reward_funcs,
    has_defaults,
    list_rewards,
    register_reward,
)
from .sandbox import Sandbox, SandboxConfig, SandboxHarnessError, SandboxResult, SandboxUnavailableError
from .text import completion_text, extract_answer, extract_think, strip_think
from .verifier import MathVerifier

__all__ = [
    "MathVerifier",
    "RewardFunc",
    "RewardFunction",
    "Sandbox",
    "SandboxConfig",
    "SandboxHarnessError",
    "SandboxResult",
    "SandboxUnavailableError",
    "check_columns",
    "completion_text",
    "extract_answer",
    "extract_think",
    "get_reward_func",
    "get_reward_funcs",
    "list_rewards",
    "register_reward",
    "strip_think",
]

DEFAULT_SUFFIX = "_reward"


def __getattr__(attribute: str) -> RewardFunc:
    """`rewards.<name>_reward`: the registered reward `name` with its default params, built on first use and kept.

    Built lazily so that importing `rewards` starts nothing (the code reward sets up its sandbox when built). Only
    rewards without required params have one; e.g. `cosine` needs `max_len`: `get_reward_func("cosine", max_len=512)`.
    """
    name = attribute.removesuffix(DEFAULT_SUFFIX)
    if attribute == name or name not in list_rewards():
        raise AttributeError(f"module 'rewards' has no attribute '{attribute}'")
    if not has_defaults(name):
        raise AttributeError(
            f"'{name}' has required params, so there is no ready-made rewards.{attribute}; build it with "
            f"rewards.get_reward_func('{name}', ...)."
        )
    reward = globals()[attribute] = get_reward_func(name)
    return reward


def __dir__() -> list[str]:
    """The module's names and its ready-made rewards, which exist before their first use builds them."""
    return sorted({*globals(), *(name + DEFAULT_SUFFIX for name in list_rewards() if has_defaults(name))})
