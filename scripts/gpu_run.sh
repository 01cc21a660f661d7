#!/usr/bin/env bash
# One GPU quarter-hour -> one archive of results. Runs from a plain checkout on a bare GPU machine (python3 with torch,
# torchvision, numpy, matplotlib, tqdm, pytest; no Jupyter, no network, package not installed: PYTHONPATH=.;
# fastcore comes as a wheel in .travel/).
#
#   bash scripts/gpu_run.sh OUT [--budget SECONDS] [--data FOLDER_OR_TAR_XZ] [--work DIR] [--steps LIST]
#                               [--fast-budget SECONDS] [--fast-seeds N] [--grid-epochs E] [--grid-seeds N]
#                               [--grid-jobs J] [--smoke]
#
# OUT       where gpu-results.tar.gz (everything below) and steps.txt go; nothing else is written there
# --budget  seconds the whole script may take (default 420; 300 with --smoke); every step is time-boxed to fit
# --data    an image-folder root (train/<class>/, test/<class>/) or a .tar.xz of one
#           (default: .travel/cifar10-jpeg.tar.xz, else ../shared/data/cifar10-jpeg)
# --work    scratch folder for unpacked data, caches and checkpoints (default: a new temporary folder)
# --steps   which of tests,speed,bench,peer,train,fast,grid,concurrency,sweep,compile,paper500 to run (default all but
#           grid, concurrency, sweep and paper500; env and data always run)
# --fast-budget  seconds of training for each fast-recipe run and each sweep run (default 120; 4 with --smoke)
# --fast-seeds   how many fast-recipe runs (seeds 0, 1, ...) at most, as time allows (default 3; 1 with --smoke)
# --grid-epochs  epochs of every run of the ablation grid (default 20; 1 with --smoke): the grid's fixed budget,
#                which names its folder, results/gpu/grid-<E>ep/
# --grid-seeds   seeds per configuration the grid aims at (default 3); runs come seed by seed
# --grid-jobs    grid runs at a time on the one GPU (default auto: the concurrency step's best count, else 1)
# --smoke   every step at toy scale on the CPU (about two minutes): the test suite runs this, so the script cannot rot
#
# Training runs go through the project's main job, `papermill nbs/train.ipynb` (the executed notebook stays in each
# run folder and comes back), when papermill can be had: already installed, or installed offline (step `jupyter`)
# from the wheels scripts/travel.sh puts in .travel/wheels/; otherwise through python -m attnresnet.train.
#
# Steps, in order, each with its own time box; the archive is rewritten after each and every 30 s during one
# (GPU_RUN_SNAPSHOT=seconds), so a step that runs out of time, or a command killed at its limit, still leaves the
# earlier steps' results and what the current one has written (paper500's history too):
#   env      nvidia-smi, card, torch/CUDA versions
#   jupyter  papermill and ipykernel from .travel/wheels/ into a venv that sees the machine's torch (when needed)
#   data     unpack the archive, decode and cache the images (timed)
#   tests    pytest -m gpu: fast path = eager fp32 within bf16 tolerance; augmentation CUDA == CPU; no host sync per step;
#            the CUDA-graph step (attnresnet.step) against the same step without a graph and against train_step
#   speed    the training step's rows: eager, graph, + cudnn.benchmark, + padded channels, + matmul attention, the full
#            trainer (with validation at three batch sizes), + compile (python -m attnresnet.step; step-bench.md, .json)
#   bench    eager settings, trainer vs bare loop, torch.profiler table and GPU busy fraction (python -m attnresnet.bench)
#   peer     airbench94 (python -m attnresnet.peer) trained 5 times on the same data and card, beside this trainer
#            (airbench comes as a wheel in .travel/, from scripts/travel.sh; with --smoke only the data export runs)
#   train    the paper's recipe on the full data for E epochs, E chosen from a measured 1-epoch probe to end inside the box
#   fast     the fast recipe (TrainConfig recipe="fast", time_budget), one run per seed while time is left
#   concurrency (only when named) 1, 2 and 4 copies of one 2-epoch run of the paper's recipe at once on the GPU
#            (attnresnet.study.measure_concurrency): whether 2 or 4 runs at once finish a grid sooner; concurrency/,
#            whose best count (attnresnet.study.best_concurrency) the grid then takes unless --grid-jobs is given
#   grid     the ablation grid (nbs/ablations.ipynb) at --grid-epochs, skipping the runs already committed in
#            results/gpu/grid-<E>ep/, starting runs while they fit in the time left; scripts/gpu_results.py adds the
#            new ones to that folder, so the grid fills up session by session (only when --steps names it); then
#            nbs/report.ipynb draws the grid's figures and tables into grid-<E>ep/figures/ (Figure 4 from the longest run of
#            the paper's recipe), which scripts/gpu_results.py makes the README's figures/
#   sweep    (only when named) the fast recipe one setting at a time (attnresnet.study.sweep_runs: learning rate, weight
#            decay, batch size, epochs, then each short-run technique alone; six-view TTA beside the plain test) at
#            --fast-budget seconds of training a run, seed by seed up to --fast-seeds,
#            skipping the runs already committed in results/gpu/sweep-<S>s/ and starting runs while they fit; its table
#            is sweep-<S>s/sweep.md, and scripts/gpu_results.py adds the new runs to that folder (as the grid's)
#   compile  the benchmark's torch.compile and CUDA-graph rows (last: compiling costs minutes, training comes first)
#   paper500 (only when named) the paper's recipe for 500 epochs on the full split in runs/paper500 of the checkout
#            (git-ignored, so a warm device machine keeps it between commands; $GPU_RUN_PAPER500 names another
#            folder): it trains until its time box ends and
#            the next command with the same step resumes from its last.pt, for example
#              bash scripts/gpu_run.sh $OUT --steps tests,speed,paper500 --budget 560 --work runs/gpu-work
#              bash scripts/gpu_run.sh $OUT --steps paper500 --budget SECONDS --work runs/gpu-work
#            (the second repeated until runs/paper500/metrics.json exists); history, config and metrics come back in
#            the archive. A new run takes the fastest exact setting of the speed rows in the same --work folder, else
#            of the newest committed from this card (results/gpu/*/step-bench.json; python -m attnresnet.step --long-run:
#            cudnn.benchmark, padded channels, matmul attention, the evaluation batch); a resumed run keeps its own
#            (from its config.json). Where the CUDA-graph step fails in its own code, the run goes on with --step eager
#            in the same command (the same math, slower), and later commands resume it so (step-eager.txt in the run)
set -uo pipefail

