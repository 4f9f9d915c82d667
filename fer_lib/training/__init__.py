"""One trainer for every stage: face-ID pre-training, multi-task attributes, expression fine-tuning.

One module per concern; read them in this order:

* :mod:`.losses` - **masked multi-task loss** (:class:`MultiTaskLoss`): every sample contributes only
  to the heads it has labels for (the ``mask`` dict of the data contract); a batch where a task has no
  label gives an exact zero loss and zero gradient to that head. Class-weighted cross-entropy with label
  smoothing, age CE over one-year bins (or L1 for regression), gender BCE on a single logit, and paper
  A's valence/arousal loss ``(1 - CCC_v) / 2 + (1 - CCC_a) / 2``; paper A's 1/count class weights.
* :mod:`.optim` - SAM around the base optimizer, the optimizers and per-step schedules.
* :mod:`.distributed` - **exact resume and multi-device**: the training order depends only on
  ``(seed, epoch)`` (:class:`EpochSampler`, sharded under ``torchrun``); only rank 0 evaluates, writes
  checkpoints / history and shows progress.
* :mod:`.evaluation` - predictions over a loader and the metrics of every head.
* :mod:`.trainer` - :class:`Trainer`, the loop: ``head_epochs`` with the backbone frozen at ``lr_head``,
  then ``full_epochs`` with every layer at ``lr_full`` (paper A), a fresh optimizer per stage;
  ``last.pt`` holds model, optimizer, scheduler, position and RNG states, so a stopped run resumed ends
  with the same weights as an uninterrupted one (bit-exact on CPU with ``num_workers=0``). Model
  selection uses the validation loader only (``best.pt`` by ``select_metric``); the test split is for
  reporting and is refused as a validation set. Checkpoints carry the training data's preprocessing.
"""

from .distributed import EpochSampler, cleanup_distributed, setup_distributed
from .evaluation import amp_supported, evaluate, metrics_from_predictions, predict
from .losses import CLASS_TASKS, LABEL_KEYS, MultiTaskLoss, class_weights, count_classes
from .optim import SAM, build_optimizer, build_scheduler
from .trainer import Trainer

__all__ = [
    "CLASS_TASKS",
    "LABEL_KEYS",
    "SAM",
    "EpochSampler",
    "MultiTaskLoss",
    "Trainer",
    "amp_supported",
    "build_optimizer",
    "build_scheduler",
    "class_weights",
    "cleanup_distributed",
    "count_classes",
    "evaluate",
    "metrics_from_predictions",
    "predict",
    "setup_distributed",
]
