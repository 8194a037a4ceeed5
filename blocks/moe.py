"""Gate and MoE: the sparsely-gated mixture of experts.

Papers: Shazeer et al. 2017, "Outrageously Large Neural Networks: The
Sparsely-Gated Mixture-of-Experts Layer" (behaviour follows its tensor2tensor
code, ``expert_utils.noisy_top_k_gating``); Fedus et al. 2021, "Switch
Transformers" (``router="switch"``).

Noisy top-k gate (``router="topk"``), for a token x ∈ R^D and E experts::

    clean   = x W_g                                    W_g, W_noise ∈ R^{D×E}, zero-initialised
    std     = softplus(x W_noise) + 1e-2               (only while training a noisy gate)
    noisy   = clean + N(0, 1) · std                    (noisy = clean otherwise)
    G(x)    = softmax over the top k of noisy; 0 for the other experts
    y       = Σ_i G(x)_i E_i(x)                        (only the k chosen experts run)

The softmax runs over the k winners only, and top-(k+1) is taken on the noisy
logits (the widely copied port that softmaxes before top-k, or takes the load
thresholds from softmaxed values, is not followed). The balance loss is::

    importance_i = Σ_x G(x)_i
    load_i       = Σ_x P(x, i),  P(x, i) = Φ((clean_i − thr_in) / std_i) if noisy_i > thr_in
                                           Φ((clean_i − thr_out) / std_i) otherwise
                   thr_in = (k+1)-th largest noisy logit, thr_out = k-th largest
                   (load_i = number of tokens routed to i when not noisy, not training, or k = E)
    balance      = w · (CV²(importance) + CV²(load)),  CV²(v) = Var(v) / (mean(v)² + 1e-10)

with the population variance, and CV² = 0 for a single expert.

Switch router (``router="switch"``, k = 1; Fedus et al., following
mesh-tensorflow's ``_switch_gating``): p = softmax(x' W_g) over all experts, where
W_g is drawn from a truncated normal of std sqrt(0.1 / D) and, while training a
``noisy`` router, x' = x · U(0.99, 1.01) elementwise (multiplicative input
jitter; x' = x otherwise); each token goes to argmax p with gate p_argmax;
``balance = w · E · Σ_i f_i P_i`` where f_i is the fraction of tokens sent to i
(before any is dropped) and P_i the mean of p_i over tokens (= w under perfectly
uniform routing). ``z_loss=c`` adds c · mean_x logsumexp(x' W_g)² (the router
z-loss of Zoph et al. 2022) to the ``balance`` output, as mesh-tensorflow adds it
to its auxiliary loss.

MoE runs ``experts`` independent copies of the ``expert`` block value (default:
``MLP(hidden=2*D, out=out or D)``), kept as ``experts.{e}`` in the state dict.
Any block value is an expert: one with several outputs contributes its first
(a ``PrototypeHead``'s logits), and the auxiliary losses inside an expert (a
nested ``MoE``'s balance, those of the MoEs inside a user block) are added to
this MoE's ``balance`` with their own coefficients, summed over the experts
that ran.
Tokens are grouped by expert (a stable sort of the (token, expert)
assignments), each expert runs once on its own tokens, and each token's
gate-weighted expert outputs are summed back into its row (``index_add``).
With ``capacity=c`` each expert takes at most max(min_capacity, ceil(c · T · k / E))
assignments (T = number of tokens in the batch) while training, and the same
with ``eval_capacity`` while evaluating. The top-k router keeps the assignments
with the highest gate weight (ties: earlier token first); the switch router
keeps the first tokens by position, as Switch does. The rest are dropped and
contribute zero (no renormalisation; the residual around the MoE is the
spec's). Defaults: ``eval_capacity`` 2.0 and ``min_capacity`` 4 with the switch
router (mesh-tensorflow's), ``capacity`` and 0 with top-k. The capacity rounds
up (mesh-tensorflow rounds down). The built module's buffer
``dropped_fraction`` holds the fraction of assignments dropped by the last
forward, and the expert-usage statistics count them.

Both blocks declare their ``balance`` output as an auxiliary loss (weight 1:
the output is already multiplied by ``balance=``), so training adds it.

torch.compile(fullgraph=True) and torch.export work (torch 2.13); the number
of tokens per expert is data, so they trace it as unbacked symbolic sizes (see
``dsl.blocks.nn.moe`` for the details and for older torch versions).

Shapes:
    Gate: x: [..., D] -> weights: [..., experts], balance: []
    MoE:  x: [..., D] -> y: [..., out], balance: []
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from dsl.language.registry import (
    WEIGHTS,
    AuxLoss,
    BlockValue,
    BuildCall,
    BuildError,
    Decl,
    Params,
    TensorArg,
    register,
)
from dsl.language.shapes import Dim, DimConflict, ShapeCall, ShapeError, TensorType, scalar

from .mlp import MLPParams, make_mlp, mlp_parameters

PAPER = (
    "Shazeer et al. 2017, Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer;"
    " Fedus et al. 2021, Switch Transformers"
)


class GateParams(Params):
    experts: int = Field(ge=1, description="number of experts E")
    k: int = Field(2, ge=1, description="experts per token (top k); the switch router uses k=1")
    noisy: bool = Field(True, description="router noise while training: learned Gaussian noise on the logits "
                                          "(topk), multiplicative input jitter (switch)")
    balance: float = Field(0.01, ge=0, description="coefficient of the load-balancing loss")
    router: Literal["topk", "switch"] = Field(
        "topk", description="`topk`: noisy top-k gate (Shazeer 2017); `switch`: top-1 Switch router"
    )

    @model_validator(mode="before")
    @classmethod
    def _switch_defaults_to_k1(cls, data: Any) -> Any:
        # The switch router is top-1: an omitted k means 1 there, not the top-k default 2.
        if isinstance(data, dict) and data.get("router") == "switch" and "k" not in data:
            return {**data, "k": 1}
        return data

    # Field validators rather than a model validator, so that the error names the field.
    @field_validator("k")
    @classmethod
    def _k_at_most_experts(cls, k: int, info: ValidationInfo) -> int:
        experts = info.data.get("experts")
        if experts is not None and k > experts:
            raise ValueError(f"k={k} exceeds experts={experts}: a token cannot pick more experts than exist")
        return k

    @field_validator("router")
    @classmethod
    def _switch_is_top1(cls, router: str, info: ValidationInfo) -> str:
        k = info.data.get("k")
        if router == "switch" and k is not None and k != 1:
            raise ValueError(f"router='switch' sends each token to one expert; got k={k} (use k=1)")
        return router


class MoEParams(GateParams):
    expert: BlockValue | None = Field(
        None, description="the expert block value, copied `experts` times; default MLP(hidden=2*D, out=out or D)"
    )
    out: int | None = Field(None, gt=0, description="output features; default: the expert's output size")
    capacity: float | None = Field(
        None, gt=0, description="capacity factor c while training: each expert takes at most ceil(c*T*k/E) "
                                "assignments"
    )
    eval_capacity: float | None = Field(
        None, gt=0, description="capacity factor while evaluating; default 2.0 with router='switch', else capacity"
    )
    min_capacity: int | None = Field(
        None, ge=0, description="the least an expert may take; default 4 with router='switch', else 0"
    )
    z_loss: float = Field(0.0, ge=0, description="coefficient of the router z-loss, added to balance")

    def capacities(self) -> tuple[float | None, float | None, int]:
        """(training factor, evaluation factor, minimum) with the router's defaults filled in."""
        switch = self.router == "switch"
        if self.capacity is None and self.eval_capacity is None:
            return None, None, 0
        evaluation = self.eval_capacity if self.eval_capacity is not None else (2.0 if switch else self.capacity)
        minimum = self.min_capacity if self.min_capacity is not None else (4 if switch else 0)
        return self.capacity, evaluation, minimum


