"""Runtime input guards (dsl/building/guards.py): a call that contradicts the spec is an InputError naming the
input, the dim and the expected and actual values, raised before any torch op runs."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from conftest import SPECS, run_cli

import dsl
from dsl.building.guards import InputError

SYMBOLIC = """
model Sym {
    input a: [B, T]
    input b: [B, 2*T]
    input c: [B, T + 1]
    y = relu(a)
    output y
}
"""

POOL = """
model Pool {
    input x: [N, 8]
    input batch: [N] long
    g = global_mean_pool(Linear(x, out=4), batch, graphs=3)
    output g
}
"""


@pytest.fixture(scope="module")
def classifier():
    return dsl.compile(SPECS / "classifier.dsl")


@pytest.fixture(scope="module")
def karate():
    return dsl.compile(SPECS / "gat_karate.dsl")


def _error(model, *args, **inputs) -> InputError:
    with pytest.raises(InputError) as e:
        model(*args, **inputs)
    return e.value


def test_input_error_is_a_value_error_exported_by_dsl():
    assert issubclass(dsl.InputError, ValueError) and dsl.InputError is InputError


def test_a_good_call_passes(classifier):
    assert classifier(x=torch.randn(5, 64)).shape == (5, 10)
    assert classifier(torch.randn(5, 64)).shape == (5, 10)  # positional, in declaration order


def test_wrong_rank(classifier):
    e = _error(classifier, x=torch.randn(5, 64, 1))
    assert "input `x` should have 2 dims [B, 64], got 3" in str(e)
    assert (e.input, e.expected, e.actual) == ("x", 2, 3)


def test_wrong_fixed_dim(classifier):
    e = _error(classifier, x=torch.randn(5, 32))
    assert "input `x` dim 1 should be 64, got 32" in str(e)
    assert (e.input, e.dim, e.expected, e.actual) == ("x", 1, 64, 32)


def test_wrong_dtype(classifier):
    e = _error(classifier, x=torch.randn(5, 64, dtype=torch.float64))
    assert "input `x` should be float32" in str(e) and "got float64" in str(e)
    e = _error(classifier, x=torch.ones(5, 64, dtype=torch.long))
    assert e.actual == "int64"


def test_integers_where_floats_belong_say_how_to_convert(classifier):
    e = _error(classifier, x=torch.randint(0, 255, (2, 64), dtype=torch.uint8))
    assert "should be float32" in str(e) and "got uint8" in str(e) and "x.float()" in str(e)


def test_float_follows_the_parameters_dtype():
    model = dsl.compile(SPECS / "classifier.dsl").double()
    assert model(x=torch.randn(2, 64, dtype=torch.float64)).dtype == torch.float64
    assert "should be float64" in str(_error(model, x=torch.randn(2, 64)))


def test_missing_unknown_and_non_tensor_inputs(classifier):
    # the call's arguments are Python's to check (TypeError, as for any module); their values the guard's
    with pytest.raises(TypeError, match="'x'"):
        classifier()
    with pytest.raises(TypeError, match="'z'"):
        classifier(x=torch.randn(2, 64), z=torch.randn(2))
    with pytest.raises(TypeError, match="positional"):
        classifier(torch.randn(2, 64), torch.randn(2, 64))
    assert "should be a tensor" in str(_error(classifier, x=[[1.0] * 64]))


def test_symbolic_dim_inconsistent_between_inputs():
    model = dsl.compile(SPECS / "siamese.dsl", dims={"F": 8})
    e = _error(model, a=torch.randn(3, 8), b=torch.randn(4, 8))
    assert "input `b` dim 0 is B = 4, but `a` dim 0 gives B = 3" in str(e)
    assert (e.input, e.dim, e.expected, e.actual) == ("b", 0, 3, 4)
    # F was given by the caller: it is fixed
    assert "dim 1 (F) should be 8, got 9" in str(_error(model, a=torch.randn(3, 9), b=torch.randn(3, 9)))


def test_compound_dims_are_checked_once_their_symbols_are_bound():
    model = dsl.compile(dsl.loads(SYMBOLIC))
    a = torch.randn(2, 4)
    assert torch.equal(model(a=a, b=torch.randn(2, 8), c=torch.randn(2, 5)), a.relu())
    e = _error(model, a=a, b=torch.randn(2, 7), c=torch.randn(2, 5))
    assert "input `b` dim 1 (2*T) should be 8 with T = 4, got 7" in str(e)
    e = _error(model, a=a, b=torch.randn(2, 8), c=torch.randn(2, 4))
    assert e.input == "c" and e.expected == 5


def test_edge_index_values_must_index_nodes(karate):
    x = torch.randn(34, 34)
    edges = torch.randint(0, 34, (2, 60))
    karate.eval()(x=x, edge_index=edges)
    too_big = edges.clone()
    too_big[1, 7] = 34
    e = _error(karate, x=x, edge_index=too_big)
    assert "input `edge_index` of `GAT` holds indices that must lie in [0, 34) (rows of `x`), found 34" in str(e)
    negative = edges.clone()
    negative[0, 0] = -1
    assert _error(karate, x=x, edge_index=negative).actual == -1
    assert "should be int64" in str(_error(karate, x=x, edge_index=edges.float()))


def test_sizes_only_the_train_data_binds_stay_free(karate):
    # DESIGN §4: a model compiled for karate (N=34, E=156 from its data) runs on another graph ...
    out = karate.eval()(x=torch.randn(50, 34), edge_index=torch.randint(0, 50, (2, 80)))
    assert out.shape == (50, 4)
    # ... but its feature size sizes the first layer's weights: that one is fixed
    e = _error(karate, x=torch.randn(50, 30), edge_index=torch.randint(0, 50, (2, 80)))
    assert "input `x` dim 1 (F) should be 34, got 30" in str(e)


def test_pool_batch_ids_must_be_below_graphs():
    model = dsl.compile(dsl.loads(POOL))
    x = torch.randn(6, 8)
    assert model(x=x, batch=torch.tensor([0, 0, 1, 1, 2, 2])).shape == (3, 4)
    e = _error(model, x=x, batch=torch.tensor([0, 0, 1, 1, 2, 3]))
    assert "input `batch` of `global_mean_pool` holds indices that must lie in [0, 3) (graphs=3)" in str(e)
    assert "`batch` dim 0 is N = 5" in str(_error(model, x=x, batch=torch.tensor([0, 0, 1, 1, 2])))


def test_embedding_token_ids_must_be_below_num():
    model = dsl.compile(dsl.loads("""
