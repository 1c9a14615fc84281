"""Inputs that used to end in a traceback end in one line naming the file and the fix: a write
that finds no room (file-size limit, full disk) in the corpus build, the token build, a
checkpoint and the tables; a corrupt corpus source; two Snakemake command lines.

Each runs the real entry point in a subprocess: a file-size limit is set with setrlimit (Python
ignores SIGXFSZ, so the write raises EFBIG), a full disk by a driver whose ``open`` gives files
written under one folder a ``write`` that raises ENOSPC, as the kernel would."""

from __future__ import annotations

import gzip
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURE_CORPUS, REPO, make_test_config, snakemake, write_config

# Runs a module as `python -m` would, after making every file opened for writing under
# argv[1] fail its writes with ENOSPC.
FULL_DISK_DRIVER = """
import builtins, errno, io, os, runpy, sys
full = os.path.abspath(sys.argv[1])
real_open = io.open

class FullDisk:
    def __init__(self, file):
        self._file = file
    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    def __getattr__(self, name):
        return getattr(self._file, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self._file.close()
    def __iter__(self):
        return iter(self._file)

def open_on_full_disk(file, mode="r", *args, **kwargs):
    opened = real_open(file, mode, *args, **kwargs)
    writing = any(c in mode for c in "wax+")
    if writing and isinstance(file, (str, os.PathLike)) and os.path.abspath(file).startswith(full + os.sep):
        return FullDisk(opened)
    return opened

builtins.open = io.open = open_on_full_disk
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def run_module(module: str, *args, file_size_limit: int | None = None, full_disk_under: Path | None = None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if full_disk_under is not None:
        command = [sys.executable, "-c", FULL_DISK_DRIVER, str(full_disk_under), module, *map(str, args)]
    else:
        command = [sys.executable, "-m", module, *map(str, args)]

    def limit():
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, resource.RLIM_INFINITY))

    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit)


def error_line(result, prefix: str = "error: ") -> str:
    """The one line a failed command ends with: no traceback before it, nothing after it."""
    assert result.returncode != 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and '  File "' not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(prefix), result.stderr[-2000:]
    return line


@pytest.fixture
def data_copy(built_data, tmp_path) -> tuple[dict, Path]:
    """The session's built data copied under tmp_path, and a config file that reads it."""
    shutil.copytree(built_data["data_dir"], tmp_path / "data")
    config = make_test_config(tmp_path)
    return config, write_config(tmp_path / "config.yaml", config)


def test_corpus_build_at_the_file_size_limit_names_the_file_and_the_limit(tmp_path):
    config_file = write_config(tmp_path / "config.yaml", make_test_config(tmp_path))
    line = error_line(run_module("corpus.build", "--config", config_file, file_size_limit=20_000))
    # The spool file being written (corpus/spool.py), found by main_guard in the failed write's frames.
    assert f"cannot write {tmp_path / 'data' / 'corpus.partial'}/" in line
    assert "file-size limit (ulimit -f: 20,000 bytes); 20,000 bytes written" in line and "raise the limit" in line


def test_token_build_on_a_full_disk_names_the_token_file_and_the_free_space(data_copy, tmp_path):
    config, config_file = data_copy
    shutil.rmtree(tmp_path / "data" / "tokens")
    line = error_line(run_module("corpus.tokens", "--config", config_file, full_disk_under=tmp_path / "data" / "tokens"))
    assert f"cannot write {tmp_path / 'data' / 'tokens'}/" in line and ".bin: no space left on the disk of" in line
    assert "bytes free there; 0 bytes written when it failed); free space there" in line
    assert not list((tmp_path / "data" / "tokens").glob(".*.tmp"))  # the temporary is gone


def test_checkpoint_at_the_file_size_limit_names_the_checkpoint(data_copy, tmp_path):
    _, config_file = data_copy
    out = tmp_path / "run"
    # Over the logs' size, under the checkpoint's tensors (~380 kB for the test model).
    result = run_module("models.train", "--config", config_file, "--size", "test", "--strategy", "uniform",
                        "--seed", "0", "--out", out, "--stop-after", "1", file_size_limit=100_000)
    line = error_line(result)
    assert f"cannot write {out / 'checkpoints' / 'step000001'}: it would exceed the file-size limit" in line
    assert not (out / "checkpoints" / "step000001").exists()


