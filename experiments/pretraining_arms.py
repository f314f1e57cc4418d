"""Pretraining arms side by side, for questions 3, 4 and 5 of docs/research.md: the tiny base's corpus and training
recipe, models that differ only by config overrides (or, for the attention study, by their attention's key/value
heads: `GroupedQueryAttention`), trained on the same batches in lockstep (the fp8_outlier study adds the same massive
activation to every arm).

    python experiments/pretraining_arms.py run --study balancing --seed 0     # -> docs/results/research/balancing/
    python experiments/pretraining_arms.py run --study moe_vs_dense --seed 1 --steps 600
    python experiments/pretraining_arms.py run --study fp8_outlier --seed 2   # FP8 and fp32 with a massive activation
    python experiments/pretraining_arms.py report --study balancing           # every seed's file, intervals
    python experiments/pretraining_arms.py run --study moe_vs_dense --seed 0 --save outputs/research/moe   # then
    python experiments/pretraining_arms.py grpo --study moe_vs_dense --save outputs/research/moe  # the same GRPO

A study is a set of arms (`STUDIES`): each arm is `recipes/pretrain.py`'s model (preset and overrides of
recipes/configs/pretrain_tiny.yaml) with more overrides, built from the same seed, trained with the recipe's AdamW,
learning rate, batch size, weight decay and clipping under a cosine schedule with 5% warm-up, one arm after the other
on every batch, so that data order and step times are shared (the corpus: benchmarks/fp8_loss_gap.py's
`tokenized_documents`). A seed changes the initialisation and the data order. Per arm and seed, the file records: the
held-out next-token loss (eval mode, no MTP or balance terms) every `--eval_every` steps and at the end, the load
imbalance of each MoE layer (max over mean of the tokens routed to its experts in the step, averaged over windows),
the training loss, the parameters (total and active per token), the training FLOPs per token, the values cached per
token per layer (measured from the cache of one forward) and the median thread CPU time per step (the arms
interleaved, so load from other processes falls on all alike). `report` gives each arm's final held-out loss as a mean
with a 95% interval over seeds and its difference from the study's reference arm (absolute and relative), paired by
seed, and from a second arm where the study names one (`also_against`), and plots the arms' held-out loss and expert
load over training (`curves.png`; for balancing also the final loss against the final load, `loss-vs-balance.png`: V3's
claim is a lower loss at equal balance). With `--save DIR` every arm's final model is saved (safetensors, with the
tokenizer); `grpo` then runs the main job's GRPO from each arm's model of every saved seed (`benchmarks/seeds.py`, the
GRPO seed = the pretraining seed), and `report` adds each arm's held-out accuracy after it, minus the reference arm's,
paired by seed.
"""

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import get_cosine_schedule_with_warmup

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "experiments")]  # folders of scripts, not packages
from curves import error_bar, plot_curves, summarise_curves  # noqa: E402
from efficiency import count_parameters, model_flops  # noqa: E402
from fp8_loss_gap import add_outlier, heldout_loss, load_recipe, lockstep_batches  # noqa: E402
from fp8_loss_gap import train_step as lockstep_step  # noqa: E402
from seeds import compare, interval, seeds_command, shown, slug, verdict  # noqa: E402

from modeling_deepseek_mini.modeling_deepseek_mini import (  # noqa: E402
    DeepseekMiniAttention,
    apply_rotary,
)
from recipes.lib.plots import plt  # noqa: E402  (pyplot on the Agg backend: PNG files, no display)
from recipes.pretrain import build_model  # noqa: E402

RESULTS = ROOT / "docs" / "results" / "research"

FP8_ARMS = {
    "fp32": {},
    "FP8 blockwise (V3)": {"fp8_recipe": "blockwise"},
    "FP8 tensorwise": {"fp8_recipe": "tensorwise"},
}

