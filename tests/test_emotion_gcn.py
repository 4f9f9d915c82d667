"""Paper B's label graph and GCN head: hand-checked adjacency, exact forward, embeddings, a learning check."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from fer_lib.config import GCNConfig, get_profile
from fer_lib.labels import EXPRESSIONS_7
from fer_lib.models.emotion_gcn import (
    GCN_NODES,
    EmotionGCN,
    GCNMultiTaskNet,
    LabelGraph,
    build_emotion_gcn,
    graph_from_correlation,
    label_adjacency,
    load_label_embeddings,
    normalize_adjacency,
    reweight,
)

matplotlib.use("Agg")

# 20 training rows: expression (canonical index) and valence / arousal, written by hand so that Happy goes
# with high valence, Sad with low valence, Surprise / Fear / Anger with high arousal, Neutral with low arousal.
TRAIN_ROWS = [
    (0, 0.05, -0.30),
    (0, -0.02, -0.25),
    (0, 0.10, -0.35),
    (1, 0.90, 0.20),
    (1, 0.80, 0.35),
    (1, 0.70, 0.10),
    (2, -0.70, -0.20),
    (2, -0.60, -0.40),
    (2, -0.75, -0.10),
    (3, 0.20, 0.85),
    (3, 0.15, 0.70),
    (3, -0.05, 0.90),
    (4, -0.50, 0.75),
    (4, -0.55, 0.60),
    (5, -0.60, 0.30),
    (5, -0.45, 0.20),
    (6, -0.65, 0.80),
    (6, -0.40, 0.70),
    (6, -0.55, 0.65),
    (1, 0.60, 0.05),
]


def hand_manifest(extra_bad_rows: bool = True) -> pd.DataFrame:
    rows = [dict(split="train", expression=float(e), valence=v, arousal=a) for e, v, a in TRAIN_ROWS]
    if extra_bad_rows:
        rows += [
            dict(split="val", expression=1.0, valence=-0.9, arousal=-0.9),  # other split
            dict(split="train", expression=7.0, valence=-0.2, arousal=0.3),  # Contempt (not in 7)
            dict(split="train", expression=np.nan, valence=0.1, arousal=0.1),  # no expression
            dict(split="train", expression=2.0, valence=-2.0, arousal=-2.0),  # AffectNet "no face" VA
            dict(split="train", expression=3.0, valence=np.nan, arousal=0.5),  # VA missing
        ]
    return pd.DataFrame(rows)


def scipy_reference(rows=TRAIN_ROWS) -> np.ndarray:
    """Spearman of [7 one-hot, V, A] computed independently with scipy."""
    e = np.array([r[0] for r in rows])
    cols = np.column_stack([np.eye(7)[e], [r[1] for r in rows], [r[2] for r in rows]])
    return spearmanr(cols).correlation


def test_spearman_hand_computed_value():
    # Happy one-hot [1,0,0,0] has ranks [4,2,2,2]; valence ranks [4,3,2,1]:
    # centred [1.5,-.5,-.5,-.5] . [1.5,.5,-.5,-1.5] = 3, norms sqrt(3), sqrt(5) -> 3 / sqrt(15).
    data = dict(expression=[1, 0, 2, 6], valence=[0.9, 0.1, -0.2, -0.5], arousal=[0.1, -0.3, 0.0, 0.8])
    with pytest.warns(UserWarning, match="constant"):  # Surprise, Fear, Disgust have no sample here
        g = label_adjacency(data, tau=0.1, p=0.5)
    assert g.corr[1, 7] == pytest.approx(3 / math.sqrt(15))
    assert g.counts["constant_columns"] == 3
    for k in (3, 4, 5):  # constant columns: no edge, only the self-loop, mapped to themselves
        assert g.binary[k].sum() == 0 and g.reweighted[k, k] == 0.5 and g.a_hat[k, k] == pytest.approx(1.0)


def test_adjacency_matches_independent_spearman_and_reports_bad_rows():
    with pytest.warns(UserWarning, match="left out"):
        g = label_adjacency(hand_manifest(), tau=0.1, p=0.5)
    assert g.names == GCN_NODES == EXPRESSIONS_7 + ("Valence", "Arousal")
    assert g.counts == dict(
        rows_total=25,
        rows_other_split=1,
        rows_no_expression=2,
        rows_no_va=2,
        rows_used=20,
        constant_columns=0,
    )
    np.testing.assert_allclose(g.corr, scipy_reference(), atol=1e-12)
    # expression-expression block: no edge off the diagonal even though one-hot columns anti-correlate
    assert np.all(g.binary[:7, :7] == 0)
    assert np.all(g.reweighted[:7, :7][~np.eye(7, dtype=bool)] == 0)
    # edges are exactly |rho| >= tau outside that block (V-A included), and symmetric
    expected = (np.abs(scipy_reference()) >= 0.1).astype(int)
    expected[:7, :7] = 0
    np.fill_diagonal(expected, 0)
    np.testing.assert_array_equal(g.binary, expected)
    assert dict(((a, b), c) for a, b, c in g.edges())[("Happy", "Valence")] > 0.5
    assert ("Sad", "Valence") in {(a, b) for a, b, _ in g.edges()}
    assert "20 of 25 rows" in g.summary() and "Happy - Valence" in g.summary()


def test_tau_cut_is_inclusive_and_exact():
    rho = scipy_reference()
    c = abs(rho[0, 8])  # Neutral - Arousal
    g_keep = label_adjacency(hand_manifest(False), tau=c - 1e-9)
    exact = float(abs(label_adjacency(hand_manifest(False)).corr[0, 8]))
    g_at = label_adjacency(hand_manifest(False), tau=exact)
    g_drop = label_adjacency(hand_manifest(False), tau=c + 1e-9)
    assert g_keep.binary[0, 8] == 1 and g_keep.binary[8, 0] == 1
    assert g_at.binary[0, 8] == 1  # |rho| == tau survives (>=, as the public code)
    assert g_drop.binary[0, 8] == 0 and g_drop.binary[8, 0] == 0
    # the V-A entry obeys the same cut (kept when strong enough, as the data decide)
    va = abs(rho[7, 8])
    assert label_adjacency(hand_manifest(False), tau=va - 1e-9).binary[7, 8] == 1
    assert label_adjacency(hand_manifest(False), tau=va + 1e-9).binary[7, 8] == 0


@pytest.mark.parametrize("p", [0.5, 0.3, 0.0])
def test_reweighting_follows_ml_gcn_eq8(p):
    g = label_adjacency(hand_manifest(False), tau=0.1, p=p)
    deg = g.binary.sum(axis=1)
    for i in range(9):
        assert g.reweighted[i, i] == pytest.approx(1 - p)
        for j in range(9):
            if i != j:
                want = p / deg[i] if g.binary[i, j] else 0.0
                assert g.reweighted[i, j] == pytest.approx(want)
        assert g.reweighted[i].sum() == pytest.approx(1.0 if deg[i] else 1 - p)
    with pytest.raises(ValueError, match="p must be"):
        reweight(g.binary, 1.0)


def test_isolated_node_keeps_only_its_self_loop():
    binary = np.zeros((3, 3), int)
    binary[0, 1] = binary[1, 0] = 1
    a = reweight(binary, 0.3)
    np.testing.assert_allclose(a, [[0.7, 0.3, 0], [0.3, 0.7, 0], [0, 0, 0.7]])
    np.testing.assert_allclose(normalize_adjacency(a)[2], [0, 0, 1])


def test_normalisation_is_ml_gcn_gen_adj():
    g = label_adjacency(hand_manifest(False), tau=0.3, p=0.3)
    d = g.reweighted.sum(axis=1)
    for i in range(9):
        for j in range(9):  # (A D)^T D: transpose of the row-normalised matrix, scaled by both degrees
            assert g.a_hat[i, j] == pytest.approx(g.reweighted[j, i] / math.sqrt(d[i] * d[j]))
    a = np.array([[1.0, 2.0], [0.5, 3.0]])
    dd = np.diag(a.sum(1) ** -0.5)
    np.testing.assert_allclose(normalize_adjacency(a), dd @ a.T @ dd)


def test_plot_adjacency_names_and_values():
    from fer_lib.plots import plot_adjacency

    g = label_adjacency(hand_manifest(False))
    fig = plot_adjacency(g, which="corr")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(GCN_NODES)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 81 and f"{g.corr[1, 7]:.2f}" in texts
    fig2 = plot_adjacency(g.a_hat, labels=GCN_NODES)
    assert len(fig2.axes[0].texts) == 81


# ----------------------------------------------------------------------------------------- the module
def small_gcn(feature_dim=16, layers=2, hidden=8):
    g = label_adjacency(hand_manifest(False))
    x = np.random.default_rng(0).normal(size=(9, 5)).astype(np.float32)
    return EmotionGCN(x, g, feature_dim, hidden=hidden, layers=layers), g, x


def test_gcn_output_equals_features_times_w_transpose():
    torch.manual_seed(0)
    gcn, g, x = small_gcn()
    a = torch.tensor(g.a_hat, dtype=torch.float32)
    w1, w2 = gcn.layers[0].weight, gcn.layers[1].weight
    w = a @ torch.nn.functional.leaky_relu(a @ torch.tensor(x) @ w1, 0.2) @ w2
    f = torch.randn(4, 16)
    out = gcn(f)
    assert out.shape == (4, 9)
    torch.testing.assert_close(out, f @ w.T)
    torch.testing.assert_close(gcn.classifier_weights(), w)
    assert tuple(w1.shape) == (5, 8) and tuple(w2.shape) == (8, 16)


@pytest.mark.parametrize("layers", [1, 3])
def test_gcn_depth(layers):
    gcn, _, _ = small_gcn(layers=layers)
    assert len(gcn.layers) == layers
    assert gcn(torch.randn(3, 16)).shape == (3, 9)
    with pytest.raises(ValueError, match="pooled features"):
        gcn(torch.randn(3, 15))


def test_gradients_reach_gcn_weights_not_the_graph():
    gcn, _, _ = small_gcn()
    names = {n for n, _ in gcn.named_parameters()}
    assert names == {"layers.0.weight", "layers.1.weight"}
    assert {"a_hat", "node_features"} <= set(gcn.state_dict())
    out = gcn(torch.randn(6, 16))
    out.sum().backward()
    for p in gcn.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert not gcn.a_hat.requires_grad and gcn.a_hat.grad is None


def test_multitask_net_heads():
    torch.manual_seed(0)
    gcn, _, _ = small_gcn()
    net = GCNMultiTaskNet(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16)), gcn)
    x = torch.randn(5, 3, 2, 2)
    out = net(x)
    assert set(out) == {"expression", "va"}
    assert out["expression"].shape == (5, 7) and out["va"].shape == (5, 2)
    full = gcn(net.forward_features(x))
    torch.testing.assert_close(torch.cat([out["expression"], out["va"]], 1), full)


# ------------------------------------------------------------------------------------------ embeddings
def test_glove_file_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    words = ["neutral", "Happy", "sad", "surprise", "fear", "disgust", "anger", "valence", "arousal", "very"]
    vecs = rng.normal(size=(len(words), 6)).astype(np.float32)
    path = tmp_path / "glove.txt"
    path.write_text(
        "the 1 2 3 4 5 6\n"
        + "".join(w + " " + " ".join(f"{v:.6f}" for v in vec) + "\n" for w, vec in zip(words, vecs))
    )
    emb, source = load_label_embeddings(path)
    assert emb.shape == (9, 6) and str(path) in source and "6-d" in source
    np.testing.assert_allclose(emb[1], vecs[1], atol=1e-6)  # "Happy" in the file, lower-case lookup
    np.testing.assert_allclose(emb[8], vecs[8], atol=1e-6)
    multi, _ = load_label_embeddings(path, names=["Very happy", "sad"])
    np.testing.assert_allclose(multi[0], (vecs[9] + vecs[1]) / 2, atol=1e-6)
    with pytest.raises(KeyError, match="contempt"):
        load_label_embeddings(path, names=["Contempt"])


def test_packaged_embeddings_offline(no_network):
    emb, source = load_label_embeddings("packaged")
    assert emb.shape == (9, 384) and emb.dtype == np.float32
    assert len(np.unique(emb.round(4), axis=0)) == 9
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert "all-MiniLM-L6-v2" in source
    eight, _ = load_label_embeddings("packaged", names=["Contempt", "Happy"])
    np.testing.assert_array_equal(eight[1], emb[1])
    onehot, src = load_label_embeddings("onehot")
    np.testing.assert_array_equal(onehot, np.eye(9))
    assert "one-hot" in src
    with pytest.raises(FileNotFoundError, match="GloVe"):
        load_label_embeddings("/no/such/file.txt")


def test_build_from_config_records_source():
    g = label_adjacency(hand_manifest(False))
    cfg = get_profile("smoke").gcn
    assert isinstance(cfg, GCNConfig) and cfg.negative_slope == 0.2
    gcn = build_emotion_gcn(g, feature_dim=32, cfg=GCNConfig(embedding="onehot", hidden=16))
    assert gcn.node_features.shape == (9, 9) and gcn.embedding_source.startswith("one-hot")
    assert gcn.layers[0].weight.shape == (9, 16) and gcn.feature_dim == 32
    assert isinstance(g, LabelGraph)


# ------------------------------------------------------------------------------------- learning check
def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Concordance correlation coefficient, written out independently of fer_lib.metrics."""
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    return float(2 * cov / (x.var() + y.var() + (mx - my) ** 2))


