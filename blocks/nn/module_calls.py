"""Whether calling an ``nn.Module`` would run anything besides its ``forward``.

``nn.Module.__call__`` calls ``forward`` and nothing else when the module has no hook of
its own, no global module hook is registered, it was not ``module.compile()``-d and no
``torch.jit.trace`` is running (the fast path of ``nn.Module._call_impl``). Code that
skips the module call for speed must only do so when this holds, or a user's hook would
silently not run: the guarded call of a compiled model (``dsl/guards.py``) and the MoE
experts' stacked and grouped kernels (:mod:`.moe_experts`, whose exported code inlines
these) ask here.

These read ``nn.Module``'s private hook registries; :data:`SUPPORTED` says whether this
torch has all of them (the callers fall back to calling the module when it does not).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _torch_module

_GLOBAL_HOOKS = ("_global_forward_pre_hooks", "_global_forward_hooks",
                 "_global_backward_pre_hooks", "_global_backward_hooks")
_OWN_HOOKS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")

SUPPORTED = (all(hasattr(_torch_module, name) for name in _GLOBAL_HOOKS)
             and all(hasattr(nn.Module(), name) for name in (*_OWN_HOOKS, "_compiled_call_impl"))
             and hasattr(torch._C, "_get_tracing_state"))
_tracing_state = getattr(torch._C, "_get_tracing_state", None)


def has_hooks(m: nn.Module) -> bool:
    """Whether ``m`` has a forward or backward (pre-)hook of its own."""
    return bool(m._forward_pre_hooks or m._forward_hooks or m._backward_pre_hooks or m._backward_hooks)


def global_hooks() -> bool:
    """Whether a global module hook is registered (``register_module_forward_hook`` ...)."""
    g = _torch_module
    return bool(g._global_forward_pre_hooks or g._global_forward_hooks
                or g._global_backward_pre_hooks or g._global_backward_hooks)


def calls_forward_only(m: nn.Module) -> bool:
    """Whether ``m(*args, **kwargs)`` would be exactly ``m.forward(*args, **kwargs)``.

    :func:`has_hooks` and :func:`global_hooks` written out: this runs on every call of a
    guarded model, right after a backward, where two more calls cost 0.3–0.9% of a small
    model's step (benchmarks/NOTES.md)."""
    g = _torch_module
    return (m._compiled_call_impl is None
            and not (m._forward_pre_hooks or m._forward_hooks or m._backward_pre_hooks or m._backward_hooks
                     or g._global_forward_pre_hooks or g._global_forward_hooks
                     or g._global_backward_pre_hooks or g._global_backward_hooks)
            and not _tracing_state())


__all__ = ["SUPPORTED", "calls_forward_only", "global_hooks", "has_hooks"]