# The tiny base (pretrain_tiny.yaml): 4 layers, layer 0 a dense MLP 256 wide, layers 1-3 MoE with 1 shared and 8
# routed experts of width 64, top-2 in 4 groups: an MoE layer's active MLP is 3 x 64 = 192 wide, its total 9 x 64.
STUDIES = {
    # Q4: balancing. V3: aux-loss-free bias updates (speed gamma) instead of an auxiliary loss, plus a tiny
    # sequence-wise loss (alpha 1e-4); its claim is a better loss at equal balance than an auxiliary loss.
    "balancing": {
        "reference": "aux-free 1e-3 + seq 1e-4 (V3)",
        "arms": {
            "aux-free 1e-3 + seq 1e-4 (V3)": {"bias_update_speed": 1e-3, "seq_aux_loss_alpha": 1e-4},
            "no balancing": {"bias_update_speed": 0.0, "seq_aux_loss_alpha": 0.0},
            "aux-free 1e-3": {"bias_update_speed": 1e-3, "seq_aux_loss_alpha": 0.0},
            "aux-free 1e-2": {"bias_update_speed": 1e-2, "seq_aux_loss_alpha": 0.0},
            "seq aux loss 1e-3": {"bias_update_speed": 0.0, "seq_aux_loss_alpha": 1e-3},
            "seq aux loss 1e-2": {"bias_update_speed": 0.0, "seq_aux_loss_alpha": 1e-2},
            "seq aux loss 1e-1": {"bias_update_speed": 0.0, "seq_aux_loss_alpha": 1e-1},
        },
    },
    # Q3: MoE against dense models with its active and with its total MLP width (every layer dense at that width;
    # the MoE's layer 0 stays 256 wide), and an MoE with twice the experts at the same active width. No arm has
    # MTP: its block is an MoE layer in this model (as in V3), which a dense model cannot have.
    "moe_vs_dense": {
        "reference": "MoE 8 experts top-2",
        "common": {"num_nextn_predict_layers": 0},
        "arms": {
            "MoE 8 experts top-2": {},
            "dense, MoE's active width": {"first_k_dense_replace": 4, "intermediate_size": 192},
            "dense, MoE's total width": {"first_k_dense_replace": 4, "intermediate_size": 576},
            "MoE 16 experts top-2": {"n_routed_experts": 16},
        },
    },
    # Q3: MLA against multi-head, grouped-query and multi-query attention of the same width (4 query heads of 16 + 16
    # for QK and 16 for V), `kv_heads` key/value heads; each caches what its attention reads back at decoding.
    "attention": {
        "reference": "MLA",
        "common": {"num_nextn_predict_layers": 0},
        "arms": {
            "MLA": {},
            "MHA (4 KV heads)": {"kv_heads": 4},
            "GQA (2 KV heads)": {"kv_heads": 2},
            "MQA (1 KV head)": {"kv_heads": 1},
        },
    },
    # Q5: multi-token prediction as a training signal, at equal tokens: depth 0 against V3's depth 1.
    "mtp_depth": {
        "reference": "MTP depth 1",
        "arms": {"MTP depth 1": {}, "MTP depth 0": {"num_nextn_predict_layers": 0}},
    },
    # Q5: FP8 numerics (every linear layer's three GEMMs on E4M3 values, simulated on CPU) with V3's fine-grained
    # scaling (1x128 activation tiles, 128x128 weight blocks) and with one scale per tensor, against fp32; the report
    # also pairs every arm with the blockwise one (`also_against`).
    "fp8": {"reference": "fp32", "also_against": "FP8 blockwise (V3)", "arms": FP8_ARMS},
    # The same with a massive activation at one token (`outlier`: fp8_loss_gap.add_outlier, in every arm), which a
    # per-tensor scale lets set the scale of every token and a 1x128 tile confines to its own.
    "fp8_outlier": {"reference": "fp32", "also_against": "FP8 blockwise (V3)", "outlier": 1e4, "arms": FP8_ARMS},
}


