"""The R1 pipeline: its configuration and command lines, and a micro pipeline (the tiny YAML's stages and wiring,
a step or two each) that chains every stage, pushes every folder to a mocked Hub, resumes and measures."""

import json
import shutil
from concurrent.futures import Future
from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk
from huggingface_hub import HfApi
from transformers import Trainer

from recipes import pipeline
from recipes.lib.cli import CONFIGS_DIR, TINY_BASE
from recipes.lib.inputs import UserInputError
from recipes.pipeline import (
    DEFAULT_CONFIG,
    DONE_MARKER,
    RECIPES,
    PipelineConfig,
    as_flags,
    format_results_table,
    load_config,
    reusable_stages,
    run_pipeline,
    run_stage,
    stage_argv,
)

PIPELINE_CONFIGS = sorted((CONFIGS_DIR / "pipeline").glob("*.yaml"))

GRPO_MICRO = {
    "max_steps": 1,
    "per_device_train_batch_size": 4,
    "num_generations": 4,
    "max_completion_length": 12,
    "logging_steps": 1,
}
MICRO = {
    "r1_zero": GRPO_MICRO,
    "cold_start_sft": {"builtin_train_size": 8, "max_steps": 2, "per_device_train_batch_size": 4, "save_steps": 1},
    "reasoning_rl": GRPO_MICRO,
    # a micro model passes no quality filter: keep whatever it writes, once per prompt
    "rejection_sampling": {
        "max_prompts": 4,
        "num_generations": 2,
        "max_new_tokens": 12,
        "builtin_train_size": 40,
        "filters": ["dedup", "per_prompt_cap"],
        "max_per_prompt": 1,
    },
    "rs_sft": {"max_steps": 1, "per_device_train_batch_size": 4},
    "reward_model": {"builtin_train_size": 8, "builtin_test_size": 4, "max_steps": 1, "per_device_train_batch_size": 4},
    "all_scenario_data": {"n_train": 8, "n_test": 2},
    "all_scenario_rl": GRPO_MICRO,
    # nor does the micro teacher pass trace curation: both students learn from the rejection-sampling data
    "distill_qwen2": {"dataset_name": "${rejection_sampling}", "max_steps": 1, "per_device_train_batch_size": 4},
    "distill_llama": {"dataset_name": "${rejection_sampling}", "max_steps": 1, "per_device_train_batch_size": 4},
}
TRL_RECIPES = ("grpo", "sft", "distill", "reward_model")
"""Recipes parsed by TrlParser: (script arguments, training arguments, model arguments)."""
HUB_PREFIX = "me/r1"
DEEPSEEK_STAGES = ("r1_zero", "cold_start_sft", "reasoning_rl", "rs_sft", "all_scenario_rl")
"""The stages whose model is a DeepseekMini, which ships its code."""


def micro_config(output_dir: Path, **overrides) -> PipelineConfig:
    """The embedded default's stages and wiring at micro size, measured on 4 held-out problems."""
    config = load_config(DEFAULT_CONFIG, output_dir=str(output_dir), **overrides)
    for stage in config.stages:
        stage.args.update(MICRO[stage.name])
    config.eval.max_samples, config.eval.max_new_tokens = 4, 12
    return config


def record(folder: Path) -> dict:
    return json.loads((folder / "stage.json").read_text())


# ------------------------------------------------------------------------------------------------------------------
# Configuration and command lines


def test_flags_from_yaml_values():
    assert as_flags(
        {
            "max_steps": 5,
            "reward_funcs": ["accuracy", "format"],
            "eval_heldout": False,
            "reward_params": {"cosine": {"max_len": 8}},
        }
    ) == [
        "--max_steps",
        "5",
        "--reward_funcs",
        "accuracy",
        "format",
        "--eval_heldout",
        "false",
        "--reward_params",
        '{"cosine": {"max_len": 8}}',
    ]
    with pytest.raises(ValueError, match="leave the key out"):
        as_flags({"dataset_name": None})


