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
    h = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.1, 0.7],
                      "val_accuracy": [0.4, 0.6], "train_seconds": [3, 6]})
    fig = plots.plot_history(h)
    loss_ax, metric_ax = fig.axes
    assert {ln.get_label() for ln in loss_ax.lines} == {"train_loss", "val_loss"}
    assert [ln.get_label() for ln in metric_ax.lines] == ["val_accuracy"]


def test_grid_has_one_panel_per_image():
    imgs = [np.full((8, 8, 3), i * 20, np.uint8) for i in range(5)]
    fig = plots.plot_image_grid(imgs, [str(i) for i in range(5)], ncols=4)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5 and shown[2].get_title() == "2"
