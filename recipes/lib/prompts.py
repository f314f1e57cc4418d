"""How prompts and gold answers are built from a dataset's problems, for every recipe that prompts a model."""

import re
from dataclasses import dataclass, field

from recipes.lib.data import require_columns
from recipes.lib.task import R1_ZERO_SYSTEM_PROMPT, R1_ZERO_TEMPLATE

PROMPT_TEMPLATES = ("r1_zero", "chat", "none")


PROMPT_TEMPLATE_HELP = {
    "help": "How prompts are built from `problem_column`: 'r1_zero' (R1-Zero's plain-text template), 'chat' (the "
    "tokenizer's chat template with the R1-Zero instructions as system prompt) or 'none' (the data already has a "
    "`prompt` column). Use the template the checkpoint was trained with."
}


@dataclass
class PromptArguments:
    """How prompts and gold answers are built from a dataset's problems (`build_prompts`); shared by the recipes
    that prompt a model: GRPO, rejection sampling, and the held-out measurement of SFT and distillation."""

    prompt_template: str = field(default="chat", metadata=PROMPT_TEMPLATE_HELP)
    problem_column: str = field(default="problem", metadata={"help": "Column holding the problem text."})
    solution_column: str = field(
        default="solution", metadata={"help": "Column holding the gold answer; renamed to `solution` for the rewards."}
    )
    gold_answer_regex: str | None = field(
        default=None,
        metadata={
            "help": "Regular expression whose first group extracts the gold answer from `solution_column`, e.g. "
            "'####\\s*(.+)$' for GSM8K. None keeps the column as it is."
        },
    )

    def __post_init__(self):
        if self.prompt_template not in PROMPT_TEMPLATES:
            raise ValueError(f"prompt_template must be one of {PROMPT_TEMPLATES}, got {self.prompt_template!r}.")
        if self.gold_answer_regex is not None:
            try:
                groups = re.compile(self.gold_answer_regex).groups
            except re.error as error:
                raise ValueError(
                    f"gold_answer_regex {self.gold_answer_regex!r} is not a valid regex: {error}"
                ) from None
            if groups < 1:
                raise ValueError(f"gold_answer_regex {self.gold_answer_regex!r} needs one capture group.")


def build_prompts(dataset, script_args):
    """Add the `prompt` column from the problem text and name the gold column `solution`."""
    if script_args.solution_column != "solution" and script_args.solution_column in dataset.column_names:
        dataset = dataset.rename_column(script_args.solution_column, "solution")
    if script_args.gold_answer_regex is not None:
        require_columns(dataset, ["solution"], where="gold_answer_regex")
        pattern = re.compile(script_args.gold_answer_regex, re.MULTILINE)
        dataset = dataset.map(lambda row: {"solution": extract_gold(row["solution"], pattern)})
    if script_args.prompt_template == "none":
        require_columns(dataset, ["prompt"], where="prompt_template='none'")
        return dataset
    require_columns(
        dataset,
        [script_args.problem_column],
        where=f"prompt_template={script_args.prompt_template!r}",
        hint="Name the column holding the problems with --problem_column <column>.",
    )

    def make(problem: str):
        if script_args.prompt_template == "r1_zero":
            return R1_ZERO_TEMPLATE.format(problem=problem)
        return [{"role": "system", "content": R1_ZERO_SYSTEM_PROMPT}, {"role": "user", "content": problem}]

    column = script_args.problem_column
    return dataset.map(
        lambda row: {"prompt": make(row[column])},
        remove_columns=["prompt"] if "prompt" in dataset.column_names else None,
    )


def extract_gold(solution: str, pattern: re.Pattern) -> str:
    """The first capture group of the last match of `pattern` in `solution`; the whole text when none matches."""
    matches = list(pattern.finditer(solution))
    return matches[-1].group(1).strip() if matches else solution