def test_stage_command_lines_resolve_references_and_hub_repos(tmp_path):
    config = load_config(DEFAULT_CONFIG, output_dir=str(tmp_path), hub_prefix=HUB_PREFIX)
    argv = {stage.name: stage_argv(config, stage) for stage in config.stages}

    def flag(name, key):
        return argv[name][argv[name].index(f"--{key}") + 1]

    assert flag("r1_zero", "model_name_or_path") == str(TINY_BASE)
    assert flag("reasoning_rl", "model_name_or_path") == str(tmp_path / "cold_start_sft")
    assert flag("rs_sft", "dataset_name") == str(tmp_path / "rejection_sampling")
    params = json.loads(flag("all_scenario_rl", "reward_params"))
    assert params["scenario"]["helpfulness_model"] == str(tmp_path / "reward_model")
    assert flag("distill_llama", "dataset_name") == str(tmp_path / "distill_qwen2" / "traces")
    assert flag("cold_start_sft", "output_dir") == str(tmp_path / "cold_start_sft")
    assert {flag(name, "seed") for name in argv} == {"0"}  # one seed for every stage
    seeded = load_config(DEFAULT_CONFIG, output_dir=str(tmp_path), seed=7)
    assert all(stage_argv(seeded, stage).count("--seed") == 1 for stage in seeded.stages)
    assert {stage_argv(seeded, s)[stage_argv(seeded, s).index("--seed") + 1] for s in seeded.stages} == {"7"}
    assert flag("rs_sft", "hub_model_id") == "me/r1-rs-sft" and flag("rs_sft", "push_to_hub") == "true"
    assert flag("rejection_sampling", "hub_dataset_id") == "me/r1-rejection-sampling"
    assert "--push_to_hub" not in argv["all_scenario_data"]
    assert all(flag(name, "trust_remote_code") == "false" for name in argv if name != "all_scenario_data")
    assert "--trust_remote_code" not in argv["all_scenario_data"]  # it loads no model
    trusting = load_config(DEFAULT_CONFIG, output_dir=str(tmp_path), trust_remote_code=True)
    assert all(stage_argv(trusting, s)[-1] == "true" for s in trusting.stages if RECIPES[s.recipe].loads_models)


def test_the_pipeline_runs_no_folder_code_unless_trusted(tmp_path):
    """A model folder's own code (here one that leaves a marker when imported) runs only with trust_remote_code;
    DeepseekMini folders load either way, through the classes the project registers."""
    folder, marker = tmp_path / "custom", tmp_path / "code-ran"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "custom_lm", "auto_map": {"AutoConfig": "custom.CustomConfig"}})
    )
    (folder / "custom.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import PretrainedConfig\n"
        "class CustomConfig(PretrainedConfig):\n    model_type = 'custom_lm'\n"
    )
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline.load_policy(str(folder), trust_remote_code=False)
    assert not marker.exists()
    with pytest.raises(ValueError, match="Unrecognized configuration class"):  # trusted: its code ran, no model
        pipeline.load_policy(str(folder), trust_remote_code=True)
    assert marker.exists()
    _, model = pipeline.load_policy(str(TINY_BASE), trust_remote_code=False)
    assert type(model).__module__ == "modeling_deepseek_mini.modeling_deepseek_mini"


