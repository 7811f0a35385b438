"""The image encoder Φ_image of Eq. 1 and the positional code of the patch grid.

A torchvision ResNet up to ``layer4``; a 1x1 convolution projects the feature map to d. Its
output stride is 32 (the paper's ResNet-50: a 16 x 16 patch grid at 512 px, 4 x 4 at the
book's 128 px) or, with ``output_stride`` 16 or 8, the last one or two stages keep their
resolution and dilate their 3x3 convolutions instead (:func:`dilate_last_stages`): a finer grid
for grounding, with the same weights, so ImageNet weights load at every stride. The
single grey channel is repeated to three and ImageNet-normalised inside the module, so
callers pass images in 0..1. The patches' positions enter the query networks through a fixed
2-D sine-cosine code (:func:`sincos_2d`). The text encoder Φ_text is :mod:`.text`.

Introduced in ``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import OUTPUT_STRIDES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: Backbones built from BasicBlock, for which torchvision refuses ``replace_stride_with_dilation``
#: ("Dilation > 1 not supported in BasicBlock"); :func:`dilate_last_stages` does it for them.
BASIC_BLOCK_BACKBONES = ("resnet18", "resnet34")


def _dilated_stages(output_stride: int) -> list[bool]:
    """torchvision's ``replace_stride_with_dilation`` flags (layer2, layer3, layer4)."""
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride = {output_stride!r} is not valid; choose one of "
                         f"{OUTPUT_STRIDES}")
    return [False, output_stride <= 8, output_stride <= 16]


def dilate_last_stages(net: nn.Module, output_stride: int) -> nn.Module:
    """Give a torchvision ResNet ``output_stride`` 16 or 8, in place, for any block type.

    The rule of torchvision's ``replace_stride_with_dilation``: each dilated stage drops its
    stride 2 (the first block's strided 3x3 convolution and its 1x1 downsample get stride 1)
    and doubles the dilation; the first block's 3x3 convolutions keep the previous stage's
    dilation, the later blocks' use the new one (padding = dilation keeps the size). No
    weight changes shape."""
    dilation = 1
    for stage, dilate in zip((net.layer2, net.layer3, net.layer4), _dilated_stages(output_stride)):
        if not dilate:
            continue
        previous, dilation = dilation, dilation * 2
        for i, block in enumerate(stage):
            d = previous if i == 0 else dilation
            for name, conv in block.named_modules():
                if not isinstance(conv, nn.Conv2d):
                    continue
                conv.stride = (1, 1)  # a ResNet strides only in a 3x3 conv and its downsample
                if conv.kernel_size == (3, 3) and not name.startswith("downsample"):
                    conv.dilation, conv.padding = (d, d), (d, d)
    return net


def _resnet_body(backbone: str, pretrained: bool, output_stride: int = 32
                 ) -> tuple[nn.Sequential, int]:
    import torchvision

    builder = getattr(torchvision.models, backbone)
    weights = None
    if pretrained:
        weights = torchvision.models.get_model_weights(backbone).DEFAULT
    dilate = _dilated_stages(output_stride)
    own = backbone in BASIC_BLOCK_BACKBONES
    try:
        net = builder(weights=weights) if own else builder(
            weights=weights, replace_stride_with_dilation=dilate)
    except Exception as err:  # download refused offline, corrupt cache, ...
        raise RuntimeError(
            f"pretrained_backbone=True but the ImageNet weights of {backbone!r} could not be "
            f"loaded ({err}). Put them in torch's cache ($TORCH_HOME/hub/checkpoints) or set "
            "pretrained_backbone=False"
        ) from err
    if own:
        dilate_last_stages(net, output_stride)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                         net.layer1, net.layer2, net.layer3, net.layer4)
    return body, net.fc.in_features


class ImageEncoder(nn.Module):
    """Φ_image: (B, 1, H, W) in 0..1 -> patches I (B, h*w, d) and the grid (h, w) (Eq. 1)."""

    def __init__(self, backbone: str, embed_dim: int, *, pretrained: bool = False,
                 channels_last: bool = False, output_stride: int = 32):
        super().__init__()
        self.body, width = _resnet_body(backbone, pretrained, output_stride)
        self.output_stride = output_stride
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


def build_encoders(cfg) -> tuple[ImageEncoder, nn.Module]:
    """(Φ_image, Φ_text) of ``cfg``, built in this order from the current random state (every
    model of the harness builds its encoders here, under its own seed)."""
    from .text import TextEncoder

    image = ImageEncoder(cfg.backbone, cfg.embed_dim, pretrained=cfg.pretrained_backbone,
                         channels_last=cfg.channels_last, output_stride=cfg.output_stride)
    return image, TextEncoder(cfg.text_model, cfg.embed_dim, freeze_backbone=cfg.freeze_text)


__all__ = ["BASIC_BLOCK_BACKBONES", "IMAGENET_MEAN", "IMAGENET_STD", "ImageEncoder",
           "build_encoders", "dilate_last_stages", "sincos_2d"]
