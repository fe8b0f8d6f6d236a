"""Compare bound designs on the outcomes `cache_shift_outcomes.py` wrote (issue 20, item 3).

    python scripts/cache_shift_bounds.py --dir runs/cache-shift [--json]

Designs (every one uses only calibration parts):
- `pooled-written`: the shipped rule, one pooled table of the hand-written and mock
  calibration halves and the written calibration pairs;
- `pooled-all`: the same with QQP's calibration part pooled in;
- `worst-form`: the highest of each form's own bound and the pooled one (a form whose
  own data cannot certify δ keeps only the pooled bound: `worst-form-certified`
  instead refuses every non-exact hit there).

Selection is leave-one-form-out on the calibration parts: bounds from all forms but
one, realised wrong share on the one left out. The evaluation parts are only reported.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cache.calibration import Outcomes, derive_bound, realised
from cache.verifier import CONFIDENCE

DELTAS = (0.02, 0.05, 0.10)
FORMS = ("handwritten", "mock", "written", "qqp")


def bound(parts: dict[str, Outcomes], design: str, delta: float) -> float:
    pooled = Outcomes.pooled(list(parts.values()))
    base = derive_bound(pooled.prob, pooled.right, pooled.n_positive, delta, CONFIDENCE)
    if design.startswith("pooled"):
        return base.threshold
    own = []
    for o in parts.values():
        b = derive_bound(o.prob, o.right, o.n_positive, delta, CONFIDENCE)
        if b.calib_hits or design == "worst-form-certified":
            own.append(b.threshold)
    return max([base.threshold, *own])


def designs(calib: dict[str, Outcomes]) -> dict[str, dict[str, Outcomes]]:
    written = {k: v for k, v in calib.items() if k != "qqp"}
    return {"pooled-written": written, "pooled-all": calib, "worst-form": calib,
            "worst-form-certified": calib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("runs/cache-shift"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    calib = {f: Outcomes.load(args.dir / f"calib_{f}.npz") for f in FORMS}
    evals = {f: Outcomes.load(args.dir / f"eval_{f}.npz") for f in ("handwritten", "mock", "qqp")
             if (args.dir / f"eval_{f}.npz").is_file()}
    out: dict[str, dict[str, object]] = {"leave_one_form_out": {}, "evaluation": {}}
    for name, parts in designs(calib).items():
        loo: dict[str, object] = {}
        for delta in DELTAS:
            rows = {}
            for held in parts:
                rest = {k: v for k, v in parts.items() if k != held}
                rows[held] = realised(calib[held], bound(rest, name, delta))
            loo[str(delta)] = rows
        out["leave_one_form_out"][name] = loo
        ev: dict[str, object] = {}
        for delta in DELTAS:
            t = bound(parts, name, delta)
            pooled = Outcomes.pooled(list(parts.values()))
            exp = realised(pooled, t)
            ev[str(delta)] = {"threshold": t, "expected_share": exp["share"],
                              **{f: realised(o, t) for f, o in evals.items()}}
        out["evaluation"][name] = ev
    if args.json:
        print(json.dumps(out))
        return
    for section, table in out.items():
        print(f"== {section}")
        for name, per_delta in table.items():  # type: ignore[union-attr]
            for delta, rows in per_delta.items():
                cells = []
                for k, v in rows.items():
                    if isinstance(v, dict):
                        cells.append(f"{k} {v['share']:.3f} ({v['hits']} hits, "
                                     f"recall {v['recall']:.2f})")
                    else:
                        cells.append(f"{k} {v:.3f}")
                print(f"{name:22s} δ {delta:5s} " + "; ".join(cells))


if __name__ == "__main__":
    main()