@pytest.mark.parametrize(
    "stages, message",
    [
        (
            [{"name": "a", "recipe": "sft", "args": {"model_name_or_path": "${b}"}}, {"name": "b", "recipe": "sft"}],
            "not an earlier stage",
        ),
        ([{"name": "a", "recipe": "sft"}, {"name": "a", "recipe": "grpo"}], "used twice"),
        ([{"name": "a", "recipe": "ppo"}], "unknown recipe"),
        ([{"name": "a", "recipe": "sft", "args": {"output_dir": "x"}}], "leave output_dir out"),
        ([{"name": "a", "recipe": "sft", "args": {"trust_remote_code": True}}], "set it once"),
        ([{"name": "a", "recipe": "grpo", "args": {"seed": 3}}], "sets seed: set it once"),
    ],
)
def test_bad_pipelines_fail_before_any_stage_runs(tmp_path, stages, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig(output_dir=str(tmp_path), stages=stages)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"r1_samples": -1}, "eval.r1_samples must be >= 0"),
        ({"greedy": True}, r"eval has no setting \['greedy'\]"),
    ],
)
def test_bad_eval_settings_fail_before_any_stage_runs(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig(output_dir=str(tmp_path), stages=[{"name": "a", "recipe": "sft"}], eval=settings)


@pytest.mark.parametrize("path", PIPELINE_CONFIGS, ids=lambda p: p.name)
def test_every_stage_of_every_pipeline_config_parses(path, tmp_path):
    """Each stage's command line parses with its recipe's own parser (nothing is loaded or run)."""
    config = load_config(path, output_dir=str(tmp_path))
    assert [s.recipe for s in config.stages].count("grpo") == 3
    for stage in config.stages:
        argv = stage_argv(config, stage)
        if stage.recipe == "rejection_sampling" and not find_spec("vllm"):  # the GPU config's sampler, checked here
            argv += ["--use_vllm", "false"]
        parsed = RECIPES[stage.recipe].parse(argv)
        assert parsed[1 if stage.recipe in TRL_RECIPES else 0].output_dir == str(tmp_path / stage.name)


def test_set_overrides_a_stage_flag_and_a_measurement_setting_and_until_stops(tmp_path):
    settings = ["rs_sft.num_train_epochs=1", "eval.dataset_test_split=validation", "eval.ood_split=", "rs_sft.x=[a, 2]"]
    config = load_config(DEFAULT_CONFIG, output_dir=str(tmp_path), settings=settings, until="rs_sft")
    assert [stage.name for stage in config.stages][-2:] == ["rejection_sampling", "rs_sft"]
    assert config.stages[-1].args["num_train_epochs"] == 1 and config.stages[-1].args["x"] == ["a", 2]
    assert config.eval.dataset_test_split == "validation" and config.eval.splits() == {"": "validation"}
    command_line = " ".join(stage_argv(config, config.stages[-1]))
    assert "--num_train_epochs 1 " in command_line and "--x a 2 " in command_line


@pytest.mark.parametrize(
    "settings, until, message",
    [
        (["rs_sft"], None, r"--set rs_sft: write STAGE.FLAG=VALUE"),
        (["rs_sft.num_train_epochs"], None, r"write STAGE.FLAG=VALUE"),
        (["rs_stf.num_train_epochs=1"], None, r"no stage 'rs_stf'; write one of \['r1_zero'"),
        (["rs_sft.num_train_epochs=[1"], None, r"does not parse as a YAML value"),
        (["eval.test_split=validation"], None, r"eval has no setting \['test_split'\]"),
        ([], "rs_stf", r"--until rs_stf: no such stage"),
    ],
)
def test_bad_set_or_until_fails_naming_what_to_write(tmp_path, settings, until, message):
    with pytest.raises(UserInputError, match=message):
        load_config(DEFAULT_CONFIG, output_dir=str(tmp_path), settings=settings, until=until)


def test_a_flag_set_on_the_command_line_is_checked_by_its_recipe_before_any_stage_runs(tmp_path, monkeypatch):
    config = load_config(DEFAULT_CONFIG, output_dir=str(tmp_path), settings=["distill_llama.num_train_epochz=3"])
    monkeypatch.setattr(pipeline, "evaluate_protocols", lambda *a, **kw: pytest.fail("the base was measured"))
    with pytest.raises(ValueError, match="Stage 'distill_llama'.*num_train_epochz"):
        run_pipeline(config)


def test_a_bad_flag_in_a_late_stage_fails_before_the_first_stage_runs(tmp_path, monkeypatch):
    config = load_config(DEFAULT_CONFIG, output_dir=str(tmp_path))
    monkeypatch.setitem(config.stages[-1].args, "num_train_epochz", 3)
    monkeypatch.setitem(config.stages[6].args, "general_share", 1.5)
    monkeypatch.setattr(pipeline, "evaluate_protocols", lambda *a, **kw: pytest.fail("the base was measured"))
    with pytest.raises(ValueError, match="Stage 'all_scenario_data': .*general_share"):
        run_pipeline(config)
    config.stages[6].args["general_share"] = 0.25
    with pytest.raises(ValueError, match="Stage 'distill_llama'.*num_train_epochz"):
        run_pipeline(config)
    assert not any(tmp_path.iterdir())


def test_a_failing_stage_is_not_marked_done(tmp_path, monkeypatch):
    def crash(script_args, training_args, model_args):
        Path(training_args.output_dir).mkdir(parents=True)
        raise RuntimeError("killed")

    monkeypatch.setitem(RECIPES, "sft", replace(RECIPES["sft"], main=crash))
    config = PipelineConfig(output_dir=str(tmp_path), stages=[{"name": "cold", "recipe": "sft"}])
    with pytest.raises(RuntimeError, match="killed"):
        run_stage(config, config.stages[0])
    assert (tmp_path / "cold").is_dir() and not (tmp_path / "cold" / DONE_MARKER).exists()


def test_results_table_shows_shares_in_percent_and_notes():
    table = format_results_table(
        [
            {
                "stage": "base",
                "recipe": "",
                "accuracy": 0.25,
                "pass@1": 0.125,
                "ood_accuracy": 0.05,
                "ood_pass@1": 0.0,
                "ood_mean_completion_tokens": 50.0,
                "format_compliance": 1.0,
                "language_consistency": 0.5,
                "mean_completion_tokens": 40.0,
                "reflection_rate": 0.0,
                "unknown_word_rate": 0.02,
            },
            {
                "stage": "r1_zero",
                "recipe": "grpo",
                "accuracy": 0.5,
                "pass@1": 0.5,
                "ood_accuracy": 0.0,
                "format_compliance": 1.0,
                "language_consistency": float("nan"),
                "mean_completion_tokens": 8.0,
                "reflection_rate": 0.0,
            },
            {"stage": "rs", "recipe": "rejection_sampling", "note": "kept_reasoning 12"},
        ]
    )
    assert "| base |  | 25.0% | 12.5% | 5.0% | 0.0% | 100.0% | 50.0% | 40.0 | 0.0% | 2.0% |  |" in table
    assert "| r1_zero | grpo | 50.0% | 50.0% | 0.0% |  | 100.0% | n/a | 8.0 | 0.0% |  |  |" in table  # no ood pass@1
    with_stderr = format_results_table(
        [{"stage": "r1", "recipe": "grpo", "accuracy": 0.955, "accuracy_stderr": 0.0071}]
    )
    assert with_stderr.splitlines()[-1].startswith("| r1 | grpo | 95.5% ± 0.7 |")
    assert table.splitlines()[-1] == "| rs | rejection_sampling |" + "  |" * 9 + " kept_reasoning 12 |"


# ------------------------------------------------------------------------------------------------------------------
# The micro pipeline


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    """Run the micro pipeline once with pushing on and the Hub mocked; (config, rows, uploads)."""
    out = tmp_path_factory.mktemp("pipeline") / "r1"
    uploads = []

    class RepoUrl(str):
        @property
        def repo_id(self):
            return str(self)

    def upload_folder(self, **kw):
        uploads.append({**kw, "files": sorted(p.name for p in Path(kw["folder_path"]).iterdir())})
        done = Future()  # the Trainer pushes checkpoints in the background and waits on this
        done.set_result(None)
        return done

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: RepoUrl(repo_id))
        mp.setattr(HfApi, "upload_folder", upload_folder)
        mp.setattr(HfApi, "upload_file", lambda self, **kw: uploads.append(kw))
        mp.setattr(
            Dataset, "push_to_hub", lambda self, repo_id, **kw: uploads.append({"repo_id": repo_id, "rows": len(self)})
        )
        config = micro_config(out, hub_prefix=HUB_PREFIX)
        rows = run_pipeline(config)
    return config, rows, uploads


