"""Experts stored stacked, and running a mixture of experts' experts on their routed rows.

:class:`StackedExperts` holds E copies of one expert that is an ``nn.Linear`` or an
``nn.Sequential`` of Linear and elementwise layers (the default ``MLP`` expert), with each
Linear layer's E weights stored as one parameter [E, out, in] and its E biases as one
[E, out] (:class:`StackedLinear`). A training step then has one parameter, one gradient
and one autograd leaf per layer instead of per expert, and the grouped kernel reads the
weights where they are instead of stacking them on every call. The ``MoE`` block's
builder stacks its experts when they have that form (:func:`stackable`).

:func:`run_experts` takes the expert-sorted rows ``xs`` (expert e's ``kept[e]`` rows
follow expert e-1's) and returns every expert's output in the same order:

* stacked experts, in eager mode, with parameters of ``xs``'s dtype, no autocast and no
  hook on a layer (nor a global module hook):

  * **grouped** (:func:`_run_grouped`): on the CPU, for small experts with few rows
    each, each layer of all experts is one ``torch._grouped_mm`` (E small matmuls' call
    overhead dominates there);
  * **expert by expert** (:class:`_ExpertStack`): otherwise, one autograd op that runs
    each expert's rows through all its layers while they are in cache, writes the last
    layer straight into the output (no ``cat``) and has a hand-written backward that
    goes expert by expert too, with the matmuls, bias sums and activation backwards
    autograd would run;

* other stacked experts: layer by layer, each layer called as a module (so hooks run),
  a :class:`StackedLinear` being one ``F.linear`` per expert on its rows;
* a list of expert modules: each expert module called on its slice.

All give the per-expert loop's outputs and gradients; an expert without rows gets an
exactly zero gradient in its slices of the stacked parameters. Measured on the CPU in
``benchmarks/NOTES.md`` (MoE).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .module_calls import global_hooks, has_hooks

aten = torch.ops.aten

# How much work per expert the CPU runs as one grouped matmul per layer: the mean rows per
# expert times one expert's parameter bytes, at most. Grouped against expert by expert,
# forward+backward (benchmarks/NOTES.md): D=64 experts (MLP(2D), 65 KiB) 0.65x at 64 rows,
# 0.92x at 256, 0.97x at 512, even at 1,024; D=128 (258 KiB) 0.87x at 64 rows, 0.95x at
# 256, even at 512; D=256 (1 MiB) 0.98x at 64 rows, 1.14x at 128.
GROUPED_MAX_ROW_BYTES = 80 * 2**20
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


# --------------------------------------------------------------------------- which experts stack


def _layers_of(expert: nn.Module) -> list[nn.Module] | None:
    """The expert as a list of layers: itself, or an ``nn.Sequential``'s modules; None for
    a Sequential with hooks (its own call would run them)."""
    if type(expert) is not nn.Sequential:
        return [expert]
    if has_hooks(expert):
        return None
    return list(expert._modules.values())


def _layer_key(m: nn.Module | None) -> tuple[Any, ...] | None:
    """What makes two layers compute the same function of their own parameters, with the
    parameters' dtypes and devices; None for a layer that cannot be stacked (a module
    other than ``nn.Linear`` and the elementwise layers, a subclass, which may override
    ``forward``, or a module with hooks)."""
    t = type(m)
    if m is None or has_hooks(m):
        return None
    if t is nn.Linear:
        weight, bias = m._parameters["weight"], m._parameters["bias"]
        return (t, m.in_features, m.out_features, weight.dtype, weight.device, weight.requires_grad,
                None if bias is None else (bias.dtype, bias.device, bias.requires_grad))
    if t in _ACTIVATIONS:  # GELU(approximate), ELU(alpha), LeakyReLU(negative_slope)
        d = m.__dict__
        return (t, d.get("approximate"), d.get("alpha"), d.get("negative_slope"))
    return None


def stackable(experts: Sequence[nn.Module]) -> bool:
    """Whether :meth:`StackedExperts.from_modules` takes these experts: copies of one
    ``nn.Linear``, or of one ``nn.Sequential`` of Linear and elementwise layers whose
    widths chain, with the same parameter dtypes, devices and ``requires_grad``, and no
    hooks."""
    if not len(experts):
        return False
    first = _layers_of(experts[0])
    if not first:
        return False
    keys = [_layer_key(m) for m in first]
    if any(key is None for key in keys) or not _widths_chain(first):
        return False
    for expert in experts:
        layers = _layers_of(expert)
        if layers is None or [_layer_key(m) for m in layers] != keys:
            return False
    return True


def _widths_chain(layers: Sequence[nn.Module]) -> bool:
    """Each Linear takes the width the Linear before it gives."""
    width: int | None = None
    for m in layers:
        if type(m) is nn.Linear:
            if width is not None and m.in_features != width:
                return False
            width = m.out_features
    return True


# --------------------------------------------------------------------------- stacked modules


class StackedLinear(nn.Module):
    """E ``nn.Linear`` layers, one per expert, stored stacked: on the rows of expert e,
    ``y = x W_e^T + b_e``, with ``weight`` [E, out, in] and ``bias`` [E, out] (or None).

    Each expert's slice is initialised as ``nn.Linear`` initialises its own (uniform in
    ±1/sqrt(in) for both, which is what its ``kaiming_uniform_(a=sqrt(5))`` draws).

    Shapes:
        x [R, in] (rows sorted by expert, ``kept[e]`` of expert e, R = sum of kept),
        kept: E ints -> [R, out]
    """

    def __init__(self, experts: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.experts, self.in_features, self.out_features = experts, in_features, out_features
        self.weight = nn.Parameter(torch.empty(experts, out_features, in_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(experts, out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"experts={self.experts}, in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")

    def forward(self, x: Tensor, kept: Sequence[int]) -> Tensor:
        outs = [self.expert(e, part) for e, (part, n) in enumerate(zip(x.split(list(kept)), kept, strict=True)) if n]
        if not outs:  # no rows at all: an empty [0, out]
            return self.expert(0, x)
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def expert(self, e: int, x: Tensor) -> Tensor:
        """Expert e's layer on rows ``x`` that are all its own."""
        return F.linear(x, self.weight[e], None if self.bias is None else self.bias[e])