def toy_data(n: int, rng: np.random.Generator, mix: np.ndarray):
    """Inputs whose latent (class one-hot, V, A) is linearly mixed into 16 dims, plus labels."""
    va_mean = np.array(
        [[0, -0.3], [0.8, 0.2], [-0.7, -0.3], [0.1, 0.8], [-0.5, 0.7], [-0.5, 0.2], [-0.6, 0.7]]
    )
    c = rng.integers(0, 7, n)
    va = np.clip(va_mean[c] + rng.normal(scale=0.2, size=(n, 2)), -1, 1)
    latent = np.column_stack([2.0 * np.eye(7)[c], va]) + rng.normal(scale=0.05, size=(n, 9))
    x = latent @ mix
    return torch.tensor(x, dtype=torch.float32), torch.tensor(c), torch.tensor(va, dtype=torch.float32)


def test_gcn_multitask_learns_toy_task():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(9, 16))
    x, c, va = toy_data(1500, rng, mix)
    xt, ct, vat = toy_data(600, rng, mix)
    graph = label_adjacency(dict(expression=c.numpy(), valence=va[:, 0].numpy(), arousal=va[:, 1].numpy()))
    backbone = torch.nn.Linear(16, 64)  # a fixed random feature map standing in for a frozen CNN
    backbone.requires_grad_(False)
    gcn = build_emotion_gcn(graph, feature_dim=64, cfg=GCNConfig(hidden=64))
    net = GCNMultiTaskNet(backbone, gcn)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=3e-3)

    def ccc_t(a, b):
        cov = ((a - a.mean()) * (b - b.mean())).mean()
        return 2 * cov / (a.var(unbiased=False) + b.var(unbiased=False) + (a.mean() - b.mean()) ** 2)

    for _ in range(300):
        idx = torch.randint(0, len(x), (64,))
        out = net(x[idx])
        loss = torch.nn.functional.cross_entropy(out["expression"], c[idx])
        loss = loss + 1 - (ccc_t(out["va"][:, 0], va[idx, 0]) + ccc_t(out["va"][:, 1], va[idx, 1])) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert backbone.weight.grad is None
    with torch.no_grad():
        out = net(xt)
    acc = (out["expression"].argmax(1) == ct).float().mean().item()
    assert acc > 0.8, acc  # chance is 1/7
    pred, true = out["va"].numpy(), vat.numpy()
    print(
        f"toy task: accuracy {acc:.3f}, CCC valence {ccc(pred[:, 0], true[:, 0]):.3f}, "
        f"arousal {ccc(pred[:, 1], true[:, 1]):.3f}"
    )
    assert ccc(pred[:, 0], true[:, 0]) > 0.5 and ccc(pred[:, 1], true[:, 1]) > 0.5


