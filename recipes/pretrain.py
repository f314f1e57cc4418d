"""Pretrain the tiny DeepseekMini base model of the embedded default, from nothing, on a CPU in minutes.

    python recipes/pretrain.py                                   # regenerates recipes/assets/tiny-base
    accelerate launch recipes/pretrain.py --output_dir runs/base --seed 1
    python recipes/pretrain.py --corpus_size 2000 --max_steps 20 --output_dir /tmp/micro   # a smoke run

With no `--config`, `recipes/configs/pretrain_tiny.yaml` is used; flags override the YAML. The recipe

1. writes the persona corpus of the built-in task (`recipes.lib.task.make_corpus`): R1-Zero prompts completed by
   careful, reflective, language-mixing, hasty and format-breaking writers at fixed rates, plus arithmetic drills
   (`recipes.lib.task.make_drills`) from which the model learns to add;
2. trains a byte-level BPE tokenizer on it (digits one token each, R1's tags one token each, a chat template);
3. builds a DeepseekMini from a preset (MLA, DeepSeekMoE with a shared expert and routed experts balanced by the
   auxiliary-loss-free bias update, multi-token prediction of depth 1) and trains it with the HF Trainer on the
   next-token loss plus the MTP and sequence-wise balance losses;
4. saves model, modeling code and tokenizer (safetensors) and, with `eval_heldout`, measures the base model on
   the held-out split and writes the numbers into the folder's model card.
"""

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from datasets import Dataset, concatenate_datasets
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast, Trainer, TrainingArguments
from trl import TrlParser

from modeling_deepseek_mini import DeepseekMiniConfig, DeepseekMiniForCausalLM, ExpertBiasUpdateCallback
from recipes.lib.cli import CONFIGS_DIR, parse_recipe_args, run_entry_point
from recipes.lib.data import BUILTIN_DATASET, load_any_dataset, require_columns, split_of
from recipes.lib.data_parallel import UnreachedParametersCallback, tolerate_unreached_parameters
from recipes.lib.evaluation import evaluate_protocols
from recipes.lib.readability import builtin_vocabulary
from recipes.lib.stage import StageArguments, prepare_stage, train_stage, write_stage_card
from recipes.lib.task import CHAT_TEMPLATE, PERSONA_RATES, REASONING_TAGS, make_corpus, make_drills, make_splits

logger = logging.getLogger(__name__)

EOS_TOKEN, PAD_TOKEN = "<|end_of_text|>", "<|pad|>"