def test_each_stage_starts_from_the_stage_before(micro_run):
    config, _, _ = micro_run
    out = Path(config.output_dir)
    assert all((out / stage.name / DONE_MARKER).exists() for stage in config.stages)
    assert record(out / "r1_zero")["parent"] == str(TINY_BASE)
    assert record(out / "cold_start_sft")["parent"] == str(TINY_BASE)
    assert record(out / "reasoning_rl")["parent"] == str(out / "cold_start_sft")
    assert record(out / "rejection_sampling")["parent"] == str(out / "reasoning_rl")
    assert record(out / "rs_sft")["parent"] == str(TINY_BASE)
    assert record(out / "rs_sft")["dataset"] == str(out / "rejection_sampling")
    assert record(out / "all_scenario_rl")["parent"] == str(out / "rs_sft")
    assert record(out / "all_scenario_rl")["dataset"] == str(out / "all_scenario_data")
    for student, model_type in (("distill_qwen2", "qwen2"), ("distill_llama", "llama")):
        assert record(out / student)["hyperparameters"]["teacher"] == str(out / "all_scenario_rl")
        assert json.loads((out / student / "config.json").read_text())["model_type"] == model_type


def test_every_policy_folder_is_hub_ready_and_pushed_to_its_repo(micro_run):
    config, _, uploads = micro_run
    out = Path(config.output_dir)
    last_upload = {u["repo_id"]: u for u in uploads if "folder_path" in u}
    for stage in config.stages:
        if stage.recipe in ("general_data", "rejection_sampling"):
            continue
        folder, repo_id = out / stage.name, f"{HUB_PREFIX}-{stage.name.replace('_', '-')}"
        files = {p.name for p in folder.iterdir()}
        assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "stage.json"} <= files, stage.name
        assert last_upload[repo_id]["folder_path"] == str(folder)
        assert "stage.json" in last_upload[repo_id]["files"] and DONE_MARKER not in last_upload[repo_id]["files"]
        assert "training_args.bin" not in last_upload[repo_id]["files"]  # no pickles on the Hub
        if stage.name in DEEPSEEK_STAGES:
            config_json = json.loads((folder / "config.json").read_text())
            assert "AutoModelForCausalLM" in config_json["auto_map"] and "modeling_deepseek_mini.py" in files
    rs = [u for u in uploads if u["repo_id"] == f"{HUB_PREFIX}-rejection-sampling"]
    assert rs[0]["rows"] == len(load_from_disk(str(out / "rejection_sampling")))
    assert {u["path_in_repo"] for u in rs[1:]} == {"filter_stats.json", "stage.json"}


