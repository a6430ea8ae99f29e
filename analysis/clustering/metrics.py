"""Clustering quality against known identities."""
from __future__ import annotations

import numpy as np
import pandas as pd


def bcubed(labels_true, labels_pred, noise: int = -1) -> tuple[float, float, float]:
    """BCubed precision, recall and F (Amigó et al. 2009).

    Every item counts once. Items labelled ``noise`` in ``labels_pred`` are each their own
    singleton cluster: leaving a face unclustered costs recall, never precision.
    """
    t = np.asarray(labels_true)
    p = np.asarray(labels_pred)
    if len(t) != len(p):
        raise ValueError(f"label arrays differ in length: {len(t)} vs {len(p)}")
    if len(t) == 0:
        raise ValueError("no items to score")
    codes = pd.factorize(p)[0]
    is_noise = p == noise
    codes[is_noise] = codes.max() + 1 + np.arange(is_noise.sum())
    df = pd.DataFrame({"t": pd.factorize(t)[0], "p": codes})
    both = df.groupby(["t", "p"]).size().rename("n").reset_index()
    size_p = df.groupby("p").size()
    size_t = df.groupby("t").size()
    # Each of the n items in a (true, pred) cell has precision n/|pred| and recall n/|true|.
    precision = float((both["n"] ** 2 / size_p[both["p"]].to_numpy()).sum() / len(df))
    recall = float((both["n"] ** 2 / size_t[both["t"]].to_numpy()).sum() / len(df))
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f
