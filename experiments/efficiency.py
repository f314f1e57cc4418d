"""Question 5 of docs/research.md, on paper: what DeepSeek-V3's efficiency work buys at V3's own size, worked out
from V3's configuration and the cluster numbers DeepSeek published. No timing of our own happens here: the measured
half of the answer (absorbed decode, MTP drafting, FP8 numerics on the tiny model) is in benchmarks/.

    python experiments/efficiency.py          # -> docs/results/research/efficiency.json, Markdown tables on stdout

Every figure is computed by a named function below from `DeepseekMiniConfig.from_preset("deepseek-v3")` (parameters
counted on a meta-device model of this project's code, so nothing is allocated) and the constants in `PUBLISHED`
and `HARDWARE`, each with its source; where DeepSeek published the same figure, it is printed next to ours.

Sources: [V3] DeepSeek-V3 Technical Report (arXiv 2412.19437); [ISCA] Insights into DeepSeek-V3: Scaling Challenges
and Reflections on Hardware for AI Architectures (ISCA 2025, arXiv 2505.09343); [DualPipe] github.com/deepseek-ai/
DualPipe README; model configs of Qwen2.5-72B and Llama-3.1-405B as published on the Hugging Face Hub.
"""

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from modeling_deepseek_mini import DeepseekMiniConfig, DeepseekMiniForCausalLM

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "research" / "efficiency.json"

# What DeepSeek reported (compared against, never used to derive our figures unless named as an input below).
PUBLISHED = {
    "total_parameters_b": 671,  # [V3] main model, MTP excluded
    "active_parameters_b": 37,  # [V3]
    "kv_cache_kb_per_token": {
        "DeepSeek-V3 (MLA)": 70.272,
        "Qwen2.5-72B (GQA)": 327.680,
        "Llama-3.1-405B (GQA)": 516.096,
    },
    "training_gflops_per_token": {"DeepSeek-V3 (MoE)": 250, "Qwen2.5-72B (dense)": 394, "Llama-3.1-405B (dense)": 2448},
    "mtp_acceptance": (0.85, 0.90),  # [V3] second-token acceptance
    "mtp_speedup": 1.8,  # [V3] tokens per second
    "fp8_relative_loss_error": 0.0025,  # [V3] under 0.25% against BF16
    "ep_decode_us_per_layer_ib": 120.96,  # [ISCA] with 7K for the hidden size
    "ep_decode_tokens_per_s_ib": 67,  # [ISCA]
    "ep_decode_tokens_per_s_nvl72": 1200,  # [ISCA]
    "compute_to_communication": "about 1:1 for cross-node expert parallelism before overlap",  # [V3]
}

# Inputs: the training run and cluster as DeepSeek described them, and the GPUs' datasheet peaks.
CLUSTER = {
    "gpus": 2048,  # [V3] H800
    "pretraining_gpu_hours": 2_664_000,  # [V3] Table 1
    "context_extension_gpu_hours": 119_000,
    "post_training_gpu_hours": 5_000,
    "training_tokens": 14.8e12,
    "usd_per_gpu_hour": 2.0,  # [V3] the rental price it assumes
    "pipeline_stages": 16,  # [V3] 16-way PP, 64-way EP over 8 nodes, ZeRO-1 DP
    "ep_nodes": 8,
    "gpus_per_node": 8,
    "max_nodes_per_token": 4,  # [V3] node-limited routing
    "ib_bytes_per_s": 50e9,  # [V3] per GPU, 400 Gbps InfiniBand
    "nvlink_bytes_per_s": 160e9,  # [V3]
    "nvl72_bytes_per_s": 900e9,  # [ISCA] GB200 NVL72
    "decode_tokens_per_gpu": 32,  # [ISCA] the worked decode example's micro-batch per device
}
HARDWARE = {"h800_bf16_dense_tflops": 989.5, "h800_fp8_dense_tflops": 1979.0}  # = H100 SXM datasheet peaks

# Dense peers' shapes (their config.json on the Hub): layers, heads, head dim, parameters, input embedding.
PEERS = {
    "Qwen2.5-72B (GQA)": {
        "layers": 80,
        "kv_heads": 8,
        "head_dim": 128,
        "query_heads": 64,
        "parameters": 72.7e9,
        "embedding": 152064 * 8192,
    },
    "Llama-3.1-405B (GQA)": {
        "layers": 126,
        "kv_heads": 8,
        "head_dim": 128,
        "query_heads": 128,
        "parameters": 405.9e9,
        "embedding": 128256 * 16384,
    },
}
BF16 = 2
SEQUENCE_LENGTH = 4096  # V3's pretraining length