usage() { sed -n '5,24p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1; shift
BUDGET=""; DATA=""; WORK=""; SMOKE=0; STEPS=tests,speed,bench,peer,train,fast,compile; FAST_BUDGET=""; FAST_SEEDS=""
GRID_EPOCHS=""; GRID_SEEDS=3; GRID_JOBS=auto
while [ $# -gt 0 ]; do
  case $1 in
    --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
    --data) DATA=${2:?--data needs a folder or .tar.xz}; shift 2 ;;
    --work) WORK=${2:?--work needs a folder}; shift 2 ;;
    --steps) STEPS=${2:?--steps needs a list such as tests,fast}; shift 2 ;;
    --fast-budget) FAST_BUDGET=${2:?--fast-budget needs seconds}; shift 2 ;;
    --fast-seeds) FAST_SEEDS=${2:?--fast-seeds needs a number}; shift 2 ;;
    --grid-epochs) GRID_EPOCHS=${2:?--grid-epochs needs a number}; shift 2 ;;
    --grid-seeds) GRID_SEEDS=${2:?--grid-seeds needs a number}; shift 2 ;;
    --grid-jobs) GRID_JOBS=${2:?--grid-jobs needs a number}; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    *) echo "gpu_run.sh: unknown argument $1" >&2; usage ;;
  esac
done
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 2
PY=${PYTHON:-python3}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
# fastcore (pure Python, no dependencies) is the one runtime package a bare GPU machine lacks: a wheel brought in
# .travel/ (pip download fastcore --no-deps -d .travel) is importable as it is, from PYTHONPATH
if ! ${PYTHON:-python3} -c "import fastcore" 2>/dev/null; then
  for whl in "$REPO"/.travel/fastcore-*.whl; do [ -f "$whl" ] && export PYTHONPATH="$PYTHONPATH:$whl"; done
  ${PYTHON:-python3} -c "import fastcore" 2>/dev/null || { echo "gpu_run.sh: fastcore is missing: pip install fastcore, or put its wheel in .travel/ (pip download fastcore --no-deps -d .travel)" >&2; exit 2; }
