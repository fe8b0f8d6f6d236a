"""Replay every calibration and evaluation part once with the shipped verifier and keep
each query's (probability, right) outcome, so bound designs can be compared without
re-running the cross-encoder (issue 20, item 3).

    python scripts/cache_shift_outcomes.py --out runs/cache-shift [--qqp-limit 3000]
        [--verifier FOLDER] [--roles eval]

Writes `<out>/<role>_<part>.npz` (`cache.calibration.Outcomes`); parts already written
are skipped, so an interrupted run resumes. Progress goes to stdout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cache.evaluate import replay
from cache.pairs import Scorer
from cache.training import training_hashes
from cache.verifier import CrossVerifier
from cmesh.cache_eval import ROOT, encoder, part_of_file, written_calibration

FILES = {"handwritten": ROOT / "data" / "cache" / "handwritten_pairs.json",
         "mock": ROOT / "data" / "gptcache" / "mock_data.json",
         "qqp": ROOT / "data" / "gptcache" / "qqp_pairs_dev.json.gz"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/cache-shift"))
    parser.add_argument("--qqp-limit", type=int, default=3000)
    parser.add_argument("--verifier", type=Path, default=None,
                        help="Verifier artifact folder (default: the shipped one).")
    parser.add_argument("--roles", nargs="+", choices=("calib", "eval"),
                        default=["calib", "eval"], help="Which parts to replay.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    verifier = CrossVerifier.load(args.verifier)
    encode = encoder(args.out / "embeddings.npz")
    hashes = training_hashes(verifier.folder)
    jobs = [(role, name) for role in ("calib", "eval") for name in FILES]
    jobs.insert(3, ("calib", "written"))
    jobs = [(role, name) for role, name in jobs if role in args.roles]
    for role, name in jobs:
        target = args.out / f"{role}_{name}.npz"
        if target.is_file():
            print(f"{target.name}: done before", flush=True)
            continue
        if name == "written":
            pairs = part = written_calibration()
            how = "whole"
        else:
            pairs, part, how = part_of_file(FILES[name], role, hashes)
            if name == "qqp" and args.qqp_limit:
                part, how = part[:args.qqp_limit], f"{how}, first {args.qqp_limit} pairs"
        start = time.monotonic()
        print(f"{role} {name}: {len(part)} pairs ({how}) ...", flush=True)
        rep = replay(part, encode, verifier, Scorer(pairs))
        rep.outcomes(f"{name} {role} ({how})").save(target)
        print(f"{role} {name}: {time.monotonic() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
