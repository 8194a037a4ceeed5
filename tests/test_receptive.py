"""Receptive fields from the checked program equal the input pixels a feature-map position
depends on (read off the gradient), as ProtoPNet's ``receptive_field.py`` computes them."""

from __future__ import annotations

import pytest
import torch

import dsl
from dsl.checking.analysis import analyse
from dsl.checking.program import Ref
from dsl.checking.receptive import receptive_field

# Max pooling sends gradient to one pixel per window, so the gradient cannot show its field;
# average pooling has the same window arithmetic, and the last test compares the two.
BODIES = {
    "protopnet": """f = relu(BatchNorm(Conv2d(x, out=4, kernel=3, padding=1)))
    f = avg_pool2d(relu(Conv2d(f, out=4, kernel=3, padding=1)), 2)
    z = sigmoid(Conv2d(f, out=3, kernel=1))""",
    "strided-dilated": """z = Conv2d(relu(Conv2d(x, out=4, kernel=3, stride=2, dilation=2)), out=3, kernel=[3, 1])""",
    "same-and-avg": """z = avg_pool2d(Conv2d(x, out=4, kernel=5, padding="same"), kernel=3, stride=2)""",
    "residual": """f = Conv2d(x, out=1, kernel=3, padding=1)
    z = f + Conv2d(f, out=1, kernel=3, padding=1)""",
}


@pytest.mark.parametrize("name", sorted(BODIES))
def test_field_is_what_the_gradient_reaches(name: str) -> None:
    text = f"model M {{\n    input x: [B, 1, 16, 12]\n    {BODIES[name]}\n    output z\n}}\n"
    spec = dsl.loads(text)
    prog = analyse(spec).program
    node = next(n for n in prog.nodes if n.var == "z")
    field = receptive_field(prog, Ref(node.name), 2)
    assert field is not None and field.input == "x"
    torch.manual_seed(0)
    model = dsl.compile(spec).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)  # no weight near zero: every pixel in the field moves the output
    x = torch.rand(1, 1, 16, 12, requires_grad=True)
    z = model(x=x)
    for h in range(z.shape[2]):
        for w in range(z.shape[3]):
            (grad,) = torch.autograd.grad(z[0, :, h, w].sum(), x, retain_graph=True)
            rows, cols = grad[0, 0].abs().sum(1).nonzero().flatten(), grad[0, 0].abs().sum(0).nonzero().flatten()
            (r0, r1), (c0, c1) = field.box((h, w), (16, 12))
            assert (int(rows.min()), int(rows.max()) + 1) == (r0, r1), (name, h, w)
            assert (int(cols.min()), int(cols.max()) + 1) == (c0, c1), (name, h, w)


def test_no_field_through_a_reshape() -> None:
    text = "model M {\n    input x: [B, 1, 8, 8]\n    z = reshape(Conv2d(x, out=2, kernel=3), [B, 2, 3, 12])\n    output z\n}\n"
    prog = analyse(dsl.loads(text)).program
    node = next(n for n in prog.nodes if n.var == "z")
    assert receptive_field(prog, Ref(node.name), 2) is None


def test_max_pooling_has_the_field_of_average_pooling() -> None:
    fields = []
    for pool in ("max_pool2d", "avg_pool2d"):
        text = f"model M {{\n    input x: [B, 1, 8, 8]\n    z = {pool}(Conv2d(x, out=2, kernel=3), kernel=2)\n    output z\n}}\n"
        prog = analyse(dsl.loads(text)).program
        node = next(n for n in prog.nodes if n.var == "z")
        fields.append(receptive_field(prog, Ref(node.name), 2))
    assert fields[0] == fields[1] and fields[0] is not None
    assert fields[0].box((1, 2), (8, 8)) == [(2, 6), (4, 8)]
