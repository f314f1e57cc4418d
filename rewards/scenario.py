"""DeepSeek-R1's all-scenario reward: rule rewards for reasoning prompts, reward models for general prompts.

One reward callable (TRL's signature) routes each row by a dataset column (`scenario`):

- `reasoning` rows get the weighted sum of rule rewards from the registry (default: accuracy + format);
- `general` rows get `helpfulness_weight * helpfulness + harmlessness_weight * harmlessness`, where helpfulness
  is a reward model's score of the summary after `</think>` and harmlessness a reward model's score of the whole
  response, reasoning included (DeepSeek-R1, Sec. 2.3.4). The two judges are two reward models, or one model
  read in two views when `harmlessness_model` is unset (then it is loaded once).

In a GRPO YAML (recipes/grpo.py), by its registry name with its parameters under the same name:

    reward_funcs: [scenario]
    reward_params:
      scenario:
        helpfulness_model: outputs/reward-model-tiny     # recipes/reward_model.py's output
        rule_rewards: [accuracy, format, language_consistency]
        rule_params: {language_consistency: {language: en}}
    prompt_template: chat        # the prompts the reward model was trained on

Per-scenario means are logged as `scenario/reasoning`, `scenario/helpfulness` and `scenario/harmlessness`.
"""

from collections.abc import Sequence

from .registry import RewardFunction, column, get_reward_func, get_reward_funcs, register_reward
from .text import completion_text, strip_think

SCENARIOS = ("reasoning", "general")


def subset(values, rows: list[int]):
    """The entries of a per-completion list at `rows`."""
    return [values[i] for i in rows]


