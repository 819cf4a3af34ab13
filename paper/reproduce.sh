#!/usr/bin/env bash
# Regenerates every number and figure in paper/README.md from the shipped checkpoints.
#
#   bash paper/reproduce.sh            # writes results/paper/* and paper/figures/*
#
# Cells are saved as they finish, so rerunning after an interruption resumes.  Measured
# run time on the 2-core CPU machine of this project is stated in paper/README.md.
# Sizes (trajectories) can be changed with KS_TRAJ, KOL_TRAJ, LONG_TRAJ, REGIME_TRAJ.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
KS_TRAJ=${KS_TRAJ:-2}
KOL_TRAJ=${KOL_TRAJ:-1}
LONG_TRAJ=${LONG_TRAJ:-1}
REGIME_TRAJ=${REGIME_TRAJ:-1}
OUT=results/paper
mkdir -p "$OUT" paper/figures

# Claims 1-3: accuracy vs forecast and dps on six regimes, cost, long-horizon stability.
$PY benchmarks/controller_claims.py --pde ks --trajectories "$KS_TRAJ" \
  --long-trajectories "$LONG_TRAJ" --long-members 4 --out "$OUT/claims_ks" | tee "$OUT/claims_ks.txt"
$PY benchmarks/controller_claims.py --pde kolmogorov --trajectories "$KOL_TRAJ" --vc-frames 4 \
  --out "$OUT/claims_kolmogorov" | tee "$OUT/claims_kolmogorov.txt"

# Beyond the paper: one controller across regimes vs one trained on a single regime.
# Same budget as the shipped KS controller: the 400-step preset schedule stopped at 300.
SINGLE=runs/controller-ks-sparse300
if [ ! -f "$SINGLE/controller-ks.safetensors" ]; then
  .venv/bin/ardm-infer train-controller --pde ks --regimes sparse --out "$SINGLE" --stop-after 300
  .venv/bin/ardm-infer train-controller --pde ks --regimes sparse --out "$SINGLE" --steps 300
fi
$PY benchmarks/controller_regimes.py --single "$SINGLE/controller-ks.safetensors" \
  --trajectories "$REGIME_TRAJ" --out "$OUT/regimes_ks" | tee "$OUT/regimes_ks.txt"

# Tables and figures of each run (report.md + figures/).
for run in claims_ks/short claims_kolmogorov/short regimes_ks; do
  .venv/bin/ardm-infer report "$OUT/$run" > /dev/null
done
cp "$OUT/claims_ks/long_horizon_rmse.png" paper/figures/ks_long_horizon_rmse.png
cp "$OUT/claims_ks/short/figures/rmse_time.png" paper/figures/ks_rmse_time.png
cp "$OUT/claims_ks/short/figures/hovmoller_"*.png paper/figures/
cp "$OUT/claims_ks/short/figures/accuracy_cost.png" paper/figures/ks_accuracy_cost.png
cp "$OUT/claims_kolmogorov/short/figures/rmse_time.png" paper/figures/kolmogorov_rmse_time.png
cp "$OUT/claims_kolmogorov/short/figures/vorticity_"*.png paper/figures/
echo "done: $OUT/*.txt, $OUT/*/report.md, paper/figures/"