model T {
    input tokens: [B, L] long
    y = Embedding(tokens, num=10, dim=4)
    output y: [B, L, 4]
}
"""))
    assert model(tokens=torch.tensor([[0, 9]])).shape == (1, 2, 4)
    e = _error(model, tokens=torch.tensor([[0, 10]]))
    assert "input `tokens` of `Embedding` holds indices that must lie in [0, 10) (num=10)" in str(e)


def test_guards_off_gives_torchs_own_error():
    model = dsl.compile(SPECS / "classifier.dsl", guards=False)
    assert not hasattr(model, "dsl_guard")
    with pytest.raises(RuntimeError) as e:
        model(x=torch.randn(5, 32))
    assert not isinstance(e.value, InputError)


def test_the_guard_survives_deepcopy_and_pickle(classifier):
    twin = copy.deepcopy(classifier)
    assert "dim 1 should be 64" in str(_error(twin, x=torch.randn(2, 63)))
    again = copy.deepcopy(twin)
    assert "dim 1 should be 64" in str(_error(again, x=torch.randn(2, 63)))
    loaded = pickle.loads(pickle.dumps(classifier))
    assert "dim 1 should be 64" in str(_error(loaded, x=torch.randn(2, 63)))
    assert loaded(x=torch.randn(2, 64)).shape == (2, 10)


def test_compiled_and_exported_graphs_hold_no_guard(karate):
    compiled = torch.compile(karate.eval(), fullgraph=True, backend="eager")
    x, edges = torch.randn(34, 34), torch.randint(0, 34, (2, 60))
    assert torch.allclose(compiled(x=x, edge_index=edges), karate(x=x, edge_index=edges), atol=1e-5)
    exported = torch.export.export(karate, (), {"x": x, "edge_index": edges})
    assert "check_inputs" not in exported.graph_module.code and "aminmax" not in exported.graph_module.code
    assert torch.allclose(exported.module()(x=x, edge_index=edges), karate(x=x, edge_index=edges), atol=1e-5)


def test_cli_accepts_no_guards(tmp_path):
    code, _, err = run_cli("compile", str(SPECS / "classifier.dsl"), "--no-guards")
    assert code == 0, err
    from dsl.cli.main import build_parser

    args = build_parser().parse_args(["train", "x.dsl", "--no-guards"])
    assert args.no_guards is True


def test_predict_with_contradicting_data_is_one_line_exit_1(tmp_path, capsys):
    import argparse

    import numpy as np

    from dsl.cli.training import cmd_predict, cmd_train

    spec = tmp_path / "c.dsl"
    spec.write_text("""
