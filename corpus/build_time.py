"""How long a corpus build may take: its time limit on a cluster (rules/data.smk, SLURM's --time).

The build reads at most ``corpus.max_read_bytes`` of text (without a budget, at least every
domain's cap: the read stops once each is full) and writes the kept documents (at most the sum
of the caps) back out as splits. Both go at about the read rate benchmarks/corpus_build.py
measures: 40-51 MB/s on local jsonl (docs/performance.md, "Corpus build and tokenization"); the slowest of
those, with a margin for hub streams, compressed files and a slower file system, sets the limit.
A build that runs out of time resumes where it was (corpus/progress.py), so the limit need not
be generous.
"""

from __future__ import annotations

import math

from mixbench.config import domain_cap

READ_BYTES_PER_S = 40e6  # the slowest measured rate of benchmarks/corpus_build.py (local files)
# A hub stream (source: huggingface) downloads, decompresses and parses as it reads; no stream was
# measured (the development machines have no hub access), so its rate is an assumption: half the
# local one. A build that still runs out of time resumes where it was.
HUB_READ_BYTES_PER_S = 20e6
MARGIN = 1.5
START_MINUTES = 10  # Python, the source check, a hub stream's file list


def kept_bytes(corpus: dict) -> int:
    """The most text the splits can hold: the sum of the domains' caps."""
    return sum(domain_cap(corpus, domain) for domain in corpus["domains"])


def read_bytes(corpus: dict) -> int:
    """The most text the read takes: the budget, else (no budget) the caps, which it takes at least."""
    return corpus["max_read_bytes"] if corpus["max_read_bytes"] is not None else kept_bytes(corpus)


def build_minutes(corpus: dict) -> int:
    """The build's time limit in minutes: read and write at the measured rate, with the margin."""
    rate = HUB_READ_BYTES_PER_S if corpus["source"] == "huggingface" else READ_BYTES_PER_S
    seconds = (read_bytes(corpus) + kept_bytes(corpus)) / rate * MARGIN
    return START_MINUTES + math.ceil(seconds / 60)
