"""The tiny training recipe the trainer tests share: the local ``tiny_cnn`` at 32 px on the CPU, fp32,
no class weights, one all-layer epoch; a test overrides only what it is about."""

from __future__ import annotations

from fer_lib.config import TrainConfig

TINY = dict(
    backbone="tiny_cnn",
    image_size=32,
    batch_size=16,
    head_epochs=0,
    full_epochs=1,
    lr_head=3e-3,
    lr_full=3e-3,
    amp=False,
    channels_last=False,
    class_weights=False,
)


def tiny_config(**overrides) -> TrainConfig:
    """``TrainConfig`` of :data:`TINY` with ``overrides``."""
    return TrainConfig(**{**TINY, **overrides})