@register_reward("scenario")
class ScenarioReward(RewardFunction):
    """Routes each completion to rule rewards or reward models by its row's scenario (see the module docstring)."""

    def __init__(
        self,
        helpfulness_model: str,
        harmlessness_model: str | None = None,
        rule_rewards: Sequence[str] = ("accuracy", "format"),
        rule_weights: Sequence[float] | None = None,
        rule_params: dict | None = None,
        helpfulness_weight: float = 1.0,
        harmlessness_weight: float = 1.0,
        reward_model_params: dict | None = None,
        scenario_column: str = "scenario",
    ):
        """
        Args:
            helpfulness_model: path or Hub id of the reward model judging the summary after `</think>`.
            harmlessness_model: reward model judging the whole response; None reuses `helpfulness_model`.
            rule_rewards: registry names of the rule rewards summed on reasoning rows.
            rule_weights: one weight per rule reward (default 1.0 each).
            rule_params: keyword arguments per rule reward name, e.g. {"language_consistency": {"language": "en"}}.
            helpfulness_weight, harmlessness_weight: weights of the two judges on general rows.
            reward_model_params: keyword arguments of the `reward_model` reward (normalize, batch_size, max_length,
                device, dtype, include_prompt); `normalize` defaults to "sigmoid" so scores lie in (0, 1) like
                the rule rewards.
            scenario_column: dataset column naming each row's scenario ("reasoning" or "general").
        """
        rule_rewards = list(rule_rewards)
        if not rule_rewards:
            raise ValueError(
                "scenario: rule_rewards is empty; name the rule rewards of reasoning rows, e.g. [accuracy, format]."
            )
        self.rule_weights = [1.0] * len(rule_rewards) if rule_weights is None else [float(w) for w in rule_weights]
        if len(self.rule_weights) != len(rule_rewards):
            raise ValueError(
                f"scenario: {len(self.rule_weights)} rule_weights for {len(rule_rewards)} rule_rewards; "
                "give one weight per rule reward."
            )
        judge_params = {"normalize": "sigmoid", **(reward_model_params or {})}
        if "model" in judge_params or "judge" in judge_params:
            raise ValueError(
                "scenario: set the models with helpfulness_model / harmlessness_model, not in "
                "reward_model_params (the judge views are fixed: summary for helpfulness, full for "
                "harmlessness)."
            )
        self.rules = get_reward_funcs(rule_rewards, rule_params)
        # Both judges read the text they are given whole; helpfulness is handed the summary (see `__call__`), so one
        # model serves both views when no separate harmlessness model is named.
        self.helpfulness = get_reward_func("reward_model", model=helpfulness_model, judge="full", **judge_params)
        self.harmlessness = (
            self.helpfulness
            if harmlessness_model in (None, helpfulness_model)
            else get_reward_func("reward_model", model=harmlessness_model, judge="full", **judge_params)
        )
        self.helpfulness_weight, self.harmlessness_weight = float(helpfulness_weight), float(harmlessness_weight)
        self.scenario_column = scenario_column
        self.required_columns = tuple(
            dict.fromkeys([scenario_column, *(c for rule in self.rules for c in getattr(rule, "required_columns", ()))])
        )

    def rule_score(self, prompts, completions, completion_ids, columns: dict) -> list[float | None]:
        """Weighted sum of the rule rewards; rules that cannot judge a completion (None) are left out of its sum.

        `columns` holds the rows' dataset columns and TRL's other arguments (e.g. `trainer_state`).
        """
        per_rule = [
            rule(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
            for rule in self.rules
        ]
        scores = []
        for values in zip(*per_rule):
            judged = [w * v for w, v in zip(self.rule_weights, values) if v is not None]
            scores.append(sum(judged) if judged else None)
        return scores

    def judge_score(self, prompts, completions) -> tuple[list[float], list[float], list[float]]:
        """(helpfulness on the summaries, harmlessness on the whole responses, their weighted sum)."""
        texts = [completion_text(c) for c in completions]
        helpful = self.helpfulness(prompts=prompts, completions=[strip_think(t) for t in texts])
        harmless = self.harmlessness(prompts=prompts, completions=texts)
        total = [self.helpfulness_weight * a + self.harmlessness_weight * b for a, b in zip(helpful, harmless)]
        return helpful, harmless, total

    def __call__(self, completions, prompts=None, completion_ids=None, log_metric=None, **kwargs) -> list[float | None]:
        n = len(completions)
        scenarios = column(kwargs, self.scenario_column, self.__name__, n)
        unknown = sorted({str(s) for s in scenarios if s not in SCENARIOS})
        if unknown:
            raise ValueError(
                f"scenario: column '{self.scenario_column}' has values {unknown}; each row must be one of "
                f"{SCENARIOS}. Fix the dataset."
            )
        prompts = prompts if prompts is not None else [None] * n
        columns = {k: v for k, v in kwargs.items() if isinstance(v, (list, tuple)) and len(v) == n}
        # TRL's non-column arguments go to the rules too, except `log_extra`: its values must cover the whole batch.
        passed = {k: v for k, v in kwargs.items() if k not in columns and k != "log_extra"}
        scores: list[float | None] = [None] * n
        for scenario in SCENARIOS:
            rows = [i for i, s in enumerate(scenarios) if s == scenario]
            if not rows:
                continue
            part_prompts, part_completions = subset(prompts, rows), subset(completions, rows)
            if scenario == "reasoning":
                part_ids = subset(completion_ids, rows) if completion_ids is not None else None
                part_columns = {**passed, **{k: subset(v, rows) for k, v in columns.items()}}
                values = self.rule_score(part_prompts, part_completions, part_ids, part_columns)
                logged = {"scenario/reasoning": values}
            else:
                helpful, harmless, values = self.judge_score(part_prompts, part_completions)
                logged = {"scenario/helpfulness": helpful, "scenario/harmlessness": harmless}
            for i, value in zip(rows, values):
                scores[i] = value
            if log_metric is not None:
                for name, logged_values in logged.items():
                    judged = [v for v in logged_values if v is not None]
                    if judged:
                        log_metric(name, sum(judged) / len(judged))
        return scores
