"""Multi-process training helpers (DistributedDataParallel), used by the trainer and the store.

The same training entry point runs alone or under ``torchrun``: :func:`init_from_env` reads
the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...)
and starts a process group — ``gloo`` on CPU, ``nccl`` on GPU. ``cfg.batch_size`` stays the
*global* batch (the paper's 32); each rank takes ``batch_size / world_size`` samples.

The contrastive losses (L_BCL Eq. 3, L_SCL Eq. 6) need every sample of the global batch as a
negative, so the trainer gathers the loss inputs of all ranks with :func:`gather_with_grad`
and every rank computes the loss of the whole global batch. The gather's backward sums the
gradients of all ranks and returns this rank's slice; DDP then averages over ranks, which
gives exactly the single-process gradient of the global-batch loss.

Introduced in ``notebooks/02_conquer.ipynb`` (the README's "GPUs" section shows the command).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (or when not distributed): the process that logs and checkpoints."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(device: str = "auto") -> torch.device:
    """Start the process group from torchrun's environment (no-op when not launched by it);
    returns this process's device. ``device`` as in ``Config.device``."""
    use_cuda = (device == "auto" and torch.cuda.is_available()) or str(device).startswith("cuda")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if launched_by_torchrun() and not is_distributed():
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    if use_cuda:
        return torch.device("cuda", local if is_distributed() else torch.cuda.current_device())
    return torch.device("cpu")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device = {device!r} but torch finds no CUDA GPU here; use "
                           "device='auto' or 'cpu', or check the driver, the torch build "
                           "(torch.version.cuda) and CUDA_VISIBLE_DEVICES")
    return torch.device(device)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward all-reduces the gradient and keeps this rank's
    slice (every rank computes the same global loss; see the module docstring)."""

    @staticmethod
    def forward(ctx, x):
        ctx.n = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        r = dist.get_rank()
        return grad[r * ctx.n:(r + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (n, ...) of every rank along dim 0, in rank order, keeping the
    gradient path to the local part. Identity when not distributed. All ranks must pass the
    same ``n``."""
    if not is_distributed() or world_size() == 1:
        return x
    if not x.requires_grad:
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)
    return _GatherWithGrad.apply(x)


def gather_batch(tree: dict) -> dict:
    """:func:`gather_with_grad` on every tensor value of a dict whose first dimension is the
    batch; lists of strings are gathered as objects; other values are kept."""
    if not is_distributed():
        return tree
    out = {}
    for k, v in tree.items():
        if isinstance(v, torch.Tensor) and v.dim() >= 1:
            if v.dtype == torch.bool:  # not every backend gathers bool
                out[k] = gather_with_grad(v.to(torch.uint8)).bool()
            else:
                out[k] = gather_with_grad(v)
        elif isinstance(v, list):
            parts = [None] * world_size()
            dist.all_gather_object(parts, v)
            out[k] = [s for p in parts for s in p]
        else:
            out[k] = v
    return out


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / world_size()


def local_batch_size(global_batch: int) -> int:
    """Samples per rank for a global batch; it must divide evenly."""
    n = world_size()
    if global_batch % n:
        raise ValueError(f"batch_size = {global_batch} is not divisible by the world size {n}; "
                         f"choose a multiple of {n}")
    return global_batch // n


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP-wrap ``model`` when distributed (SyncBatchNorm on GPU); else return it unchanged."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=False)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


__all__ = ["all_reduce_mean", "barrier", "cleanup", "gather_batch", "gather_with_grad",
           "init_from_env", "is_distributed", "is_main", "local_batch_size", "rank",
           "resolve_device", "unwrap", "world_size", "wrap"]
