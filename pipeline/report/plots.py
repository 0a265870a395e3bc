"""The report's plots: matplotlib figures rendered to SVG text for inlining in one HTML file.

Figures are built with the object API on an Agg canvas, never pyplot: no GUI backend, no global
figure state in the driver process. Text stays text in the SVG (``svg.fonttype: none``): a
smaller file, and the browser's fonts. Labels come from data (languages, error categories), so
mathtext is off: a ``$`` in an error message must not be parsed as a formula.
"""

from __future__ import annotations

import io

import numpy as np

_RC = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.axisbelow": True,
}
# Colour-blind-safe (Okabe-Ito).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    # Inline SVG in HTML takes the <svg> element alone (no XML declaration, no DOCTYPE).
    return text[text.index("<svg") :]


def _integers():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def render(draw, *args, width: float = 6.4, height: float = 3.2) -> str:
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = _figure(width, height)
        draw(fig, *args)
        return _svg(fig)


def error_rates(fig, groups: list[dict]) -> None:
    """Stacked substitution / deletion / insertion rates per language (the bar is the WER/CER)."""
    ax = fig.subplots()
    labels = [f"{g['language']} ({'CER' if g['unit'] == 'char' else 'WER'})" for g in groups]
    y = np.arange(len(groups))
    left = np.zeros(len(groups))
    for name, key, colour in (
        ("substitutions", "substitutions", PALETTE[0]),
        ("deletions", "deletions", PALETTE[1]),
        ("insertions", "insertions", PALETTE[3]),
    ):
        values = np.array([100 * g[key] / g["ref_units"] if g["ref_units"] else 0.0 for g in groups])
        ax.barh(y, values, left=left, color=colour, label=name)
        left += values
    for i, g in enumerate(groups):
        ax.text(left[i], i, f" {left[i]:.1f}%  ({g['rows']} row{'s' if g['rows'] != 1 else ''})", va="center", fontsize=8)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("error rate, % of reference units")
    ax.set_xlim(0, max(1.0, float(left.max()) * 1.3))
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)


def duration_histogram(fig, width: float, series: dict[str, np.ndarray]) -> None:
    """Stacked histogram of recording durations (``width``-second bins from 0)."""
    ax = fig.subplots()
    bottom = None
    for i, (name, counts) in enumerate(series.items()):
        edges = np.arange(len(counts)) * width
        ax.bar(edges, counts, width=width, align="edge", bottom=bottom, color=PALETTE[i * 3 % len(PALETTE)], label=name)
        bottom = counts if bottom is None else bottom + counts
    ax.set_xlabel("duration, s")
    ax.set_ylabel("recordings")
    ax.yaxis.set_major_locator(_integers())
    if len(series) > 1:
        ax.legend(fontsize=8)


def throughput(fig, samples: list[list[float]]) -> None:
    """Rows done over time (top) and audio seconds per second between samples (bottom)."""
    t = np.array([s[0] for s in samples]) / 60
    rows = np.array([s[1] for s in samples])
    audio = np.array([s[2] for s in samples])
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.step(t, rows, where="post", color=PALETTE[0])
    top.set_ylabel("rows done")
    dt = np.diff(t * 60)
    rate = np.divide(np.diff(audio), dt, out=np.zeros_like(dt), where=dt > 0)
    # One flat segment per interval between samples: the rate is known per interval, not per point.
    bottom.stairs(rate, t, color=PALETTE[2], linewidth=1.5)
    bottom.set_ylim(bottom=0)
    bottom.set_ylabel("audio s / s")
    top.yaxis.set_major_locator(_integers())
    bottom.set_xlabel("minutes since processing started")


def stage_times(fig, wall: dict[str, float], work: dict[str, float]) -> None:
    """Wall-clock phases of the job and time summed over workers, as two bar groups."""
    axes = fig.subplots(1, 2)
    for ax, values, title, colour in (
        (axes[0], wall, "job phases (wall clock)", PALETTE[0]),
        (axes[1], work, "worker time (summed over tasks and actors)", PALETTE[1]),
    ):
        names = list(values)
        y = np.arange(len(names))
        ax.barh(y, [values[n] for n in names], color=colour)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.set_title(title, fontsize=9)
        for i, n in enumerate(names):
            ax.text(values[n], i, f" {values[n]:.1f}", va="center", fontsize=8)
        ax.set_xlim(0, max([1.0, *values.values()]) * 1.25)


def failures(fig, counts: list[tuple[str, str, int]]) -> None:
    """Failed rows per error category, one colour per stage."""
    ax = fig.subplots()
    stages = sorted({s for s, _, _ in counts})
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(stages)}
    y = np.arange(len(counts))
    ax.barh(y, [n for _, _, n in counts], color=[colour[s] for s, _, _ in counts])
    ax.set_yticks(y, [f"{s}: {c}" for s, c, _ in counts])
    ax.invert_yaxis()
    ax.set_xlabel("failed rows")
    ax.xaxis.set_major_locator(_integers())
    for i, (_, _, n) in enumerate(counts):
        ax.text(n, i, f" {n}", va="center", fontsize=8)
    ax.set_xlim(0, max(n for _, _, n in counts) * 1.2)
    from matplotlib.patches import Patch

    fig.legend(
        handles=[Patch(color=colour[s], label=s) for s in stages], title="error_stage", fontsize=8,
        loc="outside lower center", ncols=min(len(stages), 6), frameon=False,
    )
