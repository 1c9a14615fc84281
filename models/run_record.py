"""``run.json``: the record every finished run leaves, written last as the marker the workflow
waits for. Training (models/train.py) and the fit stage (models/fit.py) write it; a pack
(models/train_pack.py), the next run (models/upstream.py) and the tables (eval/analysis/) read it.

On disk it is one flat JSON object; its keys, in order: the run (``strategy``, ``stage``,
``size``, ``steps``, ``fingerprint``, ``inputs``, ``allow_static``), its cost (``parameters`` … ``heldout_seconds``), its
speed and memory (``device`` … ``memory_estimate_gib``: a training run's only) and provenance
(``config_hash``, ``git_commit``, ``seed``, ``versions``). Torch-free: the fit stage and the
tables import it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from mixbench.errors import DataError
from mixbench.io import read_json, write_json


@dataclass(frozen=True, kw_only=True)
class Throughput:
    """A training run's speed over every step (resumed ones included) and its memory."""
    device: str
    processes: int
    micro_batch_size: int
    tokens_per_second: float
    mfu: float | None  # None where the device's peak FLOP/s is unknown (a CPU)
    peak_tflops: float | None
    peak_memory_gib: float
    memory_estimate_gib: float


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    strategy: str
    stage: str
    size: str  # the run's own model size
    steps: int
    parameters: int  # the vocabulary's padding excluded; 0 for a fit, which trains nothing
    tokens: int
    # 6·N·D: forward and backward of every parameter for every training token.
    train_flops: int
    # Tokens through each kind of pass (forward, backward, a strategy's own: reference-model
    # forwards, per-domain gradients, probes), summed over the processes.
    token_passes: dict[str, int]
    # Everything the stage computed, strategy overheads included: 2N per forward token, 4N per
    # backward token, and what each signal provider registered for its passes. None in a run
    # written before overheads were counted, which has only train_flops.
    flops: int | None = None
    train_seconds: float
    wall_seconds: float
    config_hash: str
    git_commit: str
    seed: int
    versions: dict[str, str]
    # What a pack compares to skip a finished run (models/run_factory.py's run_fingerprint); a fit
    # stage, which no pack holds, records none.
    fingerprint: str | None = None
    # The digests of what the run was made from (mixbench/lineage.py): {"config": fingerprint,
    # "tokens", "tokenizer", "upstream": {stage: run digest}}; its checkpoints hold the same dict.
    # None in a run written before runs recorded their inputs: the tables leave such a run out.
    inputs: dict | None = None
    # True when the strategy's settings make it static (it never changes the mixture) and the
    # config allowed that explicitly (``allow_static: true``); None otherwise.
    allow_static: bool | None = None
    heldout_seconds: float | None = None  # the held-out measurements' own time (val.csv), not in train_seconds
    throughput: Throughput | None = None  # a training run's

    @property
    def total_flops(self) -> int:
        """``flops``, or for a run written before overheads were counted its 6·N·D."""
        return self.train_flops if self.flops is None else self.flops

    def to_json(self) -> dict:
        """The record as run.json holds it: flat, in the order of the module's docstring; an
        optional field that is None is left out."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        throughput = fields.pop("throughput")
        ordered = [*_RUN, "fingerprint", "inputs", "allow_static", *_COST, "throughput", *_PROVENANCE]
        record = {}
        for name in ordered:
            if name == "throughput":
                record.update(dataclasses.asdict(throughput) if throughput is not None else {})
            elif fields[name] is not None or name not in _OPTIONAL:
                record[name] = fields[name]
        return record

    @classmethod
    def from_json(cls, record: dict, where: str = "run.json") -> "RunRecord":
        """The record of a run.json's content; DataError naming ``where`` when a field is missing
        or unknown."""
        own = {f.name for f in dataclasses.fields(cls)} - {"throughput"}
        speed = [f.name for f in dataclasses.fields(Throughput)]
        unknown = sorted(set(record) - own - set(speed))
        missing = sorted(own - _OPTIONAL - set(record))
        if unknown or missing:
            raise DataError(f"{where} is not a run record: missing {missing}, unknown {unknown}")
        present = [name for name in speed if name in record]
        if present and len(present) < len(speed):
            raise DataError(f"{where} records {present} of a run's speed but not "
                            f"{sorted(set(speed) - set(present))}")
        throughput = Throughput(**{name: record[name] for name in speed}) if present else None
        return cls(**{name: record[name] for name in own if name in record}, throughput=throughput)

    @classmethod
    def read(cls, path: Path) -> "RunRecord":
        return cls.from_json(read_json(path), where=str(path))

    def write(self, path: Path) -> None:
        write_json(path, self.to_json())


_RUN = ("strategy", "stage", "size", "steps")
_COST = ("parameters", "tokens", "train_flops", "token_passes", "flops", "train_seconds", "wall_seconds",
         "heldout_seconds")
_PROVENANCE = ("config_hash", "git_commit", "seed", "versions")
_OPTIONAL = frozenset({"fingerprint", "inputs", "allow_static", "flops", "heldout_seconds"})
