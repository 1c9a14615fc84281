"""Paper figures from the result tables (and, for DoGraph, the runs' probe snapshots and traces).

    python -m eval.analysis.figures --config config/config.yaml

Reads ``{results_dir}/tables/*.csv`` (written by ``python -m eval.analysis.aggregate``) and writes
each figure of the grid (eval/analysis/figure_registry.py) as PNG and PDF to
``{results_dir}/figures/``. A figure whose data the runs lack says so on its canvas; on an
unfinished grid (tables with missing cells, eval/analysis/partial.py) each figure names them.
"""

from __future__ import annotations

from pathlib import Path

from eval.analysis.figure_registry import REGISTRY, figure_names
from eval.analysis.outputs import load
from eval.analysis.plotting import FigureData, save
from mixbench.cli import config_command
from strategies import grid_config


def draw(figures: FigureData, name: str):
    """The matplotlib figure registered as ``name``, drawn from ``figures``."""
    return load(REGISTRY, name, "figure")(figures)


def make_figures(config: dict) -> None:
    figures = FigureData(config)
    out = Path(config["results_dir"]) / "figures"
    for name in figure_names(config):
        fig = draw(figures, name)
        paths = save(fig, out, name, footer=figures.missing_line())
        figures.plt.close(fig)
        print(f"wrote {', '.join(str(p) for p in paths)}", flush=True)


main = config_command(make_figures, __doc__, load=grid_config.load)


if __name__ == "__main__":
    main()
