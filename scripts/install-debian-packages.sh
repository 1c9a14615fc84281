#!/usr/bin/env bash
# Installs the Debian packages the embedded corpus is read from and downloads the .deb files it reads
# without installing them. Safe to rerun: when everything is present it changes nothing.
#
#   bash scripts/install-debian-packages.sh [DEB_DIR]     (default DEB_DIR: data/debs)
#
# The package lists come from corpus/debian.py (the one place they are defined), run with $PYTHON
# (default: the repository's .venv/bin/python, else python3).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deb_dir="${1:-data/debs}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$repo_root/.venv/bin/python" ]; then PYTHON="$repo_root/.venv/bin/python"; else PYTHON=python3; fi
fi
# PYTHONPATH instead of cd, so that a relative DEB_DIR means the caller's directory.
corpus_lists() { PYTHONPATH="$repo_root${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m corpus.debian "$@"; }
packages="$(corpus_lists --print-packages)"
debs="$(corpus_lists --print-debs)"

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

missing_packages=()
for package in $packages; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)"
    if [ "$status" != "installed" ]; then missing_packages+=("$package"); fi
done
missing_debs=()
for deb in $debs; do
    # The quoted folder is taken literally (compgen -G would read a * or [ in it as a pattern).
    found=("$deb_dir/$deb"_*.deb)
    if [ ! -e "${found[0]}" ]; then missing_debs+=("$deb"); fi
done

if [ ${#missing_packages[@]} -eq 0 ] && [ ${#missing_debs[@]} -eq 0 ]; then
    echo "All Debian corpus packages are installed and all .deb files are in $deb_dir."
    exit 0
fi

$sudo apt-get update
if [ ${#missing_packages[@]} -gt 0 ]; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing_packages[@]}"
fi
if [ ${#missing_debs[@]} -gt 0 ]; then
    mkdir -p "$deb_dir"
    # Download into a scratch folder and move on success, so an interrupted download leaves no
    # truncated .deb that a rerun would take as present.
    scratch="$(mktemp -d "$deb_dir/.download.XXXXXX")"
    trap 'rm -rf "$scratch"' EXIT
    (cd "$scratch" && apt-get download "${missing_debs[@]}")
    mv "$scratch"/*.deb "$deb_dir"/
fi
echo "Debian corpus packages ready; .deb files in $deb_dir."
