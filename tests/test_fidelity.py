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