# ------------------------------------------------------------------------------------------------------------------
# Parameters and compute per token


@dataclass
class ParameterCounts:
    total: int  # main model: embedding, layers, final norm, head
    mtp: int  # the MTP modules (sharing embedding and head)
    active: int  # what one token runs through in the main model: all but the routed experts, plus top-k of them
    embedding: int
    head: int
    routed_expert_total: int
    moe_layer_active: int  # one token through one MoE decoder layer: attention, gate, shared and top-k experts
    mtp_active: int  # one token through the MTP modules (head included, shared embedding lookup not)


def count_parameters(config: DeepseekMiniConfig, model: DeepseekMiniForCausalLM | None = None) -> ParameterCounts:
    """Parameters of `model`, or of this project's model at `config` counted on the meta device (no memory is
    allocated)."""
    if model is None:
        with torch.device("meta"):
            model = DeepseekMiniForCausalLM(config)
    top_k_share = config.num_experts_per_tok / config.n_routed_experts
    total = mtp = routed = mtp_routed = moe_layer = 0
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        in_mtp = parts[:2] == ["model", "layers"] and int(parts[2]) >= config.num_hidden_layers
        is_routed = ".mlp.experts." in name
        if parts[:3] == ["model", "layers", str(config.first_k_dense_replace)]:  # the first MoE layer
            moe_layer += parameter.numel() * (top_k_share if is_routed else 1)
        if in_mtp:
            mtp += parameter.numel()
            mtp_routed += parameter.numel() if is_routed else 0
        else:
            total += parameter.numel()
            routed += parameter.numel() if is_routed else 0
    embedding = model.model.embed_tokens.weight.numel()
    head = model.lm_head.weight.numel()
    return ParameterCounts(
        total=total,
        mtp=mtp,
        active=round(total - routed + routed * top_k_share),
        embedding=embedding,
        head=head,
        routed_expert_total=routed,
        moe_layer_active=round(moe_layer),
        mtp_active=round(mtp - mtp_routed + mtp_routed * top_k_share + head),
    )


def attention_core_flops(layers: int, query_heads: int, qk_dim: int, v_dim: int, context: int) -> float:
    """Forward FLOPs per token of QK^T and attention-weighted V, averaged over a causal sequence of `context`
    tokens (token t attends to t tokens: context/2 on average)."""
    return layers * 2 * query_heads * (qk_dim + v_dim) * context / 2


def training_flops_per_token(matmul_parameters: float, attention_forward: float) -> float:
    """Forward + backward = 3 forwards; a forward is 2 FLOPs per weight a token multiplies, plus the attention core."""
    return 3 * (2 * matmul_parameters + attention_forward)


def model_attention_flops(config: DeepseekMiniConfig, layers: int, sequence_length: int) -> float:
    """`attention_core_flops` of `layers` of the model at `config` (MLA's queries and keys are qk_head_dim wide)."""
    return attention_core_flops(
        layers, config.num_attention_heads, config.qk_head_dim, config.v_head_dim, sequence_length
    )


def model_flops(
    config: DeepseekMiniConfig, counts: ParameterCounts, with_mtp: bool, sequence_length: int = SEQUENCE_LENGTH
) -> float:
    """Training FLOPs per token of the model at `config` (the embedding lookup is not a multiplication); V3's
    pretraining length unless told."""
    layers = config.num_hidden_layers + (config.num_nextn_predict_layers if with_mtp else 0)
    weights = counts.active - counts.embedding + (counts.mtp_active if with_mtp else 0)
    return training_flops_per_token(weights, model_attention_flops(config, layers, sequence_length))


def dense_peer_flops(peer: dict) -> float:
    """Training FLOPs per token of a dense peer at the same length (its input embedding left out)."""
    attention = attention_core_flops(
        peer["layers"], peer["query_heads"], peer["head_dim"], peer["head_dim"], SEQUENCE_LENGTH
    )
    return training_flops_per_token(peer["parameters"] - peer["embedding"], attention)


# ------------------------------------------------------------------------------------------------------------------
# Memory: the KV cache


