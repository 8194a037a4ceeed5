"""The training step's module: the compiled model, then the train section's loss and metrics.

``build_train_step`` writes one ``torch.fx.GraphModule`` whose inputs are the
batch fields the step reads, which calls the compiled model (its submodule
``model``, so the step's parameters are the model's) and then evaluates the
checked :class:`~dsl.checking.train.objective.Objective` with the same
lowering as the model's own functions. It returns a dict: ``"loss"``, each
metric's tensors (``"metric0.logits"``, ...) and the model's auxiliary losses
(``"aux:..."``). ``step.code`` shows the whole computation as plain PyTorch.
"""

from __future__ import annotations

import operator
from typing import Any

from torch import fx, nn

from dsl.building.compiler import emit, fetch, lower
from dsl.checking.train.objective import Objective

MODEL = "model"


def build_train_step(model: fx.GraphModule, objective: Objective) -> fx.GraphModule:
    """``step(**fields) -> {"loss": ..., "metric<i>...": ..., "aux:...": ...}`` around ``model``.

    ``model`` must be compiled with ``return_dict=True, with_aux=True`` and
    ``expose=objective.exposed``.
    """
    root = nn.Module()
    root.add_module(MODEL, model)
    graph = fx.Graph()
    inputs = list(getattr(model, "dsl_inputs", {}))
    fields = {name: graph.placeholder(name) for name in [*inputs, *objective.fields]}
    out = graph.create_node("call_module", MODEL, (), {name: fields[name] for name in inputs}, name="outputs")
    prog = objective.program
    env: dict[str, Any] = {}
    for node in prog.nodes:
        if node.kind == "input":
            env[node.name] = fields[node.op] if node.op in fields else _item(graph, out, node.op)
        elif node.decl is not None and node.decl.reads_model:
            target = lower(node, prog).target
            env[node.name] = graph.create_node("call_function", target, (graph.get_attr(MODEL),), name=node.name)
        else:
            env[node.name] = emit(graph, node, env, prog)
    result: dict[str, Any] = {key: fetch(env, ref) for key, ref in prog.outputs.items()}
    for key in getattr(model, "dsl_aux_weights", {}):
        result[key] = _item(graph, out, key)
    graph.output(result)
    graph.lint()
    return fx.GraphModule(root, graph, class_name="TrainStep")


def _item(graph: fx.Graph, out: fx.Node, key: str) -> fx.Node:
    return graph.call_function(operator.getitem, (out, key))
