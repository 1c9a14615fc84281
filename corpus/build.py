"""Build the corpus: per-domain train/val/test splits and a manifest, streamed in bounded memory.

    python -m corpus.build --config config/config.yaml

Writes ``{data_dir}/corpus/{domain}/{split}.jsonl`` (one ``{"id", "text"}`` per line, in id
order) and ``{data_dir}/corpus/manifest.json``. Records are read one at a time
(``corpus.sources``), each document goes to its domain's spool on disk (``corpus.spool``), and
the read stops as soon as every domain has its cap (stream selection) or the read budget
``corpus.max_read_bytes`` is spent. A document's id is a hash of its domain and text, and the
splits are made from the ids, so they are the same on every machine, for every strategy, and for
the same data in any file format, file names or order (when no cap cuts a domain short; with
stream selection, a capped domain keeps the first documents read). Exact duplicate texts are
dropped. Bad records stop the build with their file and line, or, with ``corpus.bad_records:
skip``, are skipped and counted per file in the manifest. Everything is written to
``{data_dir}/corpus.partial``, which replaces ``{data_dir}/corpus`` only when the whole build
succeeded, with the marker of the corpus settings it was built with (``corpus.identity``). A
build that stops resumes after the last input it finished, into the same splits, as long as its
settings and input files are the same (``corpus.progress``).

``available_bytes`` of a domain is the size of its documents read (duplicates found removed):
the whole domain when the source was read to its end, else what the read saw before it stopped
(for a shuffled stream, proportional to the domains' sizes). ``natural`` sampling is
proportional to it.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from corpus import identity, progress
from corpus.progress import BuildProgress, build_settings
from corpus.records import BadRecord, Finished
from corpus.sources import check_source, describe, records
from corpus.spool import SPLITS, DomainSpool, selection_of
from mixbench import config as cfg
from mixbench.cli import config_command
from mixbench.errors import DataError
from mixbench.io import write_json

PROGRESS_EVERY_S = 30.0
MAX_DOMAIN_NAMES_SEEN = 1000  # names of unwanted domains remembered for the "not in the data" error


class ReadLog:
    """What the read saw: record counts, bytes, skipped and empty records per file, and progress."""

    def __init__(self, bad_records: str, saved: dict | None = None):
        """``saved``: the ``state`` of the read this one continues."""
        saved = saved or {}
        self.bad_records = bad_records
        self.records = saved.get("records", 0)
        self.bytes = saved.get("bytes", 0)
        self.skipped: dict[str, Counter] = defaultdict(Counter, {k: Counter(v) for k, v in saved.get("skipped", {}).items()})
        self.empty: Counter = Counter(saved.get("empty", {}))
        self.other_domains: Counter = Counter(saved.get("other_domains", {}))
        self.started = self.last_report = time.monotonic()
        self.resumed_bytes = self.bytes  # read by an earlier process: not in this one's rate

    def state(self) -> dict:
        return {"records": self.records, "bytes": self.bytes, "skipped": {k: dict(v) for k, v in self.skipped.items()},
                "empty": dict(self.empty), "other_domains": dict(self.other_domains)}

    def bad(self, record: BadRecord) -> None:
        if self.bad_records == "error":
            raise DataError(f"{record.where}: {record.problem}. The corpus was not written. Fix the record, or set "
                            f"corpus.bad_records: skip to skip such records (they are counted in the manifest)")
        self.skipped[record.origin][record.kind] += 1

    def progress(self, spools: dict[str, DomainSpool], force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_report >= PROGRESS_EVERY_S:
            self.last_report = now
            full = [d for d, s in spools.items() if s.at_cap]
            rate = (self.bytes - self.resumed_bytes) / max(now - self.started, 1e-9) / 1e6
            print(f"read {self.records:,} records, {self.bytes / 1e6:,.1f} MB ({rate:.1f} MB/s); "
                  f"{len(full)}/{len(spools)} domains at their cap", file=sys.stderr, flush=True)

    def summary(self) -> dict:
        return {
            "records": self.records,
            "bytes": self.bytes,
            "skipped": {origin: dict(kinds) for origin, kinds in sorted(self.skipped.items())},
            "empty_texts": dict(sorted(self.empty.items())),
            "other_domain_records": sum(self.other_domains.values()),
        }


def read_into(spools: dict[str, DomainSpool], corpus: dict, log: ReadLog, saver: BuildProgress,
              position: dict | None) -> str | None:
    """Stream the source from ``position`` into the spools, saving the progress now and then;
    return why the read stopped early, or None at its end."""
    budget = corpus["max_read_bytes"]
    last_save = time.monotonic()
    for record in records(corpus, position):
        if isinstance(record, Finished):
            if time.monotonic() - last_save >= progress.SAVE_EVERY_S:
                saver.save(spools, log.state(), record.position, record.what)
                last_save = time.monotonic()
            continue
        if isinstance(record, BadRecord):
            log.bad(record)
            continue
        log.records += 1
        data = record.text.encode("utf-8")
        log.bytes += len(data)
        spool = spools.get(record.domain)
        if spool is None:
            if len(log.other_domains) < MAX_DOMAIN_NAMES_SEEN or record.domain in log.other_domains:
                log.other_domains[record.domain] += 1
        elif not record.text.strip():
            log.empty[record.origin] += 1
        else:
            spool.offer(data)
        log.progress(spools)
        if all(s.full for s in spools.values()):
            return "every domain reached its cap"
        if budget is not None and log.bytes >= budget:
            short = [f"{d} ({s.kept_bytes:,} of {s.cap:,} bytes)" for d, s in spools.items() if not s.at_cap]
            print(f"warning: the read budget corpus.max_read_bytes = {budget:,} is spent; domains below their "
                  f"cap: {', '.join(short)}", file=sys.stderr)
            return f"corpus.max_read_bytes ({budget:,}) spent"
    return None


def build(config: dict) -> dict:
    corpus = config["corpus"]
    check_source(corpus)  # before any reading: missing packages, files or network fail here
    selection = selection_of(corpus)
    out = Path(config["data_dir"]) / "corpus"
    saver = BuildProgress(out.with_name("corpus.partial"), build_settings(corpus))
    saved = saver.resume()
    caps = {domain: cfg.domain_cap(corpus, domain) for domain in corpus["domains"]}
    if saved is None:
        spools = {domain: DomainSpool(domain=domain, path=saver.spool_path(domain), cap=caps[domain], selection=selection)
                  for domain in corpus["domains"]}
        log, read = ReadLog(corpus["bad_records"]), None
    else:
        spools = saver.spools(saved, caps, selection)
        log, read = ReadLog(corpus["bad_records"], saved["log"]), saved["log"].get("read")
    if read is None:
        stopped = read_into(spools, corpus, log, saver, saved["position"] if saved else None)
        read = {**log.summary(), "complete": stopped is None, "stopped_because": stopped}
        # The read is over: a stop while the splits are written resumes here, without reading again.
        saver.save(spools, {**log.state(), "read": read}, None, "the whole read")
    log.progress(spools, force=True)
    missing = [d for d, s in spools.items() if s.documents_read == 0]
    if missing:
        raise DataError(f"no documents for domain(s) {missing}; domains present in the data: "
                        f"{sorted(set(log.other_domains) | set(spools) - set(missing))}")
    manifest = {"source": corpus["source"], **describe(corpus), "selection": selection,
                "bad_records": corpus["bad_records"], "read": read,
                "settings_fingerprint": identity.fingerprint(config, "corpus"), "domains": {}}
    for domain, spool in spools.items():
        entry = spool.write_splits(saver.folder / domain, val_fraction=corpus["val_fraction"],
                                   test_fraction=corpus["test_fraction"], min_docs=corpus["min_split_documents"])
        manifest["domains"][domain] = entry
        print(f"{domain:>14}: " + ", ".join(
            f"{s} {entry['splits'][s]['documents']:,} docs / {entry['splits'][s]['bytes']:,} B" for s in SPLITS)
            + f"; {entry['available_bytes']:,} B available", file=sys.stderr)
    for origin, kinds in manifest["read"]["skipped"].items():
        print(f"skipped in {origin}: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items()), file=sys.stderr)
    write_json(saver.folder / "manifest.json", manifest)
    identity.record(saver.folder, config, "corpus")  # corpus/identity.py: which grids may read it
    for spool in spools.values():
        spool.remove()
    saver.commit(out)
    return manifest


main = config_command(build, __doc__, load=cfg.load)


if __name__ == "__main__":
    main()