fi
[ -n "$BUDGET" ] || BUDGET=$([ $SMOKE = 1 ] && echo 300 || echo 420)
[ -n "$FAST_BUDGET" ] || FAST_BUDGET=$([ $SMOKE = 1 ] && echo 4 || echo 120)
[ -n "$FAST_SEEDS" ] || FAST_SEEDS=$([ $SMOKE = 1 ] && echo 1 || echo 3)
[ -n "$GRID_EPOCHS" ] || GRID_EPOCHS=$([ $SMOKE = 1 ] && echo 1 || echo 20)
for v in GRID_EPOCHS GRID_SEEDS $([ "$GRID_JOBS" = auto ] || echo GRID_JOBS); do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "gpu_run.sh: --$(echo ${v,,} | tr _ -) ${!v}: give a whole number from 1$([ $v = GRID_JOBS ] && echo " or auto")" >&2; exit 2; }
done
[[ "$BUDGET" =~ ^[0-9]+$ ]] && [ "$BUDGET" -ge 60 ] || { echo "gpu_run.sh: --budget $BUDGET: give at least 60 seconds" >&2; exit 2; }
[[ "$FAST_BUDGET" =~ ^[0-9]+$ ]] && [ "$FAST_BUDGET" -ge 1 ] || { echo "gpu_run.sh: --fast-budget $FAST_BUDGET: give whole seconds" >&2; exit 2; }
[[ "$FAST_SEEDS" =~ ^[0-9]+$ ]] || { echo "gpu_run.sh: --fast-seeds $FAST_SEEDS: give a whole number" >&2; exit 2; }
for s in ${STEPS//,/ }; do
  case $s in tests|speed|bench|peer|train|fast|grid|concurrency|sweep|compile|paper500) ;; *) echo "gpu_run.sh: --steps: unknown step $s (tests,speed,bench,peer,train,fast,grid,concurrency,sweep,compile,paper500)" >&2; exit 2 ;; esac
done
if [ -z "$DATA" ]; then
  if [ -f .travel/cifar10-jpeg.tar.xz ]; then DATA=.travel/cifar10-jpeg.tar.xz; else DATA=../shared/data/cifar10-jpeg; fi
fi
[ -e "$DATA" ] || { echo "gpu_run.sh: --data $DATA does not exist; copy ../shared/data/cifar10-jpeg.tar.xz into .travel/" >&2; exit 2; }
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd)
RES=$WORK/results
mkdir -p "$RES/runs"
export ATTNRESNET_CACHE=$WORK/cache
START=$(date +%s)

left() { echo $((BUDGET - ($(date +%s) - START))); }
want() { [[ ",$STEPS," == *",$1,"* ]]; }
P500=${GPU_RUN_PAPER500:-$REPO/runs/paper500}  # the 500-epoch run: in the checkout (git-ignored), where a warm machine keeps it
progress() {  # copy the files of a run that lives outside results/ into it: paper500's config, history, metrics, notebook, eager marker
  [ -d "$P500" ] || return 0
  mkdir -p "$RES/runs/paper500"
  for f in config.json history.csv metrics.json train.ipynb step-eager.txt; do [ -f "$P500/$f" ] && cp "$P500/$f" "$RES/runs/paper500/"; done
  return 0
}
pack() {  # everything except checkpoints, into one archive (the device returns at most a few files), one pack at a time
  {
    command -v flock >/dev/null && flock 9
    progress
    local tmp="$OUT/gpu-results.tar.gz.$BASHPID.tmp"
    cp "$RES/steps.txt" "$OUT/steps.txt" 2>/dev/null  # first: never older than the archive
    tar -czf "$tmp" --exclude='*.pt' --exclude='*.tmp' -C "$WORK" results  # 1: a file grew while read; the archive is whole
    if [ $? -le 1 ]; then mv "$tmp" "$OUT/gpu-results.tar.gz"; else rm -f "$tmp"; fi
  } 9>"$WORK/.pack.lock"
}
# a snapshot every SNAPSHOT seconds besides the one after each step: a command killed at the device's limit (which may
# come before --budget when less device time is left) still returns what its current step has written so far
SNAPSHOT=${GPU_RUN_SNAPSHOT:-30}
# (its output goes nowhere: a `sleep` of it left behind at the end must not hold the command's output open for up to
# SNAPSHOT seconds, which would keep a finished command, and the device, waiting)
( while sleep "$SNAPSHOT"; do pack; done ) >/dev/null 2>&1 & SNAPPER=$!
trap 'kill $SNAPPER 2>/dev/null' EXIT
step() {  # step NAME SECONDS CMD...: run CMD with a time box, log to results/NAME.log, record status and time
  local name=$1 box=$2; shift 2
  local t0=$(date +%s) rc
  if [ "$box" -lt 5 ]; then echo "$name skipped: no time left" | tee -a "$RES/steps.txt"; pack; return 1; fi
  echo "== $name (time box ${box}s, $(left)s left)"
  timeout -k 10 "$box" "$@" >"$RES/$name.log" 2>&1; rc=$?
  local msg="$name rc=$rc $(( $(date +%s) - t0 ))s$([ $rc = 124 ] || [ $rc = 137 ] && echo ' (time box reached)')"
  echo "$msg" | tee -a "$RES/steps.txt"; tail -n 5 "$RES/$name.log"
  pack; return $rc
}