def test_every_model_card_names_its_stage_and_parent(micro_run):
    config, _, _ = micro_run
    for stage in config.stages:
        if RECIPES[stage.recipe].hub_id_flag == "hub_model_id":
            card = (Path(config.output_dir) / stage.name / "README.md").read_text()
            assert "## deepseek-mini stage:" in card and "- parent checkpoint:" in card, stage.name
            if stage.recipe == "grpo":  # three GRPO stages, each card under its own name
                assert f"## deepseek-mini stage: {stage.name}" in card, stage.name


def test_the_table_has_one_row_per_stage_and_plots(micro_run):
    config, rows, _ = micro_run
    out = Path(config.output_dir)
    assert [row["stage"] for row in rows] == ["base", *(stage.name for stage in config.stages)]
    for row in rows:
        policy = row["stage"] == "base" or RECIPES[row["recipe"]].policy
        assert (set(pipeline.TABLE_METRICS) <= set(row)) == policy  # test and ood, greedy and R1's pass@1
    assert "kept_reasoning" in next(row for row in rows if row["stage"] == "rejection_sampling")["note"]
    assert (out / "results.json").read_text() == json.dumps(rows, indent=2)  # NaN-safe comparison
    assert "| distill_llama | distill |" in (out / "results.md").read_text()
    assert (out / "plots" / "stages.png").stat().st_size > 0


def test_a_second_run_skips_finished_stages(micro_run, monkeypatch):
    config, rows, _ = micro_run
    ran = []
    for name, recipe in list(RECIPES.items()):
        monkeypatch.setitem(RECIPES, name, replace(recipe, main=lambda *args: ran.append(args)))
    monkeypatch.setattr(pipeline, "evaluate_protocols", lambda *a, **kw: pytest.fail("measured again"))
    assert json.dumps(run_pipeline(config)) == json.dumps(rows) and ran == []


