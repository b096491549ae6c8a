"""Centerline targets for OCTA-Net's thin branch (reference §5) and their way into batches."""

from __future__ import annotations

import numpy as np
import pytest

from retinaseg.errors import ConfigError
from retinaseg.training.config import SamplingConfig
from retinaseg.training.data import Item, PatchSampler
from retinaseg.training.targets import attach_centerlines, derived_centerline


def _bar() -> np.ndarray:
    label = np.zeros((15, 20), bool)
    label[5:10, 2:18] = True  # a 5-px-thick horizontal bar
    return label


def test_derived_centerline_is_the_middle_row_and_dilation_stays_inside() -> None:
    line = derived_centerline(_bar())
    rows, cols = np.nonzero(line)
    assert set(rows) == {7} and line.sum() == 9  # the exact centerline: tips shortened
    thick = derived_centerline(_bar(), dilate=1)
    assert set(np.nonzero(thick)[0]) == {6, 7, 8}
    assert not (thick & ~_bar()).any()


def test_attach_uses_the_dataset_line_else_derives_else_refuses() -> None:
    own = np.zeros((15, 20), bool)
    own[0, 0] = True  # deliberately not the derived line
    items = [Item("a", np.zeros((1, 15, 20), np.float32), _bar(), np.ones((15, 20), bool),
                  centerline=own),
             Item("b", np.zeros((1, 15, 20), np.float32), _bar(), np.ones((15, 20), bool))]
    assert attach_centerlines(items) == 1
    assert items[0].extra.shape == (1, 15, 20) and items[0].extra[0, 0, 0]
    assert items[1].extra[0, 7].sum() == 9
    fresh = [Item("b", np.zeros((1, 15, 20), np.float32), _bar(), np.ones((15, 20), bool))]
    with pytest.raises(ConfigError, match="derive_centerline is false"):
        attach_centerlines(fresh, derive=False, where="data (training)")


@pytest.mark.parametrize("mode", ["patch", "whole"])
def test_sampler_stacks_the_centerline_after_the_label(mode: str) -> None:
    items = [Item("a", np.random.default_rng(0).random((1, 15, 20)).astype(np.float32), _bar(),
                  np.ones((15, 20), bool))]
    attach_centerlines(items)
    cfg = SamplingConfig(mode=mode, patch_size=8, patches_per_image=3, batch_size=3)
    x, y, fov, head = next(PatchSampler(items, cfg, None).epoch(0))
    assert y.shape[1] == 2 and y.shape[-2:] == x.shape[-2:]
    assert (y[:, 1] <= y[:, 0]).all()  # the centerline lies inside the label
    if mode == "whole":
        assert np.array_equal(y[0, 1].numpy() > 0.5, items[0].extra[0])
