"""Running a mixture of experts' experts on their routed rows, in eager mode.

:func:`run_experts` takes the expert-sorted rows ``xs`` (expert e's ``kept[e]`` rows
follow expert e-1's) and returns every expert's output in the same order. Three
ways, all with the per-expert loop's outputs and gradients:

* **stacked** (:class:`_ExpertStack`): when every expert is a copy of one
  ``nn.Linear`` or ``nn.Sequential`` of Linear and elementwise layers (the default
  ``MLP`` expert) without hooks, one autograd op runs the whole stack expert by
  expert, writes the last layer straight into the output (no ``cat``) and has a
  hand-written backward that goes expert by expert too, with the matmuls, bias sums
  and activation backwards autograd would run. Each expert's rows pass through all
  its layers while they are in cache, and 16 experts cost one autograd node instead
  of about a hundred (plus the ``cat`` and its backward's);
* **grouped** (:func:`_run_grouped`): the same experts on the CPU, when they are small
  and receive few rows each: each layer of all experts is one ``torch._grouped_mm``
  over the stacked weights (E small matmuls' call overhead dominates there);
* **module loop**: anything else (other modules, hooks, mixed dtypes, autocast),
  each expert module called on its slice.

Measured on the CPU in ``benchmarks/NOTES.md`` (MoE).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .module_calls import global_hooks, has_hooks

aten = torch.ops.aten

# Mean rows per expert up to which the experts run as one grouped matmul per layer.
GROUPED_MAX_ROWS = 128
# Parameter bytes of one expert up to which they do: the grouped path stacks every
# expert's weights on each call (and unstacks their gradients), a cost that grows with
# the experts' size while the per-call overhead it saves does not. Measured on CPU
# (benchmarks/NOTES.md): a win or even for 64 KiB experts (D=64, MLP(2D)), 1.2-1.5x
# slower from 256 KiB (D=128) on.
GROUPED_MAX_EXPERT_BYTES = 128 * 1024
# The dtypes torch._grouped_mm takes.
_GROUPED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# --------------------------------------------------------------------------- elementwise layers
# Each parameter-free elementwise layer, applied to all experts' rows at once, acts as on
# each expert's. For the stacked path: its function (never in place: the backward reads
# its input or output) and the aten backward autograd would run, with whether that
# backward reads the layer's input (else its output).

def _gelu(m: nn.Module, h: Tensor) -> Tensor:
    return F.gelu(h, approximate=m.approximate)


def _gelu_backward(m: nn.Module, g: Tensor, inp: Tensor, out: Tensor) -> Tensor:
    return aten.gelu_backward(g, inp, approximate=m.approximate)


def _elu(m: nn.Module, h: Tensor) -> Tensor:
    return F.elu(h, m.alpha)


def _elu_backward(m: nn.Module, g: Tensor, inp: Tensor, out: Tensor) -> Tensor:
    return aten.elu_backward(g, m.alpha, 1, 1, False, inp)


def _leaky_relu(m: nn.Module, h: Tensor) -> Tensor:
    return F.leaky_relu(h, m.negative_slope)


def _leaky_relu_backward(m: nn.Module, g: Tensor, inp: Tensor, out: Tensor) -> Tensor:
    return aten.leaky_relu_backward(g, inp, m.negative_slope, False)


Forward = Callable[[nn.Module, Tensor], Tensor]
Backward = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]
_ACTIVATIONS: dict[type[nn.Module], tuple[Forward, Backward, bool]] = {
    nn.GELU: (_gelu, _gelu_backward, True),
    nn.ELU: (_elu, _elu_backward, True),
    nn.LeakyReLU: (_leaky_relu, _leaky_relu_backward, True),
    nn.SiLU: (lambda m, h: F.silu(h), lambda m, g, i, o: aten.silu_backward(g, i), True),
    nn.ReLU: (lambda m, h: torch.relu(h), lambda m, g, i, o: aten.threshold_backward(g, o, 0), False),
    nn.Tanh: (lambda m, h: torch.tanh(h), lambda m, g, i, o: aten.tanh_backward(g, o), False),
    nn.Sigmoid: (lambda m, h: torch.sigmoid(h), lambda m, g, i, o: aten.sigmoid_backward(g, o), False),
    nn.Identity: (lambda m, h: h, lambda m, g, i, o: g, False),
}


# --------------------------------------------------------------------------- which experts qualify


def _layers_of(expert: nn.Module) -> list[nn.Module] | None:
    """The expert as a list of ``nn.Linear`` / elementwise layers; None for anything else
    (other modules, subclasses that may override ``forward``, modules with hooks)."""
    if type(expert) is not nn.Sequential:
        return [expert]
    if has_hooks(expert):
        return None
    return list(expert._modules.values())


def _layer_key(m: nn.Module | None) -> tuple[Any, ...] | None:
    """What makes two layers compute the same function of their own parameters, with the
    parameters' dtypes; None for a layer the fast paths cannot run (see :func:`_layers_of`).

    Reads instance dicts directly: this runs for every layer of every expert on every
    forward, where ``nn.Module.__getattr__`` would cost more than the check."""
    t = type(m)
    if m is None or has_hooks(m):
        return None
    if t is nn.Linear:
        weight, bias = m._parameters["weight"], m._parameters["bias"]
        return (t, m.in_features, m.out_features, weight.dtype, None if bias is None else bias.dtype)
    if t in _ACTIVATIONS:  # GELU(approximate), ELU(alpha), LeakyReLU(negative_slope)
        d = m.__dict__
        return (t, d.get("approximate"), d.get("alpha"), d.get("negative_slope"))
    return None


def expert_columns(experts: Sequence[nn.Module], xs: Tensor) -> list[list[nn.Module]] | None:
    """Layer by layer, the experts' modules, when all experts are copies of one Linear /
    ``nn.Sequential`` of Linear and elementwise layers, with parameters of ``xs``'s dtype,
    no hooks (the module's or global ones) and no autocast; None otherwise (then each
    expert module is called).

    Checked on every forward (E times the layers, about 1.5 µs per expert): any expert
    may have been replaced, converted or hooked since the last one."""
    if not len(experts) or torch.is_autocast_enabled(xs.device.type) or global_hooks():
        return None
    it = iter(experts)  # not experts[1:]: slicing a ModuleList builds a new one
    first = _layers_of(next(it))
    if not first:
        return None
    keys = [_layer_key(m) for m in first]
    if not _first_expert_fits(keys, xs):
        return None
    columns: list[list[nn.Module]] = [[m] for m in first]
    for expert in it:
        layers = _layers_of(expert)
        if layers is None or len(layers) != len(keys) or [_layer_key(m) for m in layers] != keys:
            return None
        for column, m in zip(columns, layers, strict=True):
            column.append(m)
    return columns


def _first_expert_fits(keys: list[tuple[Any, ...] | None], xs: Tensor) -> bool:
    """Every layer runnable, widths that chain from xs's, parameters of xs's dtype."""
    width = xs.shape[-1]
    for key in keys:
        if key is None:
            return False
        if key[0] is nn.Linear:
            _, in_features, out_features, weight_dtype, bias_dtype = key
            if in_features != width or weight_dtype != xs.dtype or bias_dtype not in (None, xs.dtype):
                return False
            width = out_features
    return True


def _groupable(columns: list[list[nn.Module]], xs: Tensor) -> bool:
    """Whether ``torch._grouped_mm`` can and should run these experts: CPU, its dtypes,
    row strides of a multiple of 16 bytes, experts of at most GROUPED_MAX_EXPERT_BYTES.

    CPU only: on CUDA the grouped kernel has dtype and architecture limits that this
    project has not measured, so the stacked path is used there."""
    if xs.device.type != "cpu" or xs.dtype not in _GROUPED_DTYPES or not hasattr(torch, "_grouped_mm"):
        return False
    per_16 = 16 // xs.element_size()
    expert_bytes = 0
    for column in columns:
        first = column[0]
        if type(first) is nn.Linear:
            if first.in_features % per_16 or first.out_features % per_16:
                return False
            expert_bytes += sum(p.numel() for p in first._parameters.values() if p is not None) * xs.element_size()
    return expert_bytes <= GROUPED_MAX_EXPERT_BYTES


# --------------------------------------------------------------------------- running them


def run_experts(xs: Tensor, experts: Sequence[nn.Module], kept: list[int]) -> Tensor:
    """Expert e on its ``kept[e]`` rows of the expert-sorted ``xs``, as one tensor."""
    columns = expert_columns(experts, xs)
    if columns is not None:
        # Measured on CPU (benchmarks/NOTES.md, "MoE"): the grouped kernel wins when the
        # experts' batches are small and E calls' overhead dominates; with larger batches
        # or larger experts the per-expert matmuls are as fast and stacking the weights
        # on every call costs more than it saves.
        if xs.shape[0] <= GROUPED_MAX_ROWS * len(experts) and _groupable(columns, xs):
            return _run_grouped(columns, xs, kept)
        return _run_stacked(columns, xs, kept)
    outs = [expert(part) for part, expert, n in zip(xs.split(kept), experts, kept, strict=True) if n]
    if not outs:
        return experts[0](xs)  # no rows at all: the expert's own output shape
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _run_grouped(columns: list[list[nn.Module]], xs: Tensor, kept: list[int]) -> Tensor:
    """All experts on their contiguous row groups of ``xs`` (``kept[e]`` rows for expert e).

    Each Linear layer is one ``torch._grouped_mm`` over the stacked weights instead of E
    small matmuls: E separate calls cost a fixed overhead each, forward and backward,
    which made the MoE's cost grow with E. ``torch.stack`` is differentiable, so each
    expert's own parameters get their gradients (the state_dict is unchanged)."""
    ends = torch.tensor(list(accumulate(kept)), dtype=torch.int32, device=xs.device)
    group: Tensor | None = None  # the expert of each row, for the biases
    h = xs
    for column in columns:
        first = column[0]
        if not isinstance(first, nn.Linear):
            h = first(h)  # elementwise: the same for every expert
            continue
        h = torch._grouped_mm(h, torch.stack([m.weight for m in column]).transpose(1, 2), offs=ends)
        if first.bias is not None:
            if group is None:
                experts = torch.arange(len(kept), device=xs.device)
                group = experts.repeat_interleave(torch.tensor(kept, device=xs.device), output_size=xs.shape[0])
            h = h + torch.stack([m.bias for m in column]).index_select(0, group)
    return h


