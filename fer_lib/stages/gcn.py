"""Stage 03: paper B's Emotion-GCN (7 expressions + valence + arousal) and its ablation at equal budget.

``run_gcn(cfg)`` builds the label graph from the training rows of the AffectNet-format manifest
(:func:`fer_lib.models.emotion_gcn.label_adjacency`), then trains three models with the same
backbone, initialisation (``01_attributes/best.pt`` when present), data (rows labelled 0..6, Contempt
dropped as paper B), schedule and epochs (``cfg.finetune``):

* ``single_task``: expression head only (7 classes);
* ``multitask_linear``: expression (7) + valence/arousal linear heads (paper A's layout);
* ``emotion_gcn``: the GCN-produced classifier/regressor (:class:`GCNNet`).

All are selected on the validation rows carved from training.csv and reported on validation.csv
(metrics split 'val', as the papers).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import GCNConfig, Paths, Profile, get_paths, seed_everything
from ..models import create_backbone
from ..models.checkpoint import load_checkpoint
from ..models.emotion_gcn import (
    GCNMultiTaskNet,
    LabelGraph,
    build_emotion_gcn,
    label_adjacency,
    load_label_embeddings,
)
from ..preprocess import for_model
from . import common as C

ABLATION_KEYS = ("accuracy_7cls", "macro_f1_7cls", "valence_ccc", "arousal_ccc")
ARMS = ("single_task", "multitask_linear", "emotion_gcn")


class GCNNet(GCNMultiTaskNet):
    """:class:`GCNMultiTaskNet` with what the trainer and the checkpoint io expect of a model: ``tasks``,
    ``forward_heads``, ``backbone_name``, ``config()``, and a frozen backbone that stays in eval mode."""

    def __init__(self, backbone: str, graph: LabelGraph, gcn_cfg: GCNConfig | None = None,
                 embeddings: tuple[np.ndarray, str] | None = None) -> None:
        module, dim, size, mean, std = create_backbone(backbone, verbose=False)
        gcn_cfg = gcn_cfg or GCNConfig()
        super().__init__(module, build_emotion_gcn(graph, dim, gcn_cfg, embeddings))
        self.backbone_name, self.num_features, self.input_size = backbone, dim, size
        self.mean, self.std = tuple(mean), tuple(std)
        self.gcn_cfg = dataclasses.asdict(gcn_cfg)
        self.tasks = {"expression": self.gcn.n_expr, "va": 2}
        self.age_mode = "bins"
        self._backbone_frozen = False

    def forward_heads(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.gcn(feat)
        n = self.gcn.n_expr
        return {"expression": out[:, :n], "va": out[:, n:n + 2]}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_heads(self.forward_features(x))

    def train(self, mode: bool = True) -> GCNNet:
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.eval()
        return self

    def config(self) -> dict[str, Any]:
        return {"kind": "emotion_gcn", "backbone": self.backbone_name, "tasks": dict(self.tasks),
                "gcn": self.gcn_cfg, "embedding_source": self.gcn.embedding_source,
                "embedding_dim": int(self.gcn.node_features.shape[1]), "input_size": self.input_size,
                "mean": list(self.mean), "std": list(self.std), "num_features": self.num_features}


def load_gcn_checkpoint(path: str | Path) -> GCNNet:
    """Rebuild a :class:`GCNNet` from ``03_gcn/best.pt`` (graph and node features come from the buffers)."""
    ckpt = load_checkpoint(path)
    mc = ckpt.get("model_config") or {}
    if mc.get("kind") != "emotion_gcn":
        raise ValueError(f"{path} is not an Emotion-GCN checkpoint (model_config kind {mc.get('kind')!r})")
    sd = ckpt["state_dict"]
    n = sd["gcn.a_hat"].shape[0]
    n_expr = n - 2
    a_hat = sd["gcn.a_hat"].numpy()
    graph = LabelGraph(names=tuple(str(i) for i in range(n)), corr=a_hat, binary=a_hat, reweighted=a_hat,
                       a_hat=a_hat, tau=0.0, p=0.0, counts={})
    emb = (sd["gcn.node_features"].numpy(), mc.get("embedding_source", ""))
    model = GCNNet(mc["backbone"], graph, GCNConfig(**{**mc["gcn"], "n_expr": n_expr}), emb)
    model.load_state_dict(sd, strict=True)
    return model


@dataclass
class GCNResult:
    graph: LabelGraph
    embedding_source: str
    dataset: str
    runs: dict[str, C.Run] = field(default_factory=dict)

    def ablation_table(self) -> pd.DataFrame:
        """One row per arm at equal budget: epochs, train seconds, accuracy / macro F1 (7 classes), CCC."""
        return C.metrics_table([self.runs[a] for a in ARMS if a in self.runs], ABLATION_KEYS)


def build_graph(df: pd.DataFrame, cfg: Profile) -> LabelGraph:
    """Paper B's label graph from the 'train' rows only (never the selection or report rows)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # rows without VA / Contempt rows are counted in graph.counts
        return label_adjacency(df, tau=cfg.gcn.tau, p=cfg.gcn.p, n_expr=cfg.gcn.n_expr, split="train")


