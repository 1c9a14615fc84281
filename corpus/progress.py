"""A corpus build's progress on disk, so that a build that stops (killed, out of time, a lost
connection) resumes after the last input it finished, into the same splits and bytes.

The build works in ``{data_dir}/corpus.partial``: the domains' spool files and, saved at the
points between inputs (``corpus.records.Finished``: a local file, a Debian domain, a run of a
hub stream's records) at most every ``SAVE_EVERY_S`` seconds, ``progress.json``: the settings
the build runs with, the position in the source, the inputs finished, the read's counts and each
spool's state (its index arrays in ``spools.N.npz``). A rerun with the same settings restores
all of it and reads on from the position; with other settings (the corpus section, or an input
file changed since) it says so and starts afresh. Only a finished build replaces
``{data_dir}/corpus``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from corpus.sources import describe, local_files
from corpus.spool import DomainSpool
from mixbench.io import fsync_dir, fsync_file, read_json, write_json

FORMAT = 1  # of progress.json and the spools' saved state: a change discards older progress
SAVE_EVERY_S = 300.0  # a kill loses at most this much reading


def build_settings(corpus: dict) -> dict:
    """What the build's result depends on: the corpus section and the source's inputs as they
    are now (each local file's size and modification time; Debian packages' versions)."""
    settings = {"format": FORMAT, "corpus": corpus, "source": describe(corpus)}
    if corpus["source"] == "jsonl":
        settings["inputs"] = [[path, os.stat(path).st_size, os.stat(path).st_mtime_ns]
                              for path in local_files(corpus["path"])]
    return json.loads(json.dumps(settings, default=str))  # as progress.json reads back


def differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """The dotted names of the settings that differ, for the message."""
    if not (isinstance(saved, dict) and isinstance(current, dict)):
        return [prefix or "(all)"] if saved != current else []
    names = []
    for key in sorted(set(saved) | set(current), key=str):
        names += differences(saved.get(key), current.get(key), f"{prefix}.{key}" if prefix else str(key))
    return names


class BuildProgress:
    def __init__(self, folder: Path, settings: dict):
        self.folder, self.settings = Path(folder), settings
        self.saves = 0

    def resume(self) -> dict | None:
        """The progress saved with these settings, or None (a fresh, empty folder). Progress saved
        with other settings is removed, naming what changed."""
        path = self.folder / "progress.json"
        saved = read_json(path) if path.exists() else None
        if saved is not None and saved["settings"] == self.settings:
            self.saves = saved["saves"]
            print(f"resuming the corpus build after {saved['finished']} ({saved['log']['records']:,} records, "
                  f"{saved['log']['bytes']:,} bytes read before)", file=sys.stderr)
            return saved
        if saved is not None:
            changed = ", ".join(differences(saved["settings"], self.settings)[:5])
            print(f"note: {self.folder} holds an unfinished build with other settings ({changed}); starting afresh",
                  file=sys.stderr)
        elif self.folder.exists():
            print(f"note: {self.folder} holds no saved progress; starting afresh", file=sys.stderr)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        return None

    def spools(self, saved: dict, caps: dict[str, int], selection: str) -> dict[str, DomainSpool]:
        arrays = np.load(self.folder / f"spools.{saved['saves']}.npz")
        return {domain: DomainSpool.restore(domain=domain, path=self.spool_path(domain), cap=caps[domain],
                                            selection=selection, scalars=scalars,
                                            arrays={name: arrays[f"{domain}/{name}"] for name in ("keys", "offsets", "lengths")})
                for domain, scalars in saved["spools"].items()}

    def spool_path(self, domain: str) -> Path:
        return self.folder / f".{domain}.spool"

    def save(self, spools: dict[str, DomainSpool], log: dict, position: dict | None, finished: str) -> None:
        """Save everything read up to ``position`` (None: the read is over): arrays first, then
        progress.json naming them, then what the previous save named goes."""
        self.saves += 1
        scalars, arrays = {}, {}
        for domain, spool in spools.items():
            scalars[domain], own = spool.state()
            arrays.update({f"{domain}/{name}": values for name, values in own.items()})
        npz = self.folder / f"spools.{self.saves}.npz"
        np.savez(npz, **arrays)
        fsync_file(npz)
        write_json(self.folder / "progress.json", {"settings": self.settings, "saves": self.saves, "position": position,
                                                   "finished": finished, "log": log, "spools": scalars})
        (self.folder / f"spools.{self.saves - 1}.npz").unlink(missing_ok=True)
        for spool in spools.values():
            spool.pin()

    def commit(self, out: Path) -> None:
        """The finished build, less its progress, replaces ``out``."""
        for name in ("progress.json", f"spools.{self.saves}.npz"):
            (self.folder / name).unlink(missing_ok=True)
        for folder, _, files in os.walk(self.folder):
            for name in files:
                fsync_file(os.path.join(folder, name))
            fsync_dir(folder)
        if out.exists():
            shutil.rmtree(out)
        os.replace(self.folder, out)
        fsync_dir(out.parent)