def test_eight_expression_nodes_include_contempt():
    rows = hand_manifest(False)
    rows.loc[len(rows)] = dict(split="train", expression=7.0, valence=-0.3, arousal=0.2)
    rows.loc[len(rows)] = dict(split="train", expression=7.0, valence=-0.2, arousal=0.3)
    g = label_adjacency(rows, n_expr=8)
    assert g.names[-3:] == ("Contempt", "Valence", "Arousal") and g.corr.shape == (10, 10)
    assert g.counts["rows_used"] == 22
    gcn = build_emotion_gcn(g, feature_dim=8, cfg=GCNConfig(hidden=4))
    assert gcn(torch.randn(2, 8)).shape == (2, 10) and gcn.node_features.shape == (10, 384)


# ------------------------------------------------------------- paper B's formulation on a hand-made case
V, A = 7, 8
# Signed Spearman correlations written by hand for the 9 nodes (7 expressions, Valence, Arousal); the
# one-hot expression columns anti-correlate (-0.2) as they do in real data, which must not become edges.
HAND_EDGES = {
    (0, A): -0.45,
    (0, V): 0.05,
    (1, V): 0.86,
    (1, A): 0.10,
    (2, V): -0.40,
    (2, A): -0.09,
    (3, V): 0.02,
    (3, A): 0.35,
    (4, V): -0.20,
    (4, A): 0.30,
    (5, V): 0.05,
    (5, A): 0.0,
    (6, V): -0.30,
    (6, A): 0.25,
    (V, A): 0.15,
}


