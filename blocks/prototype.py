"""Prototype heads: PrototypeHead (ProtoPNet) and ProtoNet (Prototypical Networks).

PrototypeHead — Chen et al. 2019, "This Looks Like That: Deep Learning for
Interpretable Image Recognition" (reference code cfchen-duke/ProtoPNet). With
P = classes * per_class learned prototypes p_j ∈ R^D, prototype j belonging to
class j // per_class, on embeddings z_b ∈ R^D or on a feature map
z_b ∈ R^{D×H×W} (the paper's 1×1 patch prototypes: each prototype is compared
with every position and the closest one counts):

    d_bj   = ||z_b - p_j||²                      z: [B, D]
    d_bj   = min_{h,w} ||z_b[:, h, w] - p_j||²    z: [B, D, H, W]
    s_bj   = log((d_bj + 1) / (d_bj + 1e-4))     similarity="log"   (s(0) = log 1e4)
           = -d_bj                               similarity="linear"
    logits = s Wᵀ,   W ∈ R^{classes×P}, no bias,
             W_kj initialised to 1 if class(j) = k, else -0.5

Prototypes are initialised uniform in [0, 1) as in ProtoPNet. The paper's
training terms live in ``dsl.blocks.nn.prototype`` and the trainer adds them:
cluster cost Clst = mean_b min_{class(j)=y_b} d_bj, separation cost
Sep = mean_b min_{class(j)≠y_b} d_bj (subtracted), the L1 of W at wrong-class
positions (last-layer stage), and ``push_prototypes``, which replaces every
prototype by its nearest training embedding (or patch) of its own class.

ProtoNet — Snell et al. 2017, "Prototypical Networks for Few-shot Learning"
(reference code jakesnell/prototypical-networks). From an embedded support set
with labels in 0..ways-1, the class prototypes are the means

    c_k    = (1 / |S_k|) Σ_{i: y_i = k} s_i
    logits = -||q - c_k||²          (softmax over k gives p(y = k | q))

A class without support examples gets logit -inf. ProtoNet is a block without
parameters rather than a function: its name is capitalised (blocks are, §2 of
the design), and as a module it appears in the summary table and can grow a
learned metric later without changing how specs call it. The encoder is
whatever computes ``query`` and ``support`` (share it with a named block value:
``enc = MLP(...)``, ``zq = enc(q)``, ``zs = enc(s)``).

Both compile with ``torch.compile(fullgraph=True)`` and export with
``torch.export`` (batch sizes dynamic), tested in tests/test_prototype.py.

Shapes:
    PrototypeHead:  z: [B, D] -> logits: [B, classes], distances: [B, classes*per_class]
    PrototypeHead:  z: [B, D, H, W] -> logits: [B, classes], distances: [B, classes*per_class]
    ProtoNet:       query: [Q, D], support: [S, D], support_y: [S] long -> logits: [Q, ways]
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dsl.language.registry import PROTOTYPES, WEIGHTS, BuildCall, Decl, Params, TensorArg, register
from dsl.language.shapes import ShapeCall, TensorType

PROTOPNET = "Chen et al. 2019, This Looks Like That: Deep Learning for Interpretable Image Recognition"
PROTONET = "Snell et al. 2017, Prototypical Networks for Few-shot Learning"


class PrototypeHeadParams(Params):
    classes: int = Field(gt=0, description="number of classes")
    per_class: int = Field(1, gt=0, description="prototypes per class (ProtoPNet uses 10)")
    similarity: Literal["log", "linear"] = Field(
        "log", description="log((d+1)/(d+1e-4)) as ProtoPNet, or linear -d"
    )


def infer_prototype_head(call: ShapeCall, p: PrototypeHeadParams) -> list[TensorType]:
    patches = call.type("z").rank == 4
    z = call.match("z", "B D H W" if patches else "B D", dtype="float")
    count = p.classes * p.per_class
    return [
        call.tensor([z.B, p.classes], why=f"PrototypeHead(classes={p.classes}) gives one logit per class"),
        call.tensor(
            [z.B, count],
            why=f"PrototypeHead has classes*per_class = {p.classes}*{p.per_class} = {count} prototypes",
        ),
    ]


def build_prototype_head(call: BuildCall, p: PrototypeHeadParams):
    from dsl.blocks.nn.prototype import PrototypeHeadModule

    return PrototypeHeadModule(_width(call), p.classes, p.per_class, p.similarity)


def count_prototype_head(call: BuildCall, p: PrototypeHeadParams) -> int:
    """P = classes*per_class prototypes of width D, and the P x classes last layer."""
    count = p.classes * p.per_class
    return count * _width(call) + count * p.classes


def _width(call: BuildCall) -> int:
    """D: the features of an embedding, or the channels of a feature map."""
    return call.size("z", 1)


class ProtoNetParams(Params):
    ways: int = Field(gt=0, description="number of classes in an episode; support_y in 0..ways-1")


def infer_protonet(call: ShapeCall, p: ProtoNetParams) -> list[TensorType]:
    q = call.match("query", "Q D", dtype="float")
    s = call.match("support", "S D", dtype="float", D=q.D)
    call.match("support_y", "S", dtype=("long", "int"), S=s.S)
    return [call.tensor([q.Q, p.ways], why=f"ProtoNet(ways={p.ways}) scores each query against {p.ways} class means")]


def build_protonet(call: BuildCall, p: ProtoNetParams):
    from dsl.blocks.nn.prototype import ProtoNetModule

    return ProtoNetModule(p.ways)


register(
    Decl(
        name="PrototypeHead",
        kind="block",
        params=PrototypeHeadParams,
        inputs=(TensorArg("z", doc="embeddings [B, D], or a feature map [B, D, H, W] (patch prototypes)"),),
        outputs=("logits", "distances"),
        infer=infer_prototype_head,
        build=build_prototype_head,
        count_params=count_prototype_head,
        prunable=frozenset({WEIGHTS, PROTOTYPES}),  # the last layer; the prototypes
        doc=__doc__ or "",
        paper=PROTOPNET,
        signature="[B, D] or [B, D, H, W] -> logits [B, classes], distances [B, classes*per_class]",
    )
)

register(
    Decl(
        name="ProtoNet",
        kind="block",
        params=ProtoNetParams,
        inputs=(
            TensorArg("query", doc="embedded queries"),
            TensorArg("support", doc="embedded support examples"),
            TensorArg("support_y", doc="support labels in 0..ways-1 (long)", index_of="ways"),
        ),
        outputs=("logits",),
        infer=infer_protonet,
        build=build_protonet,
        count_params=lambda call, p: 0,  # no weights: prototypes are the support means
        prunable=frozenset(),
        doc=__doc__ or "",
        paper=PROTONET,
        signature="[Q, D], [S, D], [S] long -> [Q, ways]",
    )
)
