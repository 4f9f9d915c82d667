import matplotlib
import numpy as np
import pandas as pd

from fer_lib import plots

matplotlib.use("Agg")


def test_confusion_is_row_normalised_and_annotated():
    cm = np.array([[8, 2], [1, 3]])
    fig = plots.plot_confusion(cm, ["a", "b"])
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["0.20", "0.25", "0.75", "0.80"]
    counts = sorted(t.get_text() for t in plots.plot_confusion(cm, ["a", "b"], normalize=False).axes[0].texts)
    assert counts == ["1", "2", "3", "8"]


def test_history_splits_losses_and_metrics():
    h = pd.DataFrame(
        {
            "epoch": [1, 2],
            "train_loss": [1.0, 0.5],
            "val_loss": [1.1, 0.7],
            "val_accuracy": [0.4, 0.6],
            "train_seconds": [3, 6],
        }
    )
    fig = plots.plot_history(h)
    loss_ax, metric_ax = fig.axes
    assert {ln.get_label() for ln in loss_ax.lines} == {"train_loss", "val_loss"}
    assert [ln.get_label() for ln in metric_ax.lines] == ["val_accuracy"]


def test_grid_has_one_panel_per_image():
    imgs = [np.full((8, 8, 3), i * 20, np.uint8) for i in range(5)]
    fig = plots.plot_image_grid(imgs, [str(i) for i in range(5)], ncols=4)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5 and shown[2].get_title() == "2"


def test_group_metrics_draw_one_bar_per_group_and_the_floor():
    t = pd.DataFrame(
        {
            "ethnicity": ["A", "A", "B", "B"],
            "gender": ["M", "F", "M", "F"],
            "gender_accuracy": [0.9, 0.8, 0.7, 0.95],
            "race_accuracy": [0.5, 0.6, 0.9, 0.4],
        }
    )
    fig = plots.plot_group_metrics(t, ["gender_accuracy", "race_accuracy"], floors={"race_accuracy": 0.6})
    g_ax, r_ax = fig.axes[:2]
    heights = sorted(round(p.get_height(), 2) for p in g_ax.patches if p.get_height() > 0)
    assert heights == [0.7, 0.8, 0.9, 0.95]
    assert [ln.get_ydata()[0] for ln in r_ax.lines if ln.get_linestyle() == "--"] == [0.6]
