"""Host synchronisations per training step (models/step.py counts every blocking device-to-host
transfer of the loop in ``TRANSFERS``): none for the strategies that do not update on a step,
at most one for DoReMi's and DoGE's proxies; on a GPU, CUDA's own sync detector agrees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.step import TRANSFERS



def make_loop(built_data, tmp_path, name: str, stage: str = "final", upstream_dir: Path | None = None,
              device: str = "cpu", steps: int = 3, **hparams):
    from corpus.sampler import DomainSampler
    from corpus.tokens import TokenStore
    from models.gpt2 import build_model, gpt2_config
    from models.loop import LoopSettings, TrainingLoop
    from models.signals.base import SignalSources
    from strategies import StrategyContext, get_strategy_class

    tmp_path.mkdir(parents=True, exist_ok=True)
    store = TokenStore(Path(built_data["data_dir"]) / "tokens", "train")
    k = len(store.domains)
    context = StrategyContext(name=name, domains=tuple(store.domains), train_tokens=store.token_counts(), stage=stage,
                              total_steps=steps, seed=0, vocab_size=store.vocab_size,
                              upstream_weights={"fit": np.full(k, 1 / k)})
    torch.manual_seed(0)
    model = build_model(gpt2_config("test", store.vocab_size)).to(device)
    settings = LoopSettings.from_config(dict(built_data["training"], batch_size=12, micro_batch_size=6,
                                             checkpoint_every=100), steps=steps, device=torch.device(device))
    if name == "static":
        hparams = {"weights": [1.0] * k, "normalize": True}
    sources = SignalSources(data_dir=Path(built_data["data_dir"]), seed=0,
                            upstream={"reference": upstream_dir} if upstream_dir else {}, run_dir=tmp_path)
    return TrainingLoop(model=model, strategy=get_strategy_class(name)(context, **hparams),
                        sampler=DomainSampler(store, 32, seed=1), settings=settings, log_path=tmp_path / "log.csv",
                        checkpoint_dir=tmp_path / "checkpoints", strategy_name=name, sources=sources)  # no held-out set: its measurements are not steps


def syncs_per_step(loop) -> dict[int, int]:
    """Blocking transfers made by each step of a whole run (log rows, checkpoints and all)."""
    counts, step = {}, loop.train_step

    def counted(*args, **kwargs):
        before = TRANSFERS.blocking
        result = step(*args, **kwargs)
        counts[loop.state.step + 1] = TRANSFERS.blocking - before
        return result

    loop.train_step = counted
    TRANSFERS.reset()
    assert loop.run()
    assert TRANSFERS.blocking == sum(counts.values())  # nothing outside the steps either
    return counts


@pytest.fixture(scope="module")
def reference_model(built_data, tmp_path_factory) -> Path:
    from corpus.tokens import TokenStore
    from models.gpt2 import build_model, gpt2_config

    out = tmp_path_factory.mktemp("reference")
    store = TokenStore(Path(built_data["data_dir"]) / "tokens", "train")
    torch.manual_seed(1)
    build_model(gpt2_config("test", store.vocab_size)).save_pretrained(out / "model")
    return out


@pytest.mark.parametrize("name", ["uniform", "natural", "regmix", "static"])  # regmix: its final run
def test_a_static_mixture_never_waits_for_the_device(built_data, tmp_path, name):
    loop = make_loop(built_data, tmp_path, name)
    assert syncs_per_step(loop) == {1: 0, 2: 0, 3: 0}
    assert TRANSFERS.lagged == 3  # each step's losses reach the log a step later
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 1 + 3


def test_dograph_waits_only_at_its_probes(built_data, tmp_path):
    loop = make_loop(built_data, tmp_path, "dograph", steps=4, update_every=2, probe_per_domain=2,
                     target_per_domain=1, sketch_dim=8)
    counts = syncs_per_step(loop)
    probes = [step for step in counts if loop.strategy.signal_due("example_gradient_features", step)]
    assert probes == [2] and len(counts) == 4
    assert all(counts[step] == 0 for step in counts if step not in probes)


def test_doremi_and_doge_proxies_wait_once_per_step(built_data, tmp_path, reference_model):
    doremi = make_loop(built_data, tmp_path / "doremi", "doremi", stage="proxy", upstream_dir=reference_model, steps=2)
    assert syncs_per_step(doremi) == {1: 1, 2: 1}
    doge = make_loop(built_data, tmp_path / "doge", "doge", stage="proxy", steps=2)
    assert syncs_per_step(doge) == {1: 1, 2: 1}


def test_a_lagged_nan_still_names_its_step(built_data, tmp_path):
    from mixbench.errors import TrainingError

    loop = make_loop(built_data, tmp_path, "uniform")
    with torch.no_grad():
        loop.raw_model.transformer.ln_f.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"non-finite loss at step 1 on domain"):
        loop.run()
    assert not list((tmp_path / "checkpoints").glob("step*"))  # nothing saved after a NaN


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", ["uniform", "dograph"])
def test_on_a_gpu_cuda_sees_no_synchronisation_in_a_static_step(built_data, tmp_path, name):
    hparams = {"update_every": 100} if name == "dograph" else {}
    loop = make_loop(built_data, tmp_path, name, device="cuda", **hparams)
    loop.train_step(1e-3)  # the first step allocates and pins: CUDA's set-up may synchronise
    loop.state.step += 1
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            loop.train_step(1e-3)
            loop.state.step += 1
    finally:
        torch.cuda.set_sync_debug_mode("default")
