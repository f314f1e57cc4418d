"""Distillation: a small student learns the teacher's reasoning by SFT on its curated traces (DeepSeek-R1, Sec. 2.4).

    accelerate launch recipes/distill.py                                     # the embedded default
    accelerate launch recipes/distill.py --teacher_model_name_or_path outputs/r1 --student_preset llama-tiny
    accelerate launch recipes/distill.py --dataset_name out/rejection-sampling --model_name_or_path Qwen/Qwen2.5-1.5B

Traces: with `dataset_name` unset, the teacher answers the prompts of `prompts_dataset_name` (`trace_num_generations`
samples each) and its answers are curated with rejection sampling's filters (correct, well formed, one language, not
truncated, not repetitive, deduplicated; `trace_max_per_prompt` kept per prompt); they are saved under
`<output_dir>/traces`. With `dataset_name` set, a `messages` dataset is used as it is, e.g. rejection sampling's
output or a Hub set of R1 traces.

Student: `model_name_or_path` (a path or Hub id, with its own tokenizer), or a Qwen2 / Llama built from a config
(`student_preset`) around `student_tokenizer_name_or_path` (default: the teacher's tokenizer). Traces are text, so
they are re-tokenised with the student's tokenizer and chat template: any student works with any teacher.

Loss: `distillation_loss: sft` (R1's recipe: next-token loss on the teacher's text, no RL on the student), or `gkd`
(TRL's GKDTrainer: the student also matches the teacher's next-token distributions on the traces, by generalized
JSD with `beta`; `lmbda` > 0 mixes in the student's own samples). `gkd` needs a shared vocabulary.
"""

import json
import logging
import os
from dataclasses import dataclass, field

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, ScriptArguments, TrlParser
from trl.experimental.gkd import GKDConfig, GKDTrainer

import modeling_deepseek_mini  # noqa: F401  (registers DeepseekMini with the Auto classes)
from recipes.lib.cli import CONFIGS_DIR, TINY_BASE, parse_recipe_args, run_entry_point
from recipes.lib.data import BUILTIN_DATASET, load_any_dataset, split_of, write_dataset
from recipes.lib.data_parallel import UnreachedParametersCallback, tolerate_unreached_parameters
from recipes.lib.heldout import HeldoutArguments, load_heldout, report_heldout_after
from recipes.lib.inputs import check_inputs
from recipes.lib.lora import peft_config_for
from recipes.lib.presets import TINY_CAUSAL_LM_PRESETS, config_from_preset, preset_student_tokenizer
from recipes.lib.sampling import RejectionSamplingArguments, SamplingConfig, format_stats, sample_and_filter
from recipes.lib.sft_trainer import check_sft_data, make_sft_trainer
from recipes.lib.stage import StageArguments, finish_stage, prepare_stage, train_stage

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = CONFIGS_DIR / "distill_tiny.yaml"

DISTILLATION_LOSSES = ("sft", "gkd")


@dataclass
class DistillScriptArguments(ScriptArguments, HeldoutArguments, StageArguments):
    """Teacher traces, student and loss of the distillation recipe (HeldoutArguments: how the teacher is prompted,
    and the student measured on held-out problems)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Traces with a `messages` column (e.g. rejection sampling's output folder, a Hub id, a data "
            "file); None makes the teacher write them for the prompts of `prompts_dataset_name`."
        },
    )
    prompts_dataset_name: str = field(
        default=BUILTIN_DATASET,
        metadata={
            "help": f"Prompts the teacher answers: '{BUILTIN_DATASET}' (the arithmetic task), a Hub id, a file or "
            "a folder."
        },
    )
    max_prompts: int = field(default=256, metadata={"help": "Prompts the teacher answers."})
    trace_num_generations: int = field(default=4, metadata={"help": "Teacher samples per prompt before curation."})
    trace_temperature: float = field(default=1.0, metadata={"help": "Teacher sampling temperature."})
    trace_max_new_tokens: int = field(default=128, metadata={"help": "Teacher generation budget per trace, in tokens."})
    trace_max_per_prompt: int = field(default=1, metadata={"help": "Curated traces kept per prompt."})
    trace_use_vllm: bool = field(default=False, metadata={"help": "Write the traces with vLLM (must be installed)."})
    student_preset: str = field(
        default="qwen2-tiny",
        metadata={
            "help": "Student built from a config when model_name_or_path is unset: one of "
            f"{sorted(TINY_CAUSAL_LM_PRESETS)}."
        },
    )
    student_tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Tokenizer of a preset student; None uses the teacher's. (A loaded student uses its own.)"},
    )
    distillation_loss: str = field(
        default="sft",
        metadata={
            "help": "'sft' (next-token loss on the traces, as R1) or 'gkd' (also match the teacher's logits; "
            "GKDConfig's beta, lmbda, temperature apply). gkd needs teacher and student to share a vocabulary."
        },
    )
    builtin_train_size: int = field(default=2000, metadata={"help": "Train problems of the built-in task."})

    def __post_init__(self):
        super().__post_init__()
        if self.distillation_loss not in DISTILLATION_LOSSES:
            raise ValueError(f"distillation_loss must be one of {DISTILLATION_LOSSES}, got {self.distillation_loss!r}.")
        if self.student_preset not in TINY_CAUSAL_LM_PRESETS:
            raise ValueError(
                f"student_preset must be one of {sorted(TINY_CAUSAL_LM_PRESETS)}, got {self.student_preset!r}."
            )
        if min(self.max_prompts, self.trace_num_generations, self.trace_max_new_tokens, self.trace_max_per_prompt) < 1:
            raise ValueError(
                "max_prompts, trace_num_generations, trace_max_new_tokens and trace_max_per_prompt must be >= 1."
            )


def teacher_name(training_args: GKDConfig) -> str:
    """The teacher: GKDConfig's `teacher_model_name_or_path`, or the shipped tiny base when it is unset."""
    return training_args.teacher_model_name_or_path or str(TINY_BASE)


