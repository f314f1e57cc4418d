"""Curves over training, over seeds: a run's logged curves, their mean and 95% interval per step, their first and last
steps, and a plot of them per arm. Shared by the experiments that report training curves (aha_moment,
reward_design, pretraining_arms), and the error bar of an interval (pretraining_arms, fine_tuning_ablations).

A seed's curves are `{curve: {step: value}}`; an arm's summary is `{curve: [{"step", "mean", "low", "high", ...}]}`.
"""

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from seeds import interval  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

from recipes.lib.plots import plt  # noqa: E402  (pyplot on the Agg backend: PNG files, no display)


def logged_curves(run: Path, keys: dict[str, str]) -> dict[str, dict[int, float]]:
    """A trainer run's logged metrics per step (`trainer_state.json`'s log history): `{curve: {step: value}}` for
    each `curve: logged key` of `keys`."""
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return {name: {row["step"]: row[key] for row in history if key in row} for name, key in keys.items()}


def summarise_curves(per_seed: list[dict]) -> dict[str, list[dict]]:
    """Per curve and step (the steps every seed logged): mean and 95% interval over seeds."""
    result = {}
    for name in per_seed[0]:
        steps = sorted(set.intersection(*(set(curves[name]) for curves in per_seed)))
        result[name] = [{"step": step, **interval([curves[name][step] for curves in per_seed])} for step in steps]
    return result


def curve_ends(per_seed: list[dict], steps: int = 10) -> dict[str, dict]:
    """Per curve: its mean over each seed's first and last `steps` logged steps, as intervals over seeds, and the
    change from first to last, paired by seed."""
    ends = {}
    for name in per_seed[0]:
        first = [statistics.fmean(c[name][s] for s in sorted(c[name])[:steps]) for c in per_seed]
        last = [statistics.fmean(c[name][s] for s in sorted(c[name])[-steps:]) for c in per_seed]
        ends[name] = {"first": interval(first), "last": interval(last),
                      "change": interval([b - a for a, b in zip(first, last)])}  # fmt: skip
    return ends


def error_bar(stats: dict, scale: float = 1.0) -> list[list[float]] | None:
    """Matplotlib's asymmetric error bar of a 95% interval (`interval`'s mean, low, high), times `scale`; None without
    an interval (one seed)."""
    if stats["low"] is None:
        return None
    return [[scale * (stats["mean"] - stats["low"])], [scale * (stats["high"] - stats["mean"])]]


def plot_curves(arms: dict[str, dict[str, list[dict]]], panels: dict[str, str], xlabel: str, path: Path,
                columns: int = 4) -> None:  # fmt: skip
    """One panel per curve (`panels`: curve -> title), one line per arm: the mean over seeds with its interval."""
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.4 * rows), squeeze=False)
    for ax, (name, title) in zip(axes.flat, panels.items()):
        for index, (arm, curves) in enumerate(arms.items()):
            points, color = curves.get(name, []), f"C{index}"  # an arm keeps its colour in panels it is missing from
            if not points:
                continue
            steps = [p["step"] for p in points]
            ax.plot(steps, [p["mean"] for p in points], label=arm, color=color)
            if points[0]["low"] is not None:
                ax.fill_between(steps, [p["low"] for p in points], [p["high"] for p in points], color=color, alpha=0.2)
        ax.set(title=title, xlabel=xlabel)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