def mla_cache_bytes(config: DeepseekMiniConfig, bytes_per_value: int = BF16) -> int:
    """MLA caches one latent c_kv (d_c) and one shared RoPE key (d_R) per token per layer."""
    return config.num_hidden_layers * (config.kv_lora_rank + config.qk_rope_head_dim) * bytes_per_value


def expanded_cache_bytes(layers: int, kv_heads: int, k_dim: int, v_dim: int, bytes_per_value: int = BF16) -> int:
    """MHA (kv_heads = query heads) or GQA caches K and V of every KV head per token per layer."""
    return layers * kv_heads * (k_dim + v_dim) * bytes_per_value


def cache_table(config: DeepseekMiniConfig) -> dict[str, int]:
    layers, heads, qk_dim = config.num_hidden_layers, config.num_attention_heads, config.qk_head_dim
    table = {
        "DeepSeek-V3 (MLA)": mla_cache_bytes(config),
        "V3's attention as MHA (128 heads)": expanded_cache_bytes(layers, heads, qk_dim, config.v_head_dim),
        "V3's attention as GQA (8 KV heads)": expanded_cache_bytes(layers, 8, qk_dim, config.v_head_dim),
    }
    for name, peer in PEERS.items():
        table[name] = expanded_cache_bytes(peer["layers"], peer["kv_heads"], peer["head_dim"], peer["head_dim"])
    return table


# ------------------------------------------------------------------------------------------------------------------
# The cluster: cost, utilisation, expert-parallel traffic, pipeline bubbles


def implied_throughput(flops_per_token: float) -> dict:
    """What the published GPU hours imply per GPU: achieved TFLOPS and its share of the dense peaks."""
    seconds = CLUSTER["pretraining_gpu_hours"] * 3600
    tflops = flops_per_token * CLUSTER["training_tokens"] / seconds / 1e12
    hours = (
        CLUSTER["pretraining_gpu_hours"] + CLUSTER["context_extension_gpu_hours"] + CLUSTER["post_training_gpu_hours"]
    )
    return {
        "achieved_tflops_per_gpu": tflops,
        "share_of_bf16_peak": tflops / HARDWARE["h800_bf16_dense_tflops"],
        "share_of_fp8_peak": tflops / HARDWARE["h800_fp8_dense_tflops"],
        "gpu_hours_per_trillion_tokens": CLUSTER["pretraining_gpu_hours"] / (CLUSTER["training_tokens"] / 1e12),
        "total_gpu_hours": hours,
        "total_usd": hours * CLUSTER["usd_per_gpu_hour"],
        "pretraining_days": CLUSTER["pretraining_gpu_hours"] / CLUSTER["gpus"] / 24,
    }


def expected_nodes_reached(n_experts: int, nodes: int, top_k: int) -> float:
    """E[distinct nodes holding a token's top_k experts], experts spread evenly over `nodes` and chosen as a uniform
    random k-subset (the unrestricted, balanced case): nodes * (1 - C(E - E/nodes, k) / C(E, k))."""
    per_node = n_experts // nodes
    return nodes * (1 - math.comb(n_experts - per_node, top_k) / math.comb(n_experts, top_k))


def ep_traffic(config: DeepseekMiniConfig) -> dict:
    """InfiniBand bytes per token per MoE layer (forward): a token crosses IB once per node it reaches (then NVLink
    fans it out to that node's experts), dispatched in FP8 (1 byte per value, plus one fp32 scale per 128) and
    combined in BF16. Node-limited routing caps the nodes at 4; unrestricted routing reaches more."""
    hidden = config.hidden_size
    per_node = hidden * 1 + 4 * math.ceil(hidden / 128) + hidden * BF16
    unrestricted = expected_nodes_reached(config.n_routed_experts, CLUSTER["ep_nodes"], config.num_experts_per_tok)
    return {
        "bytes_per_node_reached": per_node,
        "node_limited_max_nodes": CLUSTER["max_nodes_per_token"],
        "unrestricted_expected_nodes": unrestricted,
        "unrestricted_worst_nodes": min(CLUSTER["ep_nodes"], config.num_experts_per_tok),
        "node_limited_bytes": per_node * CLUSTER["max_nodes_per_token"],
        "unrestricted_expected_bytes": per_node * unrestricted,
    }


