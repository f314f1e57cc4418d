"""DeepseekMiniForCausalLM against transformers' DeepseekV3ForCausalLM, on the same weights, in one process.

    python benchmarks/bench_vs_transformers.py --out benchmarks/results/cpu.json   # bench config, <= 10 min, 2 cores
    python benchmarks/bench_vs_transformers.py --quick                              # shorter sequences, fewer repeats
    python benchmarks/bench_vs_transformers.py --device cuda --dtype bfloat16 --out benchmarks/results/cuda.json
    python benchmarks/bench_vs_transformers.py --quick --sections grpo_models roofline mtp fp8   # the opt-in figures

Same weights: transformers' model is initialised from a seed and written with `save_pretrained`; both models are then
loaded from that one checkpoint (DeepseekMini reads DeepseekV3 checkpoints as they are), and the harness checks that
their logits agree before it times anything.

Every figure is a median over repeats with warm-up rounds excluded. The candidates (ours and transformers under each
of its experts implementations) run their repeats interleaved, A B C A B C ..., so that load from other processes on
the machine falls on all of them alike; the ratio column is ours / transformers at its best (the fastest, or the
smallest, of its experts implementations for that figure). The machine's load average is recorded with the results.

The table is printed as Markdown and written with every sample to a JSON file (`--out`).

The default sections fit the documented budget (<= 10 min on 2 CPU cores); four more are opt-in with `--sections`:

- `grpo_models`: one GRPO step of stock `trl.GRPOTrainer` on DeepseekMini against the same on transformers'
  DeepseekV3, same weights (the `grpo` section's tiny model shape, without MTP), prompts, rewards and settings.
- `roofline`: batch-1 decode tokens/s as a percentage of this machine's memory-bandwidth bound,
  bound = copy bandwidth / bytes read per decoded token (`decode_bytes_per_token`, `copy_bandwidth`).
- `mtp`: `generate_with_mtp` against plain greedy `generate` on the shipped tiny base (benchmarks/mtp_decoding.py).
- `fp8`: the CPU simulation's step time of FP8 blockwise and tensorwise training against fp32 on the tiny base's
  pretraining config (benchmarks/fp8_loss_gap.py); an overhead, not FP8 speed.
"""

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import transformers
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM, PretrainedConfig, TrainerCallback

from modeling_deepseek_mini import DeepseekMiniForCausalLM

OURS = "ours"
PEER = "transformers"

BENCH_MODEL = dict(
    vocab_size=8192,
    hidden_size=512,
    num_hidden_layers=6,
    first_k_dense_replace=1,
    intermediate_size=1536,
    num_attention_heads=8,
    num_key_value_heads=8,
    q_lora_rank=192,
    kv_lora_rank=128,
    qk_nope_head_dim=64,
    qk_rope_head_dim=32,
    v_head_dim=64,
    n_routed_experts=32,
    num_experts_per_tok=4,
    moe_intermediate_size=256,
    n_shared_experts=1,
    n_group=4,
    topk_group=2,
    max_position_embeddings=4096,
    num_nextn_predict_layers=0,  # transformers' DeepseekV3 trains no MTP module: both models do the same work
)
"""The bench config of docs/benchmarks.md (transformers' DeepseekV3Config field names)."""

TINY_MODEL = dict(
    BENCH_MODEL,
    vocab_size=512,
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=4,
    q_lora_rank=48,
    kv_lora_rank=32,
    qk_nope_head_dim=16,
    qk_rope_head_dim=16,
    v_head_dim=16,
    n_routed_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    max_position_embeddings=256,
)
"""A model small enough for the smoke test: every code path of the bench config, none of its cost."""

DECODE_ONLY_IMPLEMENTATIONS = ("batched_mm",)
"""Experts implementations timed for decode only: `batched_mm` gathers a private copy of the expert weights for every
(token, expert) pair, S x 3 x hidden x moe_intermediate values (6 GiB for one 1024-token training batch at the bench
config), which is how it is meant for a handful of decode tokens and no more."""


@dataclass
class Sizes:
    """What one run measures. `FULL` is the bench config; `QUICK` and `TINY` shrink it."""

    model: dict = field(metadata={"help": "DeepseekV3Config keyword arguments of the benchmarked model."})
    prefill_lengths: tuple[int, ...] = field(metadata={"help": "Prompt lengths of the prefill figures."})
    decode_contexts: tuple[int, ...] = field(metadata={"help": "Cached context lengths of the decode figures."})
    decode_batches: tuple[int, ...] = field(metadata={"help": "Batch sizes of the decode figures."})
    decode_steps: int = field(metadata={"help": "Greedy tokens generated per timed decode repeat."})
    train_batch: int = field(metadata={"help": "Sequences per training step."})
    train_seq: int = field(metadata={"help": "Tokens per sequence of a training step."})
    moe_experts: tuple[int, ...] = field(metadata={"help": "Routed expert counts of the MoE-layer scaling figures."})
    grpo_generations: int = field(metadata={"help": "Completions per prompt (and prompts per step) of the GRPO step."})
    grpo_completion_length: int = field(metadata={"help": "max_completion_length of the GRPO step."})
    repeats: int = field(metadata={"help": "Timed repeats per candidate (the median is reported)."})
    grpo_repeats: int = field(
        metadata={"help": "Timed GRPO steps per trainer: a step is short (~0.2 s on CPU) and noisy, so more of them."}
    )
    warmup: int = field(metadata={"help": "Untimed rounds before the timed ones."})
    bandwidth_mib: int = field(
        default=256, metadata={"help": "Size of the tensor copied to measure memory bandwidth (well above caches)."}
    )
    bandwidth_repeats: int = field(default=10, metadata={"help": "Timed copies of the bandwidth measurement."})
    mtp_problems: int = field(default=8, metadata={"help": "Test prompts of the built-in task for the MTP figure."})
    mtp_batches: tuple[int, ...] = field(default=(1, 8), metadata={"help": "Batch sizes of the MTP figure."})
    mtp_new_tokens: int = field(default=64, metadata={"help": "max_new_tokens of the MTP figure."})
    fp8_steps: int = field(default=10, metadata={"help": "Training steps per arm of the FP8 overhead figure."})
    fp8_corpus_size: int = field(default=2000, metadata={"help": "Persona documents the FP8 figure trains on."})


