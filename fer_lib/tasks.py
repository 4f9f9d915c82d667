"""The task registry: one :class:`TaskSpec` per model head, declared once and read everywhere.

A spec says what a head is: its key (the head's name in models and checkpoints, which is also the
manifest column of its label), its label columns, its size, whether it sits on the attribute trunk,
its loss (a name in :data:`fer_lib.training.losses.LOSSES`), how its outputs read (a :class:`Decoder`
of :data:`DECODERS`: argmax in the label order, age's top-2 expected value, gender at the model's
male threshold, plain values), the metric quantities it is scored with (names of
:data:`fer_lib.metrics.QUANTITIES`; metric names are ``<label column>_<quantity>``, plus
``<key>_<quantity>``, their mean, for a head with several label columns) and the fields a
prediction (:class:`fer_lib.serving.recognizer.FacePrediction`) exposes.

The model builds its heads from it (:class:`fer_lib.models.MultiTaskNet`), the trainer's loss, the
evaluation and the Recognizer loop over it, and the predict CSV takes its columns from it: adding a
head of a known kind is one :func:`register_task` call below.

Inside and outside names: UTKFace's race field is the head ``race`` inside (manifests, checkpoints
and metric names keep it) and ``ethnicity`` wherever a user reads it (prediction fields, CSV
columns, tables): :attr:`TaskSpec.public`.

Nothing here imports torch at import time; the readouts import it when they run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import labels

if TYPE_CHECKING:
    import torch

__all__ = [
    "AGE_MODES",
    "AGE_SCALE",
    "DECODERS",
    "Decoder",
    "Readout",
    "TASKS",
    "TaskSpec",
    "all_tasks",
    "default_label_orders",
    "gender_prob_female",
    "get_task",
    "label_keys",
    "predict_age",
    "predict_gender",
    "register_task",
    "softmax",
    "task_names",
]

AGE_SCALE = 100.0  # a regression age head predicts age / AGE_SCALE
#: How an age head is built and read (:func:`predict_age`), each mode in the words of a model card.
AGE_MODES = {
    "bins": "100 one-year bins (0-99), read out as paper A's top-2 expected value",
    "median": "100 one-year bins (0-99), read out as their median (the first bin whose cumulative "
    "probability reaches 1/2)",
    "regression": "one regression output, years / 100",
}


# ====================================================================================== readouts
def predict_age(output: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    """Age in years from the age head output, read out as ``mode`` (:data:`AGE_MODES`).

    ``"bins"`` (``[B, K]`` logits, bin i = age i): expected value over the two most probable bins with
    their softmax probabilities renormalised to sum 1 (paper A). ``"median"`` (the same head): the median
    of the softmax distribution, the first bin whose cumulative probability reaches 1/2: the readout with
    the least expected absolute error, and not pulled to a narrow child peak when the distribution is
    bimodal (a frowning adult). ``"regression"`` (``[B]`` or ``[B, 1]``): ``AGE_SCALE * output``. ``mode``
    is inferred from the shape if None (a bins head as ``"bins"``).
    """
    import torch

    if mode is None:
        mode = "regression" if output.dim() == 1 or output.shape[-1] == 1 else "bins"
    if mode not in AGE_MODES:
        raise ValueError(f"age mode must be one of {', '.join(AGE_MODES)}, got {mode!r}")
    if mode == "regression":
        return output.reshape(-1).float() * AGE_SCALE
    prob = torch.softmax(output.float(), dim=-1)
    if mode == "median":
        below = (prob.cumsum(-1) < 0.5).sum(-1)  # bins whose cumulative probability is under 1/2
        return below.clamp(max=prob.shape[-1] - 1).to(prob.dtype)
    top_p, top_i = prob.topk(2, dim=-1)
    return (top_p * top_i.to(top_p.dtype)).sum(-1) / top_p.sum(-1)


def gender_prob_female(output: torch.Tensor) -> torch.Tensor:
    """p(female) from the gender head: sigmoid of the single logit, or softmax column 1 of two."""
    import torch

    if output.dim() == 2 and output.shape[-1] == 2:
        return torch.softmax(output.float(), dim=-1)[:, 1]
    return torch.sigmoid(output.reshape(-1).float())


def predict_gender(output: torch.Tensor, male_threshold: float = labels.MALE_THRESHOLD) -> torch.Tensor:
    """Gender label (0 male, 1 female): male where ``p(male) = 1 - p(female) >= male_threshold``."""
    import torch

    p_male = 1.0 - gender_prob_female(output)
    return torch.where(p_male >= male_threshold, 0, 1).long()


def softmax(z: np.ndarray) -> np.ndarray:
    """Row softmax in float64, returned as float32 (the served class probabilities)."""
    z = z.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True, eq=False)
class Readout:
    """What serving one head of one model needs besides its outputs (:meth:`TaskSpec.readout`)."""

    names: tuple[str, ...] = ()  # class names of the served columns, in order
    mapping: np.ndarray | None = None  # head column i is class mapping[i] of ``names`` (None: same order)
    age_mode: str | None = None
    male_threshold: float = labels.MALE_THRESHOLD


class Decoder:
    """How the outputs of one kind of head read: in evaluation (torch, :meth:`predictions`) and in
    serving (numpy, :meth:`serve` then :meth:`face`). ``TaskSpec.decode`` names one of :data:`DECODERS`."""

    def n_classes(self, spec: TaskSpec, outputs: int) -> int | None:
        """Classes the labels of a head of ``outputs`` outputs take (None: not a classification)."""
        return None

    def label_order(self, spec: TaskSpec, outputs: int) -> list[str] | None:
        """What each output means, stored in checkpoints (None: nothing to store)."""
        return None

    def names(self, spec: TaskSpec, outputs: int, stored: Sequence[str] | None) -> tuple[str, ...]:
        """Class names of the served columns, given the model's stored label order."""
        return ()

    def fields(self, spec: TaskSpec) -> tuple[str, ...]:
        """The prediction fields of a served head."""
        return (spec.public,)

    def columns(self, spec: TaskSpec, names: Sequence[str]) -> list[str]:
        """The CSV columns of a served head."""
        return list(self.fields(spec))

    def predictions(
        self, spec: TaskSpec, out: torch.Tensor, age_mode: str | None, male_threshold: float
    ) -> dict[str, torch.Tensor]:
        """Evaluation arrays: ``<label column>_pred`` for every label column (plus any extra)."""
        raise NotImplementedError

    def serve(self, spec: TaskSpec, raw: np.ndarray, readout: Readout) -> dict[str, np.ndarray]:
        """Served arrays of a batch, keyed by prediction field."""
        raise NotImplementedError

    def face(
        self, spec: TaskSpec, served: Mapping[str, np.ndarray], i: int, readout: Readout
    ) -> dict[str, Any]:
        """The prediction fields of face ``i`` of a batch."""
        raise NotImplementedError


