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
        rules.build_corpus.output.settings,
    output:
        f"{DATA}/lm_eval_tasks/perplexity/tasks.json",
    params:
        fingerprint=fingerprint("corpus", "evaluation"),
        corpus=f"{DATA}/corpus",
        tasks=f"{DATA}/lm_eval_tasks",
        domains=DOMAINS,
        max_documents=config["evaluation"]["max_documents_per_domain"],
        max_chars=config["evaluation"]["max_chars_per_document"],
    benchmark:
        bench("lm_eval_tasks"),
    log:
        f"{LOGS}/lm_eval_tasks.log",
    shell:
        "{PY:q} -m eval.harness.tasks --corpus-dir {params.corpus:q} --out {params.tasks:q} --domains {params.domains:q}"
        " --max-documents {params.max_documents:q} --max-chars {params.max_chars:q}"
        " > {log:q} 2>&1"


# Downstream tasks: the offline groups generated from the test splits and/or lm-eval registry tasks.
DOWNSTREAM = config["downstream"]
GENERATED_DOWNSTREAM = [t for t in DOWNSTREAM["tasks"] if t in GENERATED_TASKS]


rule downstream_tasks:
    input:
        rules.build_corpus.output.manifest,
        rules.build_corpus.output.settings,
    output:
        f"{DATA}/lm_eval_tasks/downstream/tasks.json",
    params:
        fingerprint=fingerprint("corpus", "downstream"),
        corpus=f"{DATA}/corpus",
        tasks=f"{DATA}/lm_eval_tasks",
        domains=DOMAINS,
        d=DOWNSTREAM,
    benchmark:
        bench("downstream_tasks"),
    log:
        f"{LOGS}/downstream_tasks.log",
    shell:
        "{PY:q} -m eval.harness.downstream_tasks --corpus-dir {params.corpus:q} --out {params.tasks:q}"
        " --domains {params.domains:q} --examples-per-domain {params.d[examples_per_domain]:q} --seed {params.d[seed]:q}"
        " --context-chars {params.d[context_chars]:q} --continuation-chars {params.d[continuation_chars]:q}"
        " --choices {params.d[choices]:q} > {log:q} 2>&1"


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
        # Arguments as a list: `:q` quotes each one for the shell.
        downstream=lambda w, output: [
            "--downstream", *DOWNSTREAM["tasks"], "--downstream-out", output.downstream[0],
            "--num-fewshot", str(DOWNSTREAM["num_fewshot"]),
            *(["--downstream-limit", str(DOWNSTREAM["limit"])] if DOWNSTREAM["limit"] else []),
        ] if DOWNSTREAM["tasks"] else [],
        tasks=f"{DATA}/lm_eval_tasks",
    threads: config["training"]["threads"]
    resources:
        gpu=EVAL_GPUS,
        # SLURM's --cpus-per-task, not capped at the submitting host's --cores as threads are.
        cpus_per_task=config["training"]["threads"],
    benchmark:
        bench("evaluate/{size}-{strategy}-seed{seed}"),
    log:
        f"{LOGS}/eval/{{size}}-{{strategy}}-seed{{seed}}.log",
    shell:
        "{EVAL_LAUNCH} -m eval.harness.evaluate --model {params.model:q} --tasks-dir {params.tasks:q}"
        " --out {output.perplexity:q} {params.downstream:q} --batch-size {EVAL_BATCH_SIZE:q} --threads {threads:q}"
        " > {log:q} 2>&1"
