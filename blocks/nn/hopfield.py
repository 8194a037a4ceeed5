"""torch modules for modern Hopfield layers (Ramsauer et al. 2021, "Hopfield Networks is All You Need").

Behaviour follows ml-jku/hopfield-layers (``hflayers.Hopfield``, ``HopfieldPooling``,
``HopfieldLayer``); the code is our own. See ``dsl.blocks.hopfield`` for the equations.

Update rule (in the association space of each head, ξ a state pattern, K the stored patterns)::

    ξ_new = Kᵀ softmax(β K ξ)

The forward pass runs ``steps`` such updates (early-stopping per head once no sample's association
matrix changes by more than ``eps``, as the reference does), then one final retrieval
``softmax(β K ξ)ᵀ V``. With ``steps=0``
this is exactly scaled dot-product attention with ``scale=β``, and it runs through
:func:`torch.nn.functional.scaled_dot_product_attention`.

Compilation: the early stop never branches on data inside a traced graph. Under
``torch.compile``/``torch.export`` all ``steps`` iterations are unrolled and converged heads
are frozen with ``torch.where`` (the result is the same as stopping); in eager mode the loop
also breaks as soon as every head has converged and records how many updates ran.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import combine_masks


def hopfield_energy(state: Tensor, stored: Tensor, beta: float, padding: Tensor | None = None) -> Tensor:
    """The modern Hopfield energy of each state pattern, constants dropped.

        E(ξ) = −lse(β, Kξ) + ½ ξᵀξ,   lse(β, z) = β⁻¹ log Σᵢ exp(β zᵢ)

    ``state`` is [..., L, D], ``stored`` [..., S, D], ``padding`` [..., S] bool (True = ignore);
    returns [..., L]. The update rule never increases it (CCCP, Theorem 1 of the paper).
    """
    scores = state @ stored.transpose(-1, -2)
    if padding is not None:
        scores = scores.masked_fill(padding.unsqueeze(-2), float("-inf"))
    lse = torch.logsumexp(beta * scores, dim=-1) / beta
    return -lse + 0.5 * (state * state).sum(-1)


def _associate(q: Tensor, k: Tensor, beta: float, padding: Tensor | None) -> Tensor:
    """softmax(β q kᵀ + M) over the stored patterns. ``padding`` is a bool mask (true =
    exactly zero weight) or a float one (added to the scores), broadcast to [B, H, L, S]."""
    scores = beta * (q @ k.transpose(-1, -2))
    if padding is not None:
        scores = scores.masked_fill(padding, float("-inf")) if padding.dtype == torch.bool else scores + padding
    return torch.softmax(scores, dim=-1)


def association_mask(stored_mask: Tensor | None, attn_mask: Tensor | None, causal: bool, queries: int,
                     keys: int, device: torch.device) -> Tensor | None:
    """One mask for the associations, broadcastable to [B, H, L, S]: bool (true = masked)
    unless ``attn_mask`` is float (then additive, -inf where a bool part masks)."""
    mask = combine_masks(attn_mask, causal, queries, keys, device)
    padding = None if stored_mask is None else stored_mask.bool()[:, None, None, :]
    if mask is None:
        return padding
    mask = mask[None, None]
    if padding is None:
        return mask
    return mask | padding if mask.dtype == torch.bool else mask.masked_fill(padding, float("-inf"))


def hopfield_retrieve(
    q: Tensor, k: Tensor, beta: float, steps: int, eps: float, padding: Tensor | None = None,
    samples: int = 1,
) -> tuple[Tensor, int | None]:
    """Association matrix after ``steps`` update iterations: [B, H, L, S].

    ``q`` [B, H, L, d] and ``k`` [B, H, S, d] live in the association space; ``padding`` is
    [B, 1, 1, S] bool (True = padding). Step t computes ξ ← softmax(β ξ Kᵀ) K and the new
    associations; a head stops (keeps its associations) once the largest change of one
    sample's association matrix (its L2 norm over queries and stored patterns, the largest
    over the batch) is at most ``eps``: hflayers' rule (``hflayers/functional.py``). ``samples``
    splits the L queries into that many samples of L/samples each (HopfieldLayer puts its whole
    batch in one row of queries). Returns the associations and the number of update iterations
    that ran (None when traced: all ``steps`` are unrolled).
    """
    xi = _associate(q, k, beta, padding)
    tracing = torch.compiler.is_compiling()
    active = torch.ones(q.shape[1], dtype=torch.bool, device=q.device)
    ran = 0
    for _ in range(steps):
        # Eager only: stop once every head has converged (a data-dependent branch
        # would break a traced graph, where frozen heads make extra steps no-ops).
        if not tracing and not bool(active.any()):
            break
        new = _associate(xi @ k, k, beta, padding)
        change = torch.linalg.vector_norm((new - xi).unflatten(2, (samples, -1)), dim=(-2, -1)).amax(dim=(0, 2))
        xi = torch.where(active.view(1, -1, 1, 1), new, xi)
        active = active & (change > eps)
        ran += 1
    return xi, (None if tracing else ran)


def _norm(enabled: bool, dim: int, affine: bool) -> nn.Module:
    return nn.LayerNorm(dim, elementwise_affine=affine) if enabled else nn.Identity()


def _projection(enabled: bool, dim_in: int, dim_out: int, bias: bool) -> nn.Module:
    """A projection initialised like the reference: N(0, 0.02²) weights, zero bias."""
    if not enabled:
        return nn.Identity()
    layer = nn.Linear(dim_in, dim_out, bias=bias)
    nn.init.normal_(layer.weight, mean=0.0, std=0.02)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class Hopfield(nn.Module):
    """Modern Hopfield association of state patterns with stored patterns.

    ``forward(state [B, L, D], stored [B, S, D'] = state, values [B, S, D''] = stored,
    stored_mask [B, S] bool = None, attn_mask [L, S] = None, samples=1) -> [B, L, out]``;
    ``samples`` > 1 says that each item's L state patterns are that many samples (the early
    stop then measures each sample's associations, see :func:`hopfield_retrieve`).

    Pipeline: LayerNorm on state, stored and values (each optional, reference defaults on);
    projections to ``heads*head_dim`` (query, key) and ``heads*value_dim`` (value); ``steps``
    update iterations; retrieval; output projection to ``out``. ``project=False`` removes all
    four projections (pure retrieval in the input space: one head, ``D' == D``, out = D'').
    """

    def __init__(
        self,
        state_dim: int,
        stored_dim: int | None = None,
        values_dim: int | None = None,
        out: int | None = None,
        heads: int = 1,
        head_dim: int | None = None,
        value_dim: int | None = None,
        beta: float | None = None,
        steps: int = 0,
        eps: float = 1e-4,
        dropout: float = 0.0,
        normalize_state: bool = True,
        normalize_stored: bool = True,
        normalize_values: bool = True,
        normalize_affine: bool = True,
        project: bool = True,
        bias: bool = True,
        causal: bool = False,
    ):
        super().__init__()
        self.causal = causal
        stored_dim = state_dim if stored_dim is None else stored_dim
        values_dim = stored_dim if values_dim is None else values_dim
        self.heads, self.steps, self.eps, self.dropout, self.project = heads, steps, eps, dropout, project
        self.head_dim, self.value_dim, self.out_dim = self._dims(
            state_dim, stored_dim, values_dim, out, heads, head_dim, value_dim, project
        )
        # Reference: β = 1/√head_dim with projections, 1 for pure (static) retrieval.
        self.beta = float(beta) if beta is not None else (1.0 / math.sqrt(self.head_dim) if project else 1.0)
        self.norm_state = _norm(normalize_state, state_dim, normalize_affine)
        self.norm_stored = _norm(normalize_stored, stored_dim, normalize_affine)
        self.norm_values = _norm(normalize_values, values_dim, normalize_affine)
        self.q_proj = _projection(project, state_dim, heads * self.head_dim, bias)
        self.k_proj = _projection(project, stored_dim, heads * self.head_dim, bias)
        self.v_proj = _projection(project, values_dim, heads * self.value_dim, bias)
        self.out_proj = _projection(project, heads * self.value_dim, self.out_dim, bias)
        self.last_steps: int = 0  # update iterations run by the last eager call

    @staticmethod
    def _dims(
        state_dim: int, stored_dim: int, values_dim: int, out: int | None, heads: int,
        head_dim: int | None, value_dim: int | None, project: bool,
    ) -> tuple[int, int, int]:
        if not project:
            if heads != 1 or stored_dim != state_dim or out not in (None, values_dim):
                raise ValueError(
                    "project=False needs heads=1, stored width == state width and out == values width"
                )
            return state_dim, values_dim, values_dim
        if head_dim is None:
            if state_dim % heads:
                raise ValueError(f"state width {state_dim} is not divisible by heads={heads}")
            head_dim = state_dim // heads
        value_dim = head_dim if value_dim is None else value_dim
        return head_dim, value_dim, state_dim if out is None else out

    def _split(self, x: Tensor) -> Tensor:
        """[B, L, H*d] -> [B, H, L, d]; without projections the single head is a new axis."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def _prepare(
        self, state: Tensor, stored: Tensor | None, values: Tensor | None, stored_mask: Tensor | None,
        attn_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        stored = state if stored is None else stored
        values = stored if values is None else values
        q = self._split(self.q_proj(self.norm_state(state)))
        k = self._split(self.k_proj(self.norm_stored(stored)))
        v = self._split(self.v_proj(self.norm_values(values)))
        padding = association_mask(stored_mask, attn_mask, self.causal, q.shape[2], k.shape[2], q.device)
        return q, k, v, padding

    def _record(self, ran: int | None) -> None:
        if ran is not None:
            self.last_steps = ran

    def forward(
        self,
        state: Tensor,
        stored: Tensor | None = None,
        values: Tensor | None = None,
        stored_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        samples: int = 1,
    ) -> Tensor:
        q, k, v, padding = self._prepare(state, stored, values, stored_mask, attn_mask)
        p = self.dropout if self.training else 0.0
        if self.steps == 0:
            # One retrieval step is attention: let torch pick the fused kernel.
            allowed = None if padding is None else (~padding if padding.dtype == torch.bool else padding)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p, scale=self.beta)
            self._record(None if torch.compiler.is_compiling() else 0)
        else:
            xi, ran = hopfield_retrieve(q, k, self.beta, self.steps, self.eps, padding, samples)
            o = F.dropout(xi, p=p, training=self.training) @ v
            self._record(ran)
        return self.out_proj(o.transpose(1, 2).flatten(2))

    @torch.no_grad()
    def associations(
        self,
        state: Tensor,
        stored: Tensor | None = None,
        values: Tensor | None = None,
        stored_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        samples: int = 1,
    ) -> Tensor:
        """The association matrix (softmax weights, before dropout) that ``forward`` would use
        on these inputs: [B, heads, L, S]. Also sets ``last_steps``."""
        q, k, _, padding = self._prepare(state, stored, values, stored_mask, attn_mask)
        xi, ran = hopfield_retrieve(q, k, self.beta, self.steps, self.eps, padding, samples)
        self._record(ran)
        return xi


def _pattern_parameter(rows: int, dim: int, trainable: bool) -> nn.Parameter:
    """Learned patterns, initialised N(0, 0.02²) like the reference."""
    weight = nn.Parameter(torch.empty(rows, dim), requires_grad=trainable)
    nn.init.normal_(weight, mean=0.0, std=0.02)
    return weight


class HopfieldPooling(nn.Module):
    """Learned state pattern(s) (``queries`` of them) retrieve from the set ``x``.

    ``forward(x [B, S, D], mask [B, S] bool = None) -> [B, queries*out]``; ``mask`` True
    marks padding instances of a variable-size bag.
    """

    #: Parameters gradual pruning counts as prototypes (masked only with prototypes=true).
    prototype_parameters: ClassVar[tuple[str, ...]] = ("queries",)

    def __init__(self, dim: int, queries: int = 1, trainable: bool = True, **hopfield: object):
        super().__init__()
        self.hopfield = Hopfield(dim, dim, dim, **hopfield)  # type: ignore[arg-type]
        self.queries = _pattern_parameter(queries, dim, trainable)

    def _state(self, x: Tensor) -> Tensor:
        return self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.hopfield(self._state(x), x, None, mask).flatten(1)

    def associations(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, heads, queries, S]: how much each instance contributes to each pooled query."""
        return self.hopfield.associations(self._state(x), x, None, mask)

    @property
    def last_steps(self) -> int:
        return self.hopfield.last_steps


class HopfieldLayer(nn.Module):
    """State patterns ``x`` query a learned memory of ``patterns`` stored patterns.

    ``forward(x [..., D]) -> [..., out]``. Every row of ``x`` looks up the same memory
    independently; the leading dims are flattened into one row of queries (one fused attention
    call however large the batch), while the early stop of ``steps`` sees dim 0 as the batch, as
    the reference's HopfieldLayer does on [B, T, D] (of [N, D], each row is a sample). With
    ``separate_values`` the retrieved patterns are a second learned table (lookup targets)
    instead of the memory itself.
    """

    #: Parameters gradual pruning counts as prototypes (masked only with prototypes=true).
    prototype_parameters: ClassVar[tuple[str, ...]] = ("memory", "targets")

    def __init__(
        self, dim: int, patterns: int, separate_values: bool = False, trainable: bool = True, **hopfield: object
    ):
        super().__init__()
        self.hopfield = Hopfield(dim, dim, dim, **hopfield)  # type: ignore[arg-type]
        self.memory = _pattern_parameter(patterns, dim, trainable)
        self.targets = _pattern_parameter(patterns, dim, trainable) if separate_values else None

    def _inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        state = x.reshape(1, -1, x.shape[-1])
        values = None if self.targets is None else self.targets.unsqueeze(0)
        return state, self.memory.unsqueeze(0), values

    def forward(self, x: Tensor) -> Tensor:
        y = self.hopfield(*self._inputs(x), samples=_samples(x))
        return y.reshape(x.shape[:-1] + (y.shape[-1],))

    def associations(self, x: Tensor) -> Tensor:
        """[..., heads, patterns]: each query row's weights over the memory."""
        xi = self.hopfield.associations(*self._inputs(x), samples=_samples(x))  # [1, H, M, P]
        return xi[0].transpose(0, 1).reshape(x.shape[:-1] + (xi.shape[1], xi.shape[3]))

    @property
    def last_steps(self) -> int:
        return self.hopfield.last_steps


def _samples(x: Tensor) -> int:
    """The samples of HopfieldLayer's input for the early stop: dim 0 (one row per sample of [N, D])."""
    return x.shape[0] if x.dim() > 1 else 1
