"""A user's first hour (issue 17): every bad input is refused before any work starts, in one or two lines that name
the value and say what to write instead, and nothing is trained or written. One test per row of the issue's table
(its rerun row aside); most at parse level, a few through the command line as the user meets them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from recipes import distill, grpo, pipeline, pretrain, rejection_sampling, reward_model, sft
from recipes.lib import inputs
from recipes.lib.cli import parse_recipe_args
from recipes.lib.inputs import UserInputError

ROOT = Path(__file__).resolve().parents[1]
TRAINING_RECIPES = [grpo, sft, distill, reward_model, pretrain]
MODEL_RECIPES = [grpo, sft, distill, reward_model, rejection_sampling]
ROWS = [{"problem": "What is 2 + 3?", "answer": "5"}, {"problem": "What is 4 + 1?", "answer": "5"}]


def parse(recipe, *flags: str, output_dir: Path | None = None) -> tuple:
    """The recipe's arguments as its command line reads them, with its embedded YAML."""
    out = ["--output_dir", str(output_dir)] if output_dir else []
    return parse_recipe_args(recipe.make_parser(), recipe.DEFAULT_CONFIG, [*flags, *out])


def run_cli(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=ROOT)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ------------------------------------------------------------------------------------------------------------------
# `--max_steps -5` and other numbers out of range


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--max_steps", "-5", r"--max_steps -5: write -1 \(train by num_train_epochs\) or a number of steps >= 0"),
        ("--learning_rate", "0", r"--learning_rate 0.0: write a positive number"),
        ("--learning_rate", "-0.001", r"--learning_rate -0.001: write a positive number"),
        ("--per_device_train_batch_size", "0", r"--per_device_train_batch_size 0: write a positive integer"),
        ("--gradient_accumulation_steps", "0", r"--gradient_accumulation_steps 0: write a positive integer"),
    ],
)
@pytest.mark.parametrize("recipe", TRAINING_RECIPES, ids=lambda m: m.__name__.split(".")[-1])
def test_a_number_out_of_range_is_refused(recipe, flag, value, message):
    if recipe is grpo and flag in ("--per_device_train_batch_size", "--gradient_accumulation_steps"):
        message = rf"{flag} 0 x .* must be a multiple of --num_generations|{message}"  # the group rule sees it first
    with pytest.raises(UserInputError, match=message):
        parse(recipe, flag, value)


def test_grpo_needs_two_generations_per_prompt():
    with pytest.raises(UserInputError, match="--num_generations 1: write 2 or more"):
        parse(grpo, "--num_generations", "1", "--per_device_train_batch_size", "8")


def test_rejection_sampling_refuses_zero_generations():
    with pytest.raises(UserInputError, match="num_generations"):
        parse(rejection_sampling, "--num_generations", "0")


def test_the_command_line_prints_one_line_and_trains_nothing(tmp_path):
    out = tmp_path / "run"
    result = run_cli("recipes/grpo.py", "--max_steps", "-5", "--output_dir", str(out))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --max_steps -5: write -1")
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------------------
# Prefixes of real flags


@pytest.mark.parametrize(
    "flag, closest", [("--learning_rat", "'--learning_rate'"), ("--max_step", "'--max_steps'")], ids=str
)
@pytest.mark.parametrize("recipe", TRAINING_RECIPES, ids=lambda m: m.__name__.split(".")[-1])
def test_a_prefix_of_a_flag_is_refused_with_the_flag(recipe, flag, closest):
    with pytest.raises(UserInputError, match=f"the command line: unknown '{flag}' \\(did you mean {closest}"):
        parse(recipe, flag, "3")


def test_a_prefix_of_a_pipeline_flag_is_refused():
    with pytest.raises(UserInputError, match="unrecognized arguments: --out x"):
        pipeline.main(["--out", "x"])


# ------------------------------------------------------------------------------------------------------------------
# A misspelled YAML key