# ------------------------------------------------------------------------------------------------------------------
# Traces


def write_traces(script_args: DistillScriptArguments, training_args: GKDConfig, model_args: ModelConfig) -> Dataset:
    """The teacher's curated traces for the prompt set, as `messages`; saved with their statistics under
    `<output_dir>/traces` (by the main process; launched as several, the processes share the sampling)."""
    traces_dir = os.path.join(training_args.output_dir, "traces")
    rs_args = RejectionSamplingArguments(
        dataset_name=script_args.prompts_dataset_name,
        prompt_template=script_args.prompt_template,
        problem_column=script_args.problem_column,
        solution_column=script_args.solution_column,
        gold_answer_regex=script_args.gold_answer_regex,
        max_prompts=script_args.max_prompts,
        builtin_seed=script_args.builtin_seed,
        builtin_train_size=script_args.builtin_train_size,
        max_per_prompt=script_args.trace_max_per_prompt,
        general_dataset_name=None,
        general_ratio=0.0,
        output_dir=traces_dir,
    )
    sampling = SamplingConfig(
        num_generations=script_args.trace_num_generations,
        temperature=script_args.trace_temperature,
        max_new_tokens=script_args.trace_max_new_tokens,
        use_vllm=script_args.trace_use_vllm,
        seed=training_args.seed,
        trust_remote_code=training_args.trust_remote_code,
    )
    teacher_args = ModelConfig(model_name_or_path=teacher_name(training_args), dtype=model_args.dtype)
    rows, stats = sample_and_filter(teacher_args, rs_args, sampling)
    if training_args.process_index == 0:
        print(format_stats({**stats, "general": 0}))
    if not rows:
        raise RuntimeError(
            f"The teacher {teacher_name(training_args)} wrote no trace that passed curation ({stats['removed']}): "
            "raise trace_num_generations or max_prompts, use a stronger teacher, or give traces with dataset_name."
        )
    traces = Dataset.from_list(rows)  # the same on every process: each sampled a share, all gathered every row
    if training_args.process_index == 0:
        write_dataset(traces, traces_dir)
        with open(os.path.join(traces_dir, "filter_stats.json"), "w") as f:
            json.dump(stats, f, indent=2)
    return traces


def load_traces(script_args: DistillScriptArguments, training_args: GKDConfig, model_args: ModelConfig) -> Dataset:
    """The training traces: `dataset_name`'s train split, or freshly written by the teacher."""
    if script_args.dataset_name is None:
        return write_traces(script_args, training_args, model_args)
    splits = load_any_dataset(script_args.dataset_name, script_args.dataset_config)
    return split_of(
        splits, script_args.dataset_train_split, flag="dataset_train_split", dataset_name=script_args.dataset_name
    )


# ------------------------------------------------------------------------------------------------------------------
# Student


