"""Modern Hopfield blocks: shapes, the attention identity, retrieval, energy, masks, compile."""

from __future__ import annotations

import math

import helpers as testing
import pytest
import torch
import torch.nn.functional as F

from dsl.blocks.nn.hopfield import Hopfield, HopfieldLayer, HopfieldPooling, hopfield_energy
from dsl.language.shapes import ShapeError, Sym

PURE = dict(project=False, normalize_state=False, normalize_stored=False, normalize_values=False)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _manual_attention(m: Hopfield, state: torch.Tensor, stored: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(β Q Kᵀ) V written out by hand, with the module's own norms and projections."""
    h = m.heads
    q = m.q_proj(m.norm_state(state)).unflatten(-1, (h, -1)).transpose(1, 2)
    k = m.k_proj(m.norm_stored(stored)).unflatten(-1, (h, -1)).transpose(1, 2)
    v = m.v_proj(m.norm_values(stored)).unflatten(-1, (h, -1)).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # default β = 1/√head_dim
    if mask is not None:
        scores = scores.masked_fill(mask[:, None, None, :], float("-inf"))
    o = torch.softmax(scores, -1) @ v
    return m.out_proj(o.transpose(1, 2).flatten(2))


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, "[B, L, 16]"),
        ({"out": 4, "heads": 4}, "[B, L, 4]"),
        ({"stored": "[B, S, 8]", "stored_mask": "[B, S] bool", "heads": 2}, "[B, L, 16]"),
        ({"stored": "[B, S, 8]", "values": "[B, S, 5]", "out": 3}, "[B, L, 3]"),
        ({"stored": "[B, S, 16]", "values": "[B, S, 5]", **PURE}, "[B, L, 5]"),
    ],
)
def test_hopfield_shape_rule(kw: dict, expected: str) -> None:
    (t,) = testing.infer("Hopfield", "[B, L, 16]", **kw)
    assert str(t) == expected


def test_pooling_and_layer_shape_rules() -> None:
    assert str(testing.infer("HopfieldPooling", "[B, S, 12]")[0]) == "[B, 12]"
    assert str(testing.infer("HopfieldPooling", "[B, S, 12]", queries=3, out=5, mask="[B, S] bool")[0]) == "[B, 15]"
    assert str(testing.infer("HopfieldLayer", "[N, 16]", patterns=8)[0]) == "[N, 16]"
    assert str(testing.infer("HopfieldLayer", "[..., 16]", patterns=8, out=4)[0]) == "[..., 4]"
    (t,) = testing.infer("HopfieldLayer", "[B, T, F]", patterns=4, heads=2)
    assert t.shape == (Sym("B"), Sym("T"), Sym("F"))


@pytest.mark.parametrize(
    ("name", "shapes", "kw", "code"),
    [
        ("Hopfield", ("[B, L, 10]",), {"heads": 3}, "E0401"),
        ("Hopfield", ("[B, L, 8]",), {"heads": 2, **PURE}, "E0401"),
        ("Hopfield", ("[B, L, 8]",), {"stored": "[B, S, 6]", **PURE}, "E0306"),
        ("Hopfield", ("[2, L, 8]",), {"stored": "[3, S, 8]"}, "E0301"),
        ("Hopfield", ("[B, L, 8]",), {"stored": "[B, 5, 8]", "stored_mask": "[B, 4] bool"}, "E0301"),
        ("Hopfield", ("[B, L, 8]",), {"stored_mask": "[B, L]"}, "E0302"),
        ("Hopfield", ("[N, 8]",), {}, "E0303"),
        ("HopfieldPooling", ("[B, S, 8]",), {"mask": "[B, S] long"}, "E0302"),
        ("HopfieldLayer", ("[N, 8]",), {"patterns": 4, "out": 3, **PURE}, "E0306"),
    ],
)
def test_shape_errors(name: str, shapes: tuple, kw: dict, code: str) -> None:
    with pytest.raises(ShapeError) as err:
        testing.infer(name, *shapes, **kw)
    assert err.value.code == code


