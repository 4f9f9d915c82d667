"""Models: timm backbones, paper A's multi-task heads, paper B's Emotion-GCN, checkpoint io.

``create_backbone(name, pretrained_file=None, pretrained=None) -> (module, num_features, input_size, mean,
std)`` (``pretrained="imagenet"``: offline ImageNet weights, see :mod:`.pretrained`);
``MultiTaskNet(backbone_name, tasks, hidden=256, dropout=0.0, age_mode="bins")`` with ``forward(x) ->
{head: output}`` and ``forward_features(x) -> [B, D]``; checkpoints that load with
``torch.load(weights_only=True)``, rebuilt by the builder registered for their model kind
(``build_model_from_checkpoint``; kinds ``"multitask"`` and ``"emotion_gcn"``, see :mod:`.checkpoint`).
"""

from .backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAPER_INPUT_SIZES,
    TinyCNN,
    create_backbone,
    list_local_backbones,
    register_backbone,
)
from .checkpoint import (
    DEFAULT_KIND,
    build_model_from_checkpoint,
    init_from_checkpoint,
    list_model_kinds,
    load_checkpoint,
    load_model,
    load_state_dict_adapted,
    model_kind,
    register_model_kind,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
    update_checkpoint,
)
from .emotion_gcn import GCNNet, load_gcn_checkpoint  # the "emotion_gcn" kind registers here
from .heads import (
    AGE_SCALE,
    ATTRIBUTE_TASKS,
    MALE_THRESHOLD,
    TASK_NAMES,
    MultiTaskNet,
    freeze_backbone,
    gender_prob_female,
    predict_age,
    predict_gender,
)
from .pretrained import (
    PRETRAINED_CHOICES,
    PretrainedWeights,
    PretrainedWeightsError,
    get_pretrained,
    list_pretrained,
    load_imagenet,
    register_pretrained,
)
from .weights import LoadReport, load_matching, read_state_dict

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PAPER_INPUT_SIZES",
    "LoadReport",
    "TinyCNN",
    "create_backbone",
    "list_local_backbones",
    "load_matching",
    "read_state_dict",
    "register_backbone",
    "DEFAULT_KIND",
    "build_model_from_checkpoint",
    "init_from_checkpoint",
    "load_checkpoint",
    "load_model",
    "list_model_kinds",
    "load_state_dict_adapted",
    "model_kind",
    "register_model_kind",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "unwrap",
    "update_checkpoint",
    "GCNNet",
    "load_gcn_checkpoint",
    "AGE_SCALE",
    "ATTRIBUTE_TASKS",
    "MALE_THRESHOLD",
    "TASK_NAMES",
    "MultiTaskNet",
    "freeze_backbone",
    "gender_prob_female",
    "predict_age",
    "predict_gender",
    "PRETRAINED_CHOICES",
    "PretrainedWeights",
    "PretrainedWeightsError",
    "get_pretrained",
    "list_pretrained",
    "load_imagenet",
    "register_pretrained",
]