class Argmax(Decoder):
    """Class logits: the argmax class, and served softmax probabilities named in the label order."""

    def n_classes(self, spec, outputs):
        return outputs

    def label_order(self, spec, outputs):
        return list(spec.classes[:outputs]) if spec.classes is not None else None

    def names(self, spec, outputs, stored):
        if stored and spec.to_canonical is None:
            return tuple(stored)
        return tuple(spec.classes[:outputs]) if spec.classes is not None else tuple(stored or ())

    def fields(self, spec):
        return (spec.public, f"{spec.public}_probs")

    def columns(self, spec, names):
        return [spec.public] + [f"{spec.column_prefix}{n}" for n in names]

    def predictions(self, spec, out, age_mode, male_threshold):
        return {f"{spec.label_keys[0]}_pred": out.argmax(-1)}

    def serve(self, spec, raw, readout):
        p = softmax(raw)
        if readout.mapping is not None:  # into the canonical order
            p, unordered = np.empty_like(p), p
            p[..., readout.mapping] = unordered
        return {self.fields(spec)[1]: p}

    def face(self, spec, served, i, readout):
        name, probs = self.fields(spec)
        p = served[probs][i]
        return {
            probs: {k: float(v) for k, v in zip(readout.names, p)},
            name: readout.names[int(np.argmax(p))],
        }


class Threshold(Decoder):
    """Two classes from one logit (sigmoid = p(class 1)) or two (softmax): class 0 where p(class 0)
    reaches the model's threshold (gender: male where p(male) >= ``male_threshold``)."""

    def n_classes(self, spec, outputs):
        return len(spec.classes)

    def label_order(self, spec, outputs):
        return list(spec.classes)

    def names(self, spec, outputs, stored):
        return tuple(spec.classes)

    def fields(self, spec):
        return (spec.public, f"p_{spec.classes[1].lower()}")

    def predictions(self, spec, out, age_mode, male_threshold):
        key = spec.label_keys[0]
        return {
            f"{key}_prob_{spec.classes[1].lower()}": gender_prob_female(out),
            f"{key}_pred": predict_gender(out, male_threshold),
        }

    def serve(self, spec, raw, readout):
        import torch

        return {self.fields(spec)[1]: gender_prob_female(torch.from_numpy(np.asarray(raw))).numpy()}

    def face(self, spec, served, i, readout):
        name, prob = self.fields(spec)
        p = float(served[prob][i])
        return {prob: p, name: spec.classes[0] if 1.0 - p >= readout.male_threshold else spec.classes[1]}