class GroupedQueryAttention(DeepseekMiniAttention):
    """Attention with `kv_heads` key/value heads in place of MLA's latent: multi-head when it equals the query heads,
    grouped-query below, multi-query at one. As wide as the MLA it replaces: the same query (low-rank, d_h + d_R per
    head, RoPE on its last d_R), keys of d_h + d_R with RoPE on their last d_R, values of d_v, the same output
    projection. The cache holds each KV head's key and value: 2 x kv_heads x ... values per token per layer against
    MLA's d_c + d_R."""

    def __init__(self, config, layer_idx: int, kv_heads: int):
        super().__init__(config, layer_idx)
        if self.num_heads % kv_heads:
            raise ValueError(f"kv_heads={kv_heads} must divide the {self.num_heads} query heads.")
        del self.kv_a_proj_with_mqa, self.kv_a_layernorm, self.kv_b_proj
        self.kv_heads = kv_heads
        d = config.hidden_size
        self.k_proj = nn.Linear(d, kv_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim), bias=False)
        self.v_proj = nn.Linear(d, kv_heads * self.v_head_dim, bias=False)

    def forward(self, x, cos, sin, attention_mask=None, cache=None):
        """x (B, T, d) -> the output (B, T, d) and no probabilities (SDPA)."""
        B, T, _ = x.shape
        q_nope, q_pe = self.query(x, cos, sin)  # (B, T, H, d_h), (B, T, H, d_R)
        k = self.k_proj(x).view(B, T, self.kv_heads, -1)
        k_pe = apply_rotary(k[..., self.qk_nope_head_dim :], cos[:, :, None], sin[:, :, None], self.rope_interleave)
        k = torch.cat([k[..., : self.qk_nope_head_dim], k_pe], -1).transpose(1, 2)  # (B, G, T, d_h + d_R)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.v_head_dim).transpose(1, 2)  # (B, G, T, d_v)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, G, S, *)
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            attention_mask = attention_mask == 0
        out = F.scaled_dot_product_attention(
            torch.cat([q_nope, q_pe], -1).transpose(1, 2),  # (B, H, T, d_h + d_R)
            k,
            v,
            attn_mask=attention_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
            is_causal=attention_mask is None and T > 1,
            scale=self.softmax_scale,
            enable_gqa=True,
        )  # (B, H, T, d_v)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.num_heads * self.v_head_dim)), None


def with_kv_heads(model, kv_heads: int):
    """The model with every decoder layer's MLA replaced by `GroupedQueryAttention`, initialised as the model's own
    layers are (N(0, initializer_range))."""
    for layer in model.model.layers:
        layer.self_attn = GroupedQueryAttention(model.config, layer.self_attn.layer_idx, kv_heads)
        layer.self_attn.apply(model._init_weights)
    return model


def cache_values_per_token(model, batch: dict) -> float:
    """Values the model caches per token per layer, measured from the cache of a forward over `batch`'s first row."""
    ids = batch["input_ids"][:1]
    with torch.no_grad():
        cache = model.eval()(input_ids=ids, use_cache=True).past_key_values
    model.train()
    values = sum(t.numel() for layer in cache.layers for t in (layer.keys, layer.values))
    return values / (ids.shape[1] * len(cache.layers))


def build_arms(tokenizer, recipe: dict, study: dict, steps: int, seed: int) -> dict:
    """One model, optimizer and schedule per arm, each initialised from `seed`."""
    arms = {}
    for name, overrides in study["arms"].items():
        torch.manual_seed(seed)
        overrides = {**recipe["model_overrides"], **study.get("common", {}), **overrides}
        kv_heads = overrides.pop("kv_heads", None)
        model = build_model(tokenizer, recipe["model_preset"], overrides)
        if kv_heads is not None:
            model = with_kv_heads(model, kv_heads)
        if study.get("outlier"):
            add_outlier(model, study["outlier"])
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=recipe["learning_rate"], weight_decay=recipe["weight_decay"]
        )
        schedule = get_cosine_schedule_with_warmup(optimizer, math.ceil(0.05 * steps), steps)
        arms[name] = {"model": model.train(), "optimizer": optimizer, "schedule": schedule, "times": [],
                      "losses": [], "imbalance": [], "heldout": []}  # fmt: skip
    return arms


def train_step(arm: dict, batch: dict) -> None:
    """fp8_loss_gap's step, and each MoE layer's max/mean load in it."""
    loads = lockstep_step(arm, batch)
    arm["imbalance"].append({layer: stats["max_over_mean"] for layer, stats in loads.items()})


def windows(values: list, every: int, reduce) -> list[dict]:
    return [
        {"last_step": min(k + every, len(values)), "value": reduce(values[k : k + every])}
        for k in range(0, len(values), every)
    ]


def layer_imbalance(per_step: list[dict], every: int) -> dict[str, list[dict]]:
    """Per MoE layer, its max/mean load averaged over each `every` steps."""
    layers = sorted({layer for step in per_step for layer in step})
    return {
        str(layer): windows([step[layer] for step in per_step if layer in step], every, statistics.fmean)
        for layer in layers
    }


def check_savable(study_name: str) -> None:
    """Only arms that are DeepseekMini configs can be saved and loaded back (the attention study's are not)."""
    if any("kv_heads" in arm for arm in STUDIES[study_name]["arms"].values()):
        raise SystemExit(f"The {study_name} study's arms replace the model's attention and cannot be loaded back: "
                         "drop --save (and the grpo action) for it.")  # fmt: skip


