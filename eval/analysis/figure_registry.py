"""The registry of figures: name -> how to draw it, its caption, the tables it reads and the grids
that have it. ``python -m eval.analysis.figures`` draws them; the workflow (rules/results.smk)
takes the figures of a grid, their captions and the tables they read from here, before anything
runs. Nothing here imports pandas or matplotlib: the workflow reads it while it is parsed.

How to add a figure
-------------------
1. Write a function ``def my_figure(figures) -> matplotlib.figure.Figure`` in a module of
   eval/analysis/ (a new one, or e.g. curve_figures.py). ``figures`` is the ``FigureData`` of
   eval/analysis/plotting.py: the result tables (``figures.read("curves")``), the grid, pyplot and
   the colours of every strategy and domain; plotting.py has the shared helpers (``note`` says on
   the canvas what data is missing, ``seed_band``, ``grouped_bars``, ...).
2. Register it below: ``"my_figure": Figure("eval.analysis.<module>:my_figure", tables=(...),
   caption="...")``. ``tables`` are the result tables it reads (the figures rule's inputs);
   ``needs`` (a condition of eval/analysis/outputs.py) and ``strategy`` (a strategy registry name)
   limit it to the grids it belongs to; the caption is shown beside it in ``snakemake --report``.
Those are the two files: the workflow, the report and the tests pick it up (tests/test_figures.py
draws every figure of its fixture grids and derives the names each grid should have from these
entries and their ``needs`` and ``strategy``).
"""

from __future__ import annotations

from dataclasses import dataclass

from eval.analysis.outputs import Output

FORMATS = ("png", "pdf")  # every figure is written in each


@dataclass(frozen=True)
class Figure(Output):
    tables: tuple[str, ...] = ()  # the result tables it reads (names of eval/analysis/table_registry.py)


