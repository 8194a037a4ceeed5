"""Plugins: a third-party package registers blocks through the entry-point group
``dsl.blocks``. The packages in tests/plugin_pkg and tests/broken_plugin_pkg are installed
with pip into a temporary folder (no network: no dependencies, no build isolation) and
used from a spec through the CLI in a subprocess whose PYTHONPATH holds that folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

SPEC = """\
model Scaled() {
    input x: [B, 4]
    h = Scale(Linear(x, out=3), factor=2.5, learnable=true)
    output h
}
"""


def can_build_offline() -> bool:
    """pip can build a wheel without network: setuptools >= 70.1 has bdist_wheel built in,
    older ones need the wheel package (a fresh venv has neither; the test extra pins it)."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    if importlib.util.find_spec("pip") is None:
        return False
    try:
        major, minor = (int(x) for x in version("setuptools").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding both test plugins as pip installs them (dist-info with entry points)."""
    if not can_build_offline():
        pytest.skip("installing the test plugins offline needs pip and setuptools>=70.1 (or wheel)")
    work = tmp_path_factory.mktemp("plugins")
    sources = []
    for name in ("plugin_pkg", "broken_plugin_pkg"):
        # build from a copy: an in-tree build would leave build/ and *.egg-info in tests/
        shutil.copytree(HERE / name, work / name)
        sources.append(str(work / name))
    target = work / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--no-index", "--disable-pip-version-check", "--target", str(target), *sources]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return target


def dsl_cli(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "dsl.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_plugin_block_is_checked_compiled_and_exported(site: Path, tmp_path: Path) -> None:
    spec = tmp_path / "scaled.dsl"
    spec.write_text(SPEC)
    res = dsl_cli(site, "check", "--json", str(spec))
    assert res.returncode == 0, res.stderr
    diags = json.loads(res.stdout)
    # the broken package's three entry points are reported, each by name, as warnings
    assert {d["code"] for d in diags} == {"E0901"} and {d["severity"] for d in diags} == {"warning"}
    messages = " ".join(d["message"] for d in diags)
    for name, why in (("explodes", "its backend is missing"), ("shadows", "`Linear` is already defined"),
                      ("nameless", "registers no block")):
        assert f"plugin `{name}`" in messages and why in messages
    # the plugin's block builds, and the standalone file imports it from the plugin package
    out = tmp_path / "scaled.py"
    res = dsl_cli(site, "compile", str(spec), "--emit", "python", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "max abs diff 0" in res.stderr and "warning[E0901]" in res.stderr
    text = out.read_text()
    assert "from dsl_scale_plugin" in text and "ScaleModule(2.5, True)" in text


def test_plugin_in_catalogue_and_rollback_of_a_broken_one(site: Path, tmp_path: Path) -> None:
    res = dsl_cli(site, "blocks", "--json")
    assert res.returncode == 0, res.stderr
    table = {b["name"]: b for b in json.loads(res.stdout)}
    assert table["Scale"]["source"] == "scale"
    assert table["Linear"]["source"] == "builtin"  # the broken plugin could not replace it
    assert "Fine" not in table  # registered by the broken entry point, rolled back with it
    spec = tmp_path / "fine.dsl"
    spec.write_text("model M() {\n    input x: [B, 4]\n    y = Fine(x)\n    output y\n}\n")
    res = dsl_cli(site, "check", str(spec))
    assert res.returncode == 1 and "error[E0201]" in res.stderr and "warning[E0901]" in res.stderr


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from dsl.language import registry

    registry.load()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "PLUGIN_PROBLEMS", [])
    return registry


def test_invalid_declarations_are_refused_in_process(clean_registry, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    registry = clean_registry
    monkeypatch.syspath_prepend(str(HERE / "broken_plugin_pkg"))
    linear = registry.lookup("Linear")
    registry._load_plugin(EntryPoint(name="shadows", value="dsl_broken_plugin.shadows:blocks", group="dsl.blocks"))
    assert registry.lookup("Linear") is linear and registry.lookup("Fine") is None
    [problem] = registry.PLUGIN_PROBLEMS
    assert problem.code == "E0901" and problem.severity == "warning" and "plugin `shadows`" in problem.message

    def lower_case_block() -> object:
        decl = linear
        from dataclasses import replace

        return replace(decl, name="scale")

    monkeypatch.setattr("dsl_broken_plugin.shadows.lower_case", lower_case_block, raising=False)
    registry._load_plugin(EntryPoint(name="lower", value="dsl_broken_plugin.shadows:lower_case", group="dsl.blocks"))
    assert "must start with an upper-case letter" in registry.PLUGIN_PROBLEMS[-1].message
    assert registry.lookup("scale") is None


def test_plugin_warnings_reach_check(clean_registry, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import dsl
    from dsl.language.diagnostics import Diagnostic, Span

    warning = Diagnostic("E0901", "plugin `x` (x:y) failed to load: boom", Span(file="<plugin x>"), severity="warning")
    monkeypatch.setattr(clean_registry, "PLUGIN_PROBLEMS", [warning])
    diags = dsl.check(str(HERE.parent / "specs" / "classifier.dsl"))
    assert [d.code for d in diags] == ["E0901"]
