"""Plots: every training curve and every stage bar names its axes and units."""

from pathlib import Path

from matplotlib.figure import Figure

from recipes.lib.plots import TRAINING_CURVES, plot_stage_metrics, plot_training_curves


def captured_axes(monkeypatch) -> list[tuple[str, str, str]]:
    """(file name, x label, y label) of every axes saved, instead of writing the PNGs."""
    seen = []

    def savefig(figure, path, **kwargs):
        seen.extend((Path(path).name, ax.get_xlabel(), ax.get_ylabel()) for ax in figure.axes)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return seen


def test_training_curves_label_the_step_and_each_curve_s_unit(tmp_path, monkeypatch):
    seen = captured_axes(monkeypatch)
    history = [{"step": step, "reward": 1.5, "completions/mean_length": 40.0, "loss": 0.01} for step in (2, 4)]
    history.append({"train_runtime": 10.0})  # the last row: a summary without a step
    written = plot_training_curves(history, str(tmp_path))
    assert [Path(path).name for path in written] == ["reward.png", "completion_length.png", "loss.png"]
    assert seen == [
        ("reward.png", "optimizer step", "reward"),
        ("completion_length.png", "optimizer step", "tokens"),
        ("loss.png", "optimizer step", "loss"),
    ]
    assert all(ylabel for _, _, ylabel, _ in TRAINING_CURVES)


def test_stage_bars_say_share_or_tokens(tmp_path, monkeypatch):
    seen = captured_axes(monkeypatch)
    rows = [{"stage": "base", "accuracy": 0.1, "mean_completion_tokens": 30.0}, {"stage": "r1", "accuracy": 0.9}]
    plot_stage_metrics(rows, ("accuracy", "mean_completion_tokens"), str(tmp_path / "stages.png"))
    assert [ylabel for _, _, ylabel in seen] == ["share of held-out answers", "tokens"]
