"""Paper B's head: a graph convolutional network over the labels (Antoniadis et al., FG 2021).

Nine label nodes (the 7 expressions of ``labels.EXPRESSIONS_7`` in canonical order, then Valence and
Arousal) carry word embeddings of their names. A fixed, normalised label graph ``A_hat`` built from the
training labels propagates them through a few bias-free GCN layers into a matrix ``W`` (9 x D), which
is used as the weights of a linear layer on the image feature: ``outputs = features @ W.T``. The first
7 outputs are expression logits, the last two valence and arousal (no activation; multiplied by
``va_scale``, 1 in the paper, see :class:`EmotionGCN`).

The graph (:func:`label_adjacency`) follows the paper and its public code, step by step:

1. Spearman correlation over the training rows of ``[7 one-hot expression columns, valence, arousal]``
   (ranks with ties averaged, then Pearson on the ranks, as ``scipy.stats.spearmanr``).
2. ``|corr|``; the expression-expression block is zeroed off the diagonal (the one-hot columns are
   mutually exclusive, so that block only says "one label excludes the other"; expressions link only
   to V and A). The V-A entry is *kept* and goes through the threshold like every other entry: the
   data decide (on AffectNet no V-A edge survives, per the paper).
3. Binarise: an edge exists where ``|corr| >= tau`` (the public code's ``adj[adj >= t] = 1``; a value
   exactly at ``tau`` is kept). The binary matrix returned has a zero diagonal (edges only).
4. Re-weight as ML-GCN (Chen et al., CVPR 2019, Eq. 8):
   ``A'_ij = p * A_ij / sum_{k != i} A_ik`` for ``i != j`` and ``A'_ii = 1 - p``. So ``p`` is the share
   of the *neighbours* and ``1 - p`` the weight of the node itself ("when p -> 1 the feature of a node
   itself will not be considered"); the sums run over the row, as in Emotion-GCN's ``gen_A``
   (``adj * 0.5 / (adj.sum(1) - 1)``, diagonal 0.5). Each row with an edge sums to 1. (ML-GCN's own
   code differs from its Eq. 8: column sums and a self-loop of 1; we follow the equation, which
   Emotion-GCN's code also matches for p = 0.5.) A row with no off-diagonal edge keeps only its
   self-loop ``1 - p`` (the public code would divide by zero there); after step 5 such a node maps to
   itself with weight 1, whatever ``p``. ``p`` must lie in [0, 1).
5. Normalise exactly as ML-GCN's ``gen_adj``: ``D = diag(rowsum(A')^-1/2)``,
   ``A_hat = (A' D)^T D = D A'^T D``. Note the transpose: ``A'`` is row-normalised, hence not
   symmetric, and ``A_hat[i, j] = A'[j, i] / sqrt(d_i d_j)``.

The graph is fixed: ``A_hat`` is a buffer of :class:`EmotionGCN`, never a parameter.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..labels import EXPRESSIONS_7, EXPRESSIONS_8
from .checkpoint import load_checkpoint, register_model_kind

VA_NODES: tuple[str, ...] = ("Valence", "Arousal")
GCN_NODES: tuple[str, ...] = EXPRESSIONS_7 + VA_NODES
ALL_EMBEDDING_NAMES: tuple[str, ...] = EXPRESSIONS_8 + VA_NODES
ASSETS = Path(__file__).resolve().parent.parent / "assets"
PACKAGED_EMBEDDINGS = ASSETS / "label_embeddings.npz"


def node_names(n_expr: int = 7) -> tuple[str, ...]:
    """Names of the graph nodes: the first ``n_expr`` canonical expressions, then Valence, Arousal."""
    if not 1 <= n_expr <= len(EXPRESSIONS_8):
        raise ValueError(f"n_expr must be in 1..{len(EXPRESSIONS_8)}, got {n_expr}")
    return EXPRESSIONS_8[:n_expr] + VA_NODES


# ------------------------------------------------------------------------------------------ label graph
@dataclasses.dataclass
class LabelGraph:
    """The label graph of paper B and the numbers it was built from.

    corr: signed Spearman correlation (N x N); binary: edges after the ``tau`` cut (0/1, zero diagonal);
    reweighted: ``A'`` after the ``p`` re-weighting (with self-loops); a_hat: the normalised matrix the
    GCN uses. ``counts`` reports the rows used and the rows left out, by reason.
    """

    names: tuple[str, ...]
    corr: np.ndarray
    binary: np.ndarray
    reweighted: np.ndarray
    a_hat: np.ndarray
    tau: float
    p: float
    counts: dict[str, int]

    def edges(self) -> list[tuple[str, str, float]]:
        """Surviving edges ``(node_i, node_j, signed corr)`` with ``i < j``, in node order."""
        n = len(self.names)
        return [
            (self.names[i], self.names[j], float(self.corr[i, j]))
            for i in range(n)
            for j in range(i + 1, n)
            if self.binary[i, j]
        ]

    def summary(self) -> str:
        """A few lines for a notebook: counts, tau / p, and the surviving edges."""
        c = self.counts
        details = ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("rows_total", "rows_used"))
        lines = [
            f"label graph over {c.get('rows_used', 0)} of {c.get('rows_total', 0)} rows "
            f"(tau={self.tau:g}, p={self.p:g}); {details}"
        ]
        edges = self.edges()
        lines.append(f"{len(edges)} edges:" if edges else "no edge survives the cut")
        lines += [f"  {a} - {b}: {c:+.3f}" for a, b, c in edges]
        return "\n".join(lines)


def _select_rows(
    data: Any, n_expr: int, split: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Expression, valence, arousal arrays of the usable rows, and the counts of rows left out."""
    if isinstance(data, Mapping):
        expr, val, aro = (np.asarray(data[k], dtype=float) for k in ("expression", "valence", "arousal"))
        split_ok = np.ones(len(expr), dtype=bool)
    else:  # a manifest DataFrame
        missing = [c for c in ("expression", "valence", "arousal") if c not in data.columns]
        if missing:
            raise KeyError(
                f"manifest lacks column(s) {missing}; label_adjacency needs expression, "
                "valence and arousal (fer_lib.datasets.MANIFEST_COLUMNS)"
            )
        expr, val, aro = (data[k].to_numpy(dtype=float) for k in ("expression", "valence", "arousal"))
        if split is not None and "split" in data.columns:
            split_ok = (data["split"] == split).to_numpy()
        else:
            split_ok = np.ones(len(expr), dtype=bool)
    if not (len(expr) == len(val) == len(aro)):
        raise ValueError(f"expression/valence/arousal lengths differ: {len(expr)}, {len(val)}, {len(aro)}")
    with np.errstate(invalid="ignore"):
        expr_ok = np.isfinite(expr) & (expr >= 0) & (expr < n_expr) & (expr == np.round(expr))
        va_ok = np.isfinite(val) & np.isfinite(aro) & (np.abs(val) <= 1) & (np.abs(aro) <= 1)
    counts = {
        "rows_total": int(len(expr)),
        "rows_other_split": int((~split_ok).sum()),
        "rows_no_expression": int((split_ok & ~expr_ok).sum()),  # NaN, Contempt (for 7), invalid codes
        "rows_no_va": int((split_ok & expr_ok & ~va_ok).sum()),  # NaN or outside [-1, 1] (e.g. -2, -5)
    }
    keep = split_ok & expr_ok & va_ok
    counts["rows_used"] = int(keep.sum())
    return expr[keep].astype(np.int64), val[keep], aro[keep], counts