def hand_corr() -> np.ndarray:
    c = np.full((9, 9), -0.2)
    for (i, j), v in HAND_EDGES.items():
        c[i, j] = c[j, i] = v
    np.fill_diagonal(c, 1.0)
    return c


# After the tau = 0.1 cut (inclusive: Happy-Arousal at exactly 0.10 stays) and p = 0.5 re-weighting:
# a row keeps 1 - p = 0.5 for itself and shares p = 0.5 equally among its neighbours; Disgust has no
# neighbour (its row sums to 0.5). Rows: Neutral .. Anger, Valence, Arousal.
H, T = 0.25, 1 / 12
HAND_REWEIGHTED = np.array(
    [
        [0.5, 0, 0, 0, 0, 0, 0, 0, 0.5],
        [0, 0.5, 0, 0, 0, 0, 0, H, H],
        [0, 0, 0.5, 0, 0, 0, 0, 0.5, 0],
        [0, 0, 0, 0.5, 0, 0, 0, 0, 0.5],
        [0, 0, 0, 0, 0.5, 0, 0, H, H],
        [0, 0, 0, 0, 0, 0.5, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0.5, H, H],
        [0, 0.1, 0.1, 0, 0.1, 0, 0.1, 0.5, 0.1],
        [T, T, 0, T, T, 0, T, T, 0.5],
    ]
)