# --------------------------------------------------------------------------- Gate


def infer_gate(call: ShapeCall, p: GateParams) -> list[TensorType]:
    call.match("x", "... D", dtype="float")
    why = f"Gate(experts={p.experts}) gives one weight per expert"
    return [call.keep("x", [p.experts], why=why), scalar(why="the balance loss is a scalar")]


def build_gate(call: BuildCall, p: GateParams) -> Any:
    from dsl.blocks.nn.moe import NoisyTopKGate

    return NoisyTopKGate(call.size("x", -1), p.experts, p.k, p.noisy, p.balance, p.router)


def count_gate(call: BuildCall, p: GateParams) -> int:
    """w_gate [D, experts], and w_noise of the same shape for a noisy top-k gate."""
    return call.size("x", -1) * p.experts * (2 if p.noisy and p.router == "topk" else 1)


register(
    Decl(
        name="Gate",
        kind="block",
        params=GateParams,
        inputs=(TensorArg("x", doc="tokens to route"),),
        outputs=("weights", "balance"),
        infer=infer_gate,
        build=build_gate,
        count_params=count_gate,
        prunable=frozenset(),  # the router's small [D, E] matrices stay dense
        aux=(AuxLoss(output="balance", weight=1.0),),
        doc=__doc__ or "",
        paper=PAPER,
        signature="[..., D] -> weights [..., experts], balance []",
    )
)


