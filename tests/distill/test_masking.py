"""Random masks: the masked fraction equals the ratio, pixel masks are shared by all channels."""

import pytest
import torch

from ftkd.distill.masking import pv_mask, query_mask, random_mask


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75])
def test_mask_ratio_statistics(ratio):
    generator = torch.Generator().manual_seed(0)
    features = torch.zeros(4, 2, 3, 8, 40, 50)  # [B, T, N, C, H, W]: 48,000 pixels
    mask = pv_mask(features, ratio, "pixel", generator)
    assert mask.shape == (4, 2, 3, 1, 40, 50)
    # binomial standard deviation sqrt(r (1 - r) / n) < 0.0023: 0.01 is > 4 sigma
    assert (1 - mask.mean()).item() == pytest.approx(ratio, abs=0.01)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    queries = torch.zeros(20, 900, 16)
    tokens = query_mask(queries, ratio, "token", generator)
    assert tokens.shape == (20, 900, 1)
    assert (1 - tokens.mean()).item() == pytest.approx(ratio, abs=0.01)


def test_pixel_mask_shared_across_channels_element_mask_not():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 1, 6, 32, 8, 8)
    masked = features * pv_mask(features, 0.5, "pixel", generator)
    zero_channels = (masked == 0).sum(3)  # [B, T, N, H, W]: how many channels are zero at each pixel
    assert set(zero_channels.unique().tolist()) == {0, 32}
    element = pv_mask(features, 0.5, "element", generator)
    assert element.shape == features.shape
    per_pixel = (element == 0).sum(3)
    assert per_pixel.float().std() > 0 and per_pixel.max() < 32
    tokens = query_mask(torch.ones(2, 50, 16), 0.5, "element", generator)
    assert tokens.shape == (2, 50, 16)


def test_mask_follows_dtype_and_rejects_bad_ratio():
    like = torch.zeros(3, dtype=torch.bfloat16)
    assert random_mask((10,), 0.5, like).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="mask ratio"):
        random_mask((10,), 1.0, like)
    with pytest.raises(ValueError, match="pixel"):
        pv_mask(torch.zeros(1, 2, 3, 4), 0.5, "channel")
