"""The settings a corpus, tokenizer and token files were built with, part of what they are.

Two grids whose corpus settings differ may share a ``data_dir``: each built product records the
settings it was made from, so that nothing reads one made with other settings.

- ``corpus`` (``{data_dir}/corpus``) depends on the config's ``corpus`` section;
- ``tokenizer`` and ``tokens`` (``{data_dir}/tokenizer``, ``{data_dir}/tokens``) on the
  ``corpus`` and ``tokenizer`` sections (less ``tokenizer.workers``, which changes no token).

Each product holds a marker file ``settings.<fingerprint>.json`` with those sections; the data
rules pass the same ``fingerprint`` as their ``params``, so a change of settings also reruns them
through Snakemake's params trigger. The rules list the marker among the product's outputs, so a grid with
other settings finds its marker missing and Snakemake rebuilds the product, and everything made
from it, from any working directory (the params trigger alone needs ``.snakemake/`` metadata of
the same directory). The corpus build writes the new corpus beside the old one and replaces it
only when finished (``corpus.progress``). A job that reads a product checks its marker first and
stops with one line naming the settings that differ (``check``): a half-matching corpus is never
read. A product built before markers existed holds none (``legacy``); what its files still
record of its settings (``corpus.legacy``: the corpus's domains, caps and split sizes, the
tokenizer's vocabulary, the token files' domains and counts, and those of the products it was
made from) is compared with the config. When all of it agrees it is kept, with a warning naming
what was compared and what could not be, so that upgrading rebuilds no matching data (and
retrains no run); when anything differs it counts as not built: the rules list its marker, so it
is rebuilt, and a job that would read it stops naming what differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from corpus.legacy import Comparison, compare_corpus, compare_tokenizer, compare_tokens, tokenizer_vocab_size
from corpus.progress import differences
from mixbench import config as cfg
from mixbench.errors import DataError
from mixbench.io import read_json, write_json

SECTIONS = {"corpus": ("corpus",), "tokenizer": ("corpus", "tokenizer"), "tokens": ("corpus", "tokenizer")}
# The file each product's build writes last: present without any marker, the product predates markers.
MAIN_FILES = {"corpus": "manifest.json", "tokenizer": "tokenizer.json", "tokens": "meta.json"}
# The products each is made from, found beside it in the data_dir.
MADE_FROM = {"corpus": (), "tokenizer": ("corpus",), "tokens": ("corpus", "tokenizer")}
REBUILD = {"corpus": "build_corpus", "tokenizer": "train_tokenizer", "tokens": "tokenize_corpus"}


def settings(config: dict, product: str) -> dict:
    """The config sections ``product`` is built from, without their operational fields."""
    sections = SECTIONS[product]
    return dict(zip(sections, cfg.relevant_sections(config, *sections)))


def fingerprint(config: dict, product: str) -> str:
    """The hash of ``product``'s settings: its marker's name and its rule's ``params: fingerprint``
    (the hash ``fingerprint()`` in rules/common.smk gives the same sections)."""
    return cfg.fingerprint(cfg.relevant_sections(config, *SECTIONS[product]))


def marker(folder: str | Path, config: dict, product: str) -> Path:
    return Path(folder) / f"settings.{fingerprint(config, product)}.json"


def markers(folder: str | Path) -> list[Path]:
    return sorted(Path(folder).glob("settings.*.json"))


def legacy(folder: str | Path, product: str) -> bool:
    """Whether ``folder`` holds a finished ``product`` built before products recorded their settings."""
    return (Path(folder) / MAIN_FILES[product]).exists() and not markers(folder)


def legacy_comparison(folder: str | Path, config: dict, product: str) -> Comparison:
    """What ``product`` in ``folder``, built before markers existed, and the products beside it
    that it was made from record of their settings, against ``config``'s. A product it was made
    from that records its settings was built after it, from other data: that differs too."""
    folder = Path(folder)
    beside = {name: folder.parent / name for name in MADE_FROM[product]}
    result = Comparison()
    for source, path in beside.items():
        if not legacy(path, source):
            state = "was rebuilt since (it records its settings)" if markers(path) else "is missing"
            result.differing.append(f"{path} {state}")
    if result.differing:
        return result
    try:
        parts = _compare_files(folder, beside, config, product)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a file of a layout no build wrote
        result.differing.append(f"its files cannot be compared ({exc.__class__.__name__}: {exc})")
        return result
    for part in parts:
        result.checked += [name for name in part.checked if name not in result.checked]
        result.differing += part.differing
    return result


def _compare_files(folder: Path, beside: dict[str, Path], config: dict, product: str) -> list[Comparison]:
    manifest = read_json(beside.get("corpus", folder) / MAIN_FILES["corpus"])
    parts = [compare_corpus(manifest, config["corpus"])]
    if product != "corpus":
        vocab_size = tokenizer_vocab_size(beside.get("tokenizer", folder))
        parts.append(compare_tokenizer(vocab_size, config["tokenizer"]))
    if product == "tokens":
        parts.append(compare_tokens(read_json(folder / MAIN_FILES["tokens"]), manifest, vocab_size, config["corpus"]))
    return parts


def kept_legacy(folder: str | Path, config: dict, product: str) -> bool:
    """Whether ``folder`` holds ``product`` built before markers existed that agrees with ``config``
    in everything it records."""
    return legacy(folder, product) and not legacy_comparison(folder, config, product).differing


def built(folder: str | Path, config: dict, product: str) -> bool:
    """Whether ``folder`` holds ``product`` as ``config`` would build it (or one that predates
    markers and agrees with it in everything it records)."""
    return marker(folder, config, product).exists() or kept_legacy(folder, config, product)


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
    hint = (f"rebuild it with: snakemake --cores 1 --forcerun {REBUILD[product]} --configfile ..., "
            f"or give this config its own data_dir")
    if legacy(folder, product):
        _check_legacy(folder, config, product, hint)
        return
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


def _check_legacy(folder: Path, config: dict, product: str, hint: str) -> None:
    """Keep a product built before markers existed, with a warning, if it agrees with ``config``
    in everything it records; else raise DataError naming what differs."""
    comparison = legacy_comparison(folder, config, product)
    if comparison.differing:
        shown = "; ".join(comparison.differing[:3])
        more = f" (and {len(comparison.differing) - 3} more)" if len(comparison.differing) > 3 else ""
        raise DataError(f"{folder} records no settings (built by an older mixbench) and what it records differs "
                        f"from this config: {shown}{more}; {hint}")
    names = [f"{section}.{key}" for section, values in settings(config, product).items() for key in values]
    unchecked = [name for name in names if name not in comparison.checked]
    print(f"warning: {folder} records no settings (built by an older mixbench); it is kept as built with this "
          f"config's, since the {len(comparison.checked)} it records agree ({', '.join(comparison.checked)}); "
          f"{len(unchecked)} could not be checked ({', '.join(unchecked)})", file=sys.stderr)


def _value(tree: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return "(unset)"
        tree = tree[key]
    return tree
