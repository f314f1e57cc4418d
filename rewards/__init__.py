"""Reward functions for the R1 pipeline, as plug-ins selected by name.

    from rewards import get_reward_funcs, check_columns
    funcs = get_reward_funcs(["accuracy", "format", "cosine"], {"cosine": {"max_len": 512}})
    check_columns(funcs, dataset.column_names)   # fails before training if a needed column is missing
    GRPOTrainer(..., reward_funcs=funcs)

docs/rewards.md lists every reward with its formula and source, and what the code sandbox enforces.
"""

from . import accuracy, code_reward, formatting, language, penalties, reward_model  # noqa: F401  (registers the rewards)
from .registry import (
    RewardFunc,
    RewardFunction,
    check_columns,
    get_reward_func,
    get_reward_funcs,
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
