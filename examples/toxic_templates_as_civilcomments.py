"""Write `toxic-templates` comments as a WILDS CivilComments copy, to run the real-benchmark path on them.

    python examples/toxic_templates_as_civilcomments.py OUT_DIR [SEED]
    grouprobust datasets --check civilcomments --root OUT_DIR
    grouprobust features --dataset civilcomments --root OUT_DIR --backbone all-MiniLM-L6-v2 --out FEATS
    grouprobust train --dataset civilcomments --data features=FEATS --method erm --out RUN

To extract features of the embedded dataset itself, no copy is needed:
`grouprobust features --dataset toxic-templates --backbone all-MiniLM-L6-v2 --out FEATS`; this
script remains for running the CivilComments reader path on known data.

The csv has WILDS' columns: comment_text, split, toxicity and the eight identity columns (1.0 when
the comment mentions the identity, else 0.0).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from grouprobust.data import load_dataset
from grouprobust.data.embedded.toxic_templates import IDENTITIES


def write_copy(out: Path, seed: int = 0) -> Path:
    """Write ``out/all_data_with_identities.csv``; returns its path."""
    splits = load_dataset("toxic-templates", seed)
    frames = []
    for ds in splits:
        mentions = ds.eval_groups.reshape(len(ds), len(IDENTITIES), 2).any(axis=2)
        frame = pd.DataFrame({"comment_text": ds.meta["texts"], "split": ds.split, "toxicity": ds.y.astype(float)})
        for j, identity in enumerate(IDENTITIES):
            frame[identity] = mentions[:, j].astype(float)
        frames.append(frame)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "all_data_with_identities.csv"
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)
    return path


if __name__ == "__main__":
    print(write_copy(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
