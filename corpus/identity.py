"""The settings a corpus, tokenizer and token files were built with, part of what they are.

Two grids whose corpus settings differ may share a ``data_dir``: each built product records the
settings it was made from, so that nothing reads one made with other settings.

- ``corpus`` (``{data_dir}/corpus``) depends on the config's ``corpus`` section;
- ``tokenizer`` and ``tokens`` (``{data_dir}/tokenizer``, ``{data_dir}/tokens``) on the
  ``corpus`` and ``tokenizer`` sections (less ``tokenizer.workers``, which changes no token).

Each product holds a marker file ``settings.<fingerprint>.json`` with those sections; its
fingerprint is the one the data rules pass as ``params`` (``mixbench.config.fingerprint`` of
``relevant_sections``). The rules list the marker among the product's outputs, so a grid with
other settings finds its marker missing and Snakemake rebuilds the product, and everything made
from it, from any working directory (the params trigger alone needs ``.snakemake/`` metadata of
the same directory). The corpus build writes the new corpus beside the old one and replaces it
only when finished (``corpus.progress``). A job that reads a product checks its marker first and
stops with one line naming the settings that differ (``check``): a half-matching corpus is never
read. A product built before markers existed holds none; it is taken as matching, with a note
(``legacy``), so that upgrading rebuilds nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from corpus.progress import differences
from mixbench import config as cfg
from mixbench.errors import DataError
from mixbench.io import read_json, write_json

SECTIONS = {"corpus": ("corpus",), "tokenizer": ("corpus", "tokenizer"), "tokens": ("corpus", "tokenizer")}
# The file each product's build writes last: present without any marker, the product predates markers.
MAIN_FILES = {"corpus": "manifest.json", "tokenizer": "tokenizer.json", "tokens": "meta.json"}
REBUILD = {"corpus": "build_corpus", "tokenizer": "train_tokenizer", "tokens": "tokenize_corpus"}


def settings(config: dict, product: str) -> dict:
    """The config sections ``product`` is built from, without their operational fields."""
    sections = SECTIONS[product]
    return dict(zip(sections, cfg.relevant_sections(config, *sections)))


def fingerprint(config: dict, product: str) -> str:
    """The same hash as the data rules' ``params: fingerprint``."""
    return cfg.fingerprint(cfg.relevant_sections(config, *SECTIONS[product]))


def marker(folder: str | Path, config: dict, product: str) -> Path:
    return Path(folder) / f"settings.{fingerprint(config, product)}.json"


def markers(folder: str | Path) -> list[Path]:
    return sorted(Path(folder).glob("settings.*.json"))


def legacy(folder: str | Path, product: str) -> bool:
    """Whether ``folder`` holds a finished ``product`` built before products recorded their settings."""
    return (Path(folder) / MAIN_FILES[product]).exists() and not markers(folder)


def built(folder: str | Path, config: dict, product: str) -> bool:
    """Whether ``folder`` holds ``product`` as ``config`` would build it (or one that predates markers)."""
    return marker(folder, config, product).exists() or legacy(folder, product)


def record(folder: str | Path, config: dict, product: str) -> Path:
    """Write the marker of ``config``'s settings into ``folder`` (and no other marker)."""
    for path in markers(folder):
        path.unlink()
    path = marker(folder, config, product)
    write_json(path, {"fingerprint": fingerprint(config, product), "settings": settings(config, product)})
    return path


def check(folder: str | Path, config: dict, product: str) -> None:
    """Raise DataError, in one line naming both settings, unless ``folder`` holds ``product``
    built with ``config``'s settings."""
    folder = Path(folder)
    if marker(folder, config, product).exists():
        return
    if legacy(folder, product):  # kept as before markers existed, said once per reading job
        print(f"note: {folder} records no settings (built by an older mixbench); it is taken as built with this "
              f"config's {' and '.join(SECTIONS[product])} settings", file=sys.stderr)
        return
    hint = (f"rebuild it with: snakemake --cores 1 --forcerun {REBUILD[product]} --configfile ..., "
            f"or give this config its own data_dir")
    found = markers(folder)
    if not found:
        raise DataError(f"{folder} holds no {product} built with this config's settings (no {MAIN_FILES[product]}); "
                        f"{hint}")
    recorded = read_json(found[-1])
    ours = settings(config, product)
    changed = differences(recorded["settings"], ours)
    shown = "; ".join(f"{name}: {_value(recorded['settings'], name)} there, {_value(ours, name)} here"
                      for name in changed[:3])
    more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
    raise DataError(f"{folder} was built with other settings (fingerprint {recorded['fingerprint']}) than this "
                    f"config's ({fingerprint(config, product)}): {shown}{more}; {hint}")


def _value(tree: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return "(unset)"
        tree = tree[key]
    return tree
