"""Where the time of one benchmark figure goes, for both models: torch.profiler's operators, by self time.

    python benchmarks/profile_figure.py prefill --length 2048
    python benchmarks/profile_figure.py decode --context 2048 --batch 1
    python benchmarks/profile_figure.py train
    python benchmarks/profile_figure.py moe --experts 64

The models, weights and inputs are those of `bench_vs_transformers.py` (bench config); transformers runs under the
experts implementation given by `--implementation`. One untimed warm-up call precedes the profiled one.
"""

import argparse
import copy
import tempfile

import torch
from bench_vs_transformers import (
    BENCH_MODEL,
    FULL,
    OURS,
    PEER,
    Runtime,
    first_output,
    greedy_decode,
    load_pair,
    prefill,
)
from torch.profiler import ProfilerActivity, profile


def make_calls(args, pair, runtime: Runtime) -> dict:
    """name -> zero-argument call of the figure, for ours and for transformers."""
    vocab = BENCH_MODEL["vocab_size"]
    models = {OURS: pair.ours, f"{PEER}[{args.implementation}]": pair.peer}
    if args.figure == "prefill":
        ids = runtime.token_ids(1, args.length, vocab)
        return {name: torch.no_grad()(lambda m=m: prefill(m.eval(), ids)) for name, m in models.items()}
    if args.figure == "decode":
        ids = runtime.token_ids(args.batch, args.context, vocab)
        calls = {}
        for name, model in models.items():
            with torch.no_grad():
                cache, next_ids = prefill(model.eval(), ids)

            def call(model=model, cache=cache, next_ids=next_ids):
                with torch.no_grad():
                    greedy_decode(model, copy.deepcopy(cache), next_ids, args.steps)

            calls[name] = call
        return calls
    if args.figure == "train":
        ids = runtime.token_ids(FULL.train_batch, FULL.train_seq, vocab)
        calls = {}
        for name, model in models.items():
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

            def call(model=model, optimizer=optimizer):
                model.train()(input_ids=ids, labels=ids).loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            calls[name] = call
        return calls
    x = runtime.randn(FULL.train_batch, FULL.train_seq, BENCH_MODEL["hidden_size"])  # (B, T, d)
    grad = runtime.randn(FULL.train_batch, FULL.train_seq, BENCH_MODEL["hidden_size"])
    calls = {}
    for name, model in models.items():
        mlp = model.train().get_submodule("model.layers.0.mlp")
        calls[name] = lambda mlp=mlp: first_output(mlp(x)).backward(grad)
    return calls


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=["prefill", "decode", "train", "moe"])
    parser.add_argument("--length", type=int, default=2048, help="prefill: prompt length")
    parser.add_argument("--context", type=int, default=2048, help="decode: cached tokens")
    parser.add_argument("--batch", type=int, default=1, help="decode: sequences")
    parser.add_argument("--steps", type=int, default=8, help="decode: tokens generated")
    parser.add_argument("--experts", type=int, default=64, help="moe: routed experts of the one-layer model")
    parser.add_argument("--implementation", default="grouped_mm", help="transformers' experts implementation")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=15, help="operators shown per model")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    runtime = Runtime(torch.device("cpu"), torch.float32, repeats=1, warmup=1)
    model_kwargs = BENCH_MODEL
    if args.figure == "moe":
        model_kwargs = dict(BENCH_MODEL, num_hidden_layers=1, first_k_dense_replace=0, n_routed_experts=args.experts)
    with tempfile.TemporaryDirectory() as workdir:
        pair = load_pair(model_kwargs, runtime, [args.implementation], workdir, seed=0)
    pair.peer.set_experts_implementation(args.implementation)
    for name, call in make_calls(args, pair, runtime).items():
        call()  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
        total_ms = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3
        print(f"\n## {name}: {args.figure}, {total_ms:.0f} ms of operator time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=48))


if __name__ == "__main__":
    main()