def test_params_are_validated() -> None:
    with pytest.raises(ValueError):
        testing.params("HopfieldLayer")  # patterns is required
    with pytest.raises(ValueError):
        testing.params("Hopfield", dropout=1.0)
    with pytest.raises(ValueError):
        testing.params("Hopfield", steps=-1)


@pytest.mark.parametrize(
    ("name", "shapes", "kw", "inputs"),
    [
        ("Hopfield", ("[2, 5, 16]",), {"heads": 4, "out": 6}, [(2, 5, 16)]),
        ("Hopfield", ("[2, 5, 16]",), {"stored": "[2, 7, 8]", "steps": 2}, [(2, 5, 16)]),
        ("HopfieldPooling", ("[3, 7, 12]",), {"queries": 2, "heads": 3, "out": 4}, [(3, 7, 12)]),
        ("HopfieldLayer", ("[2, 3, 16]",), {"patterns": 6, "heads": 2, "steps": 1}, [(2, 3, 16)]),
        ("HopfieldLayer", ("[9, 16]",), {"patterns": 6, "out": 5}, [(9, 16)]),
    ],
)
def test_shape_rule_agrees_with_module(name: str, shapes: tuple, kw: dict, inputs: list) -> None:
    (t,) = testing.infer(name, *shapes, **kw)
    module = testing.build(name, *shapes, **kw)
    extra = {}
    if "stored" in kw:
        extra["stored"] = torch.randn(2, 7, 8)
    y = module(*[torch.randn(s) for s in inputs], **extra)
    assert tuple(y.shape) == t.concrete()


def test_builder_rejects_heads_that_do_not_divide_the_width() -> None:
    from dsl.language.registry import BuildCall, BuildError

    decl = testing.decl("Hopfield")
    p = testing.params("Hopfield", heads=3)
    call = BuildCall("Hopfield", {"state": testing.tensor_type("[2, 4, 10]")}, [])
    with pytest.raises(BuildError):
        decl.build(call, p)  # type: ignore[misc]


