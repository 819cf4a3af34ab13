"""What the shipped tuned settings hold: per (regime, strategy) the validation scores, trials
and tuning time, and the total time per system.

    python scripts/tuning_summary.py [ks kolmogorov ...]

Reads ``ardm_infer/tuned/<pde>.json`` (verified against the shipped ARDM's card).  The last
line per system is ``pde=<p> entries=<n> trusted=<n> tuning_hours=<h>``; ``tuning_hours`` sums
the wall time of every finished trial (Optuna's timestamps, all sessions).
"""

from __future__ import annotations

import sys

from ardm_infer import load_ardm
from ardm_infer.systems import get_system
from ardm_infer.tuning import load_tuned, shipped_tuned_path


def main(pdes: list[str]) -> None:
    for pde in pdes:
        system = get_system(pde)
        path = shipped_tuned_path(system.name)
        if path is None:
            print(f"pde={system.name} entries=0 trusted=0 tuning_hours=0")
            continue
        payload = load_tuned(path, load_ardm(system.shipped_ardm).card["sha256"])
        total = 0.0
        entries = trusted = 0
        print(f"{system.name}: {path} (protocol {payload['protocol']})")
        for regime, by_strategy in payload["entries"].items():
            for name, entry in by_strategy.items():
                entries += 1
                trusted += bool(entry["trusted"])
                seconds = float(entry.get("seconds", 0.0))
                total += seconds
                flag = "" if entry["trusted"] else "  UNTRUSTED"
                print(
                    f"  {regime:>13}  {name:10}  CRPS {entry['validation_crps']:.4g}  "
                    f"RMSE {entry['validation_rmse']:.4g}  trials {entry['trials']:3d} "
                    f"({entry['complete_trials']} complete)  {seconds / 60:6.1f} min  "
                    f"{entry['config']}{flag}"
                )
        print(
            f"pde={system.name} entries={entries} trusted={trusted} tuning_hours={total / 3600:.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["ks", "kolmogorov"])
