"""One writer per run folder: a second trainer exits at once naming the holder, and the lock
goes with its holder however it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO
from mixbench.runlock import LOCK_NAME, RunFolderBusy, RunLock

HOLD = "import sys, time; from mixbench.runlock import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"


def hold_in_another_process(folder) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_trainer_exits_at_once_naming_the_holder(built_data, tmp_path):
    out = tmp_path / "run"
    holder = hold_in_another_process(out)
    try:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(built_data))
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "models.train", "--config", str(config), "--size", "test", "--strategy", "uniform",
             "--seed", "0", "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"error: {out} is already being written by PID {holder.pid} on " in second.stderr
        assert not (out / "log.csv").exists()  # it trained nothing
        print(f"refused after {time.monotonic() - started:.1f} s")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("death", [signal.SIGKILL, signal.SIGTERM])
def test_the_lock_goes_with_its_holder_whatever_killed_it(tmp_path, death):
    holder = hold_in_another_process(tmp_path)
    with pytest.raises(RunFolderBusy, match=f"PID {holder.pid} "):
        RunLock(tmp_path).acquire()
    holder.send_signal(death)
    holder.wait()
    with RunLock(tmp_path) as lock:  # free again, with no one cleaning up after the dead process
        assert (tmp_path / LOCK_NAME).read_text().startswith(f"PID {os.getpid()} ")
    assert lock._fd is None