def load_student(script_args: DistillScriptArguments, training_args: GKDConfig, model_args: ModelConfig):
    """(student, its tokenizer, description): loaded from `model_name_or_path`, or built from `student_preset`."""
    trust = training_args.trust_remote_code
    if model_args.model_name_or_path is not None:
        name = model_args.model_name_or_path
        tokenizer = AutoTokenizer.from_pretrained(name, revision=model_args.model_revision, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(
            name,
            revision=model_args.model_revision,
            trust_remote_code=trust,
            attn_implementation=model_args.attn_implementation,
            dtype=model_args.dtype,
        )
        return model, tokenizer, name
    tokenizer_name = script_args.student_tokenizer_name_or_path or teacher_name(training_args)
    tokenizer = preset_student_tokenizer(script_args.student_preset, tokenizer_name, trust_remote_code=trust)
    model = AutoModelForCausalLM.from_config(config_from_preset(script_args.student_preset, tokenizer))
    return model, tokenizer, f"{script_args.student_preset} (built from a config, tokenizer {tokenizer_name})"


def check_shared_vocabulary(teacher_tokenizer, student_tokenizer) -> None:
    """Logit-level distillation compares distributions token by token: the two vocabularies must be the same."""
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise ValueError(
            "distillation_loss=gkd needs the teacher and the student to share a vocabulary, and theirs differ "
            f"({len(teacher_tokenizer)} vs {len(student_tokenizer)} tokens). Use distillation_loss=sft (the text is "
            "re-tokenised), or a student that keeps the teacher's tokenizer (student_tokenizer_name_or_path; a Llama "
            "preset keeps it, a Qwen2 one reloads it as Qwen2Tokenizer and cannot)."
        )


def make_gkd_trainer(student, tokenizer, traces, script_args, training_args: GKDConfig, model_args: ModelConfig):
    """TRL's GKDTrainer: the student matches the teacher's token distributions on the traces."""
    teacher_tokenizer = AutoTokenizer.from_pretrained(
        teacher_name(training_args), trust_remote_code=training_args.trust_remote_code
    )
    check_shared_vocabulary(teacher_tokenizer, tokenizer)
    teacher = AutoModelForCausalLM.from_pretrained(
        teacher_name(training_args), trust_remote_code=training_args.trust_remote_code, dtype=model_args.dtype
    )
    return GKDTrainer(
        model=student,
        teacher_model=teacher,
        args=tolerate_unreached_parameters(training_args),
        callbacks=[UnreachedParametersCallback()],
        train_dataset=traces.select_columns(["messages"]),
        processing_class=tokenizer,
        peft_config=peft_config_for(student, model_args),
    )


def main(script_args: DistillScriptArguments, training_args: GKDConfig, model_args: ModelConfig):
    check_inputs(script_args, training_args, model_args)  # a wrong path or reward name fails before any loading
    run = prepare_stage(script_args, training_args, model_args)

    # Data: the teacher's traces, and the held-out problems
    traces = load_traces(script_args, training_args, model_args)
    check_sft_data(traces, training_args)
    heldout = load_heldout(script_args, script_args.dataset_test_split)

    # Student
    student, tokenizer, student_name = load_student(script_args, training_args, model_args)
    if training_args.assistant_only_loss and not tokenizer.chat_template:
        raise ValueError(
            f"The student's tokenizer ({student_name}) has no chat template, which assistant_only_loss "
            "needs: set --chat_template_path, or --assistant_only_loss false."
        )

    # Trainer
    if script_args.distillation_loss == "gkd":
        trainer = make_gkd_trainer(student, tokenizer, traces, script_args, training_args, model_args)
    else:
        trainer = make_sft_trainer(
            student, tokenizer, traces, training_args, peft_config=peft_config_for(student, model_args)
        )

    # Train
    train_stage(trainer, run)

    # Held-out measurement
    metrics = report_heldout_after(trainer, tokenizer, heldout, script_args, training_args.output_dir)

    # Save, card, push
    traces_source = (
        script_args.dataset_name or f"traces of {teacher_name(training_args)} on {script_args.prompts_dataset_name}"
    )
    hyperparameters = {
        "teacher": teacher_name(training_args),
        "student": student_name,
        "distillation_loss": script_args.distillation_loss,
        "traces": len(traces),
        "learning_rate": training_args.learning_rate,
        "num_train_epochs": training_args.num_train_epochs,
        "max_steps": training_args.max_steps,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "max_length": training_args.max_length,
    }
    if script_args.distillation_loss == "gkd":
        hyperparameters.update(
            beta=training_args.beta, lmbda=training_args.lmbda, temperature=training_args.temperature
        )
    finish_stage(
        trainer,
        training_args,
        run,
        stage="distill",
        parent=student_name,
        dataset=traces_source,
        hyperparameters=hyperparameters,
        metrics=metrics,
    )
    return trainer


def make_parser() -> TrlParser:
    return TrlParser((DistillScriptArguments, GKDConfig, ModelConfig))


if __name__ == "__main__":
    run_entry_point(lambda: main(*parse_recipe_args(make_parser(), DEFAULT_CONFIG)))
