#!/usr/bin/env bash
# Regenerates the shipped tuned configurations of one system, resuming its Optuna studies:
#   bash scripts/tune.sh ks            (or kolmogorov)
# Studies live in tuning/<pde>.db (committed); the result is ardm_infer/tuned/<pde>.json.
# Strategies run cheapest first, each over the six regimes; budgets are per (regime,
# strategy) study: trials and seconds, whichever ends first.  The chosen setting of each study
# must then run the evaluation horizon (KS 140, Kolmogorov 60 frames) on validation
# trajectories (KS 8, Kolmogorov its 4) without blowing up, else the next best is taken
# (--confirm-horizon, --confirm-trajectories).  A killed
# run loses only the trial in flight.  One core: OMP_NUM_THREADS=1 (set below).
set -euo pipefail
cd "$(dirname "$0")/.."
PDE=${1:?usage: bash scripts/tune.sh ks|kolmogorov}
PY=${PYTHON:-.venv/bin/python}
REGIMES="sparse;dense;random;sparse-gappy;dense-gappy;random-gappy"
case "$PDE" in
  ks)
    SIZES=(--horizon 64 --members 8 --validation-trajectories 4 --chunks 2 --confirm-horizon 140 --confirm-trajectories 8)
    TRIALS="enkf=20,controller=12,smc=12,dps=12,vc=4"
    SECONDS_="enkf=600,controller=300,smc=600,dps=900,vc=900"
    ;;
  kolmogorov)
    SIZES=(--horizon 24 --members 8 --validation-trajectories 4 --chunks 2 --confirm-horizon 60)
    TRIALS="enkf=12,controller=6,smc=8,dps=8,vc=3"
    SECONDS_="enkf=900,controller=600,smc=900,dps=1200,vc=1800"
    ;;
  *) echo "unknown system $PDE (ks or kolmogorov)" >&2; exit 2 ;;
esac
STRATEGIES=${STRATEGIES:-forecast,enkf,controller,smc,dps,vc}
OMP_NUM_THREADS=1 "$PY" -m ardm_infer.cli tune --pde "$PDE" --regimes "$REGIMES" \
  --strategies "$STRATEGIES" --trials "$TRIALS" --seconds "$SECONDS_" "${SIZES[@]}" \
  --storage "tuning/$PDE.db" --out "ardm_infer/tuned/$PDE.json"
