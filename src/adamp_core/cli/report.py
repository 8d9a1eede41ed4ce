"""The demo's report folder: ``summary.md``, ``results.json`` and PNG plots.

Plots need matplotlib (optional); without it the report says so and keeps the rest.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .results import DemoReport
from .toy import format_toy_table

__all__ = ["write_report", "training_table", "to_json"]

#: Which optimizers share a plot panel.
PAIRS: tuple[tuple[str, str], ...] = (("SGD", "SGDP"), ("AdamW", "AdamP"))


def to_json(report: DemoReport, **settings: Any) -> str:
    """The raw numbers of ``report`` (and the run's ``settings``) as JSON text."""
    return json.dumps(
        {
            "settings": settings,
            "toy": [r.as_dict() for r in report.toy],
            "training": report.trainings,
            "skipped": report.skipped,
            "errors": [vars(e) for e in report.errors],
        },
        indent=1,
    )


def training_table(trainings: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown: per framework and optimizer, accuracy, weight norm and effective step."""
    lines = [
        "| framework | optimizer | final test acc | best test acc | norm start -> end "
        "| mean eff. step | seconds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for framework, histories in trainings.items():
        for name, h in histories.items():
            acc = h["test_accuracy"]
            norm, eff = h["weight_norm"], h["effective_step_size"]
            lines.append(
                f"| {framework} | {name} | {100 * acc[-1]:.1f}% | {100 * max(acc):.1f}% "
                f"| {norm[0]:.2f} -> {norm[-1]:.2f} | {sum(eff) / len(eff):.2e} "
                f"| {h['seconds']:.1f} |"
            )
    return "\n".join(lines)


def _plot_toy(report: DemoReport, path: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colors = {0.0: "black", 0.9: "C0", 0.95: "C1", 0.99: "C3"}  # one color per momentum
    styles = {None: "-", "paper": "--", "authors": ":"}  # one style per method
    for run in report.toy:
        ax.plot(run.norms, styles[run.variant], color=colors.get(run.momentum), label=run.label)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("norm of w")
    ax.set_title("2-D toy: |w/|w| - u|^2 from w0 = (0, 1)")
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=110)


def _plot_training(framework: str, histories: dict[str, dict[str, Any]], path: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(3, len(PAIRS), squeeze=False)
    quantities = (
        ("step", "weight_norm", "norm of scale-invariant weights", "log"),
        ("step", "effective_step_size", "effective step size", "log"),
        ("epoch", "test_accuracy", "test accuracy", "linear"),
    )
    for col, pair in enumerate(PAIRS):
        for row, (x, y, label, scale) in enumerate(quantities):
            ax = axes[row][col]
            for name in pair:
                if name in histories:
                    ax.plot(histories[name][x], histories[name][y], label=name)
            ax.set_yscale(scale)
            ax.set_xlabel(x)
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
    fig.suptitle(f"{framework}: small BN conv net on sklearn digits")
    fig.savefig(path, dpi=110)


def write_report(report: DemoReport, **settings: Any) -> None:
    """Write ``summary.md``, ``results.json`` and the plots into ``report.out``; fills
    ``report.files`` and ``report.summary_text`` (``settings`` go into the JSON)."""
    os.makedirs(report.out, exist_ok=True)
    files: list[str] = []

    def target(name: str) -> str:
        path = os.path.join(report.out, name)
        files.append(path)
        return path

    try:
        import matplotlib  # noqa: F401

        _plot_toy(report, target("toy_weight_norm.png"))
        for framework, histories in report.trainings.items():
            _plot_training(framework, histories, target(f"{framework}_training.png"))
    except ImportError as exc:
        report.skipped.append(
            f"plots: matplotlib is not installed ({exc}); pip install 'adamp-optimizers[demo]'"
        )

    md = [
        "# AdamP / SGDP demo",
        "",
        "## 2-D toy (final norm after the run)",
        "",
        format_toy_table(report.toy),
        "",
    ]
    if report.trainings:
        md += [
            "## Training: small BN conv net on scikit-learn digits",
            "",
            training_table(report.trainings),
            "",
            "Norm: of all convolution kernels followed by batch normalization "
            "(scale-invariant). Effective step size: lr/|w|^2 (SGD family) or lr/|w| "
            "(Adam family), lr from the cosine schedule, averaged over those kernels and over "
            "all steps.",
            "",
        ]
    if report.skipped:
        md += ["## Skipped", ""] + [f"- {s}" for s in report.skipped] + [""]
    if report.errors:
        md += ["## Errors", ""] + [f"- {e.name}: {e.message}" for e in report.errors] + [""]
    with open(target("summary.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    with open(target("results.json"), "w", encoding="utf-8") as f:
        f.write(to_json(report, **settings) + "\n")
    report.files = files
    report.summary_text = (
        "\n".join(md)
        + f"\nreport written to {report.out}/: "
        + ", ".join(os.path.basename(p) for p in files)
    )