def run_gcn(cfg: Profile, paths: Paths | None = None, progress: bool = True,
            arms: tuple[str, ...] = ARMS) -> GCNResult:
    """Label graph + the three arms of the ablation (see the module docstring); writes ``03_gcn/best.pt``."""
    paths = paths or get_paths()
    tc = cfg.finetune
    n_expr = cfg.gcn.n_expr
    df, src, dataset = C.affectnet_splits(cfg, paths, progress)
    graph = build_graph(df, cfg)
    embeddings = load_label_embeddings(cfg.gcn.embedding, graph.names)
    res = GCNResult(graph, embeddings[1], dataset)
    frames = C.split_frames(df, need_expression_below=n_expr)
    counts = {"expression": C.expression_counts(frames["train"], n_expr)}
    datasets: Mapping | None = None
    for arm in arms:
        seed_everything(cfg.seed)
        if arm == "single_task":
            model = C.new_model(tc, {"expression": n_expr})
        elif arm == "multitask_linear":
            model = C.new_model(tc, {"expression": n_expr, "va": 2})
        elif arm == "emotion_gcn":
            model = GCNNet(tc.backbone, graph, cfg.gcn, embeddings)
        else:
            raise ValueError(f"unknown ablation arm {arm!r}; choose from {ARMS}")
        init = C.init_from_stage(model, tc, paths.checkpoints / C.ATTRIBUTES_CKPT)
        print(f"[03 {arm}] {init}")
        if datasets is None:      # decoded once, shared by the arms (same backbone, same mean/std)
            datasets = C.build_datasets(frames, tc, for_model(model).replace(input_size=tc.image_size))
        out = paths.checkpoints / ("03_gcn" if arm == "emotion_gcn" else f"03_ablation_{arm}")
        res.runs[arm] = C.train_model(model, tc, datasets["train"], datasets["val"], datasets["report"], arm, out,
                                      eval_fn=C.expression_metrics, seed=cfg.seed, device=cfg.device, init=init,
                                      class_counts=counts, progress=progress, n_classes=n_expr)
        res.runs[arm].dataset = dataset
    return res


def record_gcn(res: GCNResult, cfg: Profile, paths: Paths | None = None) -> pd.DataFrame:
    """metrics.csv rows of stage 'gcn' (split 'val' = AffectNet's validation set, the papers' report set)."""
    frames = []
    for arm, run in res.runs.items():
        frames.append(C.record_run(run, "gcn", res.dataset, "val", f"{arm}_{cfg.finetune.backbone}", cfg,
                                   keys=ABLATION_KEYS, paths=paths))
    return pd.concat(frames, ignore_index=True)


def ablation_with_source(res: GCNResult) -> pd.DataFrame:
    """The ablation table with the graph's embedding source and tau / p in a last column (GCN row)."""
    t = res.ablation_table()
    t["note"] = ["" if m != "emotion_gcn" else
                 f"tau={res.graph.tau:g}, p={res.graph.p:g}, {len(res.graph.edges())} edges; "
                 f"embeddings: {res.embedding_source.split(':')[0]}" for m in t["model"]]
    return t