FULL = Sizes(
    model=BENCH_MODEL,
    prefill_lengths=(512, 2048),
    decode_contexts=(512, 2048),
    decode_batches=(1, 8),
    decode_steps=8,
    train_batch=4,
    train_seq=256,
    moe_experts=(8, 16, 32, 64),
    grpo_generations=4,
    grpo_completion_length=32,
    repeats=3,
    grpo_repeats=10,
    warmup=1,
)
QUICK = replace(
    FULL, prefill_lengths=(256, 1024), decode_contexts=(256, 1024), decode_steps=4, train_seq=128, repeats=2
)
TINY = replace(
    FULL,
    model=TINY_MODEL,
    prefill_lengths=(16, 32),
    decode_contexts=(16, 32),
    decode_batches=(1, 2),
    decode_steps=2,
    train_batch=2,
    train_seq=16,
    moe_experts=(8, 16),
    grpo_generations=2,
    grpo_completion_length=4,
    repeats=1,
    grpo_repeats=1,
    bandwidth_mib=8,
    bandwidth_repeats=2,
    mtp_problems=2,
    mtp_batches=(1, 2),
    mtp_new_tokens=8,
    fp8_steps=2,
    fp8_corpus_size=200,
)
PRESETS = {"full": FULL, "quick": QUICK, "tiny": TINY}
DEFAULT_SECTIONS = ("kv_cache", "prefill", "decode", "train", "moe", "grpo")
EXTRA_SECTIONS = ("grpo_models", "roofline", "mtp", "fp8")
"""Opt-in figures (`--sections`), outside the default run's budget."""
SECTIONS = DEFAULT_SECTIONS + EXTRA_SECTIONS


# ---------------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class Target:
    """A goal for one figure: `on` is "ratio" (ours / transformers at its best) or "ours" (our figure itself)."""

    on: str
    op: str  # ">=", "<=" or "=="
    value: float

    def met(self, ours: float, ratio: float) -> bool:
        x = ratio if self.on == "ratio" else ours
        if self.op == ">=":
            return x >= self.value
        if self.op == "<=":
            return x <= self.value
        return math.isclose(x, self.value, rel_tol=1e-9)

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}x" if self.on == "ratio" else f"ours {self.op} {self.value:g}"


@dataclass
class Row:
    """One figure: ours, transformers' under each experts implementation, and the ratio to transformers' best."""

    key: str
    figure: str
    unit: str
    higher_is_better: bool
    ours: float
    peer: dict[str, float]
    target: Target | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # what else the figure rests on (bandwidth, bytes, acceptance, ...)

    @property
    def best_peer(self) -> tuple[str, float]:
        pick = max if self.higher_is_better else min
        return pick(self.peer.items(), key=lambda item: item[1])

    @property
    def ratio(self) -> float:
        return self.ours / self.best_peer[1]

    def to_json(self) -> dict:
        best_name, best = self.best_peer
        return {
            "key": self.key,
            "figure": self.figure,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "ours": self.ours,
            PEER: self.peer,
            "best_peer": best_name,
            "ratio": self.ratio,
            "target": str(self.target) if self.target else None,
            "met": self.target.met(self.ours, self.ratio) if self.target else None,
            "samples": self.samples,
            "extra": self.extra,
        }


def format_table(rows: list[Row], peer_columns: list[str]) -> str:
    """The results as a Markdown table: one column per transformers variant, then the ratio to the best of them."""

    def number(x: float | None) -> str:
        return "-" if x is None else f"{x:.4g}"

    header = ["figure", "unit", OURS, *peer_columns, "ratio (ours / best)", "target", "met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        met = "" if row.target is None else ("yes" if row.target.met(row.ours, row.ratio) else "no")
        cells = [row.figure, row.unit, number(row.ours), *[number(row.peer.get(c)) for c in peer_columns]]
        cells += [f"{row.ratio:.2f}x", str(row.target) if row.target else "", met]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Measurement


@dataclass
class Runtime:
    """Where and how the models run, and the timing protocol shared by every figure."""

    device: torch.device
    dtype: torch.dtype
    repeats: int
    warmup: int
    clock: Callable[[], float] = time.perf_counter
    generator: torch.Generator = field(init=False)

    def __post_init__(self):
        self.generator = torch.Generator().manual_seed(0)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def token_ids(self, batch: int, length: int, vocab_size: int) -> torch.Tensor:
        return torch.randint(0, vocab_size, (batch, length), generator=self.generator).to(self.device)  # (B, T)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator).to(self.device, self.dtype)

    def time_interleaved(self, candidates: dict[str, Callable[[], Callable[[], object]]]) -> dict[str, list[float]]:
        """Seconds of each candidate's timed call over `repeats` rounds, after `warmup` untimed rounds.

        `candidates` maps a name to `prepare`: an untimed call that returns the timed zero-argument `run` (set-up such
        as switching the experts implementation or copying a cache never counts). Rounds run every candidate once, in
        the same order, so a burst of load from elsewhere lands on all of them.
        """
        samples = {name: [] for name in candidates}
        for round_index in range(self.warmup + self.repeats):
            for name, prepare in candidates.items():
                run = prepare()
                self.sync()
                start = self.clock()
                run()
                self.sync()
                if round_index >= self.warmup:
                    samples[name].append(self.clock() - start)
        return samples

    def peak_step_bytes(self, step: Callable[[], object]) -> int:
        """Peak bytes of tensor memory one call of `step` allocates above what is live when it starts.

        On CUDA: the caching allocator's peak statistics. On CPU: torch.profiler's memory events, every tensor
        allocation and free of the call in time order, summed to their running peak. Both count tensor storage only,
        the same way for either model (no allocator caching, no Python objects, no fragmentation), which is what a
        model's implementation controls; a process RSS would also count the other model, the allocator's retained
        pages and whatever the previous figure left behind.
        """
        if self.device.type == "cuda":
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            step()
            self.sync()
            return torch.cuda.max_memory_allocated(self.device) - before
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        events = sorted(
            (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
        )
        live = peak = 0
        for event in events:
            live += event.nbytes()
            peak = max(peak, live)
        return peak


def storage_bytes(*roots) -> int:
    """Bytes of the tensor storage reachable from `roots` (objects, lists, dicts), each storage counted once.

    This measures a cache object as it is held in memory, whatever its layout: DynamicCache layers, a model's own
    cache class, preallocated buffers (counted at their allocated size, not the part in use).
    """
    storages, seen, stack = {}, set(), list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, (torch.nn.Module, PretrainedConfig, type)):
            stack.extend(vars(obj).values())
        elif hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes, torch.nn.Module)):
            stack.extend(obj)
    return sum(storages.values())