# --------------------------------------------------------------------------- MoE


def _expert_out(call: ShapeCall, p: MoEParams, d: Dim | None) -> tuple[Dim | None, str]:
    """The expert's output size for tokens [_, D], and why."""
    if p.expert is None:
        out = p.out if p.out is not None else d
        return out, f"the default expert MLP(hidden=2*D, out={'out' if p.out is not None else 'D'}) gives {out}"
    try:
        outs = p.expert.infer(call, [TensorType((None, d))])
    except ShapeError as e:
        raise ShapeError(
            f"expert `{p.expert.describe()}` cannot take the MoE's tokens [_, {d}]: {e.message}",
            arg="x",
            label=e.label,
            help=e.help,
            code=e.code,
        ) from None
    if not outs or len(outs[0].shape) != 2:
        raise ShapeError(
            f"expert `{p.expert.describe()}` must return a tensor [_, out] for a batch of tokens [_, {d}]",
            arg="expert",
            label=f"it returns {', '.join(str(t) for t in outs) or 'nothing'}",
            help="an expert with several outputs contributes its first, which must be one row per token",
        )
    return call.env.resolve(outs[0].shape[-1]), f"expert `{p.expert.describe()}` maps [_, {d}] to {outs[0]}"


def infer_moe(call: ShapeCall, p: MoEParams) -> list[TensorType]:
    d = call.match("x", "... D", dtype="float").D
    out, why = _expert_out(call, p, d)
    if p.out is not None:
        try:
            out = call.env.unify(out, p.out)
        except DimConflict:
            raise ShapeError(
                f"`out={p.out}` disagrees with the expert's output size",
                arg="out",
                label=f"expected {call.env.resolve(out)}, because {why}",
                help="drop `out=` or change the expert's output size",
            ) from None
    why_y = f"MoE(experts={p.experts}, k={p.k}): {why}"
    return [call.keep("x", [out], why=why_y), scalar(why="the balance loss is a scalar")]


def _default_expert(d: int, out: int) -> MLPParams:
    """The default expert: MLP(hidden=2*D, out=out)."""
    return MLPParams(hidden=2 * d, out=out)


def build_moe(call: BuildCall, p: MoEParams) -> Any:
    from dsl.blocks.nn.moe import MixtureOfExperts, NoisyTopKGate

    d = call.size("x", -1)
    out = call.outputs[0].shape[-1] if call.outputs else p.out
    if not isinstance(out, int):
        raise BuildError(f"`MoE` needs a concrete output size, found {out}", arg="out", help="give `out=`")
    gate = NoisyTopKGate(d, p.experts, p.k, p.noisy, p.balance, p.router, p.z_loss)
    token_type = TensorType((None, d))
    train_capacity, eval_capacity, min_capacity = p.capacities()
    if p.expert is None:
        experts = [make_mlp(d, _default_expert(d, out)) for _ in range(p.experts)]
        aux: list[tuple[int, float]] = []
    else:
        experts = [call.instantiate(p.expert, [token_type]) for _ in range(p.experts)]
        aux = p.expert.aux_outputs([token_type])
    return MixtureOfExperts(gate, experts, out, train_capacity, expert_aux=aux, eval_capacity=eval_capacity,
                            min_capacity=min_capacity)


def count_moe(call: BuildCall, p: MoEParams) -> int:
    """The gate plus `experts` copies of the expert (BuildError when a size is unknown)."""
    d = call.size("x", -1)
    gate = d * p.experts * (2 if p.noisy and p.router == "topk" else 1)
    if p.expert is None:
        out = call.outputs[0].shape[-1] if call.outputs else p.out
        if not isinstance(out, int):
            raise BuildError(f"`MoE` needs a concrete output size, found {out}", arg="out")
        one = mlp_parameters(d, _default_expert(d, out))
    else:
        counted = p.expert.count_params([TensorType((None, d))])
        if counted is None:
            raise BuildError(f"expert `{p.expert.describe()}` declares no parameter count", arg="expert")
        one = counted
    return gate + p.experts * one


register(
    Decl(
        name="MoE",
        kind="block",
        params=MoEParams,
        inputs=(TensorArg("x", doc="tokens to route; any leading dims are flattened"),),
        outputs=("y", "balance"),
        infer=infer_moe,
        build=build_moe,
        count_params=count_moe,
        prunable=frozenset({WEIGHTS}),  # its experts'; the router stays dense
        aux=(AuxLoss(output="balance", weight=1.0),),
        doc=__doc__ or "",
        paper=PAPER,
        signature="[..., D] -> y [..., out], balance []",
    )
)
