"""The image encoder Φ_image of Eq. 1 and the positional code of the patch grid.

A torchvision ResNet up to ``layer4``; a 1x1 convolution projects the feature map to d. The
single grey channel is repeated to three and ImageNet-normalised inside the module, so
callers pass images in 0..1. The patches' positions enter the query networks through a fixed
2-D sine-cosine code (:func:`sincos_2d`). The text encoder Φ_text is :mod:`.text`.

Introduced in ``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resnet_body(backbone: str, pretrained: bool) -> tuple[nn.Sequential, int]:
    import torchvision

    builder = getattr(torchvision.models, backbone)
    weights = None
    if pretrained:
        weights = torchvision.models.get_model_weights(backbone).DEFAULT
    try:
        net = builder(weights=weights)
    except Exception as err:  # download refused offline, corrupt cache, ...
        raise RuntimeError(
            f"pretrained_backbone=True but the ImageNet weights of {backbone!r} could not be "
            f"loaded ({err}). Put them in torch's cache ($TORCH_HOME/hub/checkpoints) or set "
            "pretrained_backbone=False"
        ) from err
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                         net.layer1, net.layer2, net.layer3, net.layer4)
    return body, net.fc.in_features


class ImageEncoder(nn.Module):
    """Φ_image: (B, 1, H, W) in 0..1 -> patches I (B, h*w, d) and the grid (h, w) (Eq. 1)."""

    def __init__(self, backbone: str, embed_dim: int, *, pretrained: bool = False,
                 channels_last: bool = False):
        super().__init__()
        self.body, width = _resnet_body(backbone, pretrained)
        self.proj = nn.Conv2d(width, embed_dim, kernel_size=1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must have shape (B, 1, H, W), got {tuple(images.shape)}")
        x = (images.expand(-1, 3, -1, -1) - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        fmap = self.proj(self.body(x))  # (B, d, h, w)
        h, w = fmap.shape[-2:]
        return fmap.flatten(2).transpose(1, 2).contiguous(), (h, w)


def sincos_2d(h: int, w: int, dim: int, *, device=None) -> torch.Tensor:
    """Fixed 2-D sine-cosine positional code, (h*w, dim): a quarter of the channels each for
    sin/cos of the row and of the column, at geometric frequencies (as in ViT/MAE)."""
    if dim % 4:
        raise ValueError(f"embed_dim = {dim} must be divisible by 4 for the 2-D positional code")
    q = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(q, device=device, dtype=torch.float32) / q))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    y = ys.reshape(-1, 1) * freq
    x = xs.reshape(-1, 1) * freq
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1)


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageEncoder", "sincos_2d"]
