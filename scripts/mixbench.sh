#!/usr/bin/env bash
# Set up a fresh Debian machine and run the benchmark or the tests. Safe to rerun: every
# step checks what is already there and does only what is missing.
#
#   bash scripts/mixbench.sh benchmark [snakemake args...]   corpus packages + venv, then `snakemake --cores all`
#   bash scripts/mixbench.sh rehearsal [snakemake args...]   the paper grid's DAG at CPU scale (config/rehearsal.yaml)
#   bash scripts/mixbench.sh test [pytest args...]           venv, then the test suite
#   bash scripts/mixbench.sh setup                            venv (and the system libraries it needs) only
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="$repo/.venv"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

ensure_python() {
    # Debian's python3 is 3.11 on bookworm; the venv module ships separately.
    if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        $sudo apt-get update
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv
    fi
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "mixbench needs Python >= 3.11, found $(python3 --version)" >&2; exit 1; }
}

ensure_libraries() {
    # tcmalloc: CPU training and evaluation jobs preload it (mixbench/allocator.py), about a
    # quarter faster; looked for with the allocator's own search (standard library only).
    # libgomp1: the OpenMP runtime LightGBM's wheel links to (RegMix's regressor).
    missing=()
    PYTHONPATH="$repo" python3 -c 'import sys; from mixbench.allocator import find_tcmalloc; sys.exit(find_tcmalloc() is None)' \
        || missing+=(libtcmalloc-minimal4)
    [ "$(dpkg-query -W -f='${db:Status-Status}' libgomp1 2>/dev/null || true)" = "installed" ] || missing+=(libgomp1)
    if [ ${#missing[@]} -gt 0 ]; then
        $sudo apt-get update
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
}

ensure_venv() {
    ensure_python
    ensure_libraries
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    # Reinstall only when requirements.txt changed since the last successful install.
    stamp="$venv/.requirements.sha256"
    want="$(sha256sum requirements.txt | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        "$venv/bin/python" -m pip install --quiet --upgrade pip
        "$venv/bin/python" -m pip install --quiet -r requirements.txt
        echo "$want" > "$stamp"
    fi
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
    setup)
        ensure_venv ;;
    benchmark)
        ensure_venv
        PYTHON="$venv/bin/python" bash scripts/install-debian-packages.sh data/debs
        exec "$venv/bin/snakemake" --cores all "$@" ;;
    rehearsal)
        ensure_venv
        PYTHON="$venv/bin/python" bash scripts/install-debian-packages.sh data/debs
        exec "$venv/bin/snakemake" --cores all --configfiles config/paper.yaml config/rehearsal.yaml "$@" ;;
    test)
        ensure_venv
        exec "$venv/bin/python" -m pytest tests "$@" ;;
    *)
        echo "usage: bash scripts/mixbench.sh {benchmark|rehearsal|test|setup} [extra args]" >&2
        exit 2 ;;
esac