class Age(Decoder):
    """Age in years: one-year bins read as paper A's top-2 expected value or as their median, or a
    regression (:func:`predict_age`)."""

    def label_order(self, spec, outputs):
        return [f"bin i = {i} years" for i in range(outputs)] if outputs > 1 else ["years/100"]

    def predictions(self, spec, out, age_mode, male_threshold):
        return {f"{spec.label_keys[0]}_pred": predict_age(out, age_mode)}

    def serve(self, spec, raw, readout):
        import torch

        return {spec.public: predict_age(torch.from_numpy(np.asarray(raw)), readout.age_mode).numpy()}

    def face(self, spec, served, i, readout):
        return {spec.public: float(served[spec.public][i])}


class Values(Decoder):
    """One output per label column, read as is (valence, arousal)."""

    def label_order(self, spec, outputs):
        return list(spec.label_keys)

    def fields(self, spec):
        return spec.label_keys

    def predictions(self, spec, out, age_mode, male_threshold):
        return {f"{k}_pred": out[:, j] for j, k in enumerate(spec.label_keys)}

    def serve(self, spec, raw, readout):
        return {k: raw[:, j] for j, k in enumerate(spec.label_keys)}

    def face(self, spec, served, i, readout):
        return {k: float(served[k][i]) for k in spec.label_keys}


#: Decoder by name (``TaskSpec.decode``).
DECODERS: dict[str, Decoder] = {
    "argmax": Argmax(),
    "threshold": Threshold(),
    "age": Age(),
    "values": Values(),
}


# ========================================================================================= specs
@dataclass(frozen=True)
class TaskSpec:
    """One head: what it predicts, how it is trained, read, scored and served."""

    key: str  # head name in models and checkpoints; the manifest column of its label by default
    display: str  # name in tables and figures
    loss: str  # a name in fer_lib.training.losses.LOSSES
    decode: str  # a name in DECODERS
    quantities: tuple[str, ...]  # metric quantities (fer_lib.metrics.QUANTITIES)
    label_keys: tuple[str, ...] = ()  # manifest columns / label dict keys; () -> (key,)
    classes: tuple[str, ...] | None = None  # canonical class names in label order (None: from the data)
    outputs: int | None = None  # the head's size by default (None: from the data, e.g. identities)
    sizes: tuple[int, ...] = ()  # the only sizes the head may have (() -> any)
    sizes_doc: str = ""  # what ``sizes`` mean, for the error message
    on_trunk: bool = False  # on the attribute model's Dense(hidden) trunk (paper A's age / gender / race)
    public: str = ""  # the outside name: prediction fields and CSV columns ("" -> key)
    served: bool = True  # the Recognizer exposes it (identity: a training head only)
    column_prefix: str = ""  # CSV column prefix of the per-class probabilities
    # maps a model's stored label order (names) onto canonical indices; None: the stored order is served
    to_canonical: Callable[[Sequence[str], int], np.ndarray] | None = None
    indexed_by: str | None = None  # dataset attribute mapping label names to indices (identity_index)

    def __post_init__(self) -> None:
        if not self.label_keys:
            object.__setattr__(self, "label_keys", (self.key,))
        if not self.public:
            object.__setattr__(self, "public", self.key)
        if self.decode not in DECODERS:
            raise ValueError(
                f"task {self.key!r}: decode {self.decode!r}; choose one of {', '.join(DECODERS)}"
            )

    @property
    def decoder(self) -> Decoder:
        return DECODERS[self.decode]

    @property
    def fields(self) -> tuple[str, ...]:
        """The prediction fields it exposes (``FacePrediction``); () when not served."""
        return self.decoder.fields(self) if self.served else ()

    def check_outputs(self, outputs: int) -> None:
        """ValueError unless a head of ``outputs`` outputs is allowed."""
        if self.sizes and outputs not in self.sizes:
            raise ValueError(f"the {self.key!r} head has {self.sizes_doc}, got {outputs}")

    def n_classes(self, outputs: int) -> int | None:
        """Number of label classes of a head of ``outputs`` outputs (None: not a classification)."""
        return self.decoder.n_classes(self, outputs)

    def label_order(self, outputs: int) -> list[str] | None:
        return self.decoder.label_order(self, outputs)

    def metric_names(self) -> list[str]:
        """``<label column>_<quantity>`` and, for several label columns, ``<key>_<quantity>`` (the mean)."""
        names = [f"{k}_{q}" for k in self.label_keys for q in self.quantities]
        return names + ([f"{self.key}_{q}" for q in self.quantities] if len(self.label_keys) > 1 else [])

    def readout(
        self,
        outputs: int,
        stored: Sequence[str] | None = None,
        age_mode: str | None = None,
        male_threshold: float = labels.MALE_THRESHOLD,
    ) -> Readout:
        """What serving this head of a model needs: class names (canonical where ``to_canonical``
        maps the model's ``stored`` order, else the stored order) and the column mapping."""
        names = self.decoder.names(self, outputs, stored)
        mapping = None
        if self.to_canonical is not None:
            order = list(stored or names)
            if len(order) != outputs:
                raise ValueError(
                    f"{self.key} label order {order} does not match the head's {outputs} outputs"
                )
            m = self.to_canonical(order, outputs)
            mapping = None if np.array_equal(m, np.arange(outputs)) else m
        return Readout(names, mapping, age_mode, male_threshold)


