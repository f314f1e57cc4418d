"""open-r1's and TRL's names for rewards registered here, so a recipe written for either runs unchanged.

Each alias maps to (registered name, preset params): the reward it names, with the params that make it compute what
the other library's reward computes. Only names whose semantics match a reward here are listed; open-r1's
`accuracy`, `format`, `tag_count`, `reasoning_steps`, `cosine`, `length` and `code` are registered names already.
Not mapped, for want of a reward here that computes the same thing: open-r1's `ioi_code` (IOI subtasks on Piston)
and `code_format` (a code block inside the answer), TRL's `think_format_reward` (a think block, no answer tags).
"""

ALIASES: dict[str, tuple[str, dict]] = {
    # open-r1 (src/open_r1/rewards.py, get_reward_funcs)
    "repetition_penalty": ("repetition", {}),  # n-grams of words, as open-r1 counts them
    "soft_overlong_punishment": ("soft_overlong", {}),
    "binary_code": ("code", {"scoring": "all"}),  # 1 when every test case passes
    # TRL (trl.rewards, and trl/scripts/grpo.py's registry)
    "accuracy_reward": ("accuracy", {}),
    "reasoning_accuracy_reward": ("accuracy", {}),  # accuracy already reads only the answer after </think>
    "get_cosine_scaled_reward": ("cosine", {}),
    "get_repetition_penalty_reward": ("repetition", {"unit": "tokens"}),  # n-grams of token ids, as TRL counts them
    # TRL's GRPO script builds this one with these lengths; params override them, as for every preset
    "get_soft_overlong_punishment": ("soft_overlong", {"max_completion_len": 1280, "soft_punish_cache": 256}),
}