def compute_to_communication(config: DeepseekMiniConfig, counts: ParameterCounts, tflops: float) -> dict:
    """Per token per MoE layer, forward and backward: the time of its compute at `tflops` against the time of its
    all-to-all at the node-limited bound (the backward sends what the forward did, the other way), per GPU NIC."""
    attention = model_attention_flops(config, 1, SEQUENCE_LENGTH)
    compute_s = training_flops_per_token(counts.moe_layer_active, attention) / (tflops * 1e12)
    communication_s = 2 * ep_traffic(config)["node_limited_bytes"] / CLUSTER["ib_bytes_per_s"]
    return {
        "tflops": tflops,
        "compute_us": compute_s * 1e6,
        "communication_us": communication_s * 1e6,
        "communication_per_compute": communication_s / compute_s,
    }


def ep_decode_bound(config: DeepseekMiniConfig, bytes_per_s: float, hidden: int) -> dict:
    """[ISCA]'s worked decode example: each device holds `decode_tokens_per_gpu` tokens; per MoE layer each token is
    dispatched (FP8, 1 byte) and combined (BF16, 2 bytes) to its 8 routed + 1 shared experts. Two micro-batches
    overlap so that one's compute hides the other's communication: the time per output token is bound below by
    2 x layers x the all-to-all time."""
    experts = config.num_experts_per_tok + config.n_shared_experts
    per_layer = (1 + BF16) * CLUSTER["decode_tokens_per_gpu"] * experts * hidden / bytes_per_s
    tpot = 2 * config.num_hidden_layers * per_layer
    return {"us_per_layer": per_layer * 1e6, "tpot_ms": tpot * 1e3, "tokens_per_s": 1 / tpot}


def pipeline_bubbles(stages: int, forward: float, backward: float, weight_backward: float) -> dict:
    """[DualPipe]'s bubble formulas (in units of one forward chunk) and per-device parameter / activation memory.
    F&B, one forward and one backward chunk run together, costs F + B of compute: DualPipe hides the all-to-all
    under it rather than shortening the compute."""
    overlapped = forward + backward
    return {
        "1F1B": {"bubble": (stages - 1) * (forward + backward), "parameters": 1, "activations": stages},
        "ZB1P": {
            "bubble": (stages - 1) * (forward + backward - 2 * weight_backward),
            "parameters": 1,
            "activations": stages,
        },
        "DualPipe": {
            "bubble": (stages / 2 - 1) * (overlapped + backward - 3 * weight_backward),
            "parameters": 2,
            "activations": stages + 1,
        },
    }


# ------------------------------------------------------------------------------------------------------------------
# The report


def cost_model() -> dict:
    config = DeepseekMiniConfig.from_preset("deepseek-v3")
    counts = count_parameters(config)
    with_mtp = model_flops(config, counts, with_mtp=True)
    throughput = implied_throughput(with_mtp)
    all_experts = training_flops_per_token(
        counts.total - counts.embedding, model_attention_flops(config, config.num_hidden_layers, SEQUENCE_LENGTH)
    )
    return {
        "parameters": counts.__dict__,
        "kv_cache_bytes_per_token": cache_table(config),
        "training_flops_per_token": {
            "DeepSeek-V3 (MoE)": model_flops(config, counts, with_mtp=False),
            "DeepSeek-V3 (MoE) with its MTP module": with_mtp,
            **{name.replace("GQA", "dense"): dense_peer_flops(peer) for name, peer in PEERS.items()},
            "V3 if every expert ran (dense 671B)": all_experts,
        },
        "cluster": throughput,
        "ep_traffic": ep_traffic(config),
        "compute_to_communication": [
            compute_to_communication(config, counts, tflops)
            for tflops in (throughput["achieved_tflops_per_gpu"], HARDWARE["h800_fp8_dense_tflops"])
        ],
        "ep_decode": {
            "ib, hidden 7168": ep_decode_bound(config, CLUSTER["ib_bytes_per_s"], config.hidden_size),
            "ib, hidden 7000 (as [ISCA] rounds it)": ep_decode_bound(config, CLUSTER["ib_bytes_per_s"], 7000),
            "nvl72, hidden 7168": ep_decode_bound(config, CLUSTER["nvl72_bytes_per_s"], config.hidden_size),
        },
        "pipeline_bubbles_pp16_f1_b2_w1": pipeline_bubbles(CLUSTER["pipeline_stages"], 1.0, 2.0, 1.0),
        "inputs": {"cluster": CLUSTER, "hardware": HARDWARE, "peers": PEERS, "sequence_length": SEQUENCE_LENGTH},
        "published": PUBLISHED,
    }


