"""The gap table's linear probe: can a logistic regression tell (bridged) audio from text?

The old probe was trained on half the clips with C = 1. On L2-normalised embeddings every coordinate is
~1/√D, so C = 1 is a strong penalty: a real but small shift went undetected, and the probe read as
"no gap" by construction. Here the probe is **cross-fitted by clip**: the clips are split into
``folds`` groups (seeded; a clip's audio and its references always together); each group is scored
by a probe trained on the other groups, on features standardised with that training part's statistics,
whose C is chosen among ``Cs`` by cross-validation on that training part (``inner`` folds grouped by
clip, balanced accuracy), and never sees the group it scores. Every clip is scored once, so the
balanced accuracy uses every clip; classes are weighted in training (one audio per clip, R texts).

The folds depend only on the seed and the number of clips, so rows of a gap table evaluated on the
same clips in the same order share them (a paired comparison).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

#: the C grid of the cross-validation (on standardised features)
CS = tuple(np.logspace(-4, 2, 7))


class CrossFittedProbe:
    """Held-out predictions for every clip; called with clip weights (R, N), the balanced accuracy
    0.5 (mean over clips of "audio called audio") + 0.5 (mean over references of "text called text")."""

    def __init__(self, x: torch.Tensor, c: torch.Tensor, owner: torch.Tensor, seed: int = 0, folds: int = 2, inner: int = 3, Cs=CS, max_iter: int = 500):
        n = len(x)
        owner_np = owner.numpy()
        features = np.concatenate([x.numpy(), c.numpy()])
        labels = np.r_[np.zeros(n), np.ones(len(c))]
        group = np.r_[np.arange(n), owner_np]
        fold = (np.random.default_rng(seed).permutation(n) % min(folds, n))[group]
        predicted = np.empty(len(features))
        self.fitted = []  # (share of the clips it scores, standardisation, probe)
        for f in np.unique(fold):
            train = fold != f
            mean, scale = features[train].mean(0), features[train].std(0) + 1e-12
            z = (features - mean) / scale
            probe = _fit(z[train], labels[train], group[train], inner, Cs, max_iter)
            predicted[~train] = probe.predict(z[~train])
            self.fitted.append((float((fold[:n] == f).mean()), mean, scale, probe))
        self.x_right = torch.from_numpy(predicted[:n] == 0).double()
        self.c_right = torch.zeros(n, dtype=torch.float64).index_add_(0, owner, torch.from_numpy(predicted[n:] == 1).double())
        self.n_refs = torch.bincount(owner, minlength=n).double()

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((w @ self.x_right) / w.sum(1) + (w @ self.c_right) / (w @ self.n_refs))

    def population_accuracy(self, x: torch.Tensor, c: torch.Tensor) -> float:
        """What the interval estimates: the fitted probes' balanced accuracy on other audio ``x`` and text
        ``c`` from the same population (each probe weighted by the share of the clips it scores)."""
        x, c = (torch.nn.functional.normalize(t.double(), dim=-1).numpy() for t in (x, c))
        total = 0.0
        for share, mean, scale, probe in self.fitted:
            total += share * 0.5 * ((probe.predict((x - mean) / scale) == 0).mean() + (probe.predict((c - mean) / scale) == 1).mean())
        return float(total)


def _fit(z: np.ndarray, labels: np.ndarray, group: np.ndarray, inner: int, Cs, max_iter: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import GroupKFold

    with warnings.catch_warnings():  # separable training data (a wide gap) converges slowly at large C; the
        warnings.simplefilter("ignore", ConvergenceWarning)  # prediction is all that is used
        k = min(inner, len(np.unique(group)))
        if k < 2:  # one training clip: nothing to cross-validate on
            return LogisticRegression(max_iter=max_iter, class_weight="balanced").fit(z, labels)
        splits = list(GroupKFold(n_splits=k).split(z, labels, group))
        probe = LogisticRegressionCV(
            Cs=list(Cs), cv=splits, class_weight="balanced", scoring="balanced_accuracy", l1_ratios=(0.0,), use_legacy_attributes=False, max_iter=max_iter
        )
        return probe.fit(z, labels)