def run(
    study_name: str, seed: int, steps: int, corpus_size: int, eval_batches: int, eval_every: int, save: Path | None
):
    """Train every arm of the study for `steps` steps on the same batches; return the seed's record."""
    if save is not None:
        check_savable(study_name)
    study, recipe = STUDIES[study_name], load_recipe()
    tokenizer, heldout, train = lockstep_batches(recipe, corpus_size, eval_batches, steps, seed)
    size = recipe["batch_size"]
    sequence_length = round(statistics.fmean(b["input_ids"].shape[1] for b in train[:50]))

    arms = build_arms(tokenizer, recipe, study, steps, seed)
    for step, batch in enumerate(train[:steps], start=1):
        for arm in arms.values():  # lockstep: the arms' step times are interleaved
            train_step(arm, batch)
            if step % eval_every == 0 or step == steps:
                arm["heldout"].append({"step": step, "loss": heldout_loss(arm["model"], heldout)})
    record = {"study": study_name, "seed": seed, "steps": steps, "batch_size": size, "corpus_size": corpus_size,
              "sequence_length": sequence_length, "reference": study["reference"], "arms": {}}  # fmt: skip
    reference_time = statistics.median(arms[study["reference"]]["times"])
    for name, arm in arms.items():
        config = arm["model"].config
        counts = count_parameters(config, arm["model"])
        record["arms"][name] = {
            "overrides": {**study.get("common", {}), **study["arms"][name]},
            "heldout_loss": arm["heldout"][-1]["loss"],
            "heldout_curve": arm["heldout"],
            "train_loss_curve": windows(arm["losses"], eval_every, statistics.fmean),
            "imbalance_curve": layer_imbalance(arm["imbalance"], eval_every),
            "final_imbalance": statistics.fmean(
                value for step in arm["imbalance"][-eval_every:] for value in step.values()
            ) if arm["imbalance"][-1] else None,
            "parameters": counts.total,  # the main model's; the MTP module's apart
            "active_parameters": counts.active,
            "mtp_parameters": counts.mtp,
            "training_flops_per_token": model_flops(config, counts, with_mtp=False, sequence_length=sequence_length),
            "cache_values_per_token_per_layer": cache_values_per_token(arm["model"], heldout[0]),
            "median_step_cpu_s": statistics.median(arm["times"]),
            "step_time_vs_reference": statistics.median(arm["times"]) / reference_time,
        }  # fmt: skip
        if save is not None:
            folder = save / f"seed-{seed}" / slug(name)
            arm["model"].save_pretrained(folder)
            tokenizer.save_pretrained(folder)
    return record


def grpo_command(arm: str, seeds: list[int], jobs: int, save: Path, out: Path, extra: list[str]) -> list[str]:
    """The main job's GRPO (recipes/configs/grpo_tiny.yaml) from each seed's saved model of `arm`, over those seeds."""
    grpo = ["accelerate", "launch", str(ROOT / "recipes" / "grpo.py"), "--model_name_or_path",
            str(save / "seed-{seed}" / slug(arm)), "--mtp_refresh_steps", "0", *extra]  # fmt: skip
    return seeds_command(seeds, jobs, save / "grpo" / slug(arm), out, grpo)


def grpo_summary(study: dict, records: dict[str, dict]) -> dict:
    """Per arm: held-out accuracy after the same GRPO (mean and interval over seeds), and minus the reference
    arm's, paired by seed."""
    reference = records[study["reference"]]
    return {
        name: {
            "after": record["summary"]["heldout"]["accuracy"]["after"],
            "minus_reference": compare(reference, record)["accuracy"],
        }
        for name, record in records.items()
    }


def paired_losses(records: list[dict], reference: str) -> dict:
    """Per arm: its final held-out loss minus `reference`'s and that over the reference's loss (mean, 95% interval),
    paired by seed."""
    result = {}
    for name in records[0]["arms"]:
        differences = [r["arms"][name]["heldout_loss"] - r["arms"][reference]["heldout_loss"] for r in records]
        change = interval(differences)
        change["verdict"] = {"higher after": "higher loss", "lower after": "lower loss"}.get(verdict(change), "—")
        relative = [d / r["arms"][reference]["heldout_loss"] for d, r in zip(differences, records)]
        result[name] = {"minus_reference": change, "relative_to_reference": interval(relative)}
    return result