if [ $SMOKE = 1 ]; then
  DEVICE=cpu; TRAIN=(--tta true --width 4 --batch-size 32 --eval-batch-size 500)
  BENCH=(--device cpu --width 4 --batch-size 16 --repeats 2 --quick --synthetic)
  TESTS=(tests/test_gpu.py -v --durations=0 -p no:cacheprovider); RESERVE_COMPILE=0; SPEED=(--smoke); P500_EPOCHS=2
else
  DEVICE=cuda; TRAIN=(--tta true); BENCH=(--device cuda)  # flip TTA costs little beside a GPU run, and earlier runs report it
  TESTS=(-m gpu tests/test_gpu.py -v --durations=0 -p no:cacheprovider); RESERVE_COMPILE=100; SPEED=(--device cuda); P500_EPOCHS=500
fi
want compile || RESERVE_COMPILE=0
FAST_MARGIN=$([ $SMOKE = 1 ] && echo 90 || echo 45)  # start-up, the last epoch's overrun, the test evaluation
RESERVE_FAST=0; want fast && RESERVE_FAST=$((FAST_BUDGET + FAST_MARGIN))
echo "budget ${BUDGET}s, smoke=$SMOKE, data $DATA, work $WORK" | tee "$RES/steps.txt"

# env
step env 60 bash -c "date -u; uname -a; (nvidia-smi || echo 'no nvidia-smi'); $PY -c '
import platform, torch, torchvision, numpy
print(\"python\", platform.python_version(), \"torch\", torch.__version__, \"torchvision\", torchvision.__version__, \"numpy\", numpy.__version__)
print(\"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version(), \"available\", torch.cuda.is_available())
if torch.cuda.is_available(): p = torch.cuda.get_device_properties(0); print(\"card\", p.name, p.multi_processor_count, \"SMs\", round(p.total_memory / 2**30, 1), \"GiB\")
'; git -C '$REPO' rev-parse HEAD 2>/dev/null || echo 'no git'; git -C '$REPO' status --short 2>/dev/null | head -20"

# the training runs' launcher: papermill when importable or installable from .travel/wheels/, else python -m
JOB=python
if $PY -c "import papermill, ipykernel" 2>/dev/null; then JOB=papermill
elif [ -d "$REPO/.travel/wheels" ] && step jupyter 150 bash "$REPO/scripts/jupyter_env.sh" "$PY" "$REPO/.travel/wheels" "$WORK/venv"; then
  PY=$WORK/venv/bin/python; JOB=papermill
fi
echo "training runs: $JOB ($PY)" | tee -a "$RES/steps.txt"
papermill_job() {  # papermill_job STEP BOX NOTEBOOK OUT -p name value ...: one of the project's papermill jobs in a time box
  local name=$1 box=$2 nb=$3 out=$4; shift 4
  step "$name" "$box" $PY -m papermill "$REPO/nbs/$nb" "$out" -k python3 --log-output --no-progress-bar "$@"
}
train_run() {  # train_run STEP BOX RUN_DIR --flag value ...: one training run in a time box, as papermill job or module
  local name=$1 box=$2 run=$3; shift 3
  if [ $JOB = python ]; then step "$name" "$box" $PY -m attnresnet.train "$@" --run-dir "$run"; return; fi
  local params=() k v
  while [ $# -gt 0 ]; do  # --time-budget 8 -> -p time_budget 8; true/false -> True/False (papermill reads Python literals)
    k=${1#--}; v=$2; shift 2
    case $v in true) v=True ;; false) v=False ;; esac
    params+=(-p "${k//-/_}" "$v")
  done
  mkdir -p "$run"
  papermill_job "$name" "$box" train.ipynb "$run/train.ipynb" "${params[@]}" -p run_dir "$run"
}

# data: a folder is used in place; an archive is unpacked into the work folder
if [ -f "$DATA" ]; then
  TOP=$(tar -tJf "$DATA" 2>/dev/null | head -1 | cut -d/ -f1)
  if [ -n "$TOP" ] && [ -d "$WORK/$TOP" ]; then echo "unpack skipped: $WORK/$TOP is there (a --work folder kept from an earlier command)" | tee -a "$RES/steps.txt"
  else step unpack 90 tar -xJf "$DATA" -C "$WORK" || exit 1; fi
  DATA=$WORK/$TOP
fi
export ATTNRESNET_DATA=$DATA
step data 120 $PY -c "
import time; t = time.perf_counter()
from attnresnet.splits import load_splits
s = load_splits('$DATA'); print(s.summary()); print(f'decoded and split in {time.perf_counter() - t:.1f} s')" || exit 1

# -v: each test's outcome as it ends, so tests.log keeps them when the time box cuts the last (compiled) ones
want tests && step tests 200 $PY -m pytest "${TESTS[@]}"
want speed && step speed $([ $SMOKE = 1 ] && echo 150 || echo 300) $PY -m attnresnet.step "${SPEED[@]}" --out "$RES/step-bench.md"
want bench && step bench 120 $PY -m attnresnet.bench "${BENCH[@]}" --no-compile --profile "$RES/profile.txt" --out "$RES/bench.md"

# peer: airbench from its wheel in .travel/ when not installed (pure Python: importable from the wheel itself)
if want peer; then
  if ! $PY -c "import airbench" 2>/dev/null; then for whl in "$REPO"/.travel/airbench-*.whl; do [ -f "$whl" ] && export PYTHONPATH="$PYTHONPATH:$whl"; done; fi
  if [ $SMOKE = 1 ]; then step peer 120 $PY -m attnresnet.peer --data "$DATA" --work "$WORK/peer" --export-only
  elif $PY -c "import airbench" 2>/dev/null; then step peer 150 $PY -m attnresnet.peer --data "$DATA" --work "$WORK/peer" --runs 5 --out "$RES/peer.md"
  else echo "peer skipped: airbench is missing (scripts/travel.sh puts its wheel in .travel/)" | tee -a "$RES/steps.txt"
  fi
fi

# train: a 1-epoch probe measures the epoch (training, validation, start-up, test), then E epochs fill the box
if want train; then
  PROBE=$RES/runs/probe-1epoch
  train_run probe 120 "$PROBE" --data "$DATA" --device $DEVICE "${TRAIN[@]}" --epochs 1 --progress true
  BOX=$(( $(left) - RESERVE_COMPILE - RESERVE_FAST - 15 ))
  E=$($PY - "$PROBE" "$BOX" "$SMOKE" <<'PY'
import json, sys
from pathlib import Path
run, box, smoke = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
m = json.loads((run / "metrics.json").read_text())
steps = {l.split()[0]: l for l in (run.parent.parent / "steps.txt").read_text().splitlines()}
probe_s = int(steps["probe"].split()[2].rstrip("s"))        # the whole probe process: start-up, data, 1 epoch, test
epoch_s = m["wall_time_s"]                                  # 1 epoch with warm-up, validation and the test evaluations
fixed = max(probe_s - epoch_s, 0) + 10                      # start-up and writing, with a margin
e = int((0.9 * box - fixed) // epoch_s)                     # 10% slack: the run must end well inside its box
print(max(0, min(e, 2 if smoke else 500)))
PY
  )
  echo "train box ${BOX}s -> E=${E:-?} epochs (from the probe)" | tee -a "$RES/steps.txt"
  if [ -n "$E" ] && [ "$E" -ge 1 ]; then
    train_run train "$BOX" "$RES/runs/paper-${E}epochs" --data "$DATA" --device $DEVICE "${TRAIN[@]}" --epochs "$E" --progress true
  fi
fi

# fast recipe: one run per seed (each with --fast-budget seconds of training) while the time left allows
if want fast; then
  for ((seed = 0; seed < FAST_SEEDS; seed++)); do
    box=$((FAST_BUDGET + FAST_MARGIN))
    [ $(( $(left) - RESERVE_COMPILE )) -ge $box ] || { echo "fast-seed$seed skipped: not enough time left" | tee -a "$RES/steps.txt"; break; }
    train_run fast-seed$seed $box "$RES/runs/fast-seed$seed" --data "$DATA" --device $DEVICE "${TRAIN[@]}" --recipe fast \
      --epochs 500 --time-budget "$FAST_BUDGET" --seed $seed --progress true
  done
fi

# concurrency: the same short run 1, 2 and 4 times at once on the one GPU; the table says which --grid-jobs pays
if want concurrency; then
  box=$(( $(left) - RESERVE_COMPILE - 10 ))
  if [ $SMOKE = 1 ]; then SCALE='{"width": 4, "batch_size": 32, "epochs": 1}'; JOBS='[2]'; else SCALE='{"epochs": 2}'; JOBS='[1, 2, 4]'; fi
  step concurrency "$box" $PY -c 'import json, sys; from attnresnet.study import measure_concurrency
runs_dir, data, device, runner, jobs, scale = sys.argv[1:]
measure_concurrency(runs_dir, json.loads(jobs), runner, gpu=0 if device == "cuda" else None, data=data, device=device, **json.loads(scale))' \
    "$RES/concurrency" "$DATA" $DEVICE $([ $SMOKE = 1 ] && echo python || echo $JOB) "$JOBS" "$SCALE"  # smoke: python -m, quicker
fi

# grid: the committed runs of this budget come along and are skipped; new runs start while they fit in the time left
if want grid; then
  GRID=grid-${GRID_EPOCHS}ep; mkdir -p "$RES/$GRID"; REPORT_BOX=120  # the report after the grid: seconds kept for it
  [ -d "$REPO/results/gpu/$GRID" ] && cp -r "$REPO/results/gpu/$GRID/." "$RES/$GRID/"
  if [ "$GRID_JOBS" = auto ]; then  # the concurrency step's best count, measured in this --work folder; else one run at a time
    GRID_JOBS=1; WHY="no concurrency measured"
    if [ -f "$RES/concurrency/concurrency.json" ]; then WHY="the best of concurrency/concurrency.md"
      GRID_JOBS=$($PY -c "from attnresnet.study import best_concurrency; print(best_concurrency('$RES/concurrency'))"); fi
    echo "grid jobs: $GRID_JOBS ($WHY)" | tee -a "$RES/steps.txt"
  fi
  box=$(( $(left) - RESERVE_COMPILE - 10 - REPORT_BOX )); gpus=$(printf '0,%.0s' $(seq "$GRID_JOBS")); gpus=${gpus%,}
  [ $SMOKE = 1 ] && GRID_SCALE=(-p base_width 4 -p batch_size 32 -p only full,no_ema) || GRID_SCALE=()
  if [ $JOB = papermill ]; then
    papermill_job grid "$box" ablations.ipynb "$RES/ablations.ipynb" -p runs_dir "$RES/$GRID" -p epochs "$GRID_EPOCHS" -p seeds "$GRID_SEEDS" -p data "$DATA" -p device $DEVICE \
      -p gpus "$gpus" -p time_limit $(( box - 30 )) "${GRID_SCALE[@]}"
  else echo "grid skipped: nbs/ablations.ipynb needs papermill (scripts/travel.sh puts its wheels in .travel/)" | tee -a "$RES/steps.txt"
  fi
  # the grid's figures and tables (grid-<E>ep/figures/), while this session's runs still have their checkpoints; Figure 4
  # from the longest run of the paper's recipe among the committed GPU runs and runs/ (paper500)
  if [ $JOB = papermill ] && ls "$RES/$GRID"/full/seed*/metrics.json >/dev/null 2>&1; then
    CURVE=$($PY -c "from attnresnet.study import longest_run; print(longest_run('$REPO/results/gpu', '$REPO/runs', '$RES/$GRID') or '')")
    papermill_job report $REPORT_BOX report.ipynb "$RES/report.ipynb" -p runs_dir "$RES/$GRID" -p figures_dir "$RES/$GRID/figures" \
      -p data "$DATA" -p curve_run "$CURVE"
  fi
fi

# sweep: like the grid, the committed runs of this budget come along and are skipped; new runs start while they fit
if want sweep; then
  SWEEP=sweep-${FAST_BUDGET}s; mkdir -p "$RES/$SWEEP"
  [ -d "$REPO/results/gpu/$SWEEP" ] && cp -r "$REPO/results/gpu/$SWEEP/." "$RES/$SWEEP/"
  box=$(( $(left) - RESERVE_COMPILE - 10 ))
  [ $SMOKE = 1 ] && SCALE='{"width": 4, "batch_size": 32, "epochs": 2, "axes": {}}' || SCALE='{}'  # smoke: the recipe's own run
  step sweep "$box" $PY -c 'import json, sys; from attnresnet.study import run_sweep
runs_dir, budget, seeds, data, device, runner, limit, scale = sys.argv[1:]
run_sweep(runs_dir, float(budget), int(seeds), data, runner, float(limit), device=device, tta=True, tta_shift=2, **json.loads(scale))' \
    "$RES/$SWEEP" "$FAST_BUDGET" "$FAST_SEEDS" "$DATA" $DEVICE $JOB $(( box - 30 )) "$SCALE"
fi

if [ $SMOKE = 0 ] && want compile; then
  step compile $(( $(left) - 10 )) $PY -m attnresnet.bench "${BENCH[@]}" --no-eager --no-trainer --out "$RES/bench-compiled.md"
fi
# paper500: the paper's recipe, 500 epochs, resumed from runs/paper500/last.pt by the next command that names this step
if want paper500; then
  # the speed settings (attnresnet.step.SPEED_SETTINGS): a started run's own (its config.json), else the fastest of the
  # speed rows measured in this --work folder, else of the newest committed from this card (step.long_run_settings)
  { read -r EXACT; read -r WHY; } < <($PY -m attnresnet.step --long-run "$P500" --rows "$RES/step-bench.json" --committed results/gpu \
                                      --device $DEVICE) || WHY="${WHY:-no speed settings: python -m attnresnet.step --long-run failed}"
  # The CUDA-graph step had never run on a GPU before this script's first lease. Where it fails in its own code (a trace
  # through attnresnet/step.py, or a capture error), the run goes on at once with --step eager: the same math, so the
  # same run (`step` is not part of a run's identity), slower. The marker file makes later commands resume eagerly too.
  EAGER="$P500/step-eager.txt"
  [ -f "$EAGER" ] && EXACT="$EXACT --step eager" && WHY="$WHY; --step eager: $(cat "$EAGER")"
  echo "paper500 settings: ${EXACT:-the defaults of TrainConfig} ($WHY)" | tee -a "$RES/steps.txt"
  P500_ARGS=(--data "$DATA" --device $DEVICE "${TRAIN[@]}" --epochs $P500_EPOCHS --progress true
             --checkpoint-every 5)  # a checkpoint every 5 epochs (and after the last): a stop at the time limit redoes at most 4
  train_run paper500 $(( $(left) - 20 )) "$P500" "${P500_ARGS[@]}" $EXACT; rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 137 ] && [ ! -f "$EAGER" ] && [ ! -f "$P500/metrics.json" ] \
     && grep -qE "attnresnet/step\.py|captur" "$RES/paper500.log"; then
    echo "the CUDA-graph step failed (rc=$rc, results/paper500.log)" > "$EAGER"
    echo "paper500: the CUDA-graph step failed (rc=$rc, paper500.log); the run goes on with --step eager" | tee -a "$RES/steps.txt"
    train_run paper500-eager $(( $(left) - 20 )) "$P500" "${P500_ARGS[@]}" $EXACT --step eager
  fi
  echo "paper500: $(($(wc -l < "$P500/history.csv" 2>/dev/null || echo 1) - 1)) of $P500_EPOCHS epochs in $P500$([ -f "$P500/metrics.json" ] && echo ', finished' || echo '; run this step again to resume')" | tee -a "$RES/steps.txt"
fi
echo "done in $(( $(date +%s) - START ))s of ${BUDGET}s" | tee -a "$RES/steps.txt"
kill $SNAPPER 2>/dev/null; wait $SNAPPER 2>/dev/null; rm -f "$OUT"/gpu-results.tar.gz.*.tmp
pack
