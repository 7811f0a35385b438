"""Training augmentation (paper Section IV-B), batched on tensors.

* :func:`fourier_amplitude_mixup`: the paper's Fourier amplitude mixup. Each image keeps its
  own phase (structure) and takes a mix of its amplitude spectrum (style: contrast, texture,
  scanner "look") with a partner's: ``λ|F(x)| + (1−λ)|F(x')|``, λ ~ U(0, 1) per sample, the
  partner from a random permutation of the batch (which may pick the sample itself, as the
  official code's shuffle does), applied to a whole batch with probability ``p``. One
  ``rfft2`` on the (B, 1, H, W) batch instead of the official per-sample loop.
* :func:`train_transform`: random resized crop, horizontal flip and brightness/contrast
  jitter for a whole batch at once (one ``affine_grid`` + ``grid_sample``), the batched
  counterpart of the official code's torchvision pipeline (RandAugment is not reproduced).
* :func:`augment_batch`: both, as the trainer applies them.

All randomness comes from a ``torch.Generator`` (CPU) passed in, so runs are reproducible.

Introduced in ``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import Config


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError("images must be a float tensor of shape (B, C, H, W), got "
                         f"{images.dtype} {tuple(images.shape)}")


def fourier_amplitude_mixup(images: torch.Tensor, p: float = 0.5,
                            generator: torch.Generator | None = None, *,
                            lam: torch.Tensor | float | None = None,
                            partner: torch.Tensor | None = None,
                            clamp: bool = True) -> torch.Tensor:
    """Fourier amplitude mixup of a batch (B, C, H, W) in 0..1; returns a new tensor.

    With probability ``p`` (one draw per batch): F = rfft2(x), output
    irfft2((λ|F(x)| + (1−λ)|F(x_π)|) · e^{i∠F(x)}), clamped to [0, 1] when ``clamp``.
    ``lam`` (per sample (B,) or a float) and ``partner`` (indices π, (B,)) are drawn from
    ``generator`` unless given (tests, figures).
    """
    _check_images(images)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p = {p!r} must lie in [0, 1] (the probability of mixing a batch)")
    if torch.rand((), generator=generator).item() >= p:
        return images.clone()
    b, dev = images.shape[0], images.device
    if lam is None:
        lam = torch.rand(b, generator=generator)
    lam = torch.as_tensor(lam, dtype=torch.float32).expand(b).to(dev).view(b, 1, 1, 1)
    if partner is None:
        partner = torch.randperm(b, generator=generator)
    partner = torch.as_tensor(partner, dtype=torch.long, device=dev)
    spec = torch.fft.rfft2(images.float())
    amp = spec.abs()
    mixed = lam * amp + (1.0 - lam) * amp[partner]
    out = torch.fft.irfft2(torch.polar(mixed, spec.angle()), s=images.shape[-2:])
    if clamp:
        out = out.clamp_(0.0, 1.0)
    return out.to(images.dtype)


@dataclass(frozen=True)
class BatchTransform:
    """Random resized crop + horizontal flip + brightness/contrast jitter on a batch.

    ``scale``: range of the crop's area fraction; ``ratio``: range of its aspect ratio;
    ``flip_p``: probability of a horizontal flip; ``brightness`` / ``contrast``: factors drawn
    from [1−v, 1+v] (brightness multiplies, contrast scales around the image mean).
    """

    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None):
        _check_images(images)
        b, dev = images.shape[0], images.device

        def uniform(lo, hi):
            return lo + (hi - lo) * torch.rand(b, generator=generator)

        area = uniform(*self.scale)
        log_r = uniform(math.log(self.ratio[0]), math.log(self.ratio[1]))
        cw = (area * log_r.exp()).sqrt().clamp(max=1.0)  # crop width / image width
        ch = (area / log_r.exp()).sqrt().clamp(max=1.0)
        tx = (1 - cw) * (2 * torch.rand(b, generator=generator) - 1)
        ty = (1 - ch) * (2 * torch.rand(b, generator=generator) - 1)
        flip = torch.where(torch.rand(b, generator=generator) < self.flip_p, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = cw * flip, tx
        theta[:, 1, 1], theta[:, 1, 2] = ch, ty
        grid = F.affine_grid(theta.to(dev, images.dtype), list(images.shape), align_corners=False)
        x = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        bright = uniform(1 - self.brightness, 1 + self.brightness).to(dev, images.dtype)
        contr = uniform(1 - self.contrast, 1 + self.contrast).to(dev, images.dtype)
        x = x * bright.view(b, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return ((x - mean) * contr.view(b, 1, 1, 1) + mean).clamp_(0.0, 1.0)


def _identity(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return images


def train_transform(cfg: Config):
    """The batched crop/flip/jitter of the training images; identity when not ``cfg.augment``.
    Call it as ``transform(images, generator)``."""
    return BatchTransform() if cfg.augment else _identity


def augment_batch(images: torch.Tensor, cfg: Config,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The training augmentation of a batch: :func:`train_transform`, then Fourier amplitude
    mixup with probability ``cfg.fourier_mixup_p``."""
    x = train_transform(cfg)(images, generator)
    if cfg.fourier_mixup_p > 0:
        x = fourier_amplitude_mixup(x, cfg.fourier_mixup_p, generator)
    return x


__all__ = ["BatchTransform", "augment_batch", "fourier_amplitude_mixup", "train_transform"]