# ---------------------------------------------------------------------------------------------------------------------
# Models


@dataclass
class Pair:
    """Our model and transformers' model, loaded from one checkpoint, and the experts implementations to time."""

    ours: torch.nn.Module
    peer: torch.nn.Module
    implementations: list[str]

    def candidates(self, make_run: Callable[[torch.nn.Module], Callable[[], object]], *, decode: bool = False):
        """`Runtime.time_interleaved` candidates: ours, then transformers under each experts implementation."""

        def peer_prepare(implementation: str):
            def prepare():
                self.peer.set_experts_implementation(implementation)
                return make_run(self.peer)

            return prepare

        candidates = {OURS: lambda: make_run(self.ours)}
        for implementation in self.implementations:
            if decode or implementation not in DECODE_ONLY_IMPLEMENTATIONS:
                candidates[f"{PEER}[{implementation}]"] = peer_prepare(implementation)
        return candidates

    def use_bulk_implementation(self) -> None:
        """For untimed work on many tokens: transformers' first implementation that is not decode-only."""
        self.peer.set_experts_implementation(
            next(i for i in self.implementations if i not in DECODE_ONLY_IMPLEMENTATIONS)
        )


def load_pair(model_kwargs: dict, runtime: Runtime, implementations: list[str], workdir: str, seed: int) -> Pair:
    """Initialise transformers' DeepseekV3 from `seed`, save it, and load both models from that checkpoint."""
    path = os.path.join(workdir, f"checkpoint-{len(os.listdir(workdir))}")
    torch.manual_seed(seed)
    DeepseekV3ForCausalLM(DeepseekV3Config(**model_kwargs)).save_pretrained(path)
    peer = DeepseekV3ForCausalLM.from_pretrained(path, dtype=runtime.dtype).to(runtime.device)
    ours = DeepseekMiniForCausalLM.from_pretrained(path, dtype=runtime.dtype).to(runtime.device)
    return Pair(ours=ours, peer=peer, implementations=implementations)


@torch.no_grad()
def check_same_function(pair: Pair, runtime: Runtime, vocab_size: int, steps: int = 4) -> dict:
    """Prefill logits and greedy continuations of both models on one prompt: the weights really are the same."""
    pair.ours.eval()
    pair.peer.eval()
    pair.use_bulk_implementation()
    ids = runtime.token_ids(1, 32, vocab_size)
    logits_ours = pair.ours(input_ids=ids).logits.float()
    logits_peer = pair.peer(input_ids=ids).logits.float()
    tokens = {}
    for name, model in ((OURS, pair.ours), (PEER, pair.peer)):
        cache, next_ids = prefill(model, ids)
        tokens[name] = greedy_decode(model, cache, next_ids, steps)[0].tolist()
    return {
        "prefill_logits_max_abs_diff": (logits_ours - logits_peer).abs().max().item(),
        "greedy_tokens_equal": tokens[OURS] == tokens[PEER],
    }


def prefill(model, ids: torch.Tensor):
    """Run the prompt, keep the cache and return it with the greedy next token (B, 1), as generation's first step."""
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    return out.past_key_values, out.logits[:, -1:].argmax(-1)


