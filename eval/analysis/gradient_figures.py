"""DoGraph's figures: gradient directions by domain (the DoGraph paper's Figure 1) and the
domain graph it builds at each update. Both read the first probed run of the grid: the first
size, the first strategy whose stages hold ``probes/`` snapshots or traced graphs, its first seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.analysis.collect import cell_stage_runs, grid_cells, trace
from eval.analysis.plotting import note

MAX_PANELS = 4
RING_COLOURS = ("black", "red", "blue", "orange", "purple", "cyan")  # one per community


def evenly_spaced(items: list, k: int = MAX_PANELS) -> list:
    if len(items) <= k:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


def first_probed_run(figs, wanted) -> tuple[str, str, int, Path] | None:
    """The first run of the cells the tables hold (not a missing cell's) whose folder is ``wanted``."""
    for size, strategy, seed, _ in grid_cells(figs.config, figs.kept_cells()):
        for stage_size, folder in cell_stage_runs(figs.config, size, strategy, seed).values():
            if wanted(folder):
                return stage_size, strategy, seed, folder  # the run's own size (a shared proxy's)
    return None


def principal_components(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows projected on the first two principal components, and the variance share of each.
    Rows are scaled to unit length first: the figure is about directions, not magnitudes."""
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    share = s**2 / max(float((s**2).sum()), 1e-12)
    return x @ vt[:2].T, share[:2]


def gradient_pca(figs):
    found = first_probed_run(figs, lambda d: any((d / "probes").glob("step*.npz")))
    if found is None:
        fig, ax = figs.plt.subplots(figsize=(6, 3))
        note(ax, "No gradient snapshots (probes/) in these runs.")
        return fig
    size, strategy, seed, stage_dir = found
    snapshots = evenly_spaced(sorted((stage_dir / "probes").glob("step*.npz")))
    fig, axes = figs.plt.subplots(1, len(snapshots), figsize=(4.2 * len(snapshots), 4.2), squeeze=False)
    for ax, path in zip(axes[0], snapshots):
        snap = np.load(path)
        names = [str(n) for n in snap["domain_names"]]
        points, share = principal_components(np.concatenate([snap["features"], snap["target"]]))
        rows = len(snap["features"])
        for i, d in enumerate(names):
            mine = points[:rows][snap["domains"] == i]
            ax.scatter(mine[:, 0], mine[:, 1], s=14, color=figs.domain_colour.get(d), label=d)
        ax.scatter(points[rows:, 0], points[rows:, 1], s=14, marker="x", color="black", label="target (val)")
        ax.set_title(f"step {int(path.stem[4:])}")
        ax.set_xlabel(f"PC1 ({share[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({share[1]:.0%} of variance)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Gradient directions by domain: {strategy}, {size}, seed {seed}")
    return fig


def graph_snapshots(figs):
    import networkx as nx

    found = first_probed_run(figs, lambda d: any("affinity" in r for r in trace(d)))
    if found is None:
        fig, ax = figs.plt.subplots(figsize=(6, 3))
        note(ax, "No traced domain graphs in these runs.")
        return fig
    size, strategy, seed, stage_dir = found
    records = evenly_spaced([r for r in trace(stage_dir) if "affinity" in r])
    domains = figs.domains
    layout = nx.circular_layout(nx.complete_graph(domains))  # one layout for every snapshot
    fig, axes = figs.plt.subplots(1, len(records), figsize=(4.2 * len(records), 4.4), squeeze=False)
    for ax, record in zip(axes[0], records):
        affinity = np.asarray(record["affinity"])
        graph = nx.Graph()
        graph.add_nodes_from(domains)
        graph.add_weighted_edges_from((domains[i], domains[j], affinity[i, j])
                                      for i in range(len(domains)) for j in range(i + 1, len(domains))
                                      if affinity[i, j] > 0.05)
        widths = [4 * graph[u][v]["weight"] for u, v in graph.edges]
        nx.draw_networkx_edges(graph, layout, ax=ax, width=widths, edge_color="grey", alpha=0.7)
        sizes = 3000 * np.asarray(record["alpha"])
        communities = record.get("communities") or [list(range(len(domains)))]
        ring = {i: RING_COLOURS[c % len(RING_COLOURS)] for c, members in enumerate(communities) for i in members}
        nx.draw_networkx_nodes(graph, layout, ax=ax, node_size=sizes, linewidths=2.5,
                               node_color=[figs.domain_colour[d] for d in domains],
                               edgecolors=[ring.get(i, "white") for i in range(len(domains))])
        nx.draw_networkx_labels(graph, layout, ax=ax, font_size=8)
        subtitle = f"; {len(communities)} communities (node rings)" if record.get("communities") else ""
        ax.set_title(f"step {record['step']}{subtitle}")
        ax.set_axis_off()
        ax.margins(0.2)
    fig.suptitle(f"Domain graph: {strategy}, {size}, seed {seed}")
    return fig