def spearman_matrix(columns: np.ndarray) -> np.ndarray:
    """Spearman correlation of the columns of ``columns`` (rows = samples); NaN for a constant column."""
    from scipy.stats import rankdata

    ranks = rankdata(columns, axis=0)  # ties get their average rank
    centred = ranks - ranks.mean(axis=0)
    norms = np.sqrt((centred**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (centred.T @ centred) / np.outer(norms, norms)
    corr[:, norms == 0] = np.nan
    corr[norms == 0, :] = np.nan
    return np.clip(corr, -1.0, 1.0)


def reweight(binary: np.ndarray, p: float) -> np.ndarray:
    """ML-GCN Eq. 8 on a binary edge matrix with zero diagonal: ``p`` shared by the neighbours of a row,
    ``1 - p`` on the diagonal; a row without edges keeps only its self-loop ``1 - p``."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1) (p is the neighbours' share, 1 - p the self-loop), got {p}")
    a = np.asarray(binary, dtype=float).copy()
    np.fill_diagonal(a, 0.0)
    degree = a.sum(axis=1, keepdims=True)
    out = np.divide(p * a, degree, out=np.zeros_like(a), where=degree > 0)
    np.fill_diagonal(out, 1.0 - p)
    return out


def normalize_adjacency(a: np.ndarray) -> np.ndarray:
    """ML-GCN's ``gen_adj``: ``D = diag(rowsum(A)^-1/2)``, returns ``(A D)^T D = D A^T D``."""
    a = np.asarray(a, dtype=float)
    rowsum = a.sum(axis=1)
    if np.any(rowsum <= 0):
        bad = np.flatnonzero(rowsum <= 0).tolist()
        raise ValueError(f"rows {bad} of the adjacency sum to <= 0; every node needs a self-loop (p < 1)")
    d = np.diag(rowsum**-0.5)
    return (a @ d).T @ d


def label_adjacency(
    data: Any, tau: float = 0.1, p: float = 0.5, n_expr: int = 7, split: str | None = "train"
) -> LabelGraph:
    """Build paper B's label graph from training labels (see the module docstring for every step).

    ``data`` is a manifest DataFrame (rows of ``split`` are used; ``split=None`` uses all rows) or a
    mapping with arrays ``expression`` (canonical index), ``valence`` and ``arousal``. Rows need an
    expression in ``0..n_expr-1`` and finite VA in [-1, 1]; the others are counted in ``counts``.
    """
    expr, val, aro, counts = _select_rows(data, n_expr, split)
    names = node_names(n_expr)
    if counts["rows_used"] < 3:
        raise ValueError(
            f"only {counts['rows_used']} usable rows for the label graph ({counts}); need "
            f"training rows with an expression in 0..{n_expr - 1} and valence/arousal in [-1, 1]"
        )
    left_out = {k: v for k, v in counts.items() if k not in ("rows_total", "rows_used") and v}
    if left_out:
        warnings.warn(
            f"label_adjacency: {counts['rows_used']} of {counts['rows_total']} rows used; "
            f"left out: {left_out}",
            stacklevel=2,
        )
    onehot = np.eye(n_expr)[expr]
    corr = spearman_matrix(np.column_stack([onehot, val, aro]))
    constant = [names[i] for i in range(len(names)) if np.isnan(corr[i, i])]
    counts["constant_columns"] = len(constant)
    if constant:
        warnings.warn(
            f"label_adjacency: column(s) {constant} are constant over the training rows "
            "(no sample of that class, or constant VA); they get no edge",
            stacklevel=2,
        )
    return graph_from_correlation(corr, tau, p, names, counts)


def graph_from_correlation(
    corr: np.ndarray,
    tau: float = 0.1,
    p: float = 0.5,
    names: Sequence[str] | None = None,
    counts: dict[str, int] | None = None,
) -> LabelGraph:
    """Steps 2-5 of the module docstring on a given correlation matrix ``[n_expr + 2]^2`` (NaN = no edge):
    ``|corr|``, expression-expression block zeroed, ``>= tau`` cut, ``p`` re-weighting, normalisation."""
    corr = np.asarray(corr, dtype=float)
    n = corr.shape[0]
    n_expr = n - len(VA_NODES)
    if corr.shape != (n, n) or n_expr < 1:
        raise ValueError(f"corr must be square [n_expr + 2, n_expr + 2], got {corr.shape}")
    names = tuple(names) if names is not None else node_names(n_expr)
    strength = np.nan_to_num(np.abs(corr), nan=0.0)
    strength[:n_expr, :n_expr] = 0.0  # expressions link only to V and A
    np.fill_diagonal(strength, 0.0)  # self-loops are added by the re-weighting
    binary = (strength >= tau).astype(np.int64)
    reweighted = reweight(binary, p)
    return LabelGraph(
        names=names,
        corr=corr,
        binary=binary,
        reweighted=reweighted,
        a_hat=normalize_adjacency(reweighted),
        tau=float(tau),
        p=float(p),
        counts=dict(counts or {}),
    )


# ------------------------------------------------------------------------------------- node embeddings
def _words(name: str) -> list[str]:
    """Lower-case words of a label name ("Valence", "very_happy" -> ["very", "happy"])."""
    return [w for w in re.split(r"[\s_\-]+", name.strip().lower()) if w]


def _load_glove(path: Path, names: Sequence[str]) -> tuple[np.ndarray, str]:
    """Average the vectors of each name's words from a GloVe-format text file (``word v1 v2 ...``)."""
    wanted = {w for n in names for w in _words(n)}
    found: dict[str, np.ndarray] = {}
    width = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            word, _, rest = line.rstrip("\n").partition(" ")
            word = word.lower()
            if word not in wanted or word in found:  # first occurrence wins (GloVe files are cased-unique)
                continue
            try:
                vec = np.array(rest.split(), dtype=np.float32)
            except ValueError as err:
                raise ValueError(
                    f"{path}:{lineno}: cannot parse the vector of {word!r} ({err}); "
                    "expected 'word v1 v2 ...' separated by spaces"
                ) from err
            if width is None:
                width = vec.size
            if vec.size != width or width == 0:
                raise ValueError(
                    f"{path}:{lineno}: vector of {word!r} has {vec.size} values, expected {width}"
                )
            found[word] = vec
            if len(found) == len(wanted):
                break
    missing = sorted(wanted - set(found))
    if missing:
        raise KeyError(
            f"{path}: no vector for word(s) {missing}; use a file that contains them, "
            "or embedding='packaged' / 'onehot'"
        )
    vectors = np.stack([np.mean([found[w] for w in _words(n)], axis=0) for n in names]).astype(np.float32)
    return vectors, f"GloVe-format file {path} ({width}-d, lower-case words, multi-word names averaged)"


def _load_packaged(names: Sequence[str], path: Path = PACKAGED_EMBEDDINGS) -> tuple[np.ndarray, str]:
    """Rows of the packaged ``label_embeddings.npz`` (written by scripts/make_label_embeddings.py)."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; regenerate it with scripts/make_label_embeddings.py "
            "or use embedding='onehot'"
        )
    with np.load(path, allow_pickle=False) as z:
        stored = [str(s) for s in z["names"]]
        vectors = z["vectors"].astype(np.float32)
        model = str(z["model"])
    missing = [n for n in names if n not in stored]
    if missing:
        raise KeyError(
            f"{path} has no embedding for {missing} (it holds {stored}); regenerate it with "
            "scripts/make_label_embeddings.py including these names"
        )
    rows = vectors[[stored.index(n) for n in names]]
    return (
        rows,
        f"packaged {path.name}: {model} ({vectors.shape[1]}-d sentence embeddings of the label names)",
    )


def load_label_embeddings(
    source: str | Path = "packaged", names: Sequence[str] = GCN_NODES
) -> tuple[np.ndarray, str]:
    """Node features for the label graph: ``(array [len(names), E], description of the source)``.

    source: ``"packaged"`` (the shipped sentence-embedding file), ``"onehot"`` (identity, E = N) or the
    path of a GloVe-format text file (paper B used 300-d GloVe). Record the description with the run.
    """
    names = list(names)
    if str(source) == "packaged":
        return _load_packaged(names)
    if str(source) == "onehot":
        return np.eye(len(names), dtype=np.float32), f"one-hot (identity), {len(names)}-d"
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"label embedding source {source!r} is neither 'packaged', 'onehot' nor an "
            "existing GloVe-format text file"
        )
    return _load_glove(path, names)


# ------------------------------------------------------------------------------------------------ model
class GraphConvolution(nn.Module):
    """One bias-free graph convolution ``A_hat @ (X @ W)`` (Kipf & Welling), uniform init ``1/sqrt(out)``.

    ``W = lr_scale * weight``: the stored parameter is divided by ``lr_scale`` at init, so ``W`` starts
    the same, but Adam(W), whose steps do not depend on the gradient's scale, moves ``W`` at
    ``lr * lr_scale`` (SGD at ``lr * lr_scale**2``): a slower learning rate for the GCN than for the
    backbone without a separate optimizer group.
    """

    def __init__(self, in_features: int, out_features: int, lr_scale: float = 1.0):
        super().__init__()
        if not lr_scale > 0:
            raise ValueError(f"lr_scale must be > 0, got {lr_scale}")
        self.lr_scale = float(lr_scale)
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        bound = 1.0 / math.sqrt(out_features)
        nn.init.uniform_(self.weight, -bound / self.lr_scale, bound / self.lr_scale)

    @property
    def effective_weight(self) -> torch.Tensor:
        """``W`` [in, out], the matrix the layer multiplies by."""
        return self.weight * self.lr_scale if self.lr_scale != 1.0 else self.weight

    def forward(self, x: torch.Tensor, a_hat: torch.Tensor) -> torch.Tensor:
        return a_hat @ (x @ self.effective_weight)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]} -> {self.weight.shape[1]}, bias=False, lr_scale={self.lr_scale:g}"


class EmotionGCN(nn.Module):
    """Label-graph GCN producing the 9 x D classifier/regressor matrix ``W`` applied to image features.

    node_features: [N, E] word embeddings of the node names; a_hat: [N, N] normalised fixed graph
    (a :class:`LabelGraph` or an array); feature_dim: D, the backbone's pooled feature width;
    layers GCN layers E -> hidden -> ... -> D with LeakyReLU(negative_slope) between them (none after
    the last). Both ``node_features`` and ``a_hat`` are buffers: saved with the model, never trained.

    ``va_scale`` multiplies the valence/arousal outputs (1 = paper B as published). The VA rows of ``W``
    come out of the same propagation and weights as the expression rows, so they live on the logits'
    scale, which cross-entropy keeps growing; VA labels live in [-1, 1]. With ``va_scale = 1`` the VA
    outputs were measured 20x wider than the labels and the CCC loss could not pull them in (notebook
    03); a smaller ``va_scale`` lets the VA rows sit on the logits' scale. ``lr_scale``: see
    :class:`GraphConvolution`.
    """

    def __init__(
        self,
        node_features: np.ndarray | torch.Tensor,
        a_hat: LabelGraph | np.ndarray | torch.Tensor,
        feature_dim: int,
        hidden: int = 512,
        layers: int = 2,
        negative_slope: float = 0.2,
        n_expr: int = 7,
        embedding_source: str = "",
        lr_scale: float = 1.0,
        va_scale: float = 1.0,
    ):
        super().__init__()
        if isinstance(a_hat, LabelGraph):
            a_hat = a_hat.a_hat
        x = torch.as_tensor(np.asarray(node_features), dtype=torch.float32)
        a = torch.as_tensor(np.asarray(a_hat), dtype=torch.float32)
        n = n_expr + len(VA_NODES)
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(
                f"node_features must be [{n}, E] ({n_expr} expressions + V + A), got {tuple(x.shape)}"
            )
        if a.shape != (n, n):
            raise ValueError(f"a_hat must be [{n}, {n}], got {tuple(a.shape)}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.n_expr = n_expr
        self.embedding_source = embedding_source
        self.va_scale = float(va_scale)
        self.register_buffer("node_features", x)
        self.register_buffer("a_hat", a)
        widths = [x.shape[1]] + [hidden] * (layers - 1) + [feature_dim]
        self.layers = nn.ModuleList(GraphConvolution(i, o, lr_scale) for i, o in zip(widths[:-1], widths[1:]))
        self.act = nn.LeakyReLU(negative_slope)

    @property
    def feature_dim(self) -> int:
        return self.layers[-1].weight.shape[1]

    def classifier_weights(self) -> torch.Tensor:
        """``W`` [N, D]: the GCN's output for every node."""
        h = self.node_features
        for k, layer in enumerate(self.layers):
            h = layer(h, self.a_hat)
            if k < len(self.layers) - 1:
                h = self.act(h)
        return h

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features`` [B, D] -> ``features @ W.T`` [B, N]: expression logits then valence, arousal."""
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(
                f"EmotionGCN expects pooled features [B, {self.feature_dim}], got "
                f"{tuple(features.shape)}; set feature_dim to the backbone's num_features"
            )
        out = features @ self.classifier_weights().T
        if self.va_scale == 1.0:
            return out
        scale = torch.ones(out.shape[1], dtype=out.dtype, device=out.device)
        scale[self.n_expr :] = self.va_scale
        return out * scale


class GCNMultiTaskNet(nn.Module):
    """Backbone (image -> pooled features [B, D]) + :class:`EmotionGCN`, with the trainer's head names.

    forward(x) -> ``{"expression": [B, n_expr] logits, "va": [B, 2] valence, arousal}``.
    """

    def __init__(self, backbone: nn.Module, gcn: EmotionGCN):
        super().__init__()
        self.backbone = backbone
        self.gcn = gcn

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.gcn(self.forward_features(x))
        n = self.gcn.n_expr
        return {"expression": out[:, :n], "va": out[:, n : n + 2]}


class GCNNet(GCNMultiTaskNet):
    """:class:`GCNMultiTaskNet` on a named backbone, with what the trainer and the checkpoint io expect of
    a model (as :class:`~fer_lib.models.MultiTaskNet`): ``tasks``, ``forward_heads``, ``backbone_name``,
    ``preprocess``, ``config()``, and a frozen backbone that stays in eval mode.

    ``input_size`` / ``pretrained`` / ``pretrained_file`` mean what they mean for ``MultiTaskNet``.
    """

    def __init__(
        self,
        backbone: str,
        graph: LabelGraph,
        gcn_cfg: Any = None,
        embeddings: tuple[np.ndarray, str] | None = None,
        input_size: int | None = None,
        pretrained: str | None = None,
        pretrained_file: str | None = None,
        pool: str = "avg",
    ) -> None:
        from ..config import GCNConfig
        from ..preprocess import Preprocess
        from .backbones import create_backbone

        module, dim, size, mean, std = create_backbone(
            backbone, pretrained_file, verbose=False, pretrained=pretrained, pool=pool
        )
        gcn_cfg = gcn_cfg or GCNConfig()
        super().__init__(module, build_emotion_gcn(graph, dim, gcn_cfg, embeddings))
        self.backbone_name, self.num_features, self.pool = backbone, dim, pool
        self.preprocess = Preprocess(input_size or size, tuple(mean), tuple(std))
        self.gcn_cfg = dataclasses.asdict(gcn_cfg)
        self.tasks = {"expression": self.gcn.n_expr, "va": 2}
        self.age_mode = "bins"
        self._backbone_frozen = False

    def forward_heads(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.gcn(feat)
        n = self.gcn.n_expr
        return {"expression": out[:, :n], "va": out[:, n : n + 2]}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_heads(self.forward_features(x))

    def train(self, mode: bool = True) -> GCNNet:
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.eval()
        return self

    def config(self) -> dict[str, Any]:
        return {
            "kind": "emotion_gcn",
            "backbone": self.backbone_name,
            "pool": self.pool,
            "tasks": dict(self.tasks),
            "gcn": self.gcn_cfg,
            "embedding_source": self.gcn.embedding_source,
            "embedding_dim": int(self.gcn.node_features.shape[1]),
            "num_features": self.num_features,
            "preprocess": self.preprocess.to_dict(),
        }


def load_gcn_checkpoint(path: str | Path) -> GCNNet:
    """Rebuild a :class:`GCNNet` from its checkpoint file (graph and node features come from the buffers)."""
    ckpt = load_checkpoint(path)
    kind = (ckpt.get("model_config") or {}).get("kind")
    if kind != "emotion_gcn":
        raise ValueError(f"{path} is not an Emotion-GCN checkpoint (model_config kind {kind!r})")
    return gcn_from_checkpoint(ckpt)


@register_model_kind("emotion_gcn")
def gcn_from_checkpoint(ckpt: dict[str, Any]) -> GCNNet:
    """The :class:`GCNNet` of a loaded checkpoint dict (the builder of kind ``"emotion_gcn"``)."""
    from ..config import GCNConfig
    from ..preprocess import from_checkpoint

    mc = ckpt["model_config"]
    sd = ckpt["state_dict"]
    a_hat = sd["gcn.a_hat"].numpy()
    n = a_hat.shape[0]
    graph = LabelGraph(
        names=tuple(str(i) for i in range(n)),
        corr=a_hat,
        binary=a_hat,
        reweighted=a_hat,
        a_hat=a_hat,
        tau=0.0,
        p=0.0,
        counts={},
    )
    emb = (sd["gcn.node_features"].numpy(), mc.get("embedding_source", ""))
    known = {f.name for f in dataclasses.fields(GCNConfig)}
    values = {k: v for k, v in mc["gcn"].items() if k in known}
    values = {"lr_scale": 1.0, "va_scale": 1.0, **values}  # checkpoints older than these knobs
    cfg = GCNConfig(**{**values, "n_expr": n - len(VA_NODES)})
    model = GCNNet(mc["backbone"], graph, cfg, emb, pool=mc.get("pool", "avg"))
    model.load_state_dict(sd, strict=True)
    model.preprocess = from_checkpoint(ckpt)
    return model


def build_emotion_gcn(
    graph: LabelGraph, feature_dim: int, cfg: Any = None, embeddings: tuple[np.ndarray, str] | None = None
) -> EmotionGCN:
    """An :class:`EmotionGCN` for ``graph`` from a ``config.GCNConfig`` (defaults when None).

    The node features come from ``embeddings`` or from ``cfg.embedding`` via :func:`load_label_embeddings`;
    the source is kept in ``gcn.embedding_source`` so that notebooks can print and record it.
    """
    from ..config import GCNConfig

    cfg = cfg or GCNConfig()
    vectors, source = embeddings or load_label_embeddings(cfg.embedding, graph.names)
    n_expr = len(graph.names) - len(VA_NODES)
    return EmotionGCN(
        vectors,
        graph,
        feature_dim,
        hidden=cfg.hidden,
        layers=cfg.layers,
        negative_slope=cfg.negative_slope,
        n_expr=n_expr,
        embedding_source=source,
        lr_scale=getattr(cfg, "lr_scale", 1.0),
        va_scale=getattr(cfg, "va_scale", 1.0),
    )