def greedy_decode(model, cache, next_ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Feed one token at a time for `steps` steps, greedily; returns the generated ids (B, steps)."""
    generated = []
    for _ in range(steps):
        out = model(input_ids=next_ids, past_key_values=cache, use_cache=True)
        next_ids = out.logits[:, -1:].argmax(-1)  # (B, 1)
        generated.append(next_ids)
    return torch.cat(generated, dim=1)


# ---------------------------------------------------------------------------------------------------------------------
# Figures


def kv_cache_rows(pair: Pair, sizes: Sizes, runtime: Runtime) -> list[Row]:
    """Bytes per token per layer of the cache objects each model returns after a prefill."""
    config = sizes.model
    length = sizes.prefill_lengths[0]
    ids = runtime.token_ids(1, length, config["vocab_size"])
    pair.use_bulk_implementation()
    per_token = {}
    with torch.no_grad():
        for name, model in ((OURS, pair.ours), (PEER, pair.peer)):
            cache, _ = prefill(model.eval(), ids)
            per_token[name] = storage_bytes(cache) / (length * config["num_hidden_layers"])
    mla_minimum = (config["kv_lora_rank"] + config["qk_rope_head_dim"]) * runtime.dtype.itemsize
    figure = f"KV cache per token per layer (MLA minimum {mla_minimum} B)"
    return [lower_is_better_row("kv_cache_bytes", figure, "bytes", per_token, Target("ours", "==", mla_minimum))]


def prefill_rows(pair: Pair, sizes: Sizes, runtime: Runtime) -> list[Row]:
    """Tokens/s of a batch-1 prompt forward that builds the cache and returns the last position's logits."""
    rows = []
    for length in sizes.prefill_lengths:
        ids = runtime.token_ids(1, length, sizes.model["vocab_size"])

        def make_run(model, ids=ids):
            model.eval()
            return torch.no_grad()(lambda: prefill(model, ids))

        samples = runtime.time_interleaved(pair.candidates(make_run))
        rows.append(
            throughput_row(
                f"prefill@{length}", f"prefill, {length} tokens", length, samples, Target("ratio", ">=", 1.0)
            )
        )
    return rows


def decode_rows(pair: Pair, sizes: Sizes, runtime: Runtime) -> list[Row]:
    """Greedy tokens/s with `context` tokens already cached, one token per sequence per step.

    Each model prefills its cache once (untimed); every timed repeat decodes from a fresh copy of it.
    """
    rows = []
    for context in sizes.decode_contexts:
        for batch in sizes.decode_batches:
            ids = runtime.token_ids(batch, context, sizes.model["vocab_size"])
            pair.use_bulk_implementation()
            with torch.no_grad():
                prefilled = {id(model): prefill(model.eval(), ids) for model in (pair.ours, pair.peer)}

            def make_run(model, prefilled=prefilled):
                cache, next_ids = prefilled[id(model)]
                cache = copy.deepcopy(cache)
                return torch.no_grad()(lambda: greedy_decode(model, cache, next_ids, sizes.decode_steps))

            samples = runtime.time_interleaved(pair.candidates(make_run, decode=True))
            target = Target("ratio", ">=", 3.0 if context >= 2048 else 1.5)
            rows.append(
                throughput_row(
                    f"decode@{context}x{batch}",
                    f"decode, context {context}, batch {batch}",
                    batch * sizes.decode_steps,
                    samples,
                    target,
                )
            )
    return rows


def copy_bandwidth(runtime: Runtime, mib: int, repeats: int) -> list[float]:
    """Memory bandwidth in bytes/s, one sample per timed `dst.copy_(src)` of two `mib`-MiB tensors of the model dtype.

    Bytes per copy = 2 x the tensor's bytes (read src + write dst, STREAM's "copy" convention; a CPU's write-allocate
    reads of dst are not counted). Both tensors are written before timing (no first-touch page faults) and timed with
    the runtime's clock and thread count, i.e. as the decode figures are.
    """
    numel = mib * 2**20 // runtime.dtype.itemsize
    src = torch.ones(numel, dtype=runtime.dtype, device=runtime.device)
    dst = torch.zeros(numel, dtype=runtime.dtype, device=runtime.device)
    timing = replace(runtime, repeats=repeats, warmup=1)
    seconds = timing.time_interleaved({"copy": lambda: lambda: dst.copy_(src)})["copy"]
    return [2 * src.nbytes / t for t in seconds]


def decode_bytes_per_token(model: torch.nn.Module, context: int) -> dict[str, int]:
    """Bytes that decoding one token at batch 1 must read, with `context` tokens cached.

        weights = sum over parameters of numel x itemsize, where
                  the embedding table counts one row (hidden_size values; all of it if tied to lm_head),
                  each routed-experts tensor (E experts) counts top_k / E of itself (the k experts a token uses),
                  everything else counts whole (attention, dense MLPs, shared experts, routers, norms, lm_head);
        kv      = num_hidden_layers x context x (kv_lora_rank + qk_rope_head_dim) x itemsize (MLA's latent cache);
        total   = weights + kv.

    Parameters in the model's dtype; MTP modules (unused by plain decoding) are left out. The same weights give the
    same bytes for either model: this is the minimum any implementation must read, not what it does read.
    """
    config = model.config
    fraction = config.num_experts_per_tok / config.n_routed_experts
    weights = 0.0
    for name, parameter in model.named_parameters():
        nbytes = parameter.numel() * parameter.element_size()
        parts = name.split(".")
        if parts[:2] == ["model", "layers"] and int(parts[2]) >= config.num_hidden_layers:
            continue  # an MTP module (layers num_hidden_layers and up, as in DeepSeek's checkpoints)
        if name.endswith("embed_tokens.weight") and not config.tie_word_embeddings:
            nbytes = parameter.shape[-1] * parameter.element_size()
        elif ".mlp.experts." in name:
            nbytes *= fraction
        weights += nbytes
    itemsize = next(model.parameters()).element_size()
    kv = config.num_hidden_layers * context * (config.kv_lora_rank + config.qk_rope_head_dim) * itemsize
    return {"weights": round(weights), "kv": kv, "total": round(weights) + kv}


def roofline_rows(pair: Pair, sizes: Sizes, runtime: Runtime) -> list[Row]:
    """Batch-1 decode tokens/s as a percentage of the memory-bandwidth bound, at each decode context.

    bound (tokens/s) = copy bandwidth (bytes/s, `copy_bandwidth`, median) / bytes per token
    (`decode_bytes_per_token`); percentage = 100 x measured tokens/s / bound. The tokens/s are `decode_rows` at
    batch 1; the bandwidth is measured in this process just before them.
    """
    bandwidth_samples = copy_bandwidth(runtime, sizes.bandwidth_mib, sizes.bandwidth_repeats)
    bandwidth = statistics.median(bandwidth_samples)
    rows = []
    for decode in decode_rows(pair, replace(sizes, decode_batches=(1,)), runtime):
        context = int(decode.key.removeprefix("decode@").split("x")[0])
        nbytes = decode_bytes_per_token(pair.ours, context)
        bound = bandwidth / nbytes["total"]
        figure = (
            f"decode, context {context}, batch 1, % of the bandwidth bound ({bandwidth / 1e9:.3g} GB/s / "
            f"{nbytes['total'] / 1e6:.3g} MB per token = {bound:.4g} tokens/s)"
        )
        rows.append(
            Row(
                key=f"roofline@{context}", figure=figure, unit="% of bound", higher_is_better=True,
                ours=100 * decode.ours / bound, peer={name: 100 * v / bound for name, v in decode.peer.items()},
                samples=decode.samples,
                extra={
                    "bandwidth_bytes_per_s": bandwidth, "bandwidth_samples": bandwidth_samples,
                    "bytes_per_token": nbytes, "bound_tokens_per_s": bound,
                    "tokens_per_s": {OURS: decode.ours, **decode.peer},
                },
            )
        )  # fmt: skip
    return rows


def train_rows(pair: Pair, sizes: Sizes, runtime: Runtime) -> list[Row]:
    """Tokens/s and peak tensor memory of one AdamW training step on a (train_batch, train_seq) batch."""
    ids = runtime.token_ids(sizes.train_batch, sizes.train_seq, sizes.model["vocab_size"])
    optimizers = {id(m): torch.optim.AdamW(m.parameters(), lr=1e-5) for m in (pair.ours, pair.peer)}

    def step(model):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizers[id(model)].step()
        optimizers[id(model)].zero_grad(set_to_none=True)

    def make_run(model):
        model.train()
        return lambda: step(model)

    candidates = pair.candidates(make_run)
    samples = runtime.time_interleaved(candidates)
    tokens = sizes.train_batch * sizes.train_seq
    speed = throughput_row(
        "train_tokens_per_s", f"training step, {sizes.train_batch} x {sizes.train_seq}, AdamW", tokens, samples,
        Target("ratio", ">=", 1.5),
    )  # fmt: skip

    # Peak memory: parameters, gradients-to-be and AdamW state live at the step's start (the warm-up steps above
    # created the state), plus the step's own peak above them.
    peak = {}
    for name, prepare in candidates.items():
        run = prepare()
        model = pair.ours if name == OURS else pair.peer
        static = storage_bytes(list(model.parameters()), list(model.buffers()), optimizers[id(model)].state)
        peak[name] = (static + runtime.peak_step_bytes(run)) / 2**20
    memory = lower_is_better_row(
        "train_peak_memory", f"training step peak tensor memory, {sizes.train_batch} x {sizes.train_seq}, AdamW",
        "MiB", peak, Target("ratio", "<=", 1.0),
    )  # fmt: skip
    return [speed, memory]


def moe_rows(sizes: Sizes, runtime: Runtime, implementations: list[str], workdir: str, seed: int) -> list[Row]:
    """Forward + backward time of one MoE layer as the routed experts grow, at fixed top-k and fixed tokens.

    Each expert count gets a one-layer model (both implementations loaded from one checkpoint); only the layer's
    `mlp` (router, routed and shared experts) is timed, on the training batch's shape of hidden states.
    """
    rows, times = [], {}
    for experts in sizes.moe_experts:
        model_kwargs = dict(sizes.model, num_hidden_layers=1, first_k_dense_replace=0, n_routed_experts=experts)
        pair = load_pair(model_kwargs, runtime, implementations, workdir, seed)
        x = runtime.randn(sizes.train_batch, sizes.train_seq, sizes.model["hidden_size"])  # (B, T, d)
        grad = runtime.randn(sizes.train_batch, sizes.train_seq, sizes.model["hidden_size"])

        def make_run(model, x=x, grad=grad):
            mlp = model.train().get_submodule("model.layers.0.mlp")
            mlp.zero_grad(set_to_none=True)
            return lambda: first_output(mlp(x)).backward(grad)

        samples = runtime.time_interleaved(pair.candidates(make_run))
        times[experts] = {name: 1e3 * statistics.median(s) for name, s in samples.items()}
        figure = (
            f"MoE layer forward+backward, {experts} experts, top-{sizes.model['num_experts_per_tok']}, "
            f"{sizes.train_batch * sizes.train_seq} tokens"
        )
        rows.append(lower_is_better_row(f"moe@{experts}", figure, "ms", times[experts], samples=samples))
        del pair
    low, high = min(sizes.moe_experts), max(sizes.moe_experts)
    growth = {name: times[high][name] / times[low][name] for name in times[low]}
    figure = f"MoE layer time at {high} experts / at {low} experts"
    rows.append(lower_is_better_row("moe_growth", figure, "x", growth, Target("ours", "<=", 1.3)))
    return rows


class StepTimer(TrainerCallback):
    """Seconds (of `clock`, the runtime's) from each optimizer step's start to its log: generation, rewards, loss,
    backward, optimizer step, the step-end callbacks (the routing-bias update) and the logging of the step's metrics;
    the set-up that `Trainer.train` does before its first step is left out. Each step's logged metrics are kept."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.seconds: list[float] = []
        self.logs: list[dict] = []
        self._start = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = self.clock()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._start is not None:
            self.seconds.append(self.clock() - self._start)
            self.logs.append(dict(logs or {}))
            self._start = None


@dataclass
class GrpoTask:
    """What every timed GRPO step shares: tokenizer, prompts, rewards and trainer settings (one optimizer step)."""

    tokenizer: object
    dataset: object
    settings: dict
    reward_names: list[str]
    workdir: str

    def trainer(self, name: str, model: torch.nn.Module, *, deepseek: bool = False):
        """Stock `trl.GRPOTrainer` on `model`, or the project's `DeepseekGRPOTrainer` with `deepseek=True`."""
        from trl import GRPOConfig, GRPOTrainer

        import rewards
        from recipes.lib.grpo_trainer import DeepseekGRPOConfig, DeepseekGRPOTrainer

        output_dir = os.path.join(self.workdir, f"grpo-{len(os.listdir(self.workdir))}-{name}")
        if deepseek:
            trainer_class, config, reward_funcs = DeepseekGRPOTrainer, DeepseekGRPOConfig, self.reward_names
        else:
            trainer_class, config, reward_funcs = GRPOTrainer, GRPOConfig, rewards.get_reward_funcs(self.reward_names)
        return trainer_class(
            model=model,
            reward_funcs=reward_funcs,
            args=config(output_dir=output_dir, **self.settings),
            train_dataset=self.dataset,
            processing_class=self.tokenizer,
        )


def grpo_task(sizes: Sizes, runtime: Runtime, workdir: str, seed: int) -> GrpoTask:
    """The built-in task's tokenizer and prompts, the accuracy and format rewards, and the step's settings.

    Every completion is `grpo_completion_length` tokens (`min_new_tokens`): models whose samples differ (other
    weights, or the same weights with logits that differ in the last bits) still generate the same number of tokens.
    """
    from recipes.lib.task import make_corpus, make_splits
    from recipes.pretrain import build_tokenizer

    tokenizer = build_tokenizer(make_corpus(seed=seed, n_docs=200)["text"])
    tokenizer.padding_side = "left"
    prompts = sizes.grpo_generations  # prompts per step
    settings = dict(
        max_steps=1,
        per_device_train_batch_size=prompts * sizes.grpo_generations,
        num_generations=sizes.grpo_generations,
        max_completion_length=sizes.grpo_completion_length,
        # EOS held back until the length limit: every candidate generates exactly as many tokens, whatever it samples
        generation_kwargs={"min_new_tokens": sizes.grpo_completion_length},
        learning_rate=1e-6,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        activation_checkpointing=False,
        use_cpu=runtime.device.type == "cpu",
        bf16=runtime.dtype == torch.bfloat16,
        fp16=runtime.dtype == torch.float16,
        seed=seed,
    )
    dataset = make_splits(seed=seed, n_train=prompts, n_test=0)["train"]
    return GrpoTask(tokenizer, dataset, settings, ["accuracy", "format"], workdir)


def time_grpo_steps(trainers: dict, runtime: Runtime, repeats: int) -> tuple[dict[str, list[float]], dict]:
    """Seconds of one GRPO optimizer step per trainer (`StepTimer`), over `repeats` rounds after `runtime.warmup`.

    Each round calls every trainer's `train()` (one step) once, in order, as `Runtime.time_interleaved` does. Also
    returns each trainer's median completion length over the timed steps (TRL's `completions/mean_length`), to show
    that the candidates generated as many tokens.
    """
    timers = {name: StepTimer(runtime.clock) for name in trainers}
    for name, trainer in trainers.items():
        trainer.add_callback(timers[name])
    for _ in range(runtime.warmup + repeats):
        for trainer in trainers.values():
            trainer.train()
    samples = {name: timer.seconds[runtime.warmup :] for name, timer in timers.items()}
    lengths = {
        name: statistics.median(log.get("completions/mean_length", math.nan) for log in timer.logs[runtime.warmup :])
        for name, timer in timers.items()
    }
    return samples, lengths


def grpo_figure(sizes: Sizes, what: str) -> str:
    return (
        f"GRPO step, {sizes.grpo_generations} prompts x {sizes.grpo_generations} completions of "
        f"{sizes.grpo_completion_length} tokens ({what})"
    )


def grpo_rows(sizes: Sizes, runtime: Runtime, workdir: str, seed: int) -> list[Row]:
    """One GRPO optimizer step of the project's `DeepseekGRPOTrainer` against stock `trl.GRPOTrainer`.

    Same tiny DeepseekMini (the `tiny` preset, freshly initialised), same tokenizer, prompts, rewards and settings
    (`grpo_task`: every completion runs to the length limit, so both trainers generate the same number of tokens).
    Each timed repeat is one `train()` call of one step per trainer, alternating (`time_grpo_steps`).
    """
    from recipes.pretrain import build_model

    task = grpo_task(sizes, runtime, workdir, seed)
    torch.manual_seed(seed)
    model = build_model(task.tokenizer, "tiny", {}).to(runtime.device)
    trainers = {
        OURS: task.trainer("ours", copy.deepcopy(model), deepseek=True),
        "trl.GRPOTrainer": task.trainer("trl", copy.deepcopy(model)),
    }
    samples, lengths = time_grpo_steps(trainers, runtime, sizes.grpo_repeats)
    medians = {name: statistics.median(s) for name, s in samples.items()}
    figure = grpo_figure(sizes, "DeepseekGRPOTrainer vs trl.GRPOTrainer")
    row = lower_is_better_row("grpo_step", figure, "s", medians, Target("ratio", "<=", 1.05), samples)
    row.extra = {"completion_mean_length": lengths}
    return [row]


def grpo_model_rows(sizes: Sizes, runtime: Runtime, implementations: list[str], workdir: str, seed: int) -> list[Row]:
    """One GRPO optimizer step under stock `trl.GRPOTrainer`: DeepseekMini against transformers' DeepseekV3.

    What a user of either model feels: the same trainer, config, prompts and rewards as `grpo_rows`, on the `tiny`
    preset's shape without an MTP module (transformers' DeepseekV3 has none), both models loaded from one checkpoint
    (`load_pair`). transformers runs under each of its experts implementations that can train (one model copy each);
    every timed repeat is one `train()` call of one step per candidate, interleaved.
    """
    from modeling_deepseek_mini import DeepseekMiniConfig

    task = grpo_task(sizes, runtime, workdir, seed)
    tokenizer = task.tokenizer
    config = DeepseekMiniConfig.from_preset(
        "tiny",
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        num_nextn_predict_layers=0,
    )
    pair = load_pair(config.to_deepseek_v3_dict(), runtime, implementations, workdir, seed)
    models = {OURS: pair.ours}
    for implementation in implementations:
        if implementation not in DECODE_ONLY_IMPLEMENTATIONS:
            peer = copy.deepcopy(pair.peer)
            peer.set_experts_implementation(implementation)
            models[f"{PEER}[{implementation}]"] = peer
    trainers = {name: task.trainer(name, model) for name, model in models.items()}
    samples, lengths = time_grpo_steps(trainers, runtime, sizes.grpo_repeats)
    medians = {name: statistics.median(s) for name, s in samples.items()}
    figure = grpo_figure(sizes, "trl.GRPOTrainer on DeepseekMini vs on DeepseekV3, same weights")
    row = lower_is_better_row("grpo_step_models", figure, "s", medians, samples=samples)
    row.extra = {"completion_mean_length": lengths}
    return [row]


def mtp_rows(sizes: Sizes, runtime: Runtime) -> list[Row]:
    """MTP speculative decoding against plain greedy decoding, DeepseekMini only: benchmarks/mtp_decoding.py's
    `measure` on the shipped tiny base (a trained MTP module; a fresh one would accept nothing), on the first
    `mtp_problems` test prompts of the built-in task, per batch size. The row is tokens/s of `generate_with_mtp`
    ("ours") against `generate(do_sample=False)`, which return the same tokens (checked); the ratio is the speed-up."""
    import mtp_decoding
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(mtp_decoding.TINY_BASE)
    model = DeepseekMiniForCausalLM.from_pretrained(mtp_decoding.TINY_BASE, dtype=runtime.dtype)
    model = model.to(runtime.device).eval()
    prompts = mtp_decoding.task_prompts(sizes.mtp_problems)

    def clock() -> float:
        runtime.sync()
        return runtime.clock()

    rows = []
    for batch in sizes.mtp_batches:
        inputs = [
            {key: value.to(runtime.device) for key, value in b.items()}
            for b in mtp_decoding.batches(tokenizer, prompts, batch)
        ]
        result = mtp_decoding.measure(model, inputs, sizes.mtp_new_tokens, runtime.repeats, clock)
        samples = {OURS: result["samples_s"]["generate_with_mtp"][1:], "generate": result["samples_s"]["generate"][1:]}
        figure = (
            f"MTP speculative decoding, tiny base, {sizes.mtp_problems} prompts, batch {batch}, "
            f"{sizes.mtp_new_tokens} new tokens (generate_with_mtp vs generate; acceptance "
            f"{result['acceptance_rate']:.2f})"
        )
        row = throughput_row(f"mtp@{batch}", figure, result["new_tokens"], samples)
        row.extra = {key: result[key] for key in ("acceptance_rate", "row_acceptance_rate", "drafted", "accepted")}
        rows.append(row)
    return rows


def fp8_rows(sizes: Sizes) -> list[Row]:
    """Step time of FP8 training simulated on CPU against fp32, DeepseekMini only: benchmarks/fp8_loss_gap.py's
    `train_in_lockstep` (the tiny base's pretraining config, the arms' steps interleaved, thread CPU time), for
    `fp8_steps` steps; the first step is left out as a warm-up. An overhead of the simulation, not FP8 speed; it runs
    on CPU whatever `--device` says."""
    import fp8_loss_gap

    recipe = fp8_loss_gap.load_recipe()
    arms, _ = fp8_loss_gap.train_in_lockstep(recipe, sizes.fp8_steps, sizes.fp8_corpus_size, eval_batches=1)
    times = {name: arm["times"][1:] or arm["times"] for name, arm in arms.items()}
    rows = []
    for name in ("fp8-blockwise", "fp8-tensorwise"):
        samples = {OURS: times[name], "fp32": times["fp32"]}
        medians = {key: statistics.median(s) for key, s in samples.items()}
        figure = (
            f"training step, {name} simulated on CPU vs fp32, tiny base config, batch {recipe['batch_size']}, "
            f"{len(times['fp32'])} steps"
        )
        rows.append(lower_is_better_row(f"fp8_step@{name.removeprefix('fp8-')}", figure, "s", medians, samples=samples))
    return rows


def first_output(output):
    """A module's output tensor, whether it returns the tensor or a tuple that starts with it."""
    return output[0] if isinstance(output, tuple) else output


def lower_is_better_row(
    key: str, figure: str, unit: str, values: dict[str, float], target: Target | None = None, samples=None
) -> Row:
    """A row whose smaller figure is better (bytes, seconds, growth) from each candidate's value, ours included."""
    peer = dict(values)
    return Row(
        key=key, figure=figure, unit=unit, higher_is_better=False, ours=peer.pop(OURS), peer=peer, target=target,
        samples=samples or {},
    )  # fmt: skip


def throughput_row(
    key: str, figure: str, tokens: int, samples: dict[str, list[float]], target: Target | None = None
) -> Row:
    """A tokens/s row from the seconds each candidate took to process `tokens` tokens."""
    speeds = {name: tokens / statistics.median(s) for name, s in samples.items()}
    return Row(
        key=key, figure=figure, unit="tokens/s", higher_is_better=True, ours=speeds.pop(OURS), peer=speeds,
        target=target, samples=samples,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Main


def environment(args, runtime: Runtime) -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(runtime.device),
        "device_name": torch.cuda.get_device_name(runtime.device)
        if runtime.device.type == "cuda"
        else platform.processor(),
        "dtype": str(runtime.dtype).removeprefix("torch."),
        "clock": args.clock,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }


def run(args) -> dict:
    sizes = PRESETS[args.preset]
    if args.repeats is not None:
        sizes = replace(sizes, repeats=args.repeats)
    if args.train_shape is not None:
        sizes = replace(sizes, train_batch=args.train_shape[0], train_seq=args.train_shape[1])
    clock = time.process_time if args.clock == "process" else time.perf_counter
    runtime = Runtime(torch.device(args.device), getattr(torch, args.dtype), sizes.repeats, sizes.warmup, clock)
    if runtime.device.type == "cpu":
        torch.set_num_threads(args.threads)
    load = [{"at": "start", "loadavg": os.getloadavg()}]
    rows: list[Row] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        pair = load_pair(sizes.model, runtime, args.experts_implementations, workdir, args.seed)
        same = check_same_function(pair, runtime, sizes.model["vocab_size"])
        print(f"same weights: {same}", flush=True)
        figures = {
            "kv_cache": lambda: kv_cache_rows(pair, sizes, runtime),
            "prefill": lambda: prefill_rows(pair, sizes, runtime),
            "decode": lambda: decode_rows(pair, sizes, runtime),
            "train": lambda: train_rows(pair, sizes, runtime),
            "moe": lambda: moe_rows(sizes, runtime, args.experts_implementations, workdir, args.seed),
            "grpo": lambda: grpo_rows(sizes, runtime, workdir, args.seed),
            "grpo_models": lambda: grpo_model_rows(sizes, runtime, args.experts_implementations, workdir, args.seed),
            "roofline": lambda: roofline_rows(pair, sizes, runtime),
            "mtp": lambda: mtp_rows(sizes, runtime),
            "fp8": lambda: fp8_rows(sizes),
        }
        for section in args.sections:
            section_start = time.perf_counter()
            new_rows = figures[section]()
            rows += new_rows
            load.append({"at": section, "loadavg": os.getloadavg()})
            for row in new_rows:
                print(f"{row.figure}: ours {row.ours:.4g}, {row.peer} {row.unit} -> {row.ratio:.2f}x", flush=True)
            print(f"[{section}: {time.perf_counter() - section_start:.0f} s]", flush=True)
    peer_columns = list(dict.fromkeys(name for row in rows for name in row.peer))  # in order of first appearance
    table = format_table(rows, peer_columns)
    return {
        "preset": args.preset,
        "sizes": asdict(sizes),
        "environment": environment(args, runtime),
        "same_function": same,
        "load_average": load,
        "seconds": time.perf_counter() - started,
        "rows": [row.to_json() for row in rows],
        "table": table,
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", dest="preset", action="store_const", const="quick", help="Shorter sequences, fewer repeats."
    )
    size.add_argument("--tiny", dest="preset", action="store_const", const="tiny", help="A tiny model (smoke test).")
    parser.set_defaults(preset="full")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results (default: none).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (or cuda:N).")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads on CPU. One thread keeps the figures independent of other processes on a shared "
        "machine (competing OpenMP threads spin-wait); on a dedicated machine pass its core count.",
    )
    parser.add_argument(
        "--experts-implementations",
        nargs="+",
        default=["grouped_mm", "eager", "batched_mm"],
        help="transformers' experts implementations to time; the ratio uses the best of them per figure.",
    )
    parser.add_argument(
        "--clock",
        choices=["auto", "process", "wall"],
        default="auto",
        help="What a repeat's seconds are. 'process': CPU seconds of this process (time.process_time), which other "
        "processes' load does not inflate; it equals wall time for one thread on an idle machine. 'wall': "
        "time.perf_counter. 'auto' (default): process on CPU with --threads 1, wall otherwise (GPU, several threads).",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        default=list(DEFAULT_SECTIONS),
        choices=SECTIONS,
        help=f"Figures to measure (default: {' '.join(DEFAULT_SECTIONS)}; opt-in: {' '.join(EXTRA_SECTIONS)}).",
    )
    parser.add_argument("--repeats", type=int, default=None, help="Override the preset's timed repeats.")
    parser.add_argument(
        "--train-shape",
        type=int,
        nargs=2,
        metavar=("BATCH", "SEQ"),
        default=None,
        help="Override the preset's training batch (training step and MoE-layer figures), e.g. --train-shape 1 2048.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the weights.")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a GPU that torch can see; run on CPU with --device cpu.")
    single_cpu_thread = not args.device.startswith("cuda") and args.threads == 1
    if args.clock == "auto":
        args.clock = "process" if single_cpu_thread else "wall"
    if args.clock == "process" and not single_cpu_thread:
        parser.error("--clock process measures one CPU thread's work: use it with --device cpu --threads 1.")
    if not any(i not in DECODE_ONLY_IMPLEMENTATIONS for i in args.experts_implementations):
        parser.error(
            f"--experts-implementations needs one besides {DECODE_ONLY_IMPLEMENTATIONS} for prefill and training."
        )
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    results = run(args)
    print(results["table"])
    print(f"load average (1, 5, 15 min): {[entry['loadavg'] for entry in results['load_average']]}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
