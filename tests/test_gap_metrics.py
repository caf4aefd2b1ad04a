"""Every gap metric against an independent numpy / scipy / scikit-learn computation, in one pass,
accumulated over batches, and over two processes."""

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.linear_model import LogisticRegression

from diffusion_link.evaluation.gap import (
    RBFMMD,
    CentroidDistance,
    ConeCosine,
    FrechetDistance,
    LinearProbeSeparability,
    PairedCosine,
    RetrievalRecall,
    gap_metrics,
)

N, D = 120, 8


def data(seed=0):
    g = np.random.default_rng(seed)
    c = g.standard_normal((N, D))
    x = c + 0.8 * g.standard_normal((N, D)) + 0.7
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    return unit(x), unit(c)


def reference(x, c):
    """Written from the definitions, with none of the package's code."""
    out = {"paired_cosine": np.mean(np.sum(x * c, 1)), "centroid_distance": np.linalg.norm(x.mean(0) - c.mean(0))}
    gram = x @ x.T
    out["cone_cosine"] = (gram.sum() - np.trace(gram)) / (N * (N - 1))
    mu1, mu2, s1, s2 = x.mean(0), c.mean(0), np.cov(x, rowvar=False), np.cov(c, rowvar=False)
    out["frechet"] = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    pooled = np.concatenate([x, c])
    d2 = scipy.spatial.distance.cdist(pooled, pooled, "sqeuclidean")
    sigma2 = np.median(d2[np.triu_indices(2 * N, 1)]) / 2
    k = np.exp(-d2 / (2 * sigma2))
    kxx, kcc, kxc = k[:N, :N], k[N:, N:], k[:N, N:]
    out["mmd"] = (kxx.sum() - np.trace(kxx)) / (N * (N - 1)) + (kcc.sum() - np.trace(kcc)) / (N * (N - 1)) - 2 * kxc.mean()
    canonical = np.lexsort(np.concatenate([x, c], axis=1).T[::-1])  # the metric's documented canonical order
    x, c = x[canonical], c[canonical]
    order = np.random.default_rng(0).permutation(N)
    tr, te = order[::2], order[1::2]
    probe = LogisticRegression(max_iter=1000).fit(np.concatenate([x[tr], c[tr]]), np.r_[np.zeros(len(tr)), np.ones(len(tr))])
    out["probe_accuracy"] = probe.score(np.concatenate([x[te], c[te]]), np.r_[np.zeros(len(te)), np.ones(len(te))])
    return out


def retrieval_reference(x, refs):
    """Brute force: rank of the best own reference among all texts."""
    texts = [(i, r) for i in range(len(refs)) for r in refs[i]]
    hits = {1: 0, 5: 0, 10: 0}
    for i, q in enumerate(x):
        scores = [float(q @ t) for _, t in texts]
        best_own = max(float(q @ t) for j, t in texts if j == i)
        rank = sum(s > best_own for s in scores)
        for k in hits:
            hits[k] += rank < k
    return {f"R@{k}": v / len(x) for k, v in hits.items()}


def test_single_pass_matches_reference():
    x, c = data()
    metrics = gap_metrics(D)
    metrics.update(torch.from_numpy(x), torch.from_numpy(c))
    got = {k: v.item() for k, v in metrics.compute().items()}
    for key, value in reference(x, c).items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_batches_match_single_pass():
    x, c = (torch.from_numpy(a) for a in data(1))
    once, batched = gap_metrics(D), gap_metrics(D)
    once.update(x, c)
    for i in range(0, N, 17):
        batched.update(x[i : i + 17], c[i : i + 17])
    a, b = once.compute(), batched.compute()
    for key in a:
        assert a[key].item() == pytest.approx(b[key].item(), rel=1e-9, abs=1e-12), key


def test_retrieval_recall_matches_brute_force():
    g = np.random.default_rng(3)
    x = g.standard_normal((30, D))
    refs = [g.standard_normal((g.integers(1, 6), D)) + 0.5 * x[i] for i in range(30)]
    padded = torch.zeros(30, 5, D)
    for i, r in enumerate(refs):
        padded[i, : len(r)] = torch.from_numpy(r)
    n_refs = torch.tensor([len(r) for r in refs])
    metric = RetrievalRecall()
    for i in range(0, 30, 7):
        metric.update(torch.from_numpy(x[i : i + 7]), padded[i : i + 7], n_refs[i : i + 7])
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    expected = retrieval_reference(unit(x), [unit(r) for r in refs])
    got = {k: v.item() for k, v in metric.compute().items()}
    assert got == pytest.approx(expected)


def _worker(rank, world, port, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    x, c = (torch.from_numpy(a) for a in data(2))
    metrics = gap_metrics(D)
    retrieval = RetrievalRecall()
    half = slice(rank * N // 2, (rank + 1) * N // 2)
    metrics.update(x[half], c[half])
    retrieval.update(x[half], c[half][:, None], torch.ones(N // 2, dtype=torch.long))
    out = {k: v.item() for k, v in metrics.compute().items()}
    out.update({k: v.item() for k, v in retrieval.compute().items()})
    results[rank] = out
    dist.destroy_process_group()


def test_two_processes_match_one_pass():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, port, results), nprocs=2, join=True)
    x, c = (torch.from_numpy(a) for a in data(2))
    metrics, retrieval = gap_metrics(D), RetrievalRecall()
    metrics.update(x, c)
    retrieval.update(x, c[:, None], torch.ones(N, dtype=torch.long))
    single = {k: v.item() for k, v in metrics.compute().items()} | {k: v.item() for k, v in retrieval.compute().items()}
    for rank in (0, 1):
        for key, value in single.items():
            assert results[rank][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (rank, key)


def test_metric_classes_are_exported():
    for cls in (PairedCosine, CentroidDistance, ConeCosine, FrechetDistance, LinearProbeSeparability, RBFMMD):
        assert hasattr(cls, "update") and hasattr(cls, "compute")