@dataclass
class PretrainScriptArguments(StageArguments):
    """Corpus, tokenizer, model shape and final evaluation of the pretraining recipe."""

    corpus_name: str = field(
        default=BUILTIN_DATASET,
        metadata={
            "help": f"'{BUILTIN_DATASET}' for the persona corpus of the built-in task; or your own documents: a "
            ".json/.jsonl/.parquet/.csv file, a saved dataset folder or a Hub id whose train split has a `text` "
            "column (the drills are still added, `drill_docs` of them; the persona settings do not apply)."
        },
    )
    corpus_seed: int = field(default=0, metadata={"help": "Seed of the persona corpus (recipes/lib/task.py)."})
    corpus_size: int = field(default=40000, metadata={"help": "Persona documents (R1-Zero prompt + completion)."})
    drill_docs: int = field(
        default=10000,
        metadata={"help": "Arithmetic drill documents (running sums, no template) mixed into the corpus; 0 for none."},
    )
    persona_rates: dict | str | None = field(
        default=None,
        metadata={
            "help": "Share of each persona in the corpus, e.g. {'careful': 0.2, 'reflective': 0.2, 'mixed_language': "
            f"0.1, 'hasty': 0.3, 'format_breaker': 0.2}} (JSON on the command line). None uses {PERSONA_RATES}."
        },
    )
    vocab_size: int = field(
        default=512,
        metadata={"help": "Target size of the BPE vocabulary; it stops earlier when the corpus has no more merges."},
    )
    tokenizer_docs: int = field(default=5000, metadata={"help": "Corpus documents the tokenizer is trained on."})
    model_preset: str = field(default="tiny", metadata={"help": "DeepseekMiniConfig preset the model starts from."})
    model_overrides: dict | str | None = field(
        default=None,
        metadata={
            "help": "DeepseekMiniConfig fields that replace the preset's, e.g. {'hidden_size': 128, "
            "'num_hidden_layers': 4} (JSON on the command line). vocab_size always follows the tokenizer."
        },
    )
    eval_heldout: bool = field(
        default=True, metadata={"help": "Measure the saved model on the test split (greedy, and R1's pass@1 at T=0.6)."}
    )
    eval_size: int = field(default=200, metadata={"help": "Held-out problems for that measurement."})
    eval_max_new_tokens: int = field(default=128, metadata={"help": "Generation budget per held-out completion."})

    def __post_init__(self):
        self.persona_rates = _json_dict(self.persona_rates, "persona_rates")
        self.model_overrides = _json_dict(self.model_overrides, "model_overrides") or {}
        for name in ("corpus_size", "tokenizer_docs", "eval_size", "eval_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.drill_docs < 0:
            raise ValueError(f"drill_docs must be >= 0, got {self.drill_docs}.")
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size must be >= 300 (256 bytes, special tokens and tags), got {self.vocab_size}.")
        if self.corpus_name != BUILTIN_DATASET and self.persona_rates is not None:
            raise ValueError(
                f"persona_rates shapes the built-in corpus; drop it with --corpus_name {self.corpus_name}."
            )
        if self.corpus_name != BUILTIN_DATASET and self.eval_heldout:
            raise ValueError(
                "eval_heldout measures the built-in task, not your corpus's: set --eval_heldout false with "
                f"--corpus_name {self.corpus_name} (recipes/grpo.py measures any dataset with gold answers)."
            )
        if "vocab_size" in self.model_overrides:
            raise ValueError(
                "Set the vocabulary with --vocab_size, not in model_overrides: the model follows the tokenizer."
            )


def _json_dict(value, name: str) -> dict | None:
    """A dict from YAML (already a dict) or from the command line (a JSON string)."""
    if value is None or isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{name} must be a JSON object such as '{{\"hidden_size\": 128}}', got {value!r}: {error}"
        ) from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a JSON object, got {value!r}.")
    return parsed


def load_corpus(script_args: PretrainScriptArguments) -> Dataset:
    """The documents to pretrain on besides the drills: the built-in persona corpus, or the `text` column of the
    train split of `corpus_name`."""
    if script_args.corpus_name == BUILTIN_DATASET:
        rates = script_args.persona_rates
        return make_corpus(seed=script_args.corpus_seed, n_docs=script_args.corpus_size, rates=rates)
    corpus = split_of(
        load_any_dataset(script_args.corpus_name), "train", flag="corpus_name", dataset_name=script_args.corpus_name
    )
    require_columns(corpus, ["text"], where="corpus_name")
    return corpus


def corpus_description(script_args: PretrainScriptArguments) -> str:
    """What the base was pretrained on, for its card."""
    corpus = (
        f"recipes.lib.task.make_corpus(seed={script_args.corpus_seed}, n_docs={script_args.corpus_size})"
        if script_args.corpus_name == BUILTIN_DATASET
        else f"the `text` of {script_args.corpus_name}"
    )
    return f"{corpus} + make_drills(seed={script_args.corpus_seed}, n_docs={script_args.drill_docs})"