#: The registry: head key -> spec, in the order heads are listed (paper A's pre-training order).
TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a head to the registry; its key, label columns and prediction fields must be new."""
    taken_labels = {k for s in TASKS.values() for k in s.label_keys}
    taken_fields = {f for s in TASKS.values() for f in s.fields}
    if spec.key in TASKS:
        raise ValueError(f"task {spec.key!r} is registered already")
    if taken_labels & set(spec.label_keys) or taken_fields & set(spec.fields):
        raise ValueError(
            f"task {spec.key!r}: label columns {spec.label_keys} / fields {spec.fields} clash with another head's"
        )
    TASKS[spec.key] = spec
    return spec


def get_task(key: str) -> TaskSpec:
    """The spec of head ``key``; a ValueError listing the registered heads otherwise."""
    if key not in TASKS:
        raise ValueError(f"unknown task head {key!r}; the heads are {', '.join(TASKS)}")
    return TASKS[key]


def all_tasks() -> list[TaskSpec]:
    return list(TASKS.values())


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def label_keys() -> tuple[str, ...]:
    """Every label column of every head, in registry order."""
    return tuple(k for s in TASKS.values() for k in s.label_keys)


def default_label_orders(tasks: Mapping[str, int]) -> dict[str, list]:
    """Canonical label orders of the heads of a model (``{head: size}``); stored in checkpoints."""
    orders = {}
    for key, n in tasks.items():
        order = TASKS[key].label_order(int(n)) if key in TASKS else None
        if order is not None:
            orders[key] = order
    return orders


_CLASS_SCORES = ("accuracy", "macro_f1")
register_task(
    TaskSpec(
        key="identity",
        display="Identity",
        loss="cross_entropy",
        decode="argmax",
        quantities=_CLASS_SCORES,
        served=False,
        indexed_by="identity_index",
    )
)
register_task(
    TaskSpec(
        key="age",
        display="Age",
        loss="age",
        decode="age",
        quantities=("mae", "cs5"),
        outputs=labels.AGE_BINS,
        on_trunk=True,
    )
)
register_task(
    TaskSpec(
        key="gender",
        display="Gender",
        loss="binary",
        decode="threshold",
        quantities=("accuracy",),
        classes=labels.GENDERS,
        outputs=1,
        sizes=(1, 2),
        sizes_doc="1 (sigmoid) or 2 (softmax) outputs",
        on_trunk=True,
    )
)
register_task(
    TaskSpec(
        key="race",
        display="Ethnicity",
        loss="cross_entropy",
        decode="argmax",
        quantities=_CLASS_SCORES,
        classes=labels.ETHNICITIES,
        outputs=len(labels.ETHNICITIES),
        on_trunk=True,
        public="ethnicity",
        column_prefix="eth_",
    )
)
register_task(
    TaskSpec(
        key="expression",
        display="Expression",
        loss="cross_entropy",
        decode="argmax",
        quantities=_CLASS_SCORES,
        classes=labels.EXPRESSIONS_8,
        outputs=len(labels.EXPRESSIONS_8),
        column_prefix="expr_",
        to_canonical=labels.mapping_to_canonical,
    )
)
register_task(
    TaskSpec(
        key="va",
        display="Valence-arousal",
        loss="ccc",
        decode="values",
        quantities=("ccc",),
        label_keys=("valence", "arousal"),
        outputs=2,
        sizes=(2,),
        sizes_doc="2 outputs (valence, arousal)",
    )
)