def test_a_misspelled_yaml_key_names_the_closest_key(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("learning_rat: 1.0e-4\nmax_steps: 3\n")
    with pytest.raises(UserInputError) as error:
        parse(grpo, "--config", str(config))
    assert str(error.value) == (
        f"{config}: unknown 'learning_rat' (did you mean 'learning_rate' or 'mtp_refresh_learning_rate'?)."
    )


def test_a_misspelled_pipeline_key_names_the_closest_key(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"output_dir: {tmp_path}\nbase_modle: x\nstages: []\n")
    with pytest.raises(UserInputError, match="unknown 'base_modle' \\(did you mean 'base_model'"):
        pipeline.load_config(config)


# ------------------------------------------------------------------------------------------------------------------
# A dataset or model path that does not exist


@pytest.mark.parametrize("flag", ["--dataset_name", "--model_name_or_path"])
@pytest.mark.parametrize("path", ["data/missing.jsonl", "./missing", "outputs/none/checkpoint-5", "~/no/such"])
@pytest.mark.parametrize("recipe", MODEL_RECIPES, ids=lambda m: m.__name__.split(".")[-1])
def test_a_local_path_that_does_not_exist_says_so(recipe, flag, path, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserInputError, match=f"^{flag}: no such file or folder: {path} "):
        recipe.main(*parse(recipe, flag, path, output_dir=out))
    assert not out.exists()


@pytest.fixture
def hub(monkeypatch):
    """A stand-in Hub that holds one model and one dataset; (repo_id, repo_type) of every question asked."""
    asked, held = [], {("Qwen/Qwen2.5-0.5B", "model"), ("open-r1/OpenR1-Math-220k", "dataset")}
    monkeypatch.setattr(inputs.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(
        inputs.HfApi,
        "repo_exists",
        lambda self, repo_id, repo_type=None: asked.append((repo_id, repo_type)) or ((repo_id, repo_type) in held),
    )
    return asked


@pytest.mark.parametrize(
    "flag, name, kind",
    [
        ("--model_name_or_path", "Qwen/Qwen2.5-0.5b-instruct", "model"),
        ("--dataset_name", "open-r1/OpenR1-Math", "dataset"),
    ],
)
def test_a_hub_id_the_hub_does_not_have_is_refused_before_loading(hub, tmp_path, flag, name, kind):
    out = tmp_path / "run"
    with pytest.raises(UserInputError, match=f"^{flag}: no {kind} '{name}' on the Hub .*hf auth login"):
        grpo.main(*parse(grpo, flag, name, output_dir=out))
    assert hub == [(name, kind)] and not out.exists()


def test_a_hub_id_the_hub_has_passes_and_offline_nothing_is_asked(hub, monkeypatch):
    assert not inputs.looks_local("Qwen/Qwen2.5-0.5B") and not inputs.looks_local("open-r1/OpenR1-Math-220k")
    inputs.check_hub_id("Qwen/Qwen2.5-0.5B", "model_name_or_path", "model")
    inputs.check_hub_id("open-r1/OpenR1-Math-220k", "dataset_name", "dataset")
    inputs.check_hub_id("outputs/none/model", "model_name_or_path", "model")  # local-looking: check_local_path's
    monkeypatch.setattr(inputs.constants, "HF_HUB_OFFLINE", True)
    inputs.check_hub_id("no/such-model", "model_name_or_path", "model")
    assert hub == [("Qwen/Qwen2.5-0.5B", "model"), ("open-r1/OpenR1-Math-220k", "dataset")]


def test_an_unreachable_hub_leaves_the_id_to_the_load(monkeypatch):
    def unreachable(self, repo_id, repo_type=None):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(inputs.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(inputs.HfApi, "repo_exists", unreachable)
    inputs.check_hub_id("no/such-model", "model_name_or_path", "model")  # no error: the load will say what it finds


TRAIN_SPLIT_CASES = [  # (recipe, a row it can read, the flag naming the split it reads)
    (grpo, {"problem": "What is 2 + 3?", "solution": "5"}, "--dataset_train_split"),
    (
        sft,
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        "--dataset_train_split",
    ),
    (reward_model, {"chosen": "a", "rejected": "b"}, "--dataset_train_split"),
    (rejection_sampling, {"problem": "What is 2 + 3?", "solution": "5"}, "--dataset_split"),
]


@pytest.mark.parametrize(
    "recipe, row, flag", TRAIN_SPLIT_CASES, ids=lambda c: getattr(c, "__name__", "").split(".")[-1]
)
def test_a_dataset_without_the_split_to_train_on_names_the_flag_and_its_splits(recipe, row, flag, tmp_path):
    DatasetDict({"test": Dataset.from_list([row])}).save_to_disk(str(tmp_path / "data"))
    with pytest.raises(UserInputError, match=rf"^{flag} train: .*data has no such split \(it has \['test'\]\)"):
        recipe.main(*parse(recipe, "--dataset_name", str(tmp_path / "data"), output_dir=tmp_path / "run"))


# ------------------------------------------------------------------------------------------------------------------
# YAML that does not parse


def test_yaml_that_does_not_parse_gives_file_line_and_column_first(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("max_steps: 3\nreward_funcs: [accuracy, format\nlearning_rate: 1e-4\n")
    with pytest.raises(UserInputError, match=f"^{config}:3:14: the YAML does not parse: "):
        parse(grpo, "--config", str(config))


def test_a_pipeline_yaml_that_does_not_parse_prints_one_line(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\nstages:\n  - name: a\n   recipe: grpo\n")
    result = run_cli("recipes/pipeline.py", "--config", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {config}:4:4: the YAML does not parse: expected <block end>")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------------------------
# The group-size rule, in the flags the user set


def test_the_group_size_rule_names_the_flags_the_user_set():
    with pytest.raises(UserInputError) as error:
        parse(grpo, "--per_device_train_batch_size", "3", "--num_generations", "8")
    assert str(error.value) == (
        "--per_device_train_batch_size 3 x --gradient_accumulation_steps 1 x 1 process(es) must be a multiple of "
        "--num_generations 8: e.g. --per_device_train_batch_size 8."
    )


# ------------------------------------------------------------------------------------------------------------------
# A jsonl without the gold column


def test_a_dataset_without_the_gold_column_names_the_flag_before_asking_for_a_split(tmp_path):
    data, out = write_jsonl(tmp_path / "mine.jsonl", ROWS), tmp_path / "run"
    with pytest.raises(UserInputError) as error:
        grpo.main(*parse(grpo, "--dataset_name", str(data), output_dir=out))
    assert str(error.value) == (
        f"--solution_column solution: {data} has no such column for the reward(s) ['accuracy'] (it has ['problem', "
        "'answer', 'prompt']); name its gold answers with --solution_column."
    )
    assert not out.exists()


def test_a_dataset_without_a_test_split_names_both_ways_out(tmp_path):
    data, out = write_jsonl(tmp_path / "mine.jsonl", ROWS), tmp_path / "run"
    with pytest.raises(UserInputError) as error:
        grpo.main(*parse(grpo, "--dataset_name", str(data), "--solution_column", "answer", output_dir=out))
    assert str(error.value) == (
        f"--dataset_test_split test: {data} has no such split (it has ['train']); name the held-out split with "
        "--dataset_test_split <split>, or --eval_heldout false."
    )
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------------------
# The pipeline checks every stage's rewards, models and data before the first stage runs


@pytest.fixture
def tiny_pipeline(tmp_path, monkeypatch):
    """The embedded pipeline writing under `tmp_path`, whose base must not be measured (nothing may run)."""
    monkeypatch.setattr(pipeline, "evaluate_protocols", lambda *a, **kw: pytest.fail("the base was measured"))
    return pipeline.load_config(pipeline.DEFAULT_CONFIG, output_dir=str(tmp_path / "out"))


def stage(config, name: str):
    return next(s for s in config.stages if s.name == name)


def test_a_reward_typo_in_the_last_rl_stage_fails_before_the_first_stage(tiny_pipeline, tmp_path, monkeypatch):
    monkeypatch.setitem(stage(tiny_pipeline, "all_scenario_rl").args, "reward_funcs", ["scenario", "acuracy"])
    with pytest.raises(UserInputError, match="^Stage 'all_scenario_rl': --reward_funcs acuracy: no such reward; "):
        pipeline.run_pipeline(tiny_pipeline)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["model_name_or_path", "dataset_name"])
def test_a_missing_path_in_a_late_stage_fails_before_the_first_stage(tiny_pipeline, tmp_path, monkeypatch, flag):
    monkeypatch.setitem(stage(tiny_pipeline, "distill_llama").args, flag, "data/nothing.jsonl")
    with pytest.raises(UserInputError, match=f"^Stage 'distill_llama': --{flag}: no such file or folder: data/"):
        pipeline.run_pipeline(tiny_pipeline)
    assert not (tmp_path / "out").exists()


def test_a_missing_base_model_fails_before_the_first_stage(tiny_pipeline, tmp_path):
    tiny_pipeline.base_model = "outputs/no/base"
    with pytest.raises(UserInputError, match="^--base_model: no such file or folder: outputs/no/base "):
        pipeline.run_pipeline(tiny_pipeline)
    assert not (tmp_path / "out").exists()
