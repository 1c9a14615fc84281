# lm-eval on every final model: per-domain loglikelihood_rolling tasks on the held-out test split,
# and the downstream tasks.

# A global, not a param: the batch size changes speed, not results, so it must not trigger reruns.
EVAL_BATCH_SIZE = config["evaluation"]["batch_size"]
# One GPU of its own per evaluation (mixbench.gpus; see rules/train.smk), none on device cpu.
EVAL_GPUS = 0 if config["training"]["device"] == "cpu" else 1
EVAL_LAUNCH = shlex.join([PY, "-m", "mixbench.gpus", "run", "--gpus", str(EVAL_GPUS), "--", PY])


rule lm_eval_tasks:
    input:
        rules.build_corpus.output.manifest,
    output:
        f"{DATA}/lm_eval_tasks/perplexity/tasks.json",
    params:
        fingerprint=fingerprint("corpus", "evaluation"),
        domains=" ".join(DOMAINS),
        max_documents=config["evaluation"]["max_documents_per_domain"],
        max_chars=config["evaluation"]["max_chars_per_document"],
    log:
        f"{LOGS}/lm_eval_tasks.log",
    shell:
        "{PY} -m eval.tasks --corpus-dir {DATA}/corpus --out {DATA}/lm_eval_tasks --domains {params.domains}"
        " --max-documents {params.max_documents} --max-chars {params.max_chars}"
        " > {log} 2>&1"


# Downstream tasks: the offline groups generated from the test splits and/or lm-eval registry tasks.
DOWNSTREAM = config["downstream"]
GENERATED_DOWNSTREAM = [t for t in DOWNSTREAM["tasks"] if t in GENERATED_TASKS]


rule downstream_tasks:
    input:
        rules.build_corpus.output.manifest,
    output:
        f"{DATA}/lm_eval_tasks/downstream/tasks.json",
    params:
        fingerprint=fingerprint("corpus", "downstream"),
        domains=" ".join(DOMAINS),
        d=DOWNSTREAM,
    log:
        f"{LOGS}/downstream_tasks.log",
    shell:
        "{PY} -m eval.downstream_tasks --corpus-dir {DATA}/corpus --out {DATA}/lm_eval_tasks --domains {params.domains}"
        " --examples-per-domain {params.d[examples_per_domain]} --seed {params.d[seed]}"
        " --context-chars {params.d[context_chars]} --continuation-chars {params.d[continuation_chars]}"
        " --choices {params.d[choices]} > {log} 2>&1"


# One job per final model: it loads the model once and scores the perplexity tasks, then the
# downstream ones, each built and run on its own. A downstream task that fails (e.g. its dataset
# needs a loading script, or is missing from the offline cache) is logged as a warning and
# recorded under `failed` in downstream.json, and its table cells stay empty; the job fails only
# when every downstream task failed.
rule evaluate:
    input:
        run=f"{RUNS}/{{size}}/{{strategy}}/seed{{seed}}/final/run.json",
        tasks=[rules.lm_eval_tasks.output, *(rules.downstream_tasks.output if GENERATED_DOWNSTREAM else [])],
    output:
        perplexity=f"{RUNS}/{{size}}/{{strategy}}/seed{{seed}}/final/eval/perplexity.json",
        downstream=[f"{RUNS}/{{size}}/{{strategy}}/seed{{seed}}/final/eval/downstream.json"] if DOWNSTREAM["tasks"] else [],
    params:
        model=lambda w: f"{run_dir(w.size, w.strategy, w.seed, 'final')}/model",
        fingerprint=fingerprint("evaluation", "downstream"),
        downstream=lambda w, output: (
            f"--downstream {' '.join(DOWNSTREAM['tasks'])} --downstream-out {output.downstream[0]}"
            f" --num-fewshot {DOWNSTREAM['num_fewshot']}"
            + (f" --downstream-limit {DOWNSTREAM['limit']}" if DOWNSTREAM["limit"] else "")
            if DOWNSTREAM["tasks"] else ""
        ),
    threads: config["training"]["threads"]
    resources:
        gpu=EVAL_GPUS,
    log:
        f"{LOGS}/eval/{{size}}-{{strategy}}-seed{{seed}}.log",
    shell:
        "{EVAL_LAUNCH} -m eval.evaluate --model {params.model} --tasks-dir {DATA}/lm_eval_tasks"
        " --out {output.perplexity} {params.downstream} --batch-size {EVAL_BATCH_SIZE} --threads {threads} > {log} 2>&1"