def test_tables_on_a_full_disk_name_the_table(tmp_path):
    from run_fixture import write_grid
    from strategies import grid_config

    config = grid_config.validate(make_test_config(tmp_path))
    write_grid(config)
    config_file = write_config(tmp_path / "config.yaml", make_test_config(tmp_path))
    tables = tmp_path / "results" / "tables"
    line = error_line(run_module("eval.analysis.aggregate", "--config", config_file, full_disk_under=tables))
    assert f"cannot write {tables}/" in line and ": no space left on the disk of" in line


def test_main_guard_names_the_file_of_an_oserror_outside_atomic_writes(capsys):
    import errno

    from mixbench.cli import main_guard

    @main_guard
    def main(argv=None):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/somewhere/out.bin")

    with pytest.raises(SystemExit) as exit_:
        main([])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "cannot write /somewhere/out.bin: the disk quota of / is used up" in err and "quota -s" in err


def corpus_source(tmp_path: Path, source: Path) -> Path:
    return write_config(tmp_path / "config.yaml", make_test_config(tmp_path, corpus={"path": str(source)}))


def test_a_parquet_source_that_is_not_parquet_is_named(tmp_path):
    source = tmp_path / "shard.parquet"
    source.write_bytes(os.urandom(4096))
    line = error_line(run_module("corpus.build", "--config", corpus_source(tmp_path, source)))
    assert line.startswith(f"error: {source}: not a readable parquet file (") and "copy or download it again" in line


def test_a_truncated_gz_source_is_named(tmp_path):
    source = tmp_path / "shard.jsonl.gz"
    source.write_bytes(gzip.compress(FIXTURE_CORPUS.read_bytes())[:3000])
    line = error_line(run_module("corpus.build", "--config", corpus_source(tmp_path, source)))
    assert line.startswith(f"error: {source}: truncated or corrupt .gz file (Compressed file ended")


def test_a_truncated_zst_source_is_named_and_a_whole_one_of_several_frames_is_read(tmp_path):
    import zstandard

    from corpus.records import read_jsonl
    from mixbench.errors import DataError

    lines = FIXTURE_CORPUS.read_bytes().splitlines(keepends=True)[:60]
    frames = [zstandard.ZstdCompressor().compress(b"".join(lines[i:i + 20])) for i in range(0, 60, 20)]
    whole, cut = tmp_path / "whole.jsonl.zst", tmp_path / "cut.jsonl.zst"
    whole.write_bytes(b"".join(frames))
    cut.write_bytes(b"".join(frames)[:-10])  # the last frame loses its end
    assert sum(1 for _ in read_jsonl(str(whole), "text", "domain")) == 60
    with pytest.raises(DataError, match=rf"^{re.escape(str(cut))}: truncated or corrupt \.zst file \(the file ends "
                                        r"inside a frame"):
        list(read_jsonl(str(cut), "text", "domain"))


def test_a_target_naming_a_stage_its_strategy_lacks_is_one_line(tmp_path):
    config_file = write_config(tmp_path / "config.yaml", make_test_config(tmp_path))
    target = tmp_path / "runs" / "test" / "uniform" / "seed0" / "proxy" / "run.json"
    line = error_line(snakemake(tmp_path, config_file, "-n", str(target)), prefix="mixbench: ")
    assert f"no run {tmp_path / 'runs'}/test/uniform/seed*/proxy in this grid" in line
    assert "strategy 'uniform' has no stage 'proxy'; its runs: final" in line


def test_a_runs_dir_that_cannot_be_created_is_one_line(tmp_path):
    config_file = write_config(tmp_path / "config.yaml", make_test_config(tmp_path))
    runs = tmp_path / "config.yaml" / "runs"  # under a file
    line = error_line(snakemake(tmp_path, config_file, "-n", "--config", f"runs_dir={runs}"), prefix="mixbench: ")
    assert line.startswith(f"mixbench: cannot write {runs}/configs/") and "Not a directory" in line
    assert f"set runs_dir (now '{runs}')" in line


def test_atomic_dir_names_the_file_of_its_folder_that_found_no_room(tmp_path):
    import errno

    from mixbench.errors import StorageError
    from mixbench.io import atomic_dir

    target = tmp_path / "model"
    with pytest.raises(StorageError) as error:
        with atomic_dir(target) as tmp:
            (tmp / "weights.bin").write_bytes(b"x" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / "weights.bin"))
    message = str(error.value)
    assert message.startswith(f"cannot write {target / 'weights.bin'}: no space left on the disk of {tmp_path} (")
    assert "bytes free there; 100 bytes written when it failed); free space there" in message
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(target / "weights.bin")
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary
