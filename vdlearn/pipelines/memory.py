"""Sampling a model bigger than the GPU: offload the weights, slice the attention.

VideoCrafter2 in fp32 is 7.4 GB of weights (U-Net 5.65 GB, VAE 0.33 GB, OpenCLIP text
tower 1.4 GB) plus the activations of a 16-frame 320x512 video; users report that
11 GB cards run out of memory (VideoCrafter issue #78). Each saver here trades time
for memory and gives the same video as the plain path (``tests/test_pretrained_pipelines.py``):

* **Model offload** (:class:`ModelOffload`, diffusers' ``enable_model_cpu_offload``):
  the weights of every component live on the *offload device* (the CPU); a component
  is put on the *execution device* (the GPU) when the pipeline is about to use it, and
  leaves it when another component is needed. Peak memory: the largest component
  (the U-Net), not all of them; cost: one copy of each component per call.
* **Sequential offload** (:class:`SequentialOffload`, ``enable_sequential_cpu_offload``):
  the same at the grain of single layers: each layer's weights arrive just before its
  forward and leave right after. Peak: about one layer; cost: every weight crosses the
  bus at every U-Net call (100 calls for 50 steps with guidance). Very slow, very small.
* **Attention slicing** (:func:`enable_attention_slicing`): every U-Net attention runs
  on a few query sequences at a time instead of all at once, so the ``(L x L)`` score
  matrices of 16 frames x 2560 pixels are never all alive together. (PyTorch's SDPA
  kernels on GPU already avoid storing them; slicing matters for the math fallback.)
* Decoding a few frames at a time is the VAE's own ``frame_chunk`` (the pipeline's
  ``decode_chunk_size``): the decoder is per frame, so chunks change nothing but memory.

How a weight "leaves": the module's parameter is swapped for a placeholder on the
``meta`` device (shape and dtype, no storage), and the real tensor waits in the
offload device's store; arriving swaps in ``store.to(execution_device)``. Nothing is
copied back, because inference never changes the weights. So, while offloaded,
``unet.state_dict()`` shows meta tensors: call ``pipe.to(device)`` to put everything back.

Which modules travel together (sequential offload): a module's forward must find its
weights on the device. Most layers use only their own (``Linear``, ``Conv2d``,
``GroupNorm``); a few read their children's weights directly
(``F.linear(x, self.proj_in.weight)``) and travel as a whole (:data:`WHOLE_UNITS`).
Tensors owned by a container itself (OpenCLIP's ``positional_embedding``, the resampler's
``latents``) stay on the execution device: they are small.

Taught in notebook 10_pretrained.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch
from torch import nn

from vdlearn.models.unet.attention import Attention
from vdlearn.models.unet.positions import T5RelativeBias
from vdlearn.models.unet.resblock import TemporalConvBlock
from vdlearn.models.unet.transformer import GEGLUFeedForward

#: Module types whose forward reads the weights of its children directly: offloaded as one unit.
WHOLE_UNITS: tuple[type[nn.Module], ...] = (GEGLUFeedForward, TemporalConvBlock, T5RelativeBias, nn.MultiheadAttention)


#: ``OffloadUnit.loaded_on`` before the first move: the module still holds the tensors it came with.
AS_BUILT = "as built"


class OffloadUnit:
    """The tensors of one module (its own, or its whole subtree) that arrive and leave together."""

    def __init__(self, module: nn.Module, offload_device: torch.device, recurse: bool = True):
        self.module = module
        # (owner, attribute, is_parameter, stored tensor, meta placeholder)
        self.slots: list[tuple[nn.Module, str, bool, torch.Tensor, torch.Tensor]] = []
        owners = module.modules() if recurse else [module]
        for owner in owners:
            for name, p in owner._parameters.items():
                if p is not None:
                    stored = p.detach().to(offload_device)
                    self.slots.append((owner, name, True, stored, _placeholder(stored, p.requires_grad)))
            for name, b in owner._buffers.items():
                if b is not None:
                    stored = b.to(offload_device)
                    self.slots.append((owner, name, False, stored, stored.to("meta")))
        # where the module's real tensors are: AS_BUILT (its own, wherever they were), a device, or None
        # (meta placeholders in)
        self.loaded_on: torch.device | str | None = AS_BUILT

    def load(self, device: torch.device) -> None:
        """Put the real tensors on ``device`` (a copy unless they are stored there already)."""
        if self.loaded_on == device:
            return
        for owner, name, is_param, stored, placeholder in self.slots:
            tensor = stored.to(device, non_blocking=True)
            if is_param:
                owner._parameters[name] = nn.Parameter(tensor, requires_grad=placeholder.requires_grad)
            else:
                owner._buffers[name] = tensor
        self.loaded_on = device

    def unload(self) -> None:
        """Swap in the meta placeholders; the stored tensors stay on the offload device."""
        if self.loaded_on is None:
            return
        for owner, name, is_param, _, placeholder in self.slots:
            (owner._parameters if is_param else owner._buffers)[name] = placeholder
        self.loaded_on = None

    def restore(self) -> None:
        """Put the stored tensors back into the module for good (offloading ends)."""
        self.load(self.slots[0][3].device if self.slots else torch.device("cpu"))

    @property
    def num_bytes(self) -> int:
        return sum(s[3].numel() * s[3].element_size() for s in self.slots)


def _placeholder(stored: torch.Tensor, requires_grad: bool) -> nn.Parameter:
    return nn.Parameter(stored.to("meta"), requires_grad=requires_grad)


class ModelOffload:
    """Whole components on the execution device one at a time (diffusers' ``enable_model_cpu_offload``).

    ``use(name)`` is called by the pipeline right before a component works; it sends the
    component that was there back to the offload device first. ``offload_all()`` ends a call.
    """

    def __init__(self, components: Mapping[str, nn.Module], execution_device: torch.device | str,
                 offload_device: torch.device | str = "cpu"):
        self.execution_device = torch.device(execution_device)
        self.offload_device = torch.device(offload_device)
        self.units = {name: OffloadUnit(m, self.offload_device) for name, m in components.items() if m is not None}
        self.offload_all()

    def use(self, name: str) -> None:
        for other, unit in self.units.items():
            if other != name:
                unit.unload()
        self.units[name].load(self.execution_device)

    def offload_all(self) -> None:
        for unit in self.units.values():
            unit.unload()

    def remove(self) -> None:
        """End offloading: every component holds its real weights again (on the offload device)."""
        for unit in self.units.values():
            unit.restore()


class SequentialOffload:
    """Every layer on the execution device only during its own forward (diffusers' ``enable_sequential_cpu_offload``)."""

    def __init__(self, components: Mapping[str, nn.Module], execution_device: torch.device | str,
                 offload_device: torch.device | str = "cpu"):
        self.execution_device = torch.device(execution_device)
        self.offload_device = torch.device(offload_device)
        self.units: list[OffloadUnit] = []
        self.resident: list[OffloadUnit] = []  # tensors of containers: on the execution device throughout
        self._hooks = []
        for module in components.values():
            if module is not None:
                self._add(module)

    def _add(self, module: nn.Module) -> None:
        leaf = not any(True for _ in module.children())
        if isinstance(module, WHOLE_UNITS) or leaf:
            if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
                unit = OffloadUnit(module, self.offload_device)
                unit.unload()
                self._hooks.append(module.register_forward_pre_hook(
                    lambda _m, _args, unit=unit: unit.load(self.execution_device)))
                self._hooks.append(module.register_forward_hook(lambda _m, _args, _out, unit=unit: unit.unload()))
                self.units.append(unit)
            return
        own = OffloadUnit(module, self.offload_device, recurse=False)
        if own.slots:
            own.load(self.execution_device)
            self.resident.append(own)
        for child in module.children():
            self._add(child)

    def use(self, name: str) -> None:  # the hooks do the work
        pass

    def offload_all(self) -> None:
        for unit in self.units:
            unit.unload()

    def remove(self) -> None:
        for handle in self._hooks:
            handle.remove()
        for unit in self.units + self.resident:
            unit.restore()


# ------------------------------------------------------------------------------------- attention slicing
#: ``slice_size="auto"``: the attention scores of one call stay under this many bytes.
AUTO_SLICE_BYTES = 256 * 2**20


def sliced_attention_forward(attn: Attention, x: torch.Tensor, context: torch.Tensor | None = None, *,
                             slice_size: int | str = "auto") -> torch.Tensor:
    """``attn(x, context)`` computed on a few query sequences (rows of ``x``) at a time.

    Rows of ``x (B, L, d)`` are independent sequences (frames for spatial attention, pixels
    for temporal attention); with one context per video (``context (B', N, d)``, ``B = B' * r``)
    the ``r`` frames of a video stay together with their context row.
    """
    plain = type(attn).forward
    if attn.context_dim is None:
        context = None  # self-attention: rows are fully independent
    rows = x.shape[0]
    per_context = rows // context.shape[0] if context is not None else 1  # r frames share one context row
    if slice_size == "auto":
        keys = x.shape[1] if context is None else context.shape[1]
        score_bytes = attn.heads * x.shape[1] * keys * x.element_size()  # the scores of one query sequence
        slice_size = max(1, AUTO_SLICE_BYTES // max(score_bytes, 1))
    if slice_size >= rows:
        return plain(attn, x, context)
    pieces = []  # (rows of x, rows of context) per call
    if per_context == 1 or slice_size >= per_context:  # whole videos (or independent sequences) per call
        step = slice_size // per_context
        for v in range(0, rows // per_context, step):
            pieces.append((slice(v * per_context, (v + step) * per_context), slice(v, v + step)))
    else:  # a few frames of one video per call, each with that video's context row
        for v in range(rows // per_context):
            for f in range(0, per_context, slice_size):
                start = v * per_context + f
                pieces.append((slice(start, min(start + slice_size, (v + 1) * per_context)), slice(v, v + 1)))
    outs = [plain(attn, x[xs], None if context is None else context[cs]) for xs, cs in pieces]
    return torch.cat(outs)  # (B, L, d)


def enable_attention_slicing(module: nn.Module, slice_size: int | str = "auto") -> int:
    """Make every :class:`~vdlearn.models.unet.attention.Attention` in ``module`` slice its queries.

    ``slice_size``: query sequences per attention call (``"auto"``: as many as keep the scores
    under :data:`AUTO_SLICE_BYTES`). Returns the number of attention layers changed.
    """
    if slice_size != "auto" and (not isinstance(slice_size, int) or slice_size < 1):
        raise ValueError(f"slice_size must be a positive number of query sequences or 'auto', got {slice_size!r}.")
    count = 0
    for m in module.modules():
        if isinstance(m, Attention):
            m.forward = functools.partial(sliced_attention_forward, m, slice_size=slice_size)
            count += 1
    return count


def disable_attention_slicing(module: nn.Module) -> None:
    """Every attention back to one call over all its queries."""
    for m in module.modules():
        if isinstance(m, Attention) and "forward" in m.__dict__:
            del m.forward


__all__ = [
    "AUTO_SLICE_BYTES",
    "WHOLE_UNITS",
    "ModelOffload",
    "OffloadUnit",
    "SequentialOffload",
    "disable_attention_slicing",
    "enable_attention_slicing",
    "sliced_attention_forward",
]
