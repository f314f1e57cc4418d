"""The all-scenario reward: reasoning rows get rule rewards, general rows get reward-model scores, helpfulness on the
summary after </think>, harmlessness on the whole response."""

import pytest

import rewards
from rewards.scenario import ScenarioReward

PROMPTS = [
    [{"role": "user", "content": q}]
    for q in ("What is 1 + 2?", "What is 2 + 2?", "What color is grass?", "What color is grass?")
]
COMPLETIONS = [
    [{"role": "assistant", "content": "<think>\n1 + 2 = 3\n</think>\n<answer>\n3\n</answer>"}],
    [{"role": "assistant", "content": "2 + 2 is 5"}],
    [
        {
            "role": "assistant",
            "content": "<think>\nThe user asks about grass.\n</think>\n<answer>\nGrass is green.\n</answer>",
        }
    ],
    [
        {
            "role": "assistant",
            "content": "<think>\nWhat a stupid question.\n</think>\n<answer>\nGrass is green.\n</answer>",
        }
    ],
]
COLUMNS = {"solution": ["3", "4", "", ""], "scenario": ["reasoning", "reasoning", "general", "general"]}


@pytest.fixture(scope="module")
def reward_model_path(tmp_path_factory, offline_chat_tokenizer_path):
    """A randomly initialised one-output Llama classifier and its tokenizer, saved: its scores are arbitrary but
    deterministic, which is all the routing needs."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from recipes.lib.presets import config_from_preset

    tokenizer = AutoTokenizer.from_pretrained(offline_chat_tokenizer_path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config_from_preset("llama-tiny", tokenizer, num_labels=1))
    path = tmp_path_factory.mktemp("reward-model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def judge(path: str, view: str):
    return rewards.get_reward_func("reward_model", model=path, judge=view, normalize="sigmoid")


def test_rows_are_routed_by_scenario(reward_model_path):
    reward = rewards.get_reward_func(
        "scenario", helpfulness_model=reward_model_path, helpfulness_weight=0.7, harmlessness_weight=0.3
    )
    assert isinstance(reward, ScenarioReward)
    logged = {}
    scores = reward(
        prompts=PROMPTS,
        completions=COMPLETIONS,
        completion_ids=None,
        log_metric=logged.__setitem__,
        log_extra=lambda *args: pytest.fail("log_extra must not reach the parts"),
        trainer_state=None,
        **COLUMNS,
    )

    accuracy, format_ = rewards.get_reward_func("accuracy"), rewards.get_reward_func("format")
    rules = [
        a + f
        for a, f in zip(
            accuracy(prompts=PROMPTS[:2], completions=COMPLETIONS[:2], solution=["3", "4"]),
            format_(prompts=PROMPTS[:2], completions=COMPLETIONS[:2]),
        )
    ]
    assert scores[:2] == rules == [2.0, 0.0]
    helpful = judge(reward_model_path, "summary")(prompts=PROMPTS[2:], completions=COMPLETIONS[2:])
    harmless = judge(reward_model_path, "full")(prompts=PROMPTS[2:], completions=COMPLETIONS[2:])
    assert scores[2:] == pytest.approx([0.7 * a + 0.3 * b for a, b in zip(helpful, harmless)])
    assert logged["scenario/reasoning"] == 1.0
    assert logged["scenario/helpfulness"] == pytest.approx(sum(helpful) / 2)
    assert logged["scenario/harmlessness"] == pytest.approx(sum(harmless) / 2)


def test_helpfulness_reads_the_summary_and_harmlessness_the_whole_response(reward_model_path):
    reward = ScenarioReward(helpfulness_model=reward_model_path)
    helpful, harmless, _ = reward.judge_score(PROMPTS[2:], COMPLETIONS[2:])
    # Same summary, different reasoning: helpfulness cannot tell them apart, harmlessness sees the insult.
    assert helpful[0] == pytest.approx(helpful[1])
    assert harmless[0] != pytest.approx(harmless[1])
    assert reward.harmlessness is reward.helpfulness  # one model, two views


def test_a_separate_harmlessness_model_is_a_second_judge(reward_model_path, tmp_path):
    import shutil

    other = tmp_path / "harmlessness"
    shutil.copytree(reward_model_path, other)
    reward = ScenarioReward(helpfulness_model=reward_model_path, harmlessness_model=str(other))
    assert reward.harmlessness is not reward.helpfulness
    assert reward.harmlessness.model_name == str(other)


def test_rule_rewards_weights_and_params_are_configurable(reward_model_path):
    reward = ScenarioReward(
        helpfulness_model=reward_model_path,
        rule_rewards=["accuracy", "language_consistency"],
        rule_weights=[2.0, 0.5],
        rule_params={"language_consistency": {"language": "en"}},
    )
    scores = reward(
        prompts=PROMPTS[:1],
        completions=[[{"role": "assistant", "content": "<think>\nI add them.\n</think>\n<answer>\n3\n</answer>"}]],
        solution=["3"],
        scenario=["reasoning"],
    )
    assert scores == [2.0 * 1.0 + 0.5 * 1.0]


def test_required_columns_are_checked_before_training(reward_model_path):
    reward = rewards.get_reward_func("scenario", helpfulness_model=reward_model_path)
    assert reward.__name__ == "scenario"
    rewards.check_columns([reward], ["prompt", "solution", "scenario"])
    with pytest.raises(ValueError, match="scenario"):
        rewards.check_columns([reward], ["prompt", "solution"])


def test_an_unknown_scenario_value_names_the_column(reward_model_path):
    reward = ScenarioReward(helpfulness_model=reward_model_path)
    with pytest.raises(ValueError, match="'scenario' has values \\['chitchat'\\]"):
        reward(prompts=PROMPTS[:1], completions=COMPLETIONS[:1], solution=["3"], scenario=["chitchat"])


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"rule_rewards": []}, "rule_rewards is empty"),
        ({"rule_weights": [1.0]}, "one weight per rule reward"),
        ({"reward_model_params": {"judge": "summary"}}, "helpfulness_model / harmlessness_model"),
        ({"rule_rewards": ["accuracy", "shiny"]}, "Unknown reward 'shiny'"),
    ],
)
def test_bad_parameters_fail_when_the_reward_is_built(reward_model_path, bad, message):
    with pytest.raises(ValueError, match=message):
        ScenarioReward(helpfulness_model=reward_model_path, **bad)