def build_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, wrapped for transformers.

    Digits are split one per token (sums are then written digit by digit, which small models learn more easily);
    other merges may cross spaces (no split into words first), so the fixed R1-Zero instruction, which opens every
    prompt, becomes about twenty tokens instead of ninety-five and the compute goes to the problem and the reasoning;
    R1's tags are single, non-special tokens (so decoding with `skip_special_tokens=True` keeps them); the
    end-of-text and padding tokens are special. The chat template is `recipes.lib.task.CHAT_TEMPLATE`.
    """
    tags = re.compile("|".join(re.escape(tag) for tag in REASONING_TAGS))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(REASONING_TAGS),
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The tags become added tokens below; keep them out of the merges.
    tokenizer.train_from_iterator((piece for text in texts for piece in tags.split(text)), trainer)
    tokenizer.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in REASONING_TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, chat_template=CHAT_TEMPLATE
    )


def tokenize_corpus(corpus: Dataset, tokenizer) -> Dataset:
    """Token ids of each document with the end-of-text token appended, so the model learns where to stop."""

    def encode(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [row + [tokenizer.eos_token_id] for row in ids]}

    return corpus.map(encode, batched=True, remove_columns=corpus.column_names)


def build_model(tokenizer, preset: str, overrides: dict) -> DeepseekMiniForCausalLM:
    """A freshly initialised DeepseekMini sized to `tokenizer`, with its code registered to ship in the checkpoint."""
    config = DeepseekMiniConfig.from_preset(
        preset,
        **{
            **overrides,
            "vocab_size": len(tokenizer),
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": None,
        },
    )
    model = DeepseekMiniForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def main(script_args: PretrainScriptArguments, training_args: TrainingArguments):
    run = prepare_stage(script_args, training_args)  # a finished base is not retrained without --overwrite
    start = time.time()

    # Data and tokenizer
    corpus = load_corpus(script_args)
    tokenizer = build_tokenizer(
        corpus.select(range(min(len(corpus), script_args.tokenizer_docs)))["text"], script_args.vocab_size
    )
    documents = concatenate_datasets(
        [corpus.select_columns("text"), make_drills(seed=script_args.corpus_seed, n_docs=script_args.drill_docs)]
    )
    train_dataset = tokenize_corpus(documents, tokenizer)
    logger.info(
        f"Corpus: {len(documents)} documents, {sum(map(len, train_dataset['input_ids']))} tokens; "
        f"vocabulary {len(tokenizer)}"
    )

    # Model
    model = build_model(tokenizer, script_args.model_preset, script_args.model_overrides)
    logger.info(f"DeepseekMini: {model.num_parameters() / 1e6:.2f}M parameters; config {model.config.to_diff_dict()}")

    # Train (right padding, pads out of the loss; the bias update runs once per optimizer step)
    trainer = Trainer(
        model=model,
        args=tolerate_unreached_parameters(training_args),
        train_dataset=train_dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
        callbacks=[ExpertBiasUpdateCallback(), UnreachedParametersCallback()],
    )
    train_stage(trainer, run)  # from the start, or resumed from the last checkpoint of the same run

    # Save: weights as safetensors, the modeling code (auto_map), the tokenizer
    if not trainer.is_world_process_zero():
        return
    output_dir = training_args.output_dir
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    minutes = (time.time() - start) / 60

    # Held-out measurement of the base model, into the model card
    metrics = {}
    if script_args.eval_heldout:
        test = make_splits(seed=0, n_train=0, n_test=script_args.eval_size)["test"]
        metrics = evaluate_protocols(
            model, tokenizer, test, max_new_tokens=script_args.eval_max_new_tokens, vocabulary=builtin_vocabulary()
        )
        print("\n".join(f"{key}: {value:.4g}" for key, value in metrics.items()))
    with open(os.path.join(output_dir, "README.md"), "w") as f:
        f.write(
            "# deepseek-mini tiny base\n\nA tiny DeepseekMini (MLA, DeepSeekMoE, MTP) pretrained from scratch by "
            f"`recipes/pretrain.py` on {corpus_description(script_args)}. Load with "
            "`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`.\n"
        )
    write_stage_card(
        output_dir,
        stage="pretrain",
        parent="(random initialisation)",
        dataset=corpus_description(script_args),
        hyperparameters={
            "model_preset": script_args.model_preset,
            "model_overrides": script_args.model_overrides,
            "persona_rates": (script_args.persona_rates or PERSONA_RATES)
            if script_args.corpus_name == BUILTIN_DATASET
            else None,
            "parameters": model.num_parameters(),
            "vocab_size": len(tokenizer),
            "learning_rate": training_args.learning_rate,
            "batch_size": training_args.per_device_train_batch_size,
            "epochs": training_args.num_train_epochs,
            "max_steps": training_args.max_steps,
            "seed": training_args.seed,
            "training_minutes": round(minutes, 1),
        },
        metrics=metrics,
    )
    print(f"Saved the base model and tokenizer to {output_dir} after {minutes:.1f} min of training.")
    print(f"Regenerate it with: python recipes/pretrain.py {' '.join(sys.argv[1:])}")


def make_parser():
    return TrlParser((PretrainScriptArguments, TrainingArguments))


DEFAULT_CONFIG = CONFIGS_DIR / "pretrain_tiny.yaml"

if __name__ == "__main__":
    run_entry_point(lambda: main(*parse_recipe_args(make_parser(), DEFAULT_CONFIG)))
