#!/usr/bin/env bash
# A Python that can run `papermill nbs/train.ipynb` on a machine with no network: a venv holding papermill and
# ipykernel, installed offline from a wheel folder (scripts/travel.sh), that still sees the machine's own torch.
#
#   bash scripts/jupyter_env.sh PYTHON WHEELS VENV     # prints VENV's python as its last line
#
# PYTHON is the machine's interpreter (the one with torch). It may itself live in a venv, whose packages a plain
# `venv --system-site-packages` would not see: a .pth file in the new venv lists PYTHON's site folders, after the
# venv's own. pip then counts what the machine has (requests, tqdm, pyyaml...) as installed and adds only the rest.
set -euo pipefail
[ $# = 3 ] || { echo "usage: jupyter_env.sh PYTHON WHEELS VENV" >&2; exit 2; }
PY=$1 WHEELS=$2 VENV=$3
[ -d "$WHEELS" ] || { echo "jupyter_env.sh: no wheel folder $WHEELS: run scripts/travel.sh where pip can reach PyPI" >&2; exit 2; }
"$PY" -m venv --system-site-packages "$VENV"
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$PY" -c "import site; print('\n'.join(site.getsitepackages()))" > "$site/_machine_site.pth"
"$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" papermill ipykernel
"$VENV/bin/python" -c "import papermill, ipykernel; print('papermill', papermill.__version__, 'ipykernel', ipykernel.__version__)"
echo "$VENV/bin/python"