def summary(records: list[dict]) -> dict:
    """Per arm over seeds: final held-out loss and imbalance (mean, 95% interval), and the held-out loss minus the
    reference arm's, paired by seed."""
    paired = paired_losses(records, records[0]["reference"])
    result = {}
    for name in records[0]["arms"]:
        losses = [r["arms"][name]["heldout_loss"] for r in records]
        imbalance = [r["arms"][name]["final_imbalance"] for r in records]
        result[name] = {
            "heldout_loss": interval(losses),
            **paired[name],
            "final_imbalance": interval(imbalance) if None not in imbalance else None,
            "active_parameters": records[0]["arms"][name]["active_parameters"],
            "parameters": records[0]["arms"][name]["parameters"],
            "training_flops_per_token": records[0]["arms"][name]["training_flops_per_token"],
            "cache_values_per_token_per_layer": records[0]["arms"][name]["cache_values_per_token_per_layer"],
            "step_time_vs_reference": statistics.fmean(r["arms"][name]["step_time_vs_reference"] for r in records),
        }
    return result


def arm_curves(records: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """Per arm: its held-out loss and its max/mean load (mean over MoE layers; dense arms have none) per step, mean
    and 95% interval over seeds."""
    result = {}
    for name in records[0]["arms"]:
        per_seed = []
        for record in records:
            arm = record["arms"][name]
            curves = {"heldout_loss": {point["step"]: point["loss"] for point in arm["heldout_curve"]}}
            if arm["imbalance_curve"]:
                layers = list(arm["imbalance_curve"].values())  # [layer][window] {"last_step", "value"}
                curves["imbalance"] = {
                    windows[0]["last_step"]: statistics.fmean(w["value"] for w in windows) for windows in zip(*layers)
                }
            per_seed.append(curves)
        result[name] = summarise_curves(per_seed)
    return result


def plot_tradeoff(result: dict, path: Path) -> None:
    """Final held-out loss against final max/mean load, one point per arm with both 95% intervals: V3's claim is a
    lower loss at equal balance."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, row in result.items():
        x, y = row["final_imbalance"], row["heldout_loss"]
        ax.errorbar(x["mean"], y["mean"], xerr=error_bar(x), yerr=error_bar(y), fmt="o", capsize=3, label=name)
    ax.set(xlabel="max/mean expert load, last window (1 = balanced)", ylabel="held-out loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def stat_text(stats: dict | None, digits: int = 4, scale: float = 1, unit: str = "") -> str:
    """ "mean [low, high]" of an `interval`, times `scale` ("mean" alone with one seed, "-" for none)."""
    if stats is None:
        return "-"
    low, mean, high = (None if v is None else v * scale for v in (stats["low"], stats["mean"], stats["high"]))
    text = f"{mean:.{digits}f}{unit}"
    return text + (f" [{low:.{digits}f}, {high:.{digits}f}]" if low is not None else "")


def markdown(result: dict, reference: str, seeds: list[int]) -> str:
    lines = [
        f"Seeds {seeds}; mean [95% interval]; the difference is paired by seed against '{reference}'.",
        "",
        "| arm | held-out loss | minus reference | relative | verdict | max/mean load, last window | active / total "
        "params (main) | training MFLOPs per token | cached values per token per layer | step time vs reference |",
        "|---|---|---|---|---|---|---|---:|---:|---:|",
    ]
    for name, row in result.items():
        lines.append(
            f"| {name} | {stat_text(row['heldout_loss'])} | {stat_text(row['minus_reference'])} | "
            f"{stat_text(row['relative_to_reference'], 2, 100, '%')} | "
            f"{row['minus_reference']['verdict']} | {stat_text(row['final_imbalance'], 2)} | "
            f"{row['active_parameters'] / 1e6:.2f}M / {row['parameters'] / 1e6:.2f}M | "
            f"{row['training_flops_per_token'] / 1e6:.1f} | {row['cache_values_per_token_per_layer']:.0f} | "
            f"{row['step_time_vs_reference']:.2f} |"
        )
    return "\n".join(lines)


def against_markdown(paired: dict) -> str:
    lines = ["| arm | minus it | relative | verdict |", "|---|---|---|---|"]
    for name, row in paired.items():
        change, relative = row["minus_reference"], row["relative_to_reference"]
        lines.append(f"| {name} | {stat_text(change)} | {stat_text(relative, 2, 100, '%')} | {change['verdict']} |")
    return "\n".join(lines)


def grpo_markdown(result: dict) -> str:
    lines = ["| arm | accuracy after GRPO | minus reference | verdict |", "|---|---:|---:|---|"]
    for name, row in result.items():
        change = row["minus_reference"]
        lines.append(
            f"| {name} | {shown(row['after'], True, False)} | {shown(change, True, True)} | {change['verdict']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["run", "grpo", "report"])
    parser.add_argument("--study", choices=sorted(STUDIES), required=True)
    parser.add_argument("--seed", type=int, default=0, help="run: the seed of this run (one file per seed).")
    parser.add_argument("--arms", nargs="+", help="grpo: these arms only (default: every arm of the study).")
    parser.add_argument("--jobs", type=int, default=3, help="grpo: seeds run at once (benchmarks/seeds.py --jobs).")
    parser.add_argument("--flag", dest="extra", action="append", default=[], help="grpo: more recipes/grpo.py flags.")
    parser.add_argument("--steps", type=int, default=600, help="Optimizer steps per arm.")
    parser.add_argument("--corpus_size", type=int, default=20000, help="Persona documents (drills added pro rata).")
    parser.add_argument("--eval_batches", type=int, default=8, help="Held-out batches of the loss.")
    parser.add_argument("--eval_every", type=int, default=50, help="Steps between held-out losses and windows.")
    parser.add_argument(
        "--save", type=Path, help="run: save every arm's final model under DIR/seed-N/ARM; grpo: GRPO from them."
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="Parent of the study's folder of seed files.")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = args.results / args.study
    if args.action == "run":
        record = run(args.study, args.seed, args.steps, args.corpus_size, args.eval_batches, args.eval_every, args.save)
        record["command"] = "python experiments/pretraining_arms.py " + " ".join(sys.argv[1:] if argv is None else argv)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"seed-{args.seed}.json").write_text(json.dumps(record, indent=1) + "\n")
        print(markdown(summary([record]), record["reference"], [args.seed]))
        return
    if args.action == "grpo":
        check_savable(args.study)
        if args.save is None:
            sys.exit("grpo needs --save DIR: the folder `run --save DIR` saved the arms' models in.")
        seeds = sorted(int(p.name.removeprefix("seed-")) for p in args.save.glob("seed-*"))
        extra = [part for flag in args.extra for part in flag.split()]
        for arm in args.arms or list(STUDIES[args.study]["arms"]):
            out = folder / f"grpo-{slug(arm)}.json"
            subprocess.run(grpo_command(arm, seeds, args.jobs, args.save, out, extra), check=True)
        return
    records = sorted((json.loads(p.read_text()) for p in folder.glob("seed-*.json")), key=lambda r: r["seed"])
    if not records:
        sys.exit(f"No seed files in {folder}: run `python experiments/pretraining_arms.py run --study {args.study}`.")
    result = summary(records)
    seeds = [r["seed"] for r in records]
    study = STUDIES[args.study]
    grpo_records = {
        name: json.loads((folder / f"grpo-{slug(name)}.json").read_text())
        for name in study["arms"]
        if (folder / f"grpo-{slug(name)}.json").exists()
    }
    after_grpo = grpo_summary(study, grpo_records) if study["reference"] in grpo_records else {}
    second = study.get("also_against")
    against = {"reference": second, "arms": paired_losses(records, second)} if second else {}
    (folder / "summary.json").write_text(
        json.dumps({"seeds": seeds, "arms": result, "after_grpo": after_grpo, "also_against": against}, indent=1) + "\n"
    )
    panels = {"heldout_loss": "held-out loss", "imbalance": "max/mean expert load (layer mean)"}
    plot_curves(arm_curves(records), panels, "pretraining step", folder / "curves.png", columns=2)
    if args.study == "balancing":
        plot_tradeoff(result, folder / "loss-vs-balance.png")
    print(markdown(result, records[0]["reference"], seeds))
    if against:
        print(f"\nThe same held-out losses paired by seed against '{second}':\n")
        print(against_markdown(against["arms"]))
    if after_grpo:
        print("\nThe same GRPO (the main job) from each arm's model, held-out accuracy, paired by seed:\n")
        print(grpo_markdown(after_grpo))


if __name__ == "__main__":
    main()
