"""benchmarks/mtp_per_stage.py: which stages of a pipeline run it measures, with which prompts, and its summary."""

import importlib.util
import sys
from pathlib import Path

from transformers import Qwen2Config

from recipes.lib.prompts import R1_ZERO_SYSTEM_PROMPT, R1_ZERO_TEMPLATE
from recipes.lib.task import make_splits

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling benchmarks by name, as when run as a script
spec = importlib.util.spec_from_file_location("mtp_per_stage", BENCHMARKS / "mtp_per_stage.py")
mtp_per_stage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mtp_per_stage)


def test_only_deepseek_mini_stages_with_mtp_modules_are_measured(tmp_path, tiny_config):
    tiny_config(num_nextn_predict_layers=1).save_pretrained(tmp_path / "r1_zero")
    tiny_config(num_nextn_predict_layers=1).save_pretrained(tmp_path / "rs_sft")
    tiny_config(num_nextn_predict_layers=0).save_pretrained(tmp_path / "cold_start_sft")  # no MTP: skipped
    Qwen2Config(num_hidden_layers=1).save_pretrained(tmp_path / "distill_qwen2")  # a student: skipped
    (tmp_path / "rejection_sampling").mkdir()  # data, not a model
    stages = mtp_per_stage.stages_with_mtp(tmp_path)
    assert [(s["stage"], s["template"], s["recipe"]) for s in stages] == [
        ("base", "r1_zero", ""),  # the shipped tiny base, prompted as it was pretrained
        ("r1_zero", "r1_zero", "grpo"),
        ("rs_sft", "chat", "sft"),
    ]
    assert stages[1]["path"] == str(tmp_path / "r1_zero")


class MarkingTokenizer:
    """Renders a conversation as its contents joined by '|', so that the chat path shows in the text."""

    def apply_chat_template(self, conversation, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "|".join(message["content"] for message in conversation) + "|assistant:"


def test_prompts_follow_the_stage_template():
    plain = mtp_per_stage.prompts_in("r1_zero", "test", 3, MarkingTokenizer())
    chat = mtp_per_stage.prompts_in("chat", "test", 3, MarkingTokenizer())
    problems = make_splits(seed=0, n_train=0, n_test=3, n_validation=0, n_ood=0)["test"]["problem"]
    assert plain == [R1_ZERO_TEMPLATE.format(problem=problem) for problem in problems]
    assert chat == [f"{R1_ZERO_SYSTEM_PROMPT}|{problem}|assistant:" for problem in problems]


def test_summary_table_gives_mean_and_range_over_runs():
    def row(stage, before, after=None):
        out = {"stage": stage, "before": {"acceptance_rate": before, "row_acceptance_rate": before}}
        return out | ({"after": {"acceptance_rate": after, "row_acceptance_rate": after}} if after else {})

    table = mtp_per_stage.summary_table([row("sft", 0.9), row("rl", 0.8, 1.0), row("rl", 0.6, 0.9)])
    assert "| sft | 1 | 0.900 [0.900, 0.900] | 0.900 [0.900, 0.900] | - | - |" in table
    assert "| rl | 2 | 0.700 [0.600, 0.800] | 0.700 [0.600, 0.800] | 0.950 [0.900, 1.000] |" in table
