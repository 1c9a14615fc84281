# The landscape study (docs/landscape.md), when the config has a `landscape` section: the lattice
# entry's swarm (strategies/lattice.py) trains one run per lattice mixture through the training
# rules (packs, resume and all); one job per seed then scores every run's model on the test split
# with the final models' lm-eval tasks (eval/harness/score_runs.py), and the tables read the
# scores (eval/analysis/landscape.py). The lattice's own final run is trained only if the grid
# lists it.

LANDSCAPE = config.get("landscape")
LATTICE = LANDSCAPE["lattice"] if LANDSCAPE else None


def lattice_scores(size, seed):
    return f"{RUNS}/{size}/{LATTICE}/seed{seed}/packs/swarm-scores.json"


# Every seed's scores of every size: what the landscape table waits for.
LANDSCAPE_SCORES = [lattice_scores(size, seed) for size in GRID["sizes"] for seed in GRID["seeds"]] if LANDSCAPE else []


if LANDSCAPE:

    rule score_lattice:
        input:
            swarm=f"{RUNS}/{{size}}/{LATTICE}/seed{{seed}}/packs/swarm.json",
            tasks=rules.lm_eval_tasks.output,
        output:
            lattice_scores("{size}", "{seed}"),
        params:
            runs=lambda w: [folder for size, seed, *_, folder in strategy_runs.landscape_runs(config)
                            if size == w.size and str(seed) == w.seed],
            fingerprint=fingerprint("evaluation"),
            tasks=f"{DATA}/lm_eval_tasks",
        threads: config["training"]["threads"]
        resources:
            gpu=EVAL_GPUS,
            cpus_per_task=config["training"]["threads"],
        benchmark:
            bench("score_lattice/{size}-seed{seed}"),
        log:
            f"{LOGS}/eval/{{size}}-{LATTICE}-seed{{seed}}-lattice.log",
        shell:
            "{EVAL_LAUNCH} -m eval.harness.score_runs --runs {params.runs:q} --tasks-dir {params.tasks:q}"
            " --out {output:q} --batch-size {EVAL_BATCH_SIZE:q} --threads {threads:q} > {log:q} 2>&1"