# --------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("heads", [1, 2])
def test_one_step_equals_softmax_attention(heads: int) -> None:
    m = Hopfield(16, heads=heads, out=6)
    for p in m.parameters():  # leave the reference init: make norms and biases non-trivial
        torch.nn.init.normal_(p, std=0.3)
    state, stored = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[1, 4:] = True
    assert m.beta == pytest.approx(1 / math.sqrt(16 // heads))
    torch.testing.assert_close(m(state, stored), _manual_attention(m, state, stored, None), atol=1e-5, rtol=1e-5)
    got = m(state, stored, stored_mask=mask)
    torch.testing.assert_close(got, _manual_attention(m, state, stored, mask), atol=1e-5, rtol=1e-5)


def test_one_step_goes_through_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    real = F.scaled_dot_product_attention

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(kwargs["scale"])  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    Hopfield(8, beta=0.7)(torch.randn(1, 2, 8))
    assert calls == [0.7]


def test_one_update_then_retrieval_by_hand() -> None:
    """steps=1: ξ₁ = softmax(β Q Kᵀ) K in the association space, then softmax(β ξ₁ Kᵀ) V."""
    m = Hopfield(16, heads=2, steps=1, beta=2.0)
    x = torch.randn(2, 4, 16)
    q = m.q_proj(m.norm_state(x)).unflatten(-1, (2, -1)).transpose(1, 2)
    k = m.k_proj(m.norm_stored(x)).unflatten(-1, (2, -1)).transpose(1, 2)
    v = m.v_proj(m.norm_values(x)).unflatten(-1, (2, -1)).transpose(1, 2)
    xi1 = torch.softmax(2.0 * q @ k.transpose(-1, -2), -1) @ k
    o = torch.softmax(2.0 * xi1 @ k.transpose(-1, -2), -1) @ v
    torch.testing.assert_close(m(x), m.out_proj(o.transpose(1, 2).flatten(2)), atol=1e-6, rtol=1e-5)
    # The update that finds convergence is kept (as in the reference), so a huge eps
    # stops after exactly one update.
    lazy = Hopfield(16, heads=2, steps=5, beta=2.0, eps=1e9)
    lazy.load_state_dict(m.state_dict())
    torch.testing.assert_close(lazy(x), m(x))
    assert lazy.last_steps == 1


def test_noisy_query_retrieves_stored_pattern() -> None:
    d, s = 64, 10
    patterns = torch.randint(0, 2, (1, s, d)).float() * 2 - 1
    flips = torch.rand(1, 1, d) < 0.2
    query = torch.where(flips, -patterns[:, 3:4], patterns[:, 3:4])
    m = Hopfield(d, beta=8.0, **PURE)
    got = m(query, patterns)
    torch.testing.assert_close(got, patterns[:, 3:4], atol=1e-4, rtol=0)
    assert m.associations(query, patterns).argmax(-1).item() == 3


def test_energy_never_increases_along_updates() -> None:
    d, s, beta = 8, 12, 0.5
    stored = torch.randn(4, s, d, dtype=torch.float64)
    xi = torch.randn(4, 3, d, dtype=torch.float64)
    energies = [hopfield_energy(xi, stored, beta)]
    for n in range(6):
        m = Hopfield(d, beta=beta, steps=n, eps=1e-300, **PURE).double()
        new = m(xi, stored)  # ξ after n+1 updates: the n iterations, then the retrieval
        assert m.last_steps == n
        energies.append(hopfield_energy(new, stored, beta))
    e = torch.stack(energies)
    assert (e[1:] <= e[:-1] + 1e-10).all()
    assert (e[-1] < e[0] - 1e-3).all()


def test_updates_stop_early_once_converged() -> None:
    m = Hopfield(16, beta=4.0, steps=50, **PURE)
    patterns = torch.randn(2, 6, 16)
    m(patterns[:, :2] + 0.01, patterns)
    assert 1 <= m.last_steps < 50


def hflayers_updates(q: torch.Tensor, k: torch.Tensor, beta: float, steps_max: int, eps: float,
                     norm_dims: tuple[int, ...] = (2, 3)) -> tuple[torch.Tensor, int]:
    """The update loop of ml-jku/hopfield-layers, ``hflayers/functional.py``
    (``hopfield_core_forward``), in plain torch on [B, H, L, d] tensors instead of [B·H, L, d]::

        while update_active_heads.any():
            ...  # update_step > 0: q = ξ K for the active heads, then softmax(β q Kᵀ)
            xi = torch.masked_scatter(input=xi, mask=update_active_heads, source=nn.functional.softmax(...))
            with torch.no_grad():
                xi_active = xi.view(size=(bsz, num_heads, tgt_len, src_len))
                update_active_heads = (update_step < update_steps_max) | (update_steps_max < 0)
                if xi_old is not None:
                    update_active_heads &= ((xi_old - xi_active).norm(p=2, dim=(2, 3)).max(axis=0)[0]) > update_steps_eps
                ...
                xi_old = xi_active
            update_step += 1

    Returns ξ and the updates after the first retrieval (the loop's ``update_step - 1``).
    ``norm_dims=(3,)`` measures each query row instead (our rule before it followed hflayers).
    """
    heads = q.shape[1]
    xi = torch.softmax(beta * q @ k.transpose(-1, -2), dim=-1)  # update_step 0
    active = torch.full((heads,), 0 < steps_max)
    xi_old, update_step = xi, 1
    while active.any():
        new = torch.softmax(beta * (xi @ k) @ k.transpose(-1, -2), dim=-1)
        xi = torch.where(active.view(1, -1, 1, 1), new, xi)
        change = (xi_old - xi).norm(p=2, dim=norm_dims).transpose(0, 1).reshape(heads, -1)  # [H, B] ([H, B·L])
        active = torch.full((heads,), update_step < steps_max) & (change.max(dim=1)[0] > eps)
        xi_old, update_step = xi, update_step + 1
    return xi, update_step - 1


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


@pytest.mark.parametrize(("seed", "beta"), [(59, 1.0), (32, 1.0), (26, 1.0), (21, 4.0)])
def test_updates_stop_when_hflayers_stops(seed: int, beta: float) -> None:
    """32 queries: each sample's whole association matrix must settle, not only its worst row."""
    torch.manual_seed(seed)
    m = Hopfield(16, heads=2, steps=100, beta=beta).double()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 32, 16, dtype=torch.float64)
    q, k, v = (_heads(proj(norm(x)), 2) for proj, norm in
               ((m.q_proj, m.norm_state), (m.k_proj, m.norm_stored), (m.v_proj, m.norm_values)))
    xi, steps = hflayers_updates(q, k, beta, 100, m.eps)
    _, per_row = hflayers_updates(q, k, beta, 100, m.eps, norm_dims=(3,))
    assert per_row < steps < 100  # a case where a per-row test stops early
    y = m(x)
    assert m.last_steps == steps
    torch.testing.assert_close(m.associations(x), xi, atol=1e-12, rtol=0)
    torch.testing.assert_close(y, m.out_proj((xi @ v).transpose(1, 2).flatten(2)), atol=1e-12, rtol=0)


@pytest.mark.parametrize(("seed", "beta"), [(25, 4.0), (6, 4.0)])
def test_layer_stops_as_hflayers_on_its_batch(seed: int, beta: float) -> None:
    """hflayers' HopfieldLayer takes [B, T, D] with B the batch: the stop is per sample of T rows."""
    torch.manual_seed(seed)
    m = HopfieldLayer(16, patterns=24, heads=2, steps=100, beta=beta).double()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(4, 8, 16, dtype=torch.float64)
    h = m.hopfield
    q = _heads(h.q_proj(h.norm_state(x)), 2)
    k = _heads(h.k_proj(h.norm_stored(m.memory)), 2).unsqueeze(0)
    xi, steps = hflayers_updates(q, k, beta, 100, h.eps)
    _, per_row = hflayers_updates(q, k, beta, 100, h.eps, norm_dims=(3,))
    _, one_sample = hflayers_updates(q.transpose(0, 1).flatten(1, 2).unsqueeze(0), k, beta, 100, h.eps)
    assert per_row < steps < one_sample < 100  # neither a per-row test nor the flattened batch
    assert m.associations(x).shape == (4, 8, 2, 24) and m.last_steps == steps
    torch.testing.assert_close(m.associations(x), xi.transpose(1, 2), atol=1e-12, rtol=0)


def test_masked_patterns_get_zero_association_and_no_influence() -> None:
    for steps in (0, 2):
        m = Hopfield(8, heads=2, steps=steps, eps=1e-12)
        state, stored = torch.randn(2, 3, 8), torch.randn(2, 6, 8)
        mask = torch.tensor([[False] * 4 + [True] * 2, [False] * 6])
        xi = m.associations(state, stored, stored_mask=mask)
        assert xi.shape == (2, 2, 3, 6)
        assert (xi[0, :, :, 4:] == 0).all()
        torch.testing.assert_close(xi.sum(-1), torch.ones(2, 2, 3))
        # A padded bag gives what the unpadded bag gives.
        full = m(state, stored, stored_mask=mask)[:1]
        torch.testing.assert_close(full, m(state[:1], stored[:1, :4]), atol=1e-6, rtol=1e-6)


def test_pooling_is_invariant_to_instance_order_and_padding() -> None:
    m = HopfieldPooling(12, queries=2, heads=3, steps=1)
    x = torch.randn(3, 7, 12)
    perm = torch.randperm(7)
    torch.testing.assert_close(m(x[:, perm]), m(x), atol=1e-6, rtol=1e-6)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[:, 5:] = True
    torch.testing.assert_close(m(x, mask=mask), m(x[:, :5]), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(m(x[:, perm], mask=mask[:, perm]), m(x[:, :5]), atol=1e-6, rtol=1e-6)
    assert m.associations(x).shape == (3, 3, 2, 7)


def test_layer_looks_up_each_row_independently() -> None:
    m = HopfieldLayer(16, patterns=6, heads=2, separate_values=True, steps=2)
    x = torch.randn(2, 3, 16)
    y = m(x)
    rows = torch.stack([m(r) for r in x.reshape(6, 1, 16)]).reshape(2, 3, -1)
    torch.testing.assert_close(y, rows, atol=1e-6, rtol=1e-6)
    xi = m.associations(x)
    assert xi.shape == (2, 3, 2, 6)
    torch.testing.assert_close(xi.sum(-1), torch.ones(2, 3, 2))


def test_layer_without_projections_retrieves_from_its_memory() -> None:
    m = HopfieldLayer(8, patterns=5, beta=50.0, **PURE)
    with torch.no_grad():
        m.memory.copy_(torch.eye(8)[:5] * 3)
    y = m(torch.eye(8)[[2, 4]] * 3 + 0.05)
    torch.testing.assert_close(y, torch.eye(8)[[2, 4]] * 3, atol=1e-4, rtol=0)


def test_dropout_only_in_training_and_gradients_flow() -> None:
    m = Hopfield(8, heads=2, dropout=0.5)
    ref = Hopfield(8, heads=2)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 4, 8)
    m.eval()
    torch.testing.assert_close(m(x), ref(x))
    m.train()
    assert not torch.allclose(m(x), ref(x))
    layer = HopfieldLayer(8, patterns=4, steps=1)
    layer(torch.randn(5, 8)).square().sum().backward()
    assert layer.memory.grad is not None and layer.memory.grad.abs().sum() > 0
    frozen = HopfieldPooling(8, trainable=False)
    assert not frozen.queries.requires_grad


# --------------------------------------------------------------------------- compile / export

CASES = [
    ("Hopfield", lambda: Hopfield(8, heads=2), lambda: ((torch.randn(2, 5, 8),), {})),
    (
        "Hopfield-iterated-masked",
        lambda: Hopfield(8, heads=2, steps=3, eps=1e-3),
        lambda: ((torch.randn(2, 5, 8), torch.randn(2, 6, 8)), {"stored_mask": torch.rand(2, 6) < 0.3}),
    ),
    ("HopfieldPooling", lambda: HopfieldPooling(8, queries=2, steps=1), lambda: ((torch.randn(3, 6, 8),), {})),
    ("HopfieldLayer", lambda: HopfieldLayer(8, patterns=4, steps=2), lambda: ((torch.randn(2, 3, 8),), {})),
]


@pytest.mark.parametrize(("name", "make", "data"), CASES, ids=[c[0] for c in CASES])
def test_torch_compile_fullgraph(name: str, make, data) -> None:  # type: ignore[no-untyped-def]
    # fullgraph=True makes dynamo fail on any graph break; the "eager" backend skips the
    # slow C++ codegen of inductor, which adds nothing about graph breaks (inductor was
    # checked by hand on these modules).
    torch._dynamo.reset()
    m = make().eval()
    args, kwargs = data()
    compiled = torch.compile(m, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(*args, **kwargs), m(*args, **kwargs), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("name", "make", "data"), CASES, ids=[c[0] for c in CASES])
def test_torch_export(name: str, make, data) -> None:  # type: ignore[no-untyped-def]
    m = make().eval()
    args, kwargs = data()
    exported = torch.export.export(m, args, kwargs)
    torch.testing.assert_close(exported.module()(*args, **kwargs), m(*args, **kwargs), atol=1e-6, rtol=1e-6)