model C {
    input x: [B, F]
    logits = Linear(x, out=3)
    output logits: [B, 3]
}
train {
    data = iris(batch=32, standardize=false)
    loss = cross_entropy(logits, y)
    epochs = 1
}
""")
    out = str(tmp_path / "run")
    common = dict(set=[], dim=[], device="cpu", json=False, debug=False)
    assert cmd_train(argparse.Namespace(file=str(spec), out=out, epochs=None, resume=False, nproc=1, quiet=True,
                                        compile=False, **common)) == 0
    data = tmp_path / "in.npz"
    np.savez(data, x=np.zeros((5, 3), dtype=np.float32))  # iris has 4 features
    capsys.readouterr()
    code = cmd_predict(argparse.Namespace(file=str(spec), ckpt=out, data=str(data), out=str(tmp_path / "p.npz"),
                                          **common))
    err = capsys.readouterr().err
    assert code == 1 and "input `x` dim 1 (F) should be 4, got 3" in err and "Traceback" not in err


def test_the_guard_survives_recompile():
    model = dsl.compile(SPECS / "classifier.dsl")
    model.recompile()
    assert "dim 1 should be 64" in str(_error(model, x=torch.randn(2, 63)))
    assert model(x=torch.randn(2, 64)).shape == (2, 10)


def test_a_remembered_signature_still_checks_index_values(karate):
    x, edges = torch.randn(34, 34), torch.randint(0, 34, (2, 60))
    karate.eval()(x=x, edge_index=edges)  # the shape checks of this signature passed once ...
    too_big = edges.clone()
    too_big[0, 3] = 40  # ... same shapes, dtypes and devices: the values are read again
    e = _error(karate, x=x, edge_index=too_big)
    assert e.actual == 40 and "must lie in [0, 34) (rows of `x`), found 40 (its maximum)" in str(e)


def test_the_signature_includes_the_parameters_dtype():
    model = dsl.compile(SPECS / "classifier.dsl")
    x = torch.randn(2, 64)
    model(x=x)
    model.double()  # the same input signature now contradicts the model
    assert "should be float64" in str(_error(model, x=x))
    assert "dim 1 should be 64" in str(_error(model, x=torch.randn(2, 63, dtype=torch.float64)))


def test_float_follows_a_block_converted_alone():
    model = dsl.compile(SPECS / "siamese.dsl", dims={"F": 8})
    feed = {"a": torch.randn(3, 8), "b": torch.randn(3, 8)}
    model(**feed)
    next(model.children()).double()  # the block that holds the first weight
    assert "should be float64" in str(_error(model, **feed))


def test_a_passing_signature_does_not_wave_other_calls_through():
    model = dsl.compile(SPECS / "siamese.dsl", dims={"F": 8})
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    model(a=a, b=b)
    model(a, b)
    assert "`b` dim 0 is B = 5, but `a` dim 0 gives B = 4" in str(_error(model, a=a, b=torch.randn(5, 8)))
    assert "should be float32" in str(_error(model, a=a, b=b.double()))
    assert "should be a tensor" in str(_error(model, a=a, b=b.tolist()))


def test_a_failed_signature_is_not_remembered_and_the_memo_is_bounded():
    model = dsl.compile(SPECS / "classifier.dsl")
    guard = model.dsl_guard
    for _ in range(2):  # the second bad call is checked again, not waved through
        _error(model, x=torch.randn(2, 63))
    assert not guard.passed
    for rows in range(1, guard.MAX_SIGNATURES + 10):
        model(x=torch.randn(rows, 64))
    assert len(guard.passed) == guard.MAX_SIGNATURES


def test_positional_and_keyword_calls_share_the_checks(classifier):
    x = torch.randn(3, 64)
    assert torch.equal(classifier(x), classifier(x=x))
    assert "dim 1 should be 64" in str(_error(classifier, torch.randn(3, 65)))
    with pytest.raises(TypeError, match="'y'"):  # Python's own check of the call's arguments
        classifier(x, y=x)


def test_recompile_keeps_the_guard_and_a_pickled_model_still_runs():
    model = dsl.compile(SPECS / "classifier.dsl")
    model.recompile()
    assert "dim 1 should be 64" in str(_error(model, x=torch.randn(2, 63)))
    loaded = pickle.loads(pickle.dumps(model))  # fx rebuilds the module from its code
    assert loaded(x=torch.randn(2, 64)).shape == (2, 10)
    assert not pickle.loads(pickle.dumps(model.dsl_guard)).passed  # the memo is a cache, not state


def test_the_checks_follow_the_parameters():
    model = dsl.compile(SPECS / "classifier.dsl")
    x = torch.randn(2, 64)
    model(x=x)
    model.double()  # converted in place: the probe parameter's dtype changes under the check
    assert "should be float64" in str(_error(model, x=x))
    model.float()
    model(x=x)
    state = {k: v.double() for k, v in model.state_dict().items()}
    model.load_state_dict(state, assign=True)  # new parameter objects, looked up again
    assert "should be float64" in str(_error(model, x=x))
    model.float()
    model(x=x)
    model.requires_grad_(False)  # frozen: no longer an exact repeat, still a valid call
    model(x=x)


def test_calls_in_and_out_of_inference_mode():
    model = dsl.compile(SPECS / "classifier.dsl")
    x = torch.randn(2, 64)
    with torch.inference_mode():
        model(x=x)
        assert "dim 1 should be 64" in str(_error(model, x=torch.randn(2, 63)))
    model(x=x)
    assert "dim 1 should be 64" in str(_error(model, x=torch.randn(2, 63)))


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")  # torch's prototype notice
@pytest.mark.parametrize("after_a_call", [False, True])
def test_a_nested_tensor_is_an_input_error_before_or_after_a_passing_call(after_a_call: bool):
    model = dsl.compile(SPECS / "classifier.dsl")
    if after_a_call:  # the exact-repeat check then runs first: it must not read the nested tensor
        model(x=torch.randn(2, 64))
    nested = torch.nested.nested_tensor([torch.randn(2, 64), torch.randn(3, 64)])
    e = _error(model, x=nested)
    assert e.input == "x" and "got a nested tensor" in str(e)
    siamese = dsl.compile(SPECS / "siamese.dsl", dims={"F": 8})
    siamese(a=torch.randn(2, 8), b=torch.randn(2, 8))
    assert "got a nested tensor" in str(_error(siamese, a=torch.randn(2, 8),
                                               b=torch.nested.nested_tensor([torch.randn(2, 8)])))


def _count_calls(calls: list[str], name: str):
    return lambda *args: calls.append(name)


HOOKS = {
    "forward pre-hook": lambda m, calls: m.register_forward_pre_hook(_count_calls(calls, "pre")),
    "forward hook": lambda m, calls: m.register_forward_hook(_count_calls(calls, "post")),
    "full backward hook": lambda m, calls: m.register_full_backward_hook(_count_calls(calls, "backward")),
    "backward pre-hook": lambda m, calls: m.register_full_backward_pre_hook(_count_calls(calls, "backward")),
    "global forward pre-hook": lambda m, calls: torch.nn.modules.module.register_module_forward_pre_hook(
        _count_calls(calls, "pre")),
    "global forward hook": lambda m, calls: torch.nn.modules.module.register_module_forward_hook(
        _count_calls(calls, "post")),
    "global backward hook": lambda m, calls: torch.nn.modules.module.register_module_full_backward_hook(
        _count_calls(calls, "backward")),
}


@pytest.mark.parametrize("kind", list(HOOKS))
def test_hooks_on_a_guarded_model_fire_and_the_guard_still_checks(kind: str):
    model = dsl.compile(SPECS / "classifier.dsl")
    calls: list[str] = []
    handle = HOOKS[kind](model, calls)
    try:
        model(x=torch.randn(4, 64, requires_grad=True)).sum().backward()
        assert calls and all(c == calls[0] for c in calls)
        assert "dim 1 should be 64" in str(_error(model, x=torch.randn(2, 63)))
    finally:
        handle.remove()


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_module_compile_and_jit_trace_of_a_guarded_model():
    model = dsl.compile(SPECS / "classifier.dsl")
    x = torch.randn(4, 64)
    want = model(x)
    traced = torch.jit.trace(model, (x,), check_trace=False)  # under tracing: through nn.Module (scopes)
    torch.testing.assert_close(traced(x), want)
    model.compile(backend="eager")  # compiled in place: the compiled graph holds no guard
    torch.testing.assert_close(model(x), want)
    with pytest.raises(Exception) as e:
        model(torch.randn(2, 63))
    assert not isinstance(e.value, InputError)
