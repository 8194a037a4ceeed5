"""PrototypeHead (ProtoPNet) and ProtoNet (Prototypical Networks): shapes, numerics,
the ProtoPNet training terms, push, diagnostics, compile and export."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from helpers import build, infer
from torch import Tensor

from dsl.blocks.nn.prototype import (
    ProtoNetModule,
    PrototypeHeadModule,
    class_means,
    cluster_cost,
    last_layer_l1,
    log_similarity,
    prototype_heads,
    push_prototypes,
    separation_cost,
)
from dsl.language.shapes import ShapeError, Sym


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def head(dim: int = 5, classes: int = 3, per_class: int = 2, similarity: str = "log") -> PrototypeHeadModule:
    m = build("PrototypeHead", f"[4, {dim}]", classes=classes, per_class=per_class, similarity=similarity)
    assert isinstance(m, PrototypeHeadModule)
    return m


def episode(ways: int = 3, shots: int = 4, dim: int = 6, queries: int = 7) -> tuple[Tensor, Tensor, Tensor]:
    support = torch.randn(ways * shots, dim)
    labels = torch.arange(ways).repeat_interleave(shots)
    perm = torch.randperm(ways * shots)  # order must not matter
    return torch.randn(queries, dim), support[perm], labels[perm]


# --------------------------------------------------------------------------- PrototypeHead


def test_distances_equal_double_loop() -> None:
    m = head(dim=5, classes=3, per_class=2)
    z = torch.randn(4, 5)
    _, d = m(z)
    expected = torch.empty(4, 6)
    for b in range(4):
        for j in range(6):
            expected[b, j] = ((z[b] - m.prototypes[j]) ** 2).sum()
    torch.testing.assert_close(d, expected, atol=1e-5, rtol=1e-5)
    assert (d >= 0).all()


def patch_head(channels: int = 4, classes: int = 3, per_class: int = 2) -> PrototypeHeadModule:
    m = build("PrototypeHead", f"[2, {channels}, 3, 5]", classes=classes, per_class=per_class)
    assert isinstance(m, PrototypeHeadModule)
    return m


def test_patch_distances_are_the_minimum_over_positions() -> None:
    """ProtoPNet's model.py: an L2 distance map per prototype, then -max_pool(-map) over H x W."""
    m = patch_head()
    z = torch.randn(2, 4, 3, 5)
    _, d = m(z)
    maps = ((z[:, None] - m.prototypes[None, :, :, None, None]) ** 2).sum(2)  # [B, P, H, W]
    expected = -torch.nn.functional.max_pool2d(-maps, kernel_size=(3, 5)).flatten(1)
    torch.testing.assert_close(d, expected, atol=1e-5, rtol=1e-5)


