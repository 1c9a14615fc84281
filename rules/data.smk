# Corpus -> train/val/test splits -> tokenizer -> flat token files.

from corpus import identity
from corpus.build_time import build_minutes


def settings_marker(product):
    """The marker file of this config's settings for a data product (corpus/identity.py). Built
    with other settings, the product lacks it, so it is rebuilt (and all made from it) whatever
    .snakemake/ knows. One built before markers existed is kept as it is when what it records
    agrees with this config (identity.kept_legacy), else rebuilt like any other."""
    folder = f"{DATA}/{product}"
    return [] if identity.kept_legacy(folder, config, product) else [str(identity.marker(folder, config, product))]


# A build that stops (killed, out of time) resumes after the last input it finished when rerun
# with the same settings: its progress is kept in {DATA}/corpus.partial (corpus/progress.py).
# Another grid's corpus settings rebuild it there; the finished one replaces the old at the end.
rule build_corpus:
    output:
        manifest=f"{DATA}/corpus/manifest.json",
        splits=expand(f"{DATA}/corpus/{{domain}}/{{split}}.jsonl", domain=DOMAINS, split=SPLITS),
        settings=settings_marker("corpus"),
    params:
        fingerprint=identity.fingerprint(config, "corpus"),
    resources:
        # The time limit (minutes; SLURM's --time): the read budget and the kept bytes at the
        # measured read rate, with a margin (corpus/build_time.py).
        runtime=build_minutes(config["corpus"]),
    benchmark:
        bench("build_corpus"),
    log:
        f"{LOGS}/build_corpus.log",
    shell:
        "{PY:q} -m corpus.build --config {CONFIG_FILE:q} > {log:q} 2>&1"


# Every rule that reads a data product asks for its marker too: Snakemake checks only the outputs
# asked for, so a product built with other settings is rebuilt for whichever rule reads it.
rule train_tokenizer:
    input:
        rules.build_corpus.output.manifest,
        rules.build_corpus.output.settings,
    output:
        tokenizer=f"{DATA}/tokenizer/tokenizer.json",
        settings=settings_marker("tokenizer"),
    params:
        fingerprint=identity.fingerprint(config, "tokenizer"),
    benchmark:
        bench("train_tokenizer"),
    log:
        f"{LOGS}/train_tokenizer.log",
    shell:
        "{PY:q} -m corpus.tokenizer --config {CONFIG_FILE:q} > {log:q} 2>&1"


rule tokenize_corpus:
    input:
        rules.build_corpus.output.manifest,
        rules.build_corpus.output.settings,
        rules.train_tokenizer.output,
    output:
        meta=f"{DATA}/tokens/meta.json",
        settings=settings_marker("tokens"),
    params:
        fingerprint=identity.fingerprint(config, "tokens"),
    # One encoding process per thread; Snakemake lowers it to --cores. The output does not depend on it.
    threads: config["tokenizer"]["workers"]
    benchmark:
        bench("tokenize_corpus"),
    log:
        f"{LOGS}/tokenize_corpus.log",
    shell:
        "{PY:q} -m corpus.tokens --config {CONFIG_FILE:q} --workers {threads:q} > {log:q} 2>&1"