def test_reuse_links_the_stages_before_a_changed_one_and_what_does_not_depend_on_it(micro_run, tmp_path, monkeypatch):
    config, _, _ = micro_run
    changed = micro_config(tmp_path / "arm", hub_prefix=HUB_PREFIX)
    changed.stages[4].args["learning_rate"] = 1e-3  # rs_sft: it, and all_scenario_rl and the students after it, retrain
    assert changed.stages[4].name == "rs_sft"
    reused = ["r1_zero", "cold_start_sft", "reasoning_rl", "rejection_sampling", "reward_model", "all_scenario_data"]
    assert reusable_stages(changed, Path(config.output_dir)) == reused
    assert reusable_stages(micro_config(tmp_path / "same", hub_prefix=HUB_PREFIX), Path(config.output_dir)) == [
        stage.name for stage in config.stages
    ]
    assert (
        reusable_stages(micro_config(tmp_path / "other-seed", hub_prefix=HUB_PREFIX, seed=1), Path(config.output_dir))
        == []
    )
    sft_yaml = tmp_path / "sft.yaml"  # the recipe's own settings changed: every SFT stage, and what follows, retrains
    sft_yaml.write_text(RECIPES["sft"].default_config.read_text().replace("learning_rate:", "learning_rate: 1.0e-3 #"))
    monkeypatch.setitem(RECIPES, "sft", replace(RECIPES["sft"], default_config=sft_yaml))
    same = micro_config(tmp_path / "same-flags", hub_prefix=HUB_PREFIX)
    assert reusable_stages(same, Path(config.output_dir)) == ["r1_zero", "reward_model", "all_scenario_data"]


def test_a_reused_stage_keeps_its_measurement_only_under_the_same_settings(micro_run, tmp_path, monkeypatch):
    config, rows, _ = micro_run
    for name, recipe in list(RECIPES.items()):
        monkeypatch.setitem(RECIPES, name, replace(recipe, main=lambda *a: pytest.fail("a reused stage ran")))
    monkeypatch.setattr(pipeline, "evaluate_protocols", lambda *a, **kw: pytest.fail("measured again"))
    same = micro_config(tmp_path / "same", hub_prefix=HUB_PREFIX)
    same.stages = same.stages[:2]  # until cold_start_sft
    reused_rows = run_pipeline(same, reuse=Path(config.output_dir))
    assert [row["accuracy"] for row in reused_rows] == [row["accuracy"] for row in rows[:3]]
    assert (tmp_path / "same" / "cold_start_sft").resolve() == (Path(config.output_dir) / "cold_start_sft").resolve()

    measured = []
    monkeypatch.setattr(pipeline, "evaluate_protocols", lambda *a, **kw: measured.append(1) or {"accuracy": 0.5})
    validation = micro_config(tmp_path / "validation", hub_prefix=HUB_PREFIX)
    validation.stages, validation.eval.dataset_test_split, validation.eval.ood_split = same.stages, "validation", ""
    assert [row["accuracy"] for row in run_pipeline(validation, reuse=Path(config.output_dir))] == [0.5] * 3
    assert len(measured) == 3  # the base and both stages, on the new split


# Last of the micro run's tests: it retrains a stage of the shared run.


def test_an_unfinished_stage_reruns_from_its_last_checkpoint(micro_run, monkeypatch):
    config, _, _ = micro_run
    folder = Path(config.output_dir) / "cold_start_sft"
    shutil.rmtree(folder / "checkpoint-2")  # as if the run had been killed after checkpoint-1
    for name in (DONE_MARKER, "stage.json"):
        (folder / name).unlink()
    loaded, ran = [], []
    original_load = Trainer._load_from_checkpoint
    monkeypatch.setattr(
        Trainer,
        "_load_from_checkpoint",
        lambda self, path, *a, **kw: (loaded.append(path), original_load(self, path, *a, **kw)),
    )
    for name, recipe in list(RECIPES.items()):

        def spy(*args, recipe=recipe, name=name):
            ran.append(name)
            recipe.main(*args)

        monkeypatch.setitem(RECIPES, name, replace(recipe, main=spy))
    measured = (Path(config.output_dir) / "eval" / "cold_start_sft.json").stat().st_mtime_ns
    monkeypatch.setattr(config, "hub_prefix", None)  # the Hub is not mocked here
    run_pipeline(config)
    assert ran == ["sft"] and loaded == [str(folder / "checkpoint-1")]
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 2
    assert (folder / DONE_MARKER).exists()
    assert (Path(config.output_dir) / "eval" / "cold_start_sft.json").stat().st_mtime_ns > measured  # measured again


def test_reuse_of_a_folder_that_does_not_exist_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "evaluate_protocols", lambda *a, **kw: pytest.fail("the base was measured"))
    with pytest.raises(UserInputError, match="--reuse .*no such folder"):
        run_pipeline(load_config(DEFAULT_CONFIG, output_dir=str(tmp_path / "out")), reuse=tmp_path / "nothing")
    assert not (tmp_path / "out").exists()
