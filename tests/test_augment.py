"""Fourier amplitude mixup and the batched crop/flip/jitter (paper Section IV-B)."""

import numpy as np
import pytest
import torch

from unichest_lib import resolve
from unichest_lib.training.augment import (BatchTransform, augment_batch, fourier_amplitude_mixup,
                                  train_transform)


@pytest.fixture
def x():
    return torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_p0_is_identity_and_returns_a_new_tensor(x):
    out = fourier_amplitude_mixup(x, 0.0, gen())
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_lam1_returns_the_image_itself(x):
    out = fourier_amplitude_mixup(x, 1.0, gen(), lam=1.0)
    assert torch.allclose(out, x, atol=1e-5)


def test_amplitude_is_the_mix_and_phase_is_kept(x):
    lam = torch.rand(6, generator=gen(1))
    partner = torch.tensor([3, 0, 5, 1, 2, 4])
    out = fourier_amplitude_mixup(x, 1.0, gen(), lam=lam, partner=partner, clamp=False)
    fx, fo = torch.fft.rfft2(x.double()), torch.fft.rfft2(out.double())
    want = lam.double().view(6, 1, 1, 1) * fx.abs() + (1 - lam.double().view(6, 1, 1, 1)) * fx[partner].abs()
    assert torch.allclose(fo.abs(), want, atol=1e-3)
    big = fx.abs() > 1e-2
    dphase = torch.remainder(fo.angle() - fx.angle() + torch.pi, 2 * torch.pi) - torch.pi
    assert dphase[big].abs().max() < 1e-3


def test_batched_mixup_equals_a_per_sample_numpy_loop(x):
    lam = torch.rand(6, generator=gen(2))
    partner = torch.randperm(6, generator=gen(3))
    out = fourier_amplitude_mixup(x, 1.0, gen(), lam=lam, partner=partner)
    for i in range(6):  # full-spectrum fft2, one image at a time (as the official code)
        a, b = x[i, 0].double().numpy(), x[partner[i], 0].double().numpy()
        fa, fb = np.fft.fft2(a), np.fft.fft2(b)
        amp = float(lam[i]) * np.abs(fa) + (1 - float(lam[i])) * np.abs(fb)
        ref = np.clip(np.real(np.fft.ifft2(amp * np.exp(1j * np.angle(fa)))), 0, 1)
        assert np.allclose(out[i, 0].numpy(), ref, atol=1e-5)


def test_mixup_changes_the_batch_keeps_range_and_is_seeded(x):
    a = fourier_amplitude_mixup(x, 1.0, gen(7))
    b = fourier_amplitude_mixup(x, 1.0, gen(7))
    assert torch.equal(a, b) and not torch.allclose(a, x, atol=1e-3)
    assert a.shape == x.shape and a.dtype == x.dtype and a.min() >= 0 and a.max() <= 1


def test_mixup_probability_is_per_batch(x):
    g = gen(5)
    mixed = [not torch.equal(fourier_amplitude_mixup(x, 0.5, g), x) for _ in range(200)]
    assert 0.35 < np.mean(mixed) < 0.65


def test_mixup_rejects_bad_inputs(x):
    with pytest.raises(ValueError, match="p = 1.5"):
        fourier_amplitude_mixup(x, 1.5)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        fourier_amplitude_mixup(x[0], 0.5)


def test_transform_with_no_randomness_is_identity_and_flip_is_exact(x):
    still = BatchTransform(scale=(1, 1), ratio=(1, 1), flip_p=0.0, brightness=0, contrast=0)
    assert torch.allclose(still(x, gen()), x, atol=1e-5)
    flip = BatchTransform(scale=(1, 1), ratio=(1, 1), flip_p=1.0, brightness=0, contrast=0)
    assert torch.allclose(flip(x, gen()), x.flip(-1), atol=1e-5)


def test_transform_crops_zoom_in_and_jitter_intensity():
    ramp = torch.linspace(0, 1, 64).repeat(64, 1).expand(8, 1, 64, 64).contiguous()
    crop = BatchTransform(scale=(0.25, 0.25), ratio=(1, 1), flip_p=0.0, brightness=0, contrast=0)
    out = crop(ramp, gen())
    span = out[:, 0, 0, -1] - out[:, 0, 0, 0]
    assert torch.allclose(span, torch.full((8,), 0.5 * 63 / 64), atol=0.02)  # half the width
    jitter = BatchTransform(scale=(1, 1), ratio=(1, 1), flip_p=0.0, brightness=0.3, contrast=0.3)
    means = jitter(ramp * 0.5 + 0.25, gen()).mean(dim=(1, 2, 3))
    assert means.std() > 0.01


def test_train_transform_follows_cfg_augment(x):
    assert train_transform(resolve("smoke", augment=False))(x, gen()) is x
    out = train_transform(resolve("smoke"))(x, gen(1))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, train_transform(resolve("smoke"))(x, gen(1)))
    assert not torch.allclose(out, x)


def test_augment_batch_is_identity_when_everything_is_off(x):
    cfg = resolve("smoke", augment=False, fourier_mixup_p=0.0)
    assert torch.equal(augment_batch(x, cfg, gen()), x)