class StackedExperts(nn.Module):
    """E copies of one expert, stacked: ``layers`` holds a :class:`StackedLinear` for each
    ``nn.Linear`` of the expert and its elementwise layers as they are.

    ``from_modules`` builds one from E expert modules (copying their parameters; see
    :func:`stackable` for the form they must have) and ``to_modules`` gives them back as
    separate modules. A state dict with the separate experts' keys (``{e}.weight``,
    ``{e}.{layer}.weight`` ...) loads too.

    Shapes:
        xs [R, in] (rows sorted by expert, ``kept[e]`` of expert e, R = sum of kept),
        kept: E ints -> [R, out]
    """

    def __init__(self, experts: int, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        for m in layers:
            if type(m) is StackedLinear and m.experts != experts:
                raise ValueError(f"a layer stacks {m.experts} experts, not {experts}")
            if type(m) is not StackedLinear and type(m) not in _ACTIVATIONS:
                raise ValueError(f"cannot stack a {type(m).__name__} layer: Linear and elementwise layers only")
        self.num_experts = experts
        self.layers = nn.ModuleList(layers)

    @classmethod
    def from_modules(cls, experts: Sequence[nn.Module]) -> StackedExperts:
        """The experts, stacked (their parameters copied); ValueError unless :func:`stackable`."""
        if not stackable(experts):
            raise ValueError("the experts are not copies of one Linear or Sequential of Linear and elementwise layers")
        columns = zip(*(_layers_of(e) or () for e in experts), strict=True)
        return cls(len(experts), [_stack_column(list(column)) for column in columns])

    def to_modules(self) -> nn.ModuleList:
        """The experts as separate modules (copies): ``nn.Linear`` for a one-Linear expert,
        else an ``nn.Sequential``."""
        experts = []
        for e in range(self.num_experts):
            layers = [_unstack_layer(m, e) for m in self.layers]
            one_linear = len(layers) == 1 and type(layers[0]) is nn.Linear
            experts.append(layers[0] if one_linear else nn.Sequential(*layers))
        return nn.ModuleList(experts)

    def __len__(self) -> int:
        return self.num_experts

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}"

    def forward(self, xs: Tensor, kept: Sequence[int]) -> Tensor:
        kept = list(kept)
        if len(kept) != self.num_experts or sum(kept) != xs.shape[0]:
            raise ValueError(f"{self.num_experts} experts got row counts {kept} for {xs.shape[0]} rows")
        layers = list(self.layers)
        if _runs_fused(layers, xs):
            if _groupable(layers, xs, self.num_experts):
                return _run_grouped(layers, xs, kept)
            return _run_stacked(layers, xs, kept)
        h = xs
        for m in layers:
            h = m(h, kept) if isinstance(m, StackedLinear) else m(h)
        return h

    def expert(self, e: int, x: Tensor) -> Tensor:
        """Expert e on rows ``x`` that are all its own (the compiled dispatch's loop)."""
        for m in self.layers:
            x = m.expert(e, x) if isinstance(m, StackedLinear) else m(x)
        return x

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        _stack_separate_keys(state_dict, prefix, list(self.layers), self.num_experts)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _stack_column(column: list[nn.Module]) -> nn.Module:
    """One layer of every expert as one stacked layer (an elementwise layer: the first's)."""
    first = column[0]
    if type(first) is not nn.Linear:
        return first
    # The stacked layer's own initialisation is replaced: draw it from a forked RNG so
    # that stacking leaves the global RNG where the experts' construction left it.
    with torch.random.fork_rng(devices=[]):
        layer = StackedLinear(len(column), first.in_features, first.out_features, first.bias is not None)
    for name in ("weight", "bias"):
        if layer._parameters[name] is not None:
            own = first._parameters[name]
            stacked = torch.stack([m._parameters[name].detach() for m in column])
            layer._parameters[name] = nn.Parameter(stacked, requires_grad=own.requires_grad)
    return layer


