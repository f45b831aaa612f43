"""The ``topselect/transfer.png`` figure: accuracy by cut layer, and wall times."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from topselect.transfer._report import TransferReport

__all__ = ["transfer_figure"]


def transfer_figure(report: TransferReport) -> Figure:
    """Draw a report: test and validation accuracy of every head by cut layer, with the
    baselines' test accuracy as horizontal lines, beside a bar chart of wall times.

    The caller closes the figure (``StudyLogger.log_artifacts`` and
    :func:`topselect.transfer.log_transfer` do).
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    accuracy_axes, time_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    layers = list(dict.fromkeys(result.layer for result in report.pullback.results))
    positions = {layer: index for index, layer in enumerate(layers)}
    for kind, marker in (("linear", "o"), ("mlp", "s")):
        rows = [r for r in report.pullback.results if r.head == kind]
        if not rows:
            continue
        x = [positions[r.layer] for r in rows]
        accuracy_axes.plot(x, [r.test_accuracy for r in rows], marker=marker, label=f"{kind} test")
        accuracy_axes.plot(
            x, [r.val_accuracy for r in rows], marker=marker, linestyle=":", label=f"{kind} val"
        )
    for index, (name, baseline) in enumerate(report.baselines.items()):
        accuracy_axes.axhline(
            baseline.test_accuracy, color=f"C{index + 2}", linestyle="--", label=f"{name} test"
        )
    chosen = report.pullback.chosen
    accuracy_axes.axvline(positions[chosen.layer], color="grey", linewidth=0.8)
    accuracy_axes.set_xticks(range(len(layers)), layers)
    accuracy_axes.set_xlabel("cut layer (module name)")
    accuracy_axes.set_ylabel("accuracy")
    accuracy_axes.set_title(f"Pullback heads by layer (chosen: {chosen.layer}, {chosen.head})")
    accuracy_axes.legend(fontsize=7)

    names = ["pullback", *report.baselines]
    seconds = [report.pullback.seconds, *(b.seconds for b in report.baselines.values())]
    time_axes.barh(names, seconds, color=[f"C{i}" for i in range(len(names))])
    time_axes.barh(["pullback"], [report.pullback.feature_seconds], color="black", alpha=0.4)
    time_axes.invert_yaxis()
    time_axes.set_xlabel("wall time (s); dark: feature cache")
    ratio = report.time_ratio
    title = "Wall time" if ratio is None else f"Wall time (pullback / fine-tune = {ratio:.3f})"
    time_axes.set_title(title)
    figure.tight_layout()
    return figure