REGISTRY: dict[str, Figure] = {
    "mixtures": Figure("eval.analysis.summary_figures:mixtures", tables=("weights",), caption="""
        Final mixture of each strategy: the share of training tokens sampled from each domain by the
        final model's run (mean over seeds; error bars: standard deviation). For schedules the weights
        are averaged over steps."""),
    "trajectories": Figure("eval.analysis.summary_figures:trajectories", tables=("trajectories",), caption="""
        Mixture trajectories of the stages whose mixture changes during training, read from every
        run's log.csv: the sampling weights each step used, or for a stage that weights its loss
        (DoReMi's and DoGE's proxies, which sample uniformly and learn α) the sampling weights times the
        loss weights, normalised. Mean over seeds, shaded band from the minimum to the maximum seed.
        Stages with constant weights are left out."""),
    "bits_per_byte": Figure("eval.analysis.summary_figures:bits_per_byte", tables=("perplexity",), caption="""
        Bits per byte of every final model on each domain's held-out test split, and their unweighted
        (macro) average: mean over seeds, error bars one standard deviation. Lower is better; bits per
        byte does not depend on the tokenizer."""),
    "val_curves": Figure("eval.analysis.curve_figures:val_curves", tables=("curves",), caption="""
        Held-out loss per domain over training (nats per token; last panel: the macro average over
        domains), one line per strategy's final model, against the training tokens it had seen. Each
        point is measured every ``training.eval_every`` steps on the same fixed val windows for every
        strategy and seed (models/heldout.py); the line is the mean over seeds and the band the range
        from the lowest to the highest seed."""),
    "mixture_entropy": Figure("eval.analysis.curve_figures:mixture_entropy", tables=("entropy",), caption="""
        Entropy (nats) of each stage's mixture over its steps, from its log.csv: the sampling weights the
        steps used, or for DoReMi's and DoGE's proxies the loss-weighted mixture, the α they learn
        (dashed: proxy stages, dash-dotted: reference stages). The dotted line is log K, the uniform
        mixture; a curve falling towards 0 is a mixture collapsing onto few domains. Mean over seeds,
        band from the lowest to the highest seed."""),
    "downstream": Figure("eval.analysis.summary_figures:downstream",
                         tables=("downstream",), needs="downstream", caption="""
        Zero-shot downstream accuracy through lm-evaluation-harness, macro-averaged over each task's
        subtasks (per-domain tasks for the generated cloze and continuation-choice tasks): mean over
        seeds, error bars one standard deviation. The dashed line is chance for the multiple-choice task."""),
    "compute_vs_quality": Figure("eval.analysis.summary_figures:compute_vs_quality",
                         tables=("compute", "perplexity"), caption="""
        Training compute of each strategy, every stage included (reference and proxy runs, reference
        forwards, per-domain gradients and gradient probes; 2N FLOPs per forward and 4N per backward
        token), against the final model's macro-average bits per byte (mean over seeds, error bars: std)."""),
    "val_loss_vs_flops": Figure("eval.analysis.curve_figures:val_loss_vs_flops", tables=("curves",), caption="""
        The compute-fair view: each final model's macro held-out loss against every FLOP its cell spent
        so far, the reference and proxy stages included (FLOPs = 2N per forward and 4N per backward
        token of every pass, strategy overheads included; the held-out measurements themselves are not
        counted). A strategy's curve starts to the right of uniform's by what its earlier stages cost.
        Mean over seeds, band from the lowest to the highest seed."""),
    "bpb_vs_size": Figure("eval.analysis.summary_figures:bpb_vs_size",
                         tables=("compute", "perplexity"), needs="several sizes", caption="""
        Macro-average bits per byte of the final models against their parameter count, one line per
        strategy (mean over seeds, error bars: std)."""),
    "sweeps": Figure("eval.analysis.curve_figures:sweeps", tables=("perplexity",), needs="variants", caption="""
        Hyperparameter sweeps (``grid.variants``): the macro-average bits per byte on the held-out test
        split at each swept value, mean ± standard deviation over seeds, one line per combination of the
        other swept values; dotted: the strategy with its configured value, dashed: uniform (where the
        grid runs them). The comparison table tests each variant against uniform."""),
    "doremi_excess": Figure("eval.analysis.curve_figures:doremi_excess",
                         tables=("trajectories",), strategy="doremi", caption="""
        DoReMi's per-domain excess loss over its proxy run: the proxy's loss minus the reference
        model's, each token clipped at 0 and averaged over the domain's tokens of the step (Xie et al.
        2023, Algorithm 1). The exponentiated-gradient update raises the weight of the domains with the
        largest excess; a domain whose excess stays highest takes the mixture. Mean over seeds, band
        from the lowest to the highest seed."""),
    "gradient_pca": Figure("eval.analysis.gradient_figures:gradient_pca", tables=(), strategy="dograph", caption="""
        Directions of sketched per-example gradients (DoGraph's probes) at several training steps,
        projected on their first two principal components and coloured by domain; crosses are the
        held-out target examples. One run: the first probed run of the grid."""),
    "dograph_graph": Figure("eval.analysis.gradient_figures:graph_snapshots", tables=(), strategy="dograph", caption="""
        The domain graph DoGraph builds at several updates: edge width is the affinity between two
        domains' gradient distributions (only edges above 0.05 are drawn), node area the domain's weight
        after the update; the title gives the number of Louvain communities."""),
    "regmix_fit": Figure("eval.analysis.fit_figures:regmix_fit",
                         tables=("fits", "swarm"), needs="fit stage", caption="""
        RegMix's fit on its swarm (Liu et al. 2024). Left: each swarm run's observed target (held-out
        loss after its last step) against the loss predicted for it by a model fitted without it (k-fold),
        with the Spearman rank correlation per seed. Right: the mixtures the swarm trained on (grey), the
        natural distribution they are drawn around, and the mixture the fit chose for each seed (the
        mean of the top-k of the sampled candidates)."""),
    "landscape": Figure("eval.analysis.landscape_figures:landscape", tables=("lattice", "weights", "trajectories",
                                                                         "perplexity"), needs="landscape", caption="""
        The landscape study's lattice: for three domains, the simplex coloured by the lattice mixtures' mean
        test macro bits per byte (interpolated between the lattice points, drawn white), the mixtures chosen
        on the validation split (stars, larger where more seeds chose them), each strategy's final mixture
        (mean over seeds) and, for a strategy whose final mixture changes while it trains, its path. For
        any other number of domains: the lattice's mixtures sorted by test loss, each strategy a line at
        its own, labelled with its nearest lattice mixture."""),
}


def figure_names(config: dict) -> list[str]:
    """The figures this config produces, in registry order, known before any run exists."""
    return [name for name, figure in REGISTRY.items() if figure.wanted(config)]


def figure_tables(config: dict) -> list[str]:
    """The result tables the figures of this config read."""
    return list(dict.fromkeys(table for name in figure_names(config) for table in REGISTRY[name].tables))