def _unstack_layer(m: nn.Module, e: int) -> nn.Module:
    """Expert e's copy of a stacked layer."""
    if type(m) is not StackedLinear:
        return copy.deepcopy(m)
    weight = m.weight
    linear = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                       device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight[e])
        if m.bias is not None:
            linear.bias.copy_(m.bias[e])
    return linear


def _stack_separate_keys(state_dict: dict[str, Any], prefix: str, layers: list[nn.Module], experts: int) -> None:
    """Replace, in place, the keys of E separate experts (``{e}.{layer}.{name}``, or
    ``{e}.{name}`` for a one-layer expert) by the stacked layers' keys."""
    for i, m in enumerate(layers):
        if type(m) is not StackedLinear:
            continue
        for name in ("weight", "bias"):
            layer_of_expert = [f"{i}.{name}"] + ([name] if len(layers) == 1 else [])
            for suffix in layer_of_expert:
                keys = [f"{prefix}{e}.{suffix}" for e in range(experts)]
                if all(key in state_dict for key in keys):
                    state_dict[f"{prefix}layers.{i}.{name}"] = torch.stack([state_dict.pop(key) for key in keys])
                    break


# --------------------------------------------------------------------------- running them


def run_experts(xs: Tensor, experts: Sequence[nn.Module] | StackedExperts, kept: list[int]) -> Tensor:
    """Expert e on its ``kept[e]`` rows of the expert-sorted ``xs``, as one tensor."""
    if isinstance(experts, StackedExperts):
        return experts(xs, kept)
    outs = [expert(part) for part, expert, n in zip(xs.split(kept), experts, kept, strict=True) if n]
    if not outs:
        return experts[0](xs)  # no rows at all: the expert's own output shape
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _runs_fused(layers: list[nn.Module], xs: Tensor) -> bool:
    """Whether the grouped or expert-by-expert kernel may run these stacked layers on
    ``xs``: eager mode, rows to run, no autocast, no hook that calling the layers would
    run, each StackedLinear's parameters plain (not reparametrised, as pruning does),
    of ``xs``'s dtype and chained from its width."""
    if (not xs.shape[0] or xs.dim() != 2 or torch.compiler.is_compiling()
            or torch.is_autocast_enabled(xs.device.type) or global_hooks()):
        return False
    width = xs.shape[1]
    for m in layers:
        if has_hooks(m):
            return False
        if type(m) is StackedLinear:
            params = m._parameters
            weight, bias = params.get("weight"), params.get("bias")
            if (weight is None or "bias" not in params or weight.dtype != xs.dtype or m.in_features != width
                    or (bias is not None and bias.dtype != xs.dtype)):
                return False
            width = m.out_features
    return True


def _groupable(layers: list[nn.Module], xs: Tensor, experts: int) -> bool:
    """Whether ``torch._grouped_mm`` can and should run these layers on ``xs``: CPU, its
    dtypes, row strides of a multiple of 16 bytes, and mean rows per expert times one
    expert's parameter bytes at most GROUPED_MAX_ROW_BYTES (small experts with few rows
    each, where E small matmuls' fixed costs dominate).

    CPU only: on CUDA the grouped kernel has dtype and architecture limits that this
    project has not measured, so the expert-by-expert kernel is used there."""
    if xs.device.type != "cpu" or xs.dtype not in _GROUPED_DTYPES or not hasattr(torch, "_grouped_mm"):
        return False
    per_16 = 16 // xs.element_size()
    expert_bytes = 0
    for m in layers:
        if type(m) is StackedLinear:
            if m.in_features % per_16 or m.out_features % per_16:
                return False
            expert_bytes += (m.in_features + 1) * m.out_features * xs.element_size()
    return xs.shape[0] * expert_bytes <= GROUPED_MAX_ROW_BYTES * experts


