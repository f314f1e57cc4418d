"""Training curves from a Trainer's `log_history`, saved as PNG files (no display needed)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SHARE = "share of the step's completions"
# (log key, plot title, y-axis label, file name): the curves R1 reads off an RL run, each over the completions sampled
# (at the training temperature) for one optimizer step's prompts; docs/task.md defines each.
TRAINING_CURVES = (
    ("reward", "mean reward (sum of the weighted rewards)", "reward", "reward.png"),
    ("r1/accuracy", "accuracy: the single right integer in <answer>", SHARE, "accuracy.png"),
    ("completions/mean_length", "mean completion length", "tokens", "completion_length.png"),
    ("r1/format_compliance", "format compliance: <think>...</think><answer>...</answer>", SHARE, "format.png"),
    (
        "r1/language_consistency",
        "language consistency of the reasoning",
        "mean share of target-language words",
        "language.png",
    ),
    ("r1/reflection_rate", "reflection rate: a self-check phrase", SHARE, "reflection.png"),
    ("loss", "GRPO loss (a surrogate: not a quality measure)", "loss", "loss.png"),
)


def plot_training_curves(log_history: list[dict], output_dir: str) -> list[str]:
    """Plot every curve of `TRAINING_CURVES` found in `log_history` against the step; return the files written."""
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for key, title, ylabel, filename in TRAINING_CURVES:
        points = [(row["step"], row[key]) for row in log_history if row.get(key) is not None and "step" in row]
        if not points:
            continue
        steps, values = zip(*points)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(steps, values, marker="." if len(points) < 50 else None)
        ax.set(xlabel="optimizer step", ylabel=ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(output_dir, filename)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def plot_stage_metrics(rows: list[dict], metrics: tuple[str, ...], path: str) -> str:
    """One bar chart per metric, one bar per row (`row["stage"]`), side by side in one PNG at `path`."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    stages = [row["stage"] for row in rows]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        ax.bar(range(len(rows)), [row.get(metric) or 0.0 for row in rows])
        ax.set_xticks(range(len(rows)), stages, rotation=60, ha="right", fontsize=7)
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.set_ylabel("tokens" if "tokens" in metric else "share of held-out answers")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
