# Corpus -> train/val/test splits -> tokenizer -> flat token files.

from corpus.build_time import build_minutes


# A build that stops (killed, out of time) resumes after the last input it finished when rerun
# with the same settings: its progress is kept in {DATA}/corpus.partial (corpus/progress.py).
rule build_corpus:
    output:
        manifest=f"{DATA}/corpus/manifest.json",
        splits=expand(f"{DATA}/corpus/{{domain}}/{{split}}.jsonl", domain=DOMAINS, split=SPLITS),
    params:
        fingerprint=fingerprint("corpus"),
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


rule train_tokenizer:
    input:
        rules.build_corpus.output.manifest,
    output:
        f"{DATA}/tokenizer/tokenizer.json",
    params:
        fingerprint=fingerprint("corpus", "tokenizer"),
    benchmark:
        bench("train_tokenizer"),
    log:
        f"{LOGS}/train_tokenizer.log",
    shell:
        "{PY:q} -m corpus.tokenizer --config {CONFIG_FILE:q} > {log:q} 2>&1"


rule tokenize_corpus:
    input:
        rules.build_corpus.output.manifest,
        rules.train_tokenizer.output,
    output:
        f"{DATA}/tokens/meta.json",
    params:
        fingerprint=fingerprint("corpus", "tokenizer"),
    # One encoding process per thread; Snakemake lowers it to --cores. The output does not depend on it.
    threads: config["tokenizer"]["workers"]
    benchmark:
        bench("tokenize_corpus"),
    log:
        f"{LOGS}/tokenize_corpus.log",
    shell:
        "{PY:q} -m corpus.tokens --config {CONFIG_FILE:q} --workers {threads:q} > {log:q} 2>&1"