def _run_grouped(layers: list[nn.Module], xs: Tensor, kept: list[int]) -> Tensor:
    """All experts on their contiguous row groups of ``xs`` (``kept[e]`` rows for expert e).

    Each StackedLinear is one ``torch._grouped_mm`` over its stacked weight instead of E
    small matmuls: E separate calls cost a fixed overhead each, forward and backward,
    which made the MoE's cost grow with E. Autograd differentiates it (the weight's
    gradient is one more grouped matmul); an expert without rows gets zero gradients."""
    ends = torch.tensor(list(accumulate(kept)), dtype=torch.int32, device=xs.device)
    group: Tensor | None = None  # the expert of each row, for the biases
    h = xs
    for m in layers:
        if type(m) is not StackedLinear:
            h = _ACTIVATIONS[type(m)][0](m, h)
            continue
        h = torch._grouped_mm(h, m.weight.transpose(1, 2), offs=ends)
        if m.bias is not None:
            if group is None:
                experts = torch.arange(len(kept), device=xs.device)
                group = experts.repeat_interleave(torch.tensor(kept, device=xs.device), output_size=xs.shape[0])
            h = h + m.bias.index_select(0, group)
    if h.requires_grad:
        # torch._grouped_mm's backward fails on a broadcast gradient (that of ``ys.sum()``,
        # strides 0; torch 2.13); the MoE's combine passes a dense one, a direct caller may not.
        h.register_hook(_dense)
    return h


def _dense(grad: Tensor) -> Tensor:
    return grad.contiguous()


def _run_stacked(layers: list[nn.Module], xs: Tensor, kept: list[int]) -> Tensor:
    """The experts through :class:`_ExpertStack` (see :func:`stack_layout`)."""
    layout, params = stack_layout(layers)
    return _ExpertStack.apply(xs, layout, tuple(kept), *params)


Layout = tuple[tuple[nn.Module, int, int], ...]


def stack_layout(layers: list[nn.Module]) -> tuple[Layout, list[Tensor]]:
    """Per layer (its module, where its stacked weight sits in the parameter list, where
    its stacked bias does, or -1), and that list."""
    layout: list[tuple[nn.Module, int, int]] = []
    params: list[Tensor] = []
    for m in layers:
        if type(m) is not StackedLinear:
            layout.append((m, -1, -1))
            continue
        w_at, b_at = len(params), -1
        params.append(m._parameters["weight"])
        if m._parameters["bias"] is not None:
            b_at = len(params)
            params.append(m._parameters["bias"])
        layout.append((m, w_at, b_at))
    return tuple(layout), params


class _ExpertStack(torch.autograd.Function):
    """ys[rows of e] = expert_e(xs[rows of e]) for stacked experts, expert by expert
    through all layers, forward and backward.

    ``layers`` holds, per layer, its module and where its stacked weight [E, out, in] and
    bias [E, out] sit in ``params``. The backward is the one autograd runs for the module
    loop (per Linear: ``g.T @ input`` for the weight, ``g.sum(0)`` for the bias, ``g @ W``
    for the input; the activations' aten backwards), each expert's written into its slice
    of the stacked gradients; an expert without rows gets zero there. Intermediates are
    saved with ``save_for_backward`` (freed after the backward, kept with
    ``retain_graph``). ``once_differentiable``.
    """

    @staticmethod
    def forward(ctx: object, xs: Tensor, layers: Layout, kept: tuple[int, ...], *params: Tensor) -> Tensor:
        last = len(layers) - 1
        width = xs.shape[1]
        for m, _, _ in layers:
            width = m.out_features if type(m) is StackedLinear else width
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
                weight = params[w_at][e].t()
                if b_at < 0:
                    h = torch.mm(h, weight, out=into) if into is not None else torch.mm(h, weight)
                else:
                    bias = params[b_at][e]
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
        idle = 0 in kept  # an expert without rows: zeros in its slices
        grads: list[Tensor | None] = [
            (torch.zeros_like(p) if idle else torch.empty_like(p)) if need else None
            for p, need in zip(params, need_param, strict=True)
        ]
        lowest = _lowest_needed(layers, need_param, needs[0])
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
                grad_w = grads[w_at]
                if grad_w is not None:
                    torch.mm(g.t(), inp, out=grad_w[e])
                grad_b = grads[b_at] if b_at >= 0 else None
                if grad_b is not None:
                    torch.sum(g, 0, out=grad_b[e])
                if i > lowest:
                    g = g.mm(params[w_at][e])
                elif grad_xs is not None:
                    torch.mm(g, params[w_at][e], out=grad_xs[start : start + n])
            if grad_xs is not None and type(layers[lowest][0]) is not StackedLinear:
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


def _lowest_needed(layers: Layout, need_param: tuple[bool, ...], need_xs: bool) -> int:
    """The lowest layer the backward must reach: 0 when ``xs`` needs a gradient, else the
    lowest Linear with a parameter that does (frozen lower layers are not walked)."""
    if need_xs:
        return 0
    for i, (_, w_at, b_at) in enumerate(layers):
        if w_at >= 0 and need_param[w_at]:
            return i
        if b_at >= 0 and need_param[b_at]:
            return i
    return len(layers)