def _run_stacked(columns: list[list[nn.Module]], xs: Tensor, kept: list[int]) -> Tensor:
    """The experts through :class:`_ExpertStack` (see :func:`stack_layout`)."""
    layers, params = stack_layout(columns)
    return _ExpertStack.apply(xs, layers, tuple(kept), *params)


Layout = tuple[tuple[nn.Module, int, int], ...]


def stack_layout(columns: list[list[nn.Module]]) -> tuple[Layout, list[Tensor]]:
    """Per layer (its first expert's module, where its weights start in the flat parameter
    list, where its biases start, or -1), and that list: each Linear column's weights,
    expert by expert, then its biases if it has any."""
    layers: list[tuple[nn.Module, int, int]] = []
    params: list[Tensor] = []
    for column in columns:
        first = column[0]
        if type(first) is not nn.Linear:
            layers.append((first, -1, -1))
            continue
        w_at = len(params)
        params += [m._parameters["weight"] for m in column]
        b_at = -1
        if first._parameters["bias"] is not None:
            b_at = len(params)
            params += [m._parameters["bias"] for m in column]
        layers.append((first, w_at, b_at))
    return tuple(layers), params


class _ExpertStack(torch.autograd.Function):
    """ys[rows of e] = expert_e(xs[rows of e]) for experts that are stacks of Linear and
    elementwise layers, expert by expert through all layers, forward and backward.

    ``layers`` holds, per layer, its first expert's module (the others compute the same
    function of their own parameters, :func:`_layer_key`) and where its weights and
    biases sit in ``params``. The backward is the one autograd runs for the module loop
    (per Linear: ``g.T @ input`` for the weight, ``g.sum(0)`` for the bias, ``g @ W`` for
    the input; the activations' aten backwards), so gradients match it; an expert without
    rows gets ``None``, as when the loop skips it. Intermediates are saved with
    ``save_for_backward`` (freed after the backward, kept with ``retain_graph``).
    ``once_differentiable``.
    """

    @staticmethod
    def forward(ctx: object, xs: Tensor, layers: Layout, kept: tuple[int, ...], *params: Tensor) -> Tensor:
        last = len(layers) - 1
        width = xs.shape[1]
        for m, _, _ in layers:
            width = m.out_features if type(m) is nn.Linear else width
        ys = xs.new_empty(xs.shape[0], width)
        saved: list[Tensor] = []
        start = 0
        for e, n in enumerate(kept):
            if not n:
                continue
            h = xs[start : start + n]
            for i, (m, w_at, b_at) in enumerate(layers):
                into = ys[start : start + n] if i == last else None
                if w_at < 0:
                    fn, _, uses_input = _ACTIVATIONS[type(m)]
                    if uses_input:
                        saved.append(h)
                    h = fn(m, h)
                    saved.append(h)
                    if into is not None:
                        into.copy_(h)
                    continue
                saved.append(h)
                weight = params[w_at + e].t()
                if b_at < 0:
                    h = torch.mm(h, weight, out=into) if into is not None else torch.mm(h, weight)
                else:
                    bias = params[b_at + e]
                    h = torch.addmm(bias, h, weight, out=into) if into is not None else torch.addmm(bias, h, weight)
            start += n
        ctx.layers, ctx.kept, ctx.n_params = layers, kept, len(params)  # type: ignore[attr-defined]
        ctx.in_width = xs.shape[1]  # type: ignore[attr-defined]
        ctx.save_for_backward(*params, *saved)  # type: ignore[attr-defined]
        return ys

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        layers, kept, n_params = ctx.layers, ctx.kept, ctx.n_params  # type: ignore[attr-defined]
        tensors = ctx.saved_tensors  # type: ignore[attr-defined]
        params, saved = tensors[:n_params], tensors[n_params:]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        need_param = needs[3:]
        grads: list[Tensor | None] = [None] * n_params
        lowest = _lowest_needed(layers, kept, need_param, needs[0])
        grad = grad.contiguous()
        grad_xs = grad.new_empty(grad.shape[0], ctx.in_width) if needs[0] else None  # type: ignore[attr-defined]
        start, at = 0, 0
        for e, n in enumerate(kept):
            if not n:
                continue
            mine, at = _saved_of(layers, saved, at)
            g = grad[start : start + n]
            for i in range(len(layers) - 1, lowest - 1, -1):
                m, w_at, b_at = layers[i]
                inp = mine[i]
                if w_at < 0:
                    _, backward, uses_input = _ACTIVATIONS[type(m)]
                    g = backward(m, g, inp[0] if uses_input else inp[-1], inp[-1])
                    continue
                if need_param[w_at + e]:
                    grads[w_at + e] = g.t().mm(inp)
                if b_at >= 0 and need_param[b_at + e]:
                    grads[b_at + e] = g.sum(0)
                if i > lowest:
                    g = g.mm(params[w_at + e])
                elif grad_xs is not None:
                    torch.mm(g, params[w_at + e], out=grad_xs[start : start + n])
            if grad_xs is not None and type(layers[lowest][0]) is not nn.Linear:
                grad_xs[start : start + n] = g
            start += n
        return (grad_xs, None, None, *grads)


def _saved_of(layers: Layout, saved: tuple[Tensor, ...],
              at: int) -> tuple[list, int]:
    """One expert's saved tensors from position ``at``, grouped by layer (a Linear's input,
    an activation's (input, output) or (output,)), and the position after them."""
    out: list = []
    for m, w_at, _ in layers:
        if w_at >= 0:
            out.append(saved[at])
            at += 1
        elif _ACTIVATIONS[type(m)][2]:
            out.append(saved[at : at + 2])
            at += 2
        else:
            out.append(saved[at : at + 1])
            at += 1
    return out, at


def _lowest_needed(layers: Layout, kept: tuple[int, ...],
                   need_param: tuple[bool, ...], need_xs: bool) -> int:
    """The lowest layer the backward must reach: 0 when ``xs`` needs a gradient, else the
    lowest Linear with a parameter that does (frozen lower layers are not walked)."""
    if need_xs:
        return 0
    experts = len(kept)
    for i, (_, w_at, b_at) in enumerate(layers):
        if w_at >= 0 and any(need_param[w_at : w_at + experts]):
            return i
        if b_at >= 0 and any(need_param[b_at : b_at + experts]):
            return i
    return len(layers)