def markdown(report: dict) -> str:
    """The report as the tables docs/research.md shows."""
    published, counts = report["published"], report["parameters"]
    cache, flops, cluster = report["kv_cache_bytes_per_token"], report["training_flops_per_token"], report["cluster"]
    mla = cache["DeepSeek-V3 (MLA)"]
    lines = [
        "| parameters | ours (this project's model at the deepseek-v3 preset) | published |",
        "|---|---:|---:|",
        f"| total, main model | {counts['total'] / 1e9:.1f}B | {published['total_parameters_b']}B |",
        f"| active per token | {counts['active'] / 1e9:.1f}B | {published['active_parameters_b']}B |",
        f"| MTP module | {counts['mtp'] / 1e9:.1f}B | |",
        "",
        "| KV cache per token, BF16 | KB | x MLA | published KB |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {size / 1000:.3f} | {size / mla:.1f} | {published['kv_cache_kb_per_token'].get(name, '')} |"
            for name, size in cache.items()
        ),
        "",
        f"| training FLOPs per token, {SEQUENCE_LENGTH}-token sequences | GFLOPs | published |",
        "|---|---:|---:|",
        *(
            f"| {name} | {value / 1e9:.0f} | {published['training_gflops_per_token'].get(name, '')} |"
            for name, value in flops.items()
        ),
        "",
        "| V3's pretraining, from the published GPU hours | value |",
        "|---|---:|",
        f"| achieved TFLOPS per H800 (model FLOPs incl. MTP) | {cluster['achieved_tflops_per_gpu']:.0f} |",
        f"| share of the BF16 / FP8 dense peak | {cluster['share_of_bf16_peak']:.0%} / "
        f"{cluster['share_of_fp8_peak']:.0%} |",
        f"| GPU hours per trillion tokens | {cluster['gpu_hours_per_trillion_tokens'] / 1e3:.0f}K |",
        f"| days on {CLUSTER['gpus']} GPUs | {cluster['pretraining_days']:.0f} |",
        f"| total GPU hours, cost at ${CLUSTER['usd_per_gpu_hour']:.0f}/h | {cluster['total_gpu_hours'] / 1e6:.3f}M, "
        f"${cluster['total_usd'] / 1e6:.3f}M |",
        "",
    ]
    traffic = report["ep_traffic"]
    lines += [
        "| expert-parallel traffic per token per MoE layer, forward | nodes reached | IB KB |",
        "|---|---:|---:|",
        f"| node-limited routing (at most {traffic['node_limited_max_nodes']} nodes) "
        f"| <= {traffic['node_limited_max_nodes']} | <= {traffic['node_limited_bytes'] / 1000:.1f} |",
        f"| unrestricted, balanced (expected) | {traffic['unrestricted_expected_nodes']:.2f} "
        f"| {traffic['unrestricted_expected_bytes'] / 1000:.1f} |",
        f"| unrestricted, worst case | {traffic['unrestricted_worst_nodes']} "
        f"| {traffic['unrestricted_worst_nodes'] * traffic['bytes_per_node_reached'] / 1000:.1f} |",
        "",
        "| one MoE layer, one token, forward + backward | compute (us) | IB all-to-all (us) "
        "| communication / compute |",
        "|---|---:|---:|---:|",
        *(
            f"| at {row['tflops']:.0f} TFLOPS | {row['compute_us']:.2f} | {row['communication_us']:.2f} "
            f"| {row['communication_per_compute']:.2f} |"
            for row in report["compute_to_communication"]
        ),
        "",
        "| decode bound from the all-to-all (32 tokens per GPU, 2 overlapped micro-batches) | us per layer | TPOT ms "
        "| tokens/s |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {row['us_per_layer']:.2f} | {row['tpot_ms']:.2f} | {row['tokens_per_s']:.0f} |"
            for name, row in report["ep_decode"].items()
        ),
        "",
        f"| pipeline schedule, {CLUSTER['pipeline_stages']} stages, F:B:W = 1:2:1 | bubble (forward chunks) "
        "| parameters per device | activations (micro-batches) |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {row['bubble']:.0f} | {row['parameters']}x | {row['activations']} |"
            for name, row in report["pipeline_bubbles_pp16_f1_b2_w1"].items()
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file for every figure and its inputs.")
    args = parser.parse_args()
    report = cost_model()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
