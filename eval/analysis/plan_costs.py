"""What one run of a plan computes and how fast, before anything runs (eval/analysis/plan.py).

- ``flop_ratio``: the FLOPs of a stage's every pass over its training passes (forward 2N and
  backward 4N per token), from the passes its step makes as models/loop.py and the signal
  providers of models/signals/ make them: the strategy of the stage is built (strategies are
  torch-free) and asked which signals it needs, at which steps, and whether its step's loss is
  weighted by its own signals. run.json's ``token_passes`` counts the same passes
  (the DoReMi, DoGE and DoGraph training tests compare the two).
- ``MfuTable``: the assumed model FLOP utilisation per parameter count, optimistic and
  conservative. Small models are memory-bound (the output layer and the cross-entropy move as
  many bytes per token whatever the width), so their MFU is far below a large model's.
- ``evaluation_seconds``: one evaluation job, its held-out documents and downstream tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mixbench import config as cfg
from mixbench.errors import ConfigError
from mixbench.model_sizes import SIZES, approx_parameters, planned_vocab_size
from strategies import StrategyContext, get_strategy_class
from strategies import runs as strategy_runs

FORWARD, BACKWARD = 2, 4  # FLOPs per parameter and token (Kaplan et al. 2020)
PEAK_TFLOPS = 989.0  # the plan's accelerator: an H100's or H200's dense bf16
PROBE_PER_DOMAIN, PROBE_TARGET_PER_DOMAIN = 8, 4  # models/signals/probe.py's defaults
HELDOUT_WINDOWS = 8  # models/signals/heldout_loss.py's default, which embeddings.py shares

# (up to this many parameters, optimistic MFU, conservative MFU); the last row has no limit.
# regmix-1m (14.7M, 94.5 MFLOP per token): 7-10% is 0.73-1.05M tokens/s on one H100, around
# the 0.9-1.0M tokens/s the unfused loss's memory traffic (full fp32 logits) allowed; the chunked
# loss (models/token_loss.py) makes the upper end likelier, unmeasured. GPT-2 small: 35% is ~400k
# tokens/s (llm.c's speed), 25% what is left if the loss path still took a third of the step. Wider models spend a
# smaller share of the step in the loss path and in small matmuls.
DEFAULT_MFU = ((50e6, 0.10, 0.07), (200e6, 0.35, 0.25), (500e6, 0.40, 0.30), (math.inf, 0.45, 0.35))
STARTUP_S = (30.0, 90.0)  # one job's start: Snakemake's nested start (12-15 s), imports, CUDA, compilation
# Evaluation: lm-eval's requests are short and padded, so its forwards run far below training's MFU.
EVAL_MFU = (0.10, 0.03)
DOWNSTREAM_TOKENS_PER_TASK = 1e6  # hellaswag ~4M (40k requests), most tasks 0.1-1M
CHARS_PER_TOKEN = 4.0  # English text with GPT-2's BPE


@dataclass(frozen=True)
class MfuTable:
    rows: tuple[tuple[float, float, float], ...] = DEFAULT_MFU

    def __post_init__(self):
        limits = [row[0] for row in self.rows]
        if not self.rows or limits != sorted(limits) or limits[-1] != math.inf:
            raise ConfigError(f"an MFU table needs rows in increasing parameter counts, the last one unlimited; got {self.rows}")
        for limit, optimistic, conservative in self.rows:
            if not 0 < conservative <= optimistic <= 1:
                raise ConfigError(f"MFU for up to {limit:g} parameters: need 0 < conservative <= optimistic <= 1, "
                                  f"got {optimistic} and {conservative}")

    def at(self, parameters: int) -> tuple[float, float]:
        """(optimistic, conservative) MFU of a model with this many parameters."""
        return next((o, c) for limit, o, c in self.rows if parameters <= limit)

    def describe(self) -> str:
        return ", ".join(("beyond" if limit == math.inf else f"up to {limit / 1e6:g}M") + f" {o:.0%}/{c:.0%}"
                         for limit, o, c in self.rows)


def parse_mfu(text: str) -> MfuTable:
    """``X`` (every size, both totals) or ``LIMIT=OPT/CONS,...,inf=OPT/CONS`` with LIMIT in
    parameters (``50M``, ``1.5B``), e.g. ``50M=0.10/0.07,200M=0.35/0.25,inf=0.45/0.35``."""
    units = {"K": 1e3, "M": 1e6, "B": 1e9}
    try:
        if "=" not in text:
            return MfuTable(((math.inf, float(text), float(text)),))
        rows = []
        for part in text.split(","):
            limit, _, values = part.strip().partition("=")
            optimistic, _, conservative = values.partition("/")
            scale = units.get(limit[-1:].upper(), 1.0)
            number = float(limit[:-1] if scale != 1.0 else limit)
            rows.append((number * scale, float(optimistic), float(conservative or optimistic)))
        return MfuTable(tuple(rows))
    except ValueError:
        raise ConfigError(f"--mfu {text!r}: expected a number, or LIMIT=OPT/CONS,...,inf=OPT/CONS "
                          "(e.g. 50M=0.10/0.07,200M=0.35/0.25,inf=0.45/0.35)") from None


def vocab_size(config: dict) -> int:
    return planned_vocab_size(config["tokenizer"])


def parameters(size: str, config: dict) -> int:
    return approx_parameters(SIZES[size], vocab_size(config))


def flops_per_token(size: str, config: dict) -> float:
    """Forward and backward FLOPs per token: 6N for the parameters, 12·L·d·T for attention."""
    shape, seq_len = SIZES[size], config["training"]["seq_len"]
    return 6.0 * parameters(size, config) + 12.0 * shape.n_layer * shape.n_embd * seq_len


def stage_strategy(config: dict, strategy: str, stage: str, steps: int):
    """The strategy as it drives one run of ``stage`` (no data: nothing is sampled or read)."""
    cls = get_strategy_class(cfg.strategy_class_name(config, strategy))
    domains = tuple(config["corpus"]["domains"])
    context = StrategyContext(name=strategy, domains=domains, train_tokens=np.ones(len(domains)), stage=stage,
                              total_steps=steps, seed=0, vocab_size=vocab_size(config),
                              warmup_steps=config["training"]["warmup_steps"],
                              replica=cfg.Stage.parse(stage).replica)
    return cls(context, **cfg.strategy_hparams(config, strategy))


def planned_passes(config: dict, strategy: str, stage: str, size: str) -> dict[str, int]:
    """Tokens through each kind of pass over one run, as its run.json's ``token_passes`` counts
    them: ``forward``, ``backward`` and, where a reference model scores the tokens,
    ``reference_forward``."""
    steps = strategy_runs.run_chain(config, strategy, stage, size)[stage]["steps"]
    training = config["training"]
    rows, seq_len = training["batch_size"], training["seq_len"]
    instance = stage_strategy(config, strategy, stage, steps)
    options = instance.signal_options()
    due = {name: sum(instance.signal_due(name, s) for s in range(1, steps + 1)) for name in instance.required_signals()}
    # The step's own passes: once per row, but twice forward when the loss needs the step's own
    # signals and each micro-batch is forwarded again (models/loop.py).
    twice = instance.reweights_current_step() and training["reweighted_step"] == "two_forwards"
    passes = {"forward": steps * rows * (2 if twice else 1), "backward": steps * rows}
    for name, count in due.items():
        option = options.get(name, {})
        if name == "domain_gradients":  # replaces the step's passes with the same rows, domain by domain
            passes["forward"] -= count * rows * (1 if twice else 0)
        elif name == "reference_token_loss":
            passes["reference_forward"] = passes.get("reference_forward", 0) + count * rows
        elif name == "target_gradient":
            weights = np.asarray(option["weights"])
            target = max(math.ceil(option.get("batch_fraction", 1.0) * rows), int((weights > 0).sum()))
            passes["forward"] += count * target
            passes["backward"] += count * target
        elif name == "example_gradient_features":
            probed = len(instance.context.domains) * (option.get("per_domain", PROBE_PER_DOMAIN)
                                                     + option.get("target_per_domain", PROBE_TARGET_PER_DOMAIN))
            passes["forward"] += count * probed
            passes["backward"] += count * probed
        elif name in ("heldout_loss", "domain_embeddings"):  # forwards only, over fixed windows of each domain
            passes["forward"] += count * len(instance.context.domains) * option.get("windows", HELDOUT_WINDOWS)
        else:
            raise ConfigError(f"the plan knows no pass count of signal {name!r} ({strategy}:{stage}): give its "
                              f"FLOP ratio with --ratio {strategy}:{cfg.Stage.parse(stage).group}=X")
    return {kind: n * seq_len for kind, n in passes.items()}


def flop_ratio(config: dict, strategy: str, stage: str, size: str) -> float:
    """FLOPs of every pass of one run over its training passes (6N per trained token)."""
    passes = planned_passes(config, strategy, stage, size)
    chain = strategy_runs.run_chain(config, strategy, stage, size)
    n = parameters(size, config)
    per_token = {"forward": FORWARD * n, "backward": BACKWARD * n}
    if "reference_forward" in passes:  # the reference model is the run of the stage the signal names
        options = stage_strategy(config, strategy, stage, chain[stage]["steps"]).signal_options()
        per_token["reference_forward"] = FORWARD * parameters(chain[options["reference_token_loss"]["stage"]]["size"],
                                                              config)
    trained = chain[stage]["steps"] * config["training"]["batch_size"] * config["training"]["seq_len"]
    return sum(tokens * per_token[kind] for kind, tokens in passes.items()) / ((FORWARD + BACKWARD) * n * trained)


def evaluation_seconds(config: dict, size: str, startup_s: float, mfu: float, peak_flops: float) -> float:
    """One evaluation job of a final model: its start, then forwards (a third of a training
    pass's FLOPs per token) over the held-out test documents (every domain's, each up to
    ``evaluation.max_chars_per_document``: an upper bound) and the downstream tasks."""
    evaluation = config["evaluation"]
    heldout = (len(config["corpus"]["domains"]) * evaluation["max_documents_per_domain"]
               * evaluation["max_chars_per_document"] / CHARS_PER_TOKEN)
    downstream = len(config["downstream"]["tasks"]) * DOWNSTREAM_TOKENS_PER_TASK
    return startup_s + (heldout + downstream) * flops_per_token(size, config) / 3 / (mfu * peak_flops)
