"""Bad inputs through the Python builder (``dsl.Graph``).

Each ``case_*`` function either raises :class:`dsl.SpecError` while building or
returns a spec that :func:`dsl.check` rejects. The comment line above each
function says which diagnostic it must produce, at which line and column of
this file (the user's call), as the ``.dsl`` and ``.yaml`` cases do.
tests/test_bad_inputs.py runs them.
"""

from __future__ import annotations

import dsl


# expect: E0213 18:5
def case_input_name_not_identifier():
    g = dsl.Graph("M")
    g.input("1x", ["B", 8])


# expect: E0213 24:5
def case_name_is_python_code():
    g = dsl.Graph("M")
    g.param("__import__('os').system('true')")


# expect: E0213 29:5
def case_model_name_reserved():
    dsl.Graph("model")


# expect: E0302 35:5
def case_unknown_dtype():
    g = dsl.Graph("M")
    g.input("x", ["B", 8], dtype="double")


# expect: E0305 41:5
def case_shape_not_a_list():
    g = dsl.Graph("M")
    g.input("x", "B, 8")


# expect: E0305 47:5
def case_dimension_float():
    g = dsl.Graph("M")
    g.input("x", ["B", 2.5])


# expect: E0101 53:5
def case_dimension_text_syntax():
    g = dsl.Graph("M")
    g.input("x", ["B", "8 +"])


# expect: E0213 60:5
def case_keyword_not_identifier():
    g = dsl.Graph("M")
    x = g.input("x", ["B", 8])
    g.call("Linear", x, **{"out-features": 4})


# expect: E0206 67:5
def case_output_a_constant():
    g = dsl.Graph("M", params={"hidden": 4})
    g.input("x", ["B", 8])
    g.output("y", g.param("hidden"))


# expect: E0210 74:5
def case_several_names_for_one_value():
    g = dsl.Graph("M")
    x = g.input("x", ["B", 8])
    g.let(("a", "b"), x)


# expect: E0101 82:5
def case_train_expression_syntax():
    g = dsl.Graph("M")
    x = g.input("x", ["B", 8])
    g.output("y", g.relu(x))
    g.train(loss="cross_entropy(y,", epochs=1)


# expect: E0201 89:9
def case_unknown_block():
    g = dsl.Graph("M")
    x = g.input("x", ["B", 8])
    y = g.Linaer(x, out=4)
    g.output("y", y)
    return g.build()


# expect: E0401 98:9
def case_hyperparameter_not_a_value():
    g = dsl.Graph("M")
    x = g.input("x", ["B", 8])
    y = g.Linear(x, out=object())
    g.output("y", y)
    return g.build()


# expect: E0401 107:9
def case_hyperparameter_out_of_range():
    g = dsl.Graph("M")
    x = g.input("x", ["B", 8])
    y = g.Linear(x, out=0)
    g.output("y", y)
    return g.build()


# expect: E0301 117:9
def case_shape_mismatch():
    g = dsl.Graph("M")
    x = g.input("x", ["B", 8])
    h = g.Linear(x, out=4)
    y = h + x
    g.output("y", y)
    return g.build()


# expect: E0801 126:5
def case_repeat_over_limit():
    g = dsl.Graph("M")
    x = g.input("x", ["B", 8])
    with g.repeat(10**6):
        x = g.let("x", g.relu(x))
    g.output("y", x)
    return g.build()


# expect: E0802 137:9
def case_model_too_large():
    g = dsl.Graph("M")
    x = g.input("x", ["B", 4096])
    h = g.Linear(x, out=100_000)
    y = g.Linear(h, out=100_000)
    g.output("y", y)
    return g.build()


# expect: E0801 145:9
def case_dimension_over_limit():
    g = dsl.Graph("M")
    x = g.input("x", [2**40, 8])
    g.output("y", g.relu(x))
    return g.build()
