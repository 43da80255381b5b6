"""The comparison drawn: both sides' score histograms on shared bins, and the distribution of the
per-query Spearman correlation, written as one PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from producer.comparison import Comparison

_BINS = 60


def write_plot(comparison: Comparison, target: Path) -> None:
    """Write the figure to ``target`` (a local PNG path), replacing it whole."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, whatever the environment says
    from matplotlib import pyplot as plt

    figure, (scores_axes, spearman_axes) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    a, b = comparison.scores_a, comparison.scores_b
    if len(a):
        bins = np.histogram_bin_edges(np.concatenate([a, b]), bins=_BINS)
        scores_axes.hist(a, bins=bins, alpha=0.55, label=f"A: {comparison.a.label}", color="tab:blue")
        scores_axes.hist(b, bins=bins, alpha=0.55, label=f"B: {comparison.b.label}", color="tab:orange")
        scores_axes.legend(loc="upper right", fontsize="small")
    scores_axes.set_title(f"scores of the {len(a):,} common pairs (KS {comparison.metrics['ks']:.3g})")
    scores_axes.set_xlabel("score")
    scores_axes.set_ylabel("pairs")

    spearman = comparison.per_query.spearman
    defined = spearman[~np.isnan(spearman)]
    if len(defined):
        # From the worst query up to 1: the interesting spread is usually a few hundredths wide.
        lowest = min(float(defined.min()), 0.99) - 0.001
        spearman_axes.hist(defined, bins=np.linspace(lowest, 1.0, _BINS + 1), color="tab:green")
    spearman_axes.set_title(
        f"Spearman rho per query ({len(defined):,} queries, mean {comparison.metrics['spearman']:.4g})"
    )
    spearman_axes.set_xlabel("Spearman rho")
    spearman_axes.set_ylabel("queries")

    temporary = target.with_name(f".{target.name}.tmp")
    try:
        figure.savefig(temporary, format="png", dpi=100)
        temporary.replace(target)
    finally:
        plt.close(figure)
        temporary.unlink(missing_ok=True)
