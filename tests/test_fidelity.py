"""The batched 'advanced' augmentation reproduces torchvision's per-image transforms for the same parameters (the authors'
pipeline: reflect crop, flip, RandomRotation nearest with black corners, ColorJitter in random order, RandomPerspective)."""
import torch
import pytest
from attnresnet.augment import Augment, torchvision_apply

def images(image_folder, n=128):
    from attnresnet.data import load_images
    s = load_images(image_folder)
    return s.train_x[torch.randperm(len(s.train_x), generator=torch.Generator().manual_seed(0))[:n]]

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_advanced_matches_torchvision(image_folder, seed):
    x = images(image_folder)
    aug = Augment("advanced")
    p = aug.draw(len(x), generator=torch.Generator().manual_seed(seed))
    assert p["flip"].any() and (p["end"] != p["start"]).any() and len(p["color"]["order"].unique(dim=0)) > 1
    diff = (aug.apply(x, p) - torchvision_apply(x, p, aug)).abs()
    assert (diff > 1e-4).float().mean() < 0.005 and diff.mean() < 1e-3, ((diff > 1e-4).float().mean(), diff.mean())

def test_torchvision_apply_refuses_the_single_resampling():
    aug = Augment("advanced_reflect")
    with pytest.raises(ValueError, match="resample='torchvision'"):
        torchvision_apply(torch.zeros(1, 3, 32, 32), aug.draw(1), aug)


def test_every_departure_from_the_authors_code_has_a_row():
    """The fidelity table (nbs/04_config.ipynb) covers every field where the study's defaults differ from the authors' code,
    with a switch back; every TrainConfig field is either one of the authors' settings or named as not in their code."""
    from dataclasses import fields
    from attnresnet.config import (TrainConfig, AUTHORS_SETTINGS, AUTHORS_PROTOCOL, NOT_IN_AUTHORS_CODE, departures,
                                   fidelity_table, make_config)
    names = {f.name for f in fields(TrainConfig)}
    unclassified = names - set(AUTHORS_SETTINGS) - set(NOT_IN_AUTHORS_CODE)
    assert not unclassified, f"add {sorted(unclassified)} to AUTHORS_SETTINGS or NOT_IN_AUTHORS_CODE (and a fidelity row if it departs)"
    assert not set(AUTHORS_SETTINGS) & set(NOT_IN_AUTHORS_CODE) and set(AUTHORS_SETTINGS) <= names
    covered = {f for r in fidelity_table() if r["switch"] for f in r["fields"]}
    assert departures(), "the study departs from the authors' code somewhere (precision, validation protocol)"
    assert [f for f in departures() if f not in covered] == []
    settings = {r["setting"] for r in fidelity_table()}
    for row in ("validation images", "EMA", "evaluation precision", "validation split", "last partial batch", "data",
                "label smoothing", "batch size"):
        assert row in settings, row
    assert departures(make_config(precision="fp16", **AUTHORS_PROTOCOL)) == []
