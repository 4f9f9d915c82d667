import numpy as np
import pytest

from fer_lib import labels


def test_seven_is_prefix_of_eight():
    assert labels.EXPRESSIONS_7 == labels.EXPRESSIONS_8[:7]
    assert labels.EXPRESSIONS_8[-1] == "Contempt"


def test_fer2013_mapping_by_name():
    m = labels.mapping_to_canonical(labels.FER2013_ORDER, 7)
    # FER2013: 0 Angry 1 Disgust 2 Fear 3 Happy 4 Sad 5 Surprise 6 Neutral
    assert m.tolist() == [6, 5, 4, 1, 2, 3, 0]


def test_hsemotion_alphabetical_reorder_round_trip():
    scores = np.arange(8, dtype=float)[None]  # value i at alphabetical position i
    canon = labels.reorder_columns(scores, labels.HSEMOTION_ORDER_8)
    named = dict(zip(labels.EXPRESSIONS_8, canon[0]))
    assert named["Anger"] == 0 and named["Contempt"] == 1 and named["Happy"] == 4 and named["Surprise"] == 7
    assert labels.HSEMOTION_ORDER_7 == (
        "Anger",
        "Disgust",
        "Fear",
        "Happiness",
        "Neutral",
        "Sadness",
        "Surprise",
    )


def test_unknown_names_fail_loudly():
    with pytest.raises(ValueError, match="unknown expression"):
        labels.canonical_expression("bored")
    with pytest.raises(ValueError, match="7-class"):
        labels.expression_index("contempt", 7)


def test_checkpoints_store_the_canonical_orders_of_their_heads():
    from fer_lib.tasks import default_label_orders

    orders = default_label_orders(
        {"expression": 7, "race": 5, "gender": 1, "age": 100, "va": 2, "identity": 4}
    )
    assert orders["expression"] == list(labels.EXPRESSIONS_7) and orders["race"] == list(labels.ETHNICITIES)
    assert orders["gender"] == list(labels.GENDERS) and orders["va"] == ["valence", "arousal"]
    assert orders["age"][30] == "bin i = 30 years" and default_label_orders({"age": 1}) == {
        "age": ["years/100"]
    }
    assert "identity" not in orders  # identities are the dataset's own (identity_index)
