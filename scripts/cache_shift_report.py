"""What a verifier artifact's shipped table promises and what it keeps (issue 20, item 3).

    python scripts/cache_shift_report.py --verifier FOLDER --dir OUTCOMES \
        [--held-out data/cache/shift_check/*.json] [--json]

- `left_out`: for each calibration form of the artifact's `calibration.npz`, the shipped
  rule (pooled Clopper-Pearson bound plus shift allowance) derived from the other forms
  only, and the realised wrong share and recall on the form left out: how the table
  fares on a form of traffic it never saw;
- `evaluation`: every `eval_*.npz` in OUTCOMES (`scripts/cache_shift_outcomes.py
  --verifier FOLDER --roles eval`) at the artifact's shipped bounds, beside the wrong
  share calibration expects there;
- `held_out`: each `--held-out` file of written pairs, replayed whole as `cmesh cache ship`
  replays a calibration file, at the shipped bounds: forms of traffic neither the
  training nor the table read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cache.calibration import Outcomes, realised, shifted_bound
from cache.verifier import CONFIDENCE, CrossVerifier
from cmesh.cache_eval import encoder, written_outcomes

DELTAS = (0.02, 0.05, 0.10)


def at(o: Outcomes, threshold: float, **extra: float) -> dict[str, float]:
    return {"bound": round(threshold, 4), **realised(o, threshold), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--verifier", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--held-out", type=Path, nargs="*", default=[])
    parser.add_argument("--embeddings", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    table = Outcomes.load(args.verifier / "calibration.npz")
    forms = table.split_forms()
    bounds = json.loads((args.verifier / "verifier.json").read_text())["bounds"]
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {"left_out": {},
                                                             "evaluation": {},
                                                             "held_out": {}}

    def shipped(o: Outcomes) -> dict[str, Any]:
        return {str(d): at(o, bounds[str(d)]["threshold"],
                           expected=bounds[str(d)]["expected_wrong_share"]) for d in DELTAS}

    for held, form in enumerate(forms):
        rest = Outcomes.pooled([f for j, f in enumerate(forms) if j != held])
        out["left_out"][form.source] = {
            str(d): at(form, shifted_bound(rest, d, CONFIDENCE).threshold) for d in DELTAS}
    for path in sorted(args.dir.glob("eval_*.npz")):
        o = Outcomes.load(path)
        out["evaluation"][o.source] = shipped(o)
    if args.held_out:
        verifier, encode = CrossVerifier.load(args.verifier), encoder(args.embeddings)
        for path in args.held_out:
            out["held_out"][path.name] = shipped(written_outcomes(path, verifier, encode,
                                                                  path.name))
    if args.json:
        print(json.dumps(out))
        return
    for section, parts in out.items():
        print(f"== {section}")
        for name, rows in parts.items():
            cells = "; ".join(f"δ {d}: {r['share']:.3f} ({r['wrong']}/{r['hits']}, recall "
                              f"{r['recall']:.2f}, bound {r['bound']:.3f})"
                              for d, r in rows.items())
            print(f"{name[:60]}: {cells}")


if __name__ == "__main__":
    main()
