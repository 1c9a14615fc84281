"""The lattice strategy (strategies/lattice.py) and the landscape study's arithmetic
(eval/analysis/landscape.py): the lattice's points, the validation-chosen final mixture, the
config checks, and each strategy's regret and rank against hand computations."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import make_test_config
from eval.analysis.landscape import regret_rows
from eval.analysis.stats import sign_flip_p
from mixbench.errors import ConfigError, TrainingError
from strategies import StrategyContext, get_strategy_class, grid_config
from strategies.lattice import lattice_points, lattice_size

DOMAINS = ("code", "books", "qa")


def lattice(stage, heldout=None, **hparams):
    replica = int(stage.split("-")[1]) if stage.startswith("swarm-") else None
    context = StrategyContext(name="lattice", domains=DOMAINS, train_tokens=np.array([5, 3, 2]), stage=stage,
                              total_steps=10, seed=0, vocab_size=512, upstream_heldout=heldout or {}, replica=replica)
    return get_strategy_class("lattice")(context, **hparams)


def test_the_lattice_holds_every_mixture_in_multiples_of_one_over_d_once():
    points = lattice_points(3, 4)
    assert len(points) == lattice_size(3, 4) == math.comb(6, 2) == 15
    assert np.allclose(points.sum(axis=1), 1) and (points >= 0).all()
    assert np.allclose(points * 4, np.round(points * 4))  # quarters
    assert len({tuple(p) for p in points}) == 15
    # Lexicographic in the counts: from (0, 0, 4) to (4, 0, 0).
    assert points[0].tolist() == [0, 0, 1] and points[1].tolist() == [0, 0.25, 0.75] and points[-1].tolist() == [1, 0, 0]
    assert lattice_points(3, 1).tolist() == [[0, 0, 1], [0, 1, 0], [1, 0, 0]]  # the corners
    assert lattice_size(4, 6) == 84 and lattice_size(2, 6) == 7


def test_swarm_run_r_trains_on_point_r_and_the_final_on_the_lowest_validation_loss():
    hparams = {"divisions": 2, "points": 6}
    points = lattice_points(3, 2)
    assert all(np.array_equal(lattice(f"swarm-{r}", **hparams).initial_weights(), points[r]) for r in range(6))
    # Mean val loss per run: 3, 2, 1.5 (lowest: swarm-2), 2, 1.5 (a tie: the first wins), 4.
    heldout = {f"swarm-{r}": np.array(v) for r, v in
               enumerate([[3, 3, 3], [1, 2, 3], [1, 1, 2.5], [2, 2, 2], [0.5, 1, 3], [4, 4, 4]])}
    assert np.array_equal(lattice("final", heldout=heldout, **hparams).initial_weights(), points[2])
    with pytest.raises(TrainingError, match=r"missing \['swarm-5'\]"):
        lattice("final", heldout={k: v for k, v in heldout.items() if k != "swarm-5"}, **hparams).initial_weights()


def test_the_config_check_names_the_lattice_size_and_the_study_s_requirements(tmp_path):
    cls = get_strategy_class("lattice")
    with pytest.raises(ConfigError, match=r"make 15 lattice points .*set points: 15, got 28"):
        cls.check_hparams({"divisions": 4}, list(DOMAINS))
    with pytest.raises(ConfigError, match="divisions must be >= 1"):
        cls.check_hparams({"divisions": 0, "points": 1}, list(DOMAINS))
    study = {"landscape": {"lattice": "lattice"},
             "strategies": {"lattice": {"divisions": 1, "points": 6, "stages": {"swarm": {"save_model": True}}}}}
    grid_config.validate(make_test_config(tmp_path, **study))  # 6 domains, corners only: 6 points
    unsaved = {**study, "strategies": {"lattice": {"divisions": 1, "points": 6}}}
    with pytest.raises(ConfigError, match="set save_model: true"):
        grid_config.validate(make_test_config(tmp_path, **unsaved))
    shorter = {**study, "strategies": {"lattice": {"divisions": 1, "points": 6,
                                                   "stages": {"swarm": {"save_model": True, "steps": 10}}}}}
    with pytest.raises(ConfigError, match="for 10 steps; the study compares them with final models .* 30 steps"):
        grid_config.validate(make_test_config(tmp_path, **shorter))
    other = {**study, "landscape": {"lattice": "uniform"}}
    with pytest.raises(ConfigError, match="'uniform' is strategy Uniform, not a lattice"):
        grid_config.validate(make_test_config(tmp_path, **other))


def test_regret_and_rank_against_a_hand_computation():
    # Three lattice mixtures, three seeds. The val-chosen mixture: seed 0 point 1, seed 1 point 0,
    # seed 2 point 1 (val losses); their test macro bits per byte 2.0, 2.5, 2.1.
    rows = []
    for seed, val, test in [(0, [1.2, 1.0, 1.5], [2.2, 2.0, 3.0]), (1, [0.9, 1.0, 1.5], [2.5, 1.9, 3.1]),
                            (2, [1.3, 1.1, 1.6], [2.3, 2.1, 2.9])]:
        for point in range(3):
            rows.append({"size": "test", "seed": seed, "stage": f"swarm-{point}", "point": point,
                         "val_macro_loss": val[point], "test_macro": test[point],
                         "chosen": point == int(np.argmin(val))})
    lattice_frame = pd.DataFrame(rows)
    ours = {"uniform": [2.1, 2.4, 2.6], "natural": [2.0, 2.5, 2.1]}
    macro = pd.DataFrame([{"size": "test", "strategy": s, "seed": seed, "macro avg": v}
                          for s, values in ours.items() for seed, v in enumerate(values)]
                         ).set_index(["size", "strategy", "seed"])
    result = {r["strategy"]: r for r in regret_rows(lattice_frame, macro, ["uniform", "natural"])}
    chosen = np.array([2.0, 2.5, 2.1])
    diff = np.array(ours["uniform"]) - chosen  # 0.1, -0.1, 0.5
    assert result["uniform"]["regret"] == pytest.approx(diff.mean())
    half = stats.t.ppf(0.975, 2) * diff.std(ddof=1) / np.sqrt(3)
    assert (result["uniform"]["ci_low"], result["uniform"]["ci_high"]) == pytest.approx((diff.mean() - half,
                                                                                         diff.mean() + half))
    assert result["uniform"]["p_sign_flip"] == pytest.approx(sign_flip_p(diff))
    # Ranks: seed 0: 2.1 beats 2.2 and 3.0, loses to 2.0 -> 2; seed 1: 2.4 loses to 1.9 -> 2;
    # seed 2: 2.6 loses to 2.3 and 2.1 -> 3.
    assert result["uniform"]["mean_rank"] == pytest.approx((2 + 2 + 3) / 3)
    # natural equals the chosen mixture at every seed: no regret. Only a lower loss ranks above it:
    # seed 0: none (2.0 ties 2.0) -> 1; seed 1: 1.9 -> 2; seed 2: none (2.1 ties) -> 1.
    assert result["natural"]["regret"] == pytest.approx(0.0)
    assert result["natural"]["mean_rank"] == pytest.approx((1 + 2 + 1) / 3)
    # Holm over the two strategies: the smaller p doubled, the larger at least that.
    ps = sorted([result["uniform"]["p_sign_flip"], result["natural"]["p_sign_flip"]])
    assert min(r["p_holm"] for r in result.values()) == pytest.approx(min(1.0, 2 * ps[0]))
    # The lattice's spread: mean test macro per point over seeds, best to worst.
    means = lattice_frame.groupby("point")["test_macro"].mean()
    assert result["uniform"]["lattice_spread"] == pytest.approx(means.max() - means.min())
    assert result["uniform"]["points"] == 3 and result["uniform"]["pairs"] == 3