def test_patch_push_selects_the_nearest_own_class_patch() -> None:
    m = patch_head(channels=3, classes=2, per_class=1)
    z = torch.randn(5, 3, 3, 5)
    labels = torch.tensor([0, 1, 0, 1, 1])
    protos = m.prototypes.detach().clone()
    sample, position = push_prototypes(m, z, labels)
    for j in range(2):
        best = min(
            ((((z[b, :, h, w] - protos[j]) ** 2).sum().item(), b, h * 5 + w)
             for b in range(5) if labels[b] == j for h in range(3) for w in range(5)),
        )
        assert (sample[j].item(), position[j].item()) == best[1:]
        b, pos = best[1:]
        torch.testing.assert_close(m.prototypes[j].detach(), z[b, :, pos // 5, pos % 5])


def test_patch_head_shape_rule_and_compile() -> None:
    logits_t, dist_t = infer("PrototypeHead", "[B, 16, H, W]", classes=4, per_class=2)
    assert logits_t.shape == (Sym("B"), 4) and dist_t.shape == (Sym("B"), 8)
    m = patch_head()
    z = torch.randn(2, 4, 3, 5)
    torch._dynamo.reset()
    for got, want in zip(torch.compile(m, fullgraph=True)(z), m(z), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_log_similarity_at_zero_and_monotone() -> None:
    assert log_similarity(torch.tensor(0.0)).item() == pytest.approx(math.log(1e4), rel=1e-6)
    d = torch.tensor([0.0, 0.5, 1.0, 10.0, 1e3])
    s = log_similarity(d)
    assert (s[1:] < s[:-1]).all() and (s > 0).all()


@pytest.mark.parametrize("similarity", ["log", "linear"])
def test_logits_are_similarities_through_last_layer(similarity: str) -> None:
    m = head(dim=3, classes=3, per_class=1, similarity=similarity)
    with torch.no_grad():  # integer-valued tensors: the distance expansion is exact
        m.prototypes.copy_(torch.tensor([[0.0, 0, 0], [1, 2, 0], [3, 0, 1]]))
        m.last_layer.weight.copy_(torch.eye(3))
    z = torch.tensor([[1.0, 2, 0], [0, 0, 0]])
    logits, d = m(z)
    torch.testing.assert_close(d, torch.tensor([[5.0, 0, 9], [0, 5, 10]]))
    want = torch.log((d + 1) / (d + 1e-4)) if similarity == "log" else -d
    torch.testing.assert_close(logits, want)
    if similarity == "log":
        assert logits[0, 1].item() == pytest.approx(math.log(1e4), rel=1e-6)


def test_last_layer_init_pattern_and_prototype_classes() -> None:
    m = head(classes=3, per_class=2)
    assert m.last_layer.bias is None
    assert m.prototype_class.tolist() == [0, 0, 1, 1, 2, 2]
    expected = torch.full((3, 6), -0.5)
    for j in range(6):
        expected[j // 2, j] = 1.0
    torch.testing.assert_close(m.last_layer.weight.detach(), expected)
    assert m.prototypes.shape == (6, 5)
    assert 0 <= m.prototypes.min() and m.prototypes.max() < 1  # ProtoPNet's uniform init


def test_bad_similarity_is_rejected() -> None:
    with pytest.raises(ValueError):
        PrototypeHeadModule(4, 2, similarity="cosine")
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        build("PrototypeHead", "[4, 8]", classes=2, similarity="cosine")
    with pytest.raises(ValidationError):
        build("PrototypeHead", "[4, 8]", classes=0)


def explicit_masked_min(d: Tensor, y: Tensor, per_class: int, own: bool) -> Tensor:
    rows = []
    for b in range(d.shape[0]):
        vals = [d[b, j] for j in range(d.shape[1]) if (j // per_class == y[b].item()) == own]
        rows.append(min(vals))
    return torch.stack(rows).mean()


@pytest.mark.parametrize("per_class", [1, 3])
def test_cluster_and_separation_equal_masked_min(per_class: int) -> None:
    d = torch.rand(8, 4 * per_class) * 10
    y = torch.randint(0, 4, (8,))
    torch.testing.assert_close(cluster_cost(d, y, per_class), explicit_masked_min(d, y, per_class, True))
    torch.testing.assert_close(separation_cost(d, y, per_class), explicit_masked_min(d, y, per_class, False))


def test_separation_with_a_single_class_is_finite() -> None:
    d = torch.rand(4, 2)
    y = torch.zeros(4, dtype=torch.long)
    assert separation_cost(d, y, 2).item() == 0.0
    torch.testing.assert_close(cluster_cost(d, y, 2), d.amin(1).mean())


def test_cluster_cost_gradient_reaches_only_the_nearest_own_prototype() -> None:
    m = head(dim=4, classes=2, per_class=2)
    z = torch.randn(1, 4)
    _, d = m(z)
    cluster_cost(d, torch.tensor([1]), m.per_class).backward()
    nearest = 2 + d[0, 2:].argmin().item()
    moved = (m.prototypes.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert moved == [nearest]


def test_last_layer_l1_counts_wrong_class_weights_only() -> None:
    m = head(classes=3, per_class=2)
    assert last_layer_l1(m).item() == pytest.approx(0.5 * 3 * 4)  # 4 wrong prototypes per class
    with torch.no_grad():
        m.last_layer.weight.copy_(torch.randn(3, 6))
    w = m.last_layer.weight
    expected = sum(w[k, j].abs() for k in range(3) for j in range(6) if j // 2 != k)
    torch.testing.assert_close(last_layer_l1(m), expected)
    last_layer_l1(m).backward()
    assert (m.last_layer.weight.grad[m.own_class_mask()] == 0).all()


def test_push_moves_each_prototype_onto_nearest_own_class_embedding() -> None:
    m = head(dim=4, classes=3, per_class=2)
    emb = torch.randn(20, 4)
    labels = torch.randint(0, 2, (20,))  # class 2 has no sample
    before = m.prototypes.detach().clone()
    dist_before = ((emb[:, None, :] - before[None]) ** 2).sum(-1)
    index, _position = push_prototypes(m, emb, labels)
    assert index.shape == (6,) and index.dtype == torch.long
    for j in range(6):
        k = j // 2
        if k == 2:
            assert index[j] == -1
            torch.testing.assert_close(m.prototypes[j].detach(), before[j])
            continue
        i = index[j].item()
        assert labels[i] == k
        assert torch.equal(m.prototypes[j].detach(), emb[i])  # exactly some embedding of its class
        own = (labels == k).nonzero().flatten()
        assert dist_before[i, j] <= dist_before[own, j].min() + 1e-5  # and the nearest one
    assert m.prototypes.requires_grad and m.prototypes.grad is None


def test_prototype_heads_finds_heads_inside_a_model() -> None:
    m = head()
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), m)
    assert prototype_heads(model) == [m]


def test_head_trains_on_separable_blobs() -> None:
    centres = torch.tensor([[4.0, 0], [-4, 0], [0, 4]])
    y = torch.arange(3).repeat(30)
    x = centres[y] + 0.5 * torch.randn(90, 2)
    m = head(dim=2, classes=3, per_class=2)
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    for _ in range(60):
        logits, d = m(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss = loss + 0.8 * cluster_cost(d, y, 2) - 0.08 * separation_cost(d, y, 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (m(x)[0].argmax(1) == y).float().mean() > 0.95


# --------------------------------------------------------------------------- ProtoNet


def test_class_means_match_explicit_means() -> None:
    _, s, y = episode(ways=3, shots=4)
    means, counts = class_means(s, y, 4)
    for k in range(3):
        torch.testing.assert_close(means[k], s[y == k].mean(0))
    assert counts.tolist() == [4, 4, 4, 0]
    assert (means[3] == 0).all()


def test_protonet_equals_nearest_centroid() -> None:
    q, s, y = episode(ways=4, shots=3, dim=5, queries=11)
    logits = build("ProtoNet", "[Q, 5]", "[S, 5]", "[S] long", ways=4)(q, s, y)
    assert logits.shape == (11, 4)
    centroids = torch.stack([s[y == k].mean(0) for k in range(4)])
    expected = torch.empty(11, 4)
    for i in range(11):
        for k in range(4):
            expected[i, k] = -((q[i] - centroids[k]) ** 2).sum()
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    nearest = torch.cdist(q, centroids).argmin(1)
    assert torch.equal(logits.argmax(1), nearest)


def test_protonet_is_a_linear_model_up_to_a_row_constant() -> None:
    q, s, y = episode(ways=3, shots=5, dim=4, queries=6)
    logits = ProtoNetModule(3)(q, s, y)
    c = torch.stack([s[y == k].mean(0) for k in range(3)])
    linear = 2 * q @ c.t() - (c**2).sum(1)  # Snell et al. eq. 4 (the -||q||² term is per row)
    diff = logits - linear
    torch.testing.assert_close(diff, diff[:, :1].expand_as(diff), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(diff[:, 0], -(q**2).sum(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits.softmax(1), linear.softmax(1), atol=1e-6, rtol=1e-5)


def test_protonet_class_without_support_gets_minus_inf() -> None:
    q, s, y = episode(ways=2, shots=3)
    logits = ProtoNetModule(3)(q, s, y)
    assert torch.isinf(logits[:, 2]).all() and (logits[:, 2] < 0).all()
    assert torch.isfinite(logits[:, :2]).all()
    assert torch.isfinite(logits.log_softmax(1)[:, :2]).all()


def test_protonet_gradient_reaches_the_encoder() -> None:
    q, s, y = episode(ways=3, shots=2)
    enc = torch.nn.Linear(6, 4)
    logits = ProtoNetModule(3)(enc(q), enc(s), y)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 3, (7,))).backward()
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0
    assert list(ProtoNetModule(3).parameters()) == []


# --------------------------------------------------------------------------- shape rules


@pytest.mark.parametrize("classes,per_class,dim,batch", [(2, 1, 3, 1), (4, 3, 8, 5), (10, 10, 16, 2)])
def test_head_shape_rule_agrees_with_module(classes: int, per_class: int, dim: int, batch: int) -> None:
    logits_t, dist_t = infer("PrototypeHead", f"[{batch}, {dim}]", classes=classes, per_class=per_class)
    m = build("PrototypeHead", f"[{batch}, {dim}]", classes=classes, per_class=per_class)
    logits, d = m(torch.randn(batch, dim))
    assert logits_t.concrete() == tuple(logits.shape) and dist_t.concrete() == tuple(d.shape)
    assert logits_t.dtype == dist_t.dtype == "float"


def test_head_shape_rule_is_symbolic() -> None:
    logits, d = infer("PrototypeHead", "[N, 16]", classes=4, per_class=2)
    assert logits.shape == (Sym("N"), 4) and d.shape == (Sym("N"), 8)


@pytest.mark.parametrize("ways,shots,queries,dim", [(1, 1, 1, 2), (5, 2, 9, 7)])
def test_protonet_shape_rule_agrees_with_module(ways: int, shots: int, queries: int, dim: int) -> None:
    (out,) = infer("ProtoNet", f"[{queries}, {dim}]", f"[{ways * shots}, {dim}]", f"[{ways * shots}] long", ways=ways)
    q, s, y = episode(ways, shots, dim, queries)
    assert out.concrete() == tuple(ProtoNetModule(ways)(q, s, y).shape)
    (sym,) = infer("ProtoNet", "[Q, D]", "[S, D]", "[S] long", ways=ways)
    assert sym.shape == (Sym("Q"), ways)


def shape_error(name: str, *shapes: str, **kw: object) -> ShapeError:
    with pytest.raises(ShapeError) as info:
        infer(name, *shapes, **kw)
    return info.value


def test_protonet_float_labels_are_a_dtype_error() -> None:
    e = shape_error("ProtoNet", "[Q, 8]", "[S, 8]", "[S]", ways=3)
    assert e.code == "E0302" and e.arg == "support_y" and "float" in e.label


def test_protonet_feature_mismatch_points_at_support() -> None:
    e = shape_error("ProtoNet", "[Q, 8]", "[S, 4]", "[S] long", ways=3)
    assert e.code == "E0301" and e.arg == "support" and "[S, 8]" in e.label


def test_protonet_label_count_mismatch() -> None:
    e = shape_error("ProtoNet", "[Q, 8]", "[10, 8]", "[9] long", ways=3)
    assert e.arg == "support_y" and "[10]" in e.label


def test_protonet_rank_and_query_dtype_errors() -> None:
    assert shape_error("ProtoNet", "[Q, 8]", "[S, 8]", "[S, 1] long", ways=3).code == "E0303"
    assert shape_error("ProtoNet", "[Q, 8] long", "[S, 8]", "[S] long", ways=3).arg == "query"


def test_head_errors() -> None:
    assert shape_error("PrototypeHead", "[B, T, 8]", classes=2).code == "E0303"
    e = shape_error("PrototypeHead", "[B, 8] long", classes=2)
    assert e.code == "E0302" and e.arg == "z"


def test_declarations_do_not_import_torch() -> None:
    code = "import sys, dsl.blocks.prototype; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- compile / export


def test_compile_fullgraph() -> None:
    torch._dynamo.reset()
    m = head(dim=6, classes=3, per_class=2)
    z = torch.randn(4, 6)
    for got, want in zip(torch.compile(m, fullgraph=True)(z), m(z), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    q, s, y = episode(ways=3, shots=2, dim=6)
    p = ProtoNetModule(4)  # one empty class: the -inf branch is in the graph too
    torch.testing.assert_close(torch.compile(p, fullgraph=True)(q, s, y), p(q, s, y))


def test_export_with_dynamic_batch() -> None:
    from torch.export import Dim, export

    m = head(dim=6)
    ep = export(m, (torch.randn(4, 6),), dynamic_shapes=({0: Dim("B")},))
    z = torch.randn(9, 6)
    for got, want in zip(ep.module()(z), m(z), strict=True):
        torch.testing.assert_close(got, want)
    p = ProtoNetModule(3)
    q, s, y = episode(ways=3, shots=2, dim=6)
    dyn = ({0: Dim("Q")}, {0: Dim("S")}, {0: Dim("S")})
    ep = export(p, (q, s, y), dynamic_shapes=dyn)
    q2, s2, y2 = episode(ways=3, shots=5, dim=6, queries=2)
    torch.testing.assert_close(ep.module()(q2, s2, y2), p(q2, s2, y2))
