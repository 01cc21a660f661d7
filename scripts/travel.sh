#!/usr/bin/env bash
# Fill .travel/ (git-ignored) with what a GPU machine that receives only a copy of the checkout needs and cannot
# download: the offline data, fastcore, the Jupyter stack for `papermill nbs/train.ipynb`, and airbench.
#
#   bash scripts/travel.sh [--data ARCHIVE | --no-data] [--python-version 3.12] [--no-jupyter] [--dest DIR]
#
# --data            the data archive to take (default ../shared/data/cifar10-jpeg.tar.xz); --no-data takes none
# --python-version  the GPU machine's Python, for the wheels (default 3.12; x86_64, manylinux)
# --no-jupyter      leave out the Jupyter wheels (the GPU script then trains with python -m attnresnet.train)
# --dest            where to write (default .travel; tests write elsewhere)
#
# Writes .travel/cifar10-jpeg.tar.xz, .travel/fastcore-*.whl, .travel/airbench-*.whl and .travel/wheels/ (the exact
# versions listed in scripts/gpu-jupyter.txt), then prints the size of what travels. Needs pip's package index (PyPI),
# here: on the GPU machine scripts/gpu_run.sh installs from .travel/ with no network.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data/cifar10-jpeg.tar.xz; PYV=3.12; JUPYTER=1; DEST=.travel
while [ $# -gt 0 ]; do
  case $1 in
    --data) DATA=${2:?--data needs an archive}; shift 2 ;;
    --python-version) PYV=${2:?--python-version needs a version such as 3.12}; shift 2 ;;
    --no-data) DATA=""; shift ;;
    --no-jupyter) JUPYTER=0; shift ;;
    --dest) DEST=${2:?--dest needs a folder}; shift 2 ;;
    *) echo "travel.sh: unknown argument $1 (--data, --no-data, --python-version, --no-jupyter, --dest)" >&2; exit 2 ;;
  esac
done
[[ "$PYV" =~ ^3\.[0-9]+$ ]] || { echo "travel.sh: --python-version $PYV: give major.minor, such as 3.12" >&2; exit 2; }
[ -z "$DATA" ] || [ -f "$DATA" ] || { echo "travel.sh: --data $DATA is not a file: give the cifar10-jpeg.tar.xz archive" >&2; exit 2; }
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
mkdir -p "$DEST"
[ -z "$DATA" ] || cp -u "$DATA" "$DEST/"
# fastcore: pure Python, the one runtime package such a machine lacks; the version installed here
fc=$("$PY" -c "import fastcore; print(fastcore.__version__)" 2>/dev/null || echo "")
"$PY" -m pip download -q --no-deps -d "$DEST" "fastcore${fc:+==$fc}"
if [ $JUPYTER = 1 ]; then
  tag=cp${PYV/./}
  plats=(); for p in manylinux_2_28 manylinux_2_27 manylinux_2_26 manylinux_2_17 manylinux2014 manylinux_2_12 manylinux2010 \
                     manylinux_2_5 manylinux1; do plats+=(--platform "${p}_x86_64"); done
  rm -rf "$DEST/wheels"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp --abi "$tag" --abi abi3 \
    --abi none "${plats[@]}" -d "$DEST/wheels" -r scripts/gpu-jupyter.txt
fi
# airbench (the peer of `python -m attnresnet.peer`) is published as source only: built here into a pure-Python wheel
"$PY" -m pip wheel -q --no-deps -w "$DEST" airbench==0.1.8
du -sh "$DEST"
total=$(( $(du -sb "$DEST" | cut -f1) + $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) ))
echo "what travels (checkout + $DEST/): $(( total / 1048576 )) MiB of the 64 MiB a device call takes"
[ $total -lt $(( 60 * 1048576 )) ] || { echo "travel.sh: over 60 MiB: leave out the Jupyter wheels (--no-jupyter)" >&2; exit 1; }
