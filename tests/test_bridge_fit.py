"""Seen vs unseen clips of a bridge (issue 19, point 14): the measure tells a memorising bridge from a smooth one."""

import numpy as np
import pytest

from diffusion_link.evaluation.bridge_fit import SplitEmbeddings, per_clip_cosine, seen_unseen, two_sample_difference

D, REFS = 16, 3


def _world(n: int, rng: np.random.Generator, refs: int = REFS):
    """Clips of one distribution: a content vector, audio = a rotated, noisier view of it (a gap), texts
    = the content plus small paraphrase noise."""
    content = rng.normal(size=(n, D))
    audio = content @ np.linalg.qr(np.random.default_rng(99).normal(size=(D, D)))[0] + 0.8 * rng.normal(size=(n, D)) + 2.0
    texts = np.repeat(content, refs, axis=0) + 0.3 * rng.normal(size=(n * refs, D))
    return audio, texts, np.repeat(np.arange(n), refs)


def _smooth_map(train_audio, train_refs, owner):
    """Least squares from audio to each clip's mean reference, fitted on the training clips: one map for every clip."""
    target = np.stack([train_refs[owner == i].mean(0) for i in range(len(train_audio))])
    a = np.c_[train_audio, np.ones(len(train_audio))]
    w = np.linalg.lstsq(a, target, rcond=None)[0]
    return lambda x: np.c_[x, np.ones(len(x))] @ w


def _splits(memorise: bool):
    rng = np.random.default_rng(0)
    data = {"train": _world(300, rng), "val": _world(60, rng), "test": _world(60, rng)}
    smooth = _smooth_map(*data["train"])
    lookup = {tuple(a): data["train"][1][data["train"][2] == i].mean(0) for i, a in enumerate(data["train"][0])}
    out = {}
    for name, (audio, refs, owner) in data.items():
        bridged = smooth(audio)
        if memorise:  # identity on the training clips: their own texts; the smooth map elsewhere
            bridged = np.stack([lookup.get(tuple(a), b) for a, b in zip(audio, bridged)])
        out[name] = SplitEmbeddings(bridged, audio, refs, owner)
    return out


def test_per_clip_cosine_is_the_mean_over_references():
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    refs = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    assert per_clip_cosine(x, refs, np.array([0, 0, 1])) == pytest.approx([0.5, 1.0])


def test_two_sample_difference_finds_a_known_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.5, 1, 400), rng.normal(0.0, 1, 300)
    d, lo, hi = two_sample_difference(a, b, 500)
    assert d == pytest.approx(a.mean() - b.mean())
    assert lo < 0.5 < hi and lo > 0


def test_a_memorising_bridge_is_detected_and_a_smooth_one_is_not():
    memo = seen_unseen(_splits(memorise=True), resamples=300, subsets=5, distance_resamples=30)
    smooth = seen_unseen(_splits(memorise=False), resamples=300, subsets=5, distance_resamples=30)
    for split in ("val", "test"):
        assert memo[split]["gain_train_minus_lo"] > 0.02, memo[split]  # seen clips gain clearly more
        assert smooth[split]["gain_train_minus_lo"] < 0 < smooth[split]["gain_train_minus_hi"] + 0.005, smooth[split]
        # on equal clip counts, the memorised training clips sit closer to their texts than held-out clips
        assert memo["train"]["bridged_frechet"] < 0.1 * memo[split]["bridged_frechet"]
        gap = {name: abs(r["train"]["bridged_frechet"] - r[split]["bridged_frechet"]) for name, r in (("memo", memo), ("smooth", smooth))}
        assert gap["smooth"] < gap["memo"], gap
    assert memo["train"]["n_distance"] == 60 and "gain_train_minus" not in memo["train"]


def test_a_missing_split_is_named():
    splits = _splits(memorise=False)
    with pytest.raises(ValueError, match="no training split 'fit'"):
        seen_unseen(splits, train="fit", resamples=0)
    with pytest.raises(ValueError, match="held-out"):
        seen_unseen({"train": splits["train"]}, resamples=0)


def test_distances_use_one_reference_per_clip_so_reference_counts_do_not_bias_them():
    """AudioCaps' training split has 1 reference per clip, val / test 5, and Fréchet's bias depends on the
    number of texts: the same clips with 1 or 5 references (the first the same) get the same distances
    (with every reference, the 5-reference split's bridged Fréchet was ~17 % lower), while the per-clip
    cosine still averages over every reference."""
    audio, refs, owner = _world(40, np.random.default_rng(3), refs=5)
    first = np.arange(0, len(refs), 5)
    bridged = _smooth_map(*_world(400, np.random.default_rng(4)))(audio)
    splits = {"train": SplitEmbeddings(bridged, audio, refs[first], owner[first]), "test": SplitEmbeddings(bridged, audio, refs, owner)}
    out = seen_unseen(splits, resamples=0, subsets=2, distance_resamples=0)
    for which in ("bridged", "raw"):
        for m in ("frechet", "centroid_distance"):
            assert out["train"][f"{which}_{m}"] == pytest.approx(out["test"][f"{which}_{m}"], rel=1e-9), (which, m)
    assert out["test"]["bridged_cosine"] == pytest.approx(per_clip_cosine(bridged, refs, owner).mean())
    assert out["test"]["bridged_cosine"] != pytest.approx(out["train"]["bridged_cosine"], abs=1e-3)


def test_first_references_keeps_each_clips_first_reference():
    refs = np.arange(10.0).reshape(5, 2)
    s = SplitEmbeddings(np.zeros((2, 2)), np.zeros((2, 2)), refs, np.array([1, 0, 0, 1, 1])).first_references()
    assert s.owner.tolist() == [0, 1] and s.refs.tolist() == [[2.0, 3.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="no reference"):
        SplitEmbeddings(np.zeros((3, 2)), np.zeros((3, 2)), refs, np.array([1, 0, 0, 1, 1])).first_references()