def test_hand_made_graph_cut_reweighting_and_transposed_normalisation():
    g = graph_from_correlation(hand_corr(), tau=0.1, p=0.5)
    expected_edges = {(0, A), (1, V), (1, A), (2, V), (3, A), (4, V), (4, A), (6, V), (6, A), (V, A)}
    got = {(i, j) for i in range(9) for j in range(i + 1, 9) if g.binary[i, j]}
    assert got == expected_edges
    np.testing.assert_array_equal(g.binary, g.binary.T)
    np.testing.assert_allclose(g.reweighted, HAND_REWEIGHTED, atol=1e-15)
    # ML-GCN gen_adj: D = diag(rowsum^-1/2); every row sums to 1 except Disgust's (0.5, so d^-1/2 = sqrt 2):
    # A_hat = D A'^T D is the transpose of A' with Disgust's self-loop 0.5 * sqrt2 * sqrt2 = 1.
    want = HAND_REWEIGHTED.T.copy()
    want[5, 5] = 1.0
    np.testing.assert_allclose(g.a_hat, want, atol=1e-15)
    # the transpose matters: Valence's row collects what each expression gives it (Sad 0.5, Happy 0.25),
    # not the 0.1 Valence gives each of its five neighbours
    assert g.a_hat[V, 2] == 0.5 and g.a_hat[V, 1] == 0.25 and g.a_hat[1, V] == pytest.approx(0.1)
    assert not np.allclose(g.a_hat, g.a_hat.T)


@pytest.mark.parametrize("lr_scale, va_scale", [(1.0, 1.0), (0.25, 0.2)])
def test_forward_pass_equals_an_independent_numpy_gcn(lr_scale, va_scale):
    g = graph_from_correlation(hand_corr(), tau=0.1, p=0.5)
    rng = np.random.default_rng(3)
    x, w1, w2 = rng.normal(size=(9, 6)), rng.normal(size=(6, 5)) / 3, rng.normal(size=(5, 4)) / 3
    f = np.abs(rng.normal(size=(3, 4)))  # pooled image features (non-negative)
    gcn = EmotionGCN(
        x.astype(np.float32), g, feature_dim=4, hidden=5, layers=2, lr_scale=lr_scale, va_scale=va_scale
    )
    with torch.no_grad():  # the layers multiply by lr_scale * weight
        gcn.layers[0].weight.copy_(torch.tensor(w1 / lr_scale))
        gcn.layers[1].weight.copy_(torch.tensor(w2 / lr_scale))
        out = gcn(torch.tensor(f, dtype=torch.float32)).double().numpy()

    def leaky(z):
        return np.where(z > 0, z, 0.2 * z)

    a = g.a_hat
    w = a @ leaky(a @ x @ w1) @ w2  # 2 bias-free layers, LeakyReLU(0.2) between
    want = f @ w.T  # outputs = f . W^T
    want[:, 7:] *= va_scale  # valence, arousal (1: paper B as published)
    np.testing.assert_allclose(out, want, atol=1e-6)
    np.testing.assert_allclose(gcn.classifier_weights().detach().double().numpy(), w, atol=1e-6)
    # the normalisation's transpose is what the forward uses: the untransposed matrix gives other outputs
    w_untransposed = a.T @ leaky(a.T @ x @ w1) @ w2
    assert np.abs(f @ w_untransposed.T - f @ w.T).max() > 1e-2
