"""The package's shape (docs/architecture.md): its modules import each other without a cycle, and
what the scripts define once agrees with the library."""

import ast
import os
import pathlib

import keras_alexnet

PACKAGE_DIR = pathlib.Path(keras_alexnet.__file__).parent


def imports_of(path):
    """Names of the keras_alexnet modules that the file at `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "keras_alexnet":
            found.update(alias.name for alias in node.names
                         if (PACKAGE_DIR / f"{alias.name}.py").exists() or (PACKAGE_DIR / alias.name).is_dir())
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_alexnet."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("keras_alexnet."))
    return found


def import_graph():
    """{module: modules it imports} for every module of the package but __init__; a subpackage
    (sources/) is one node, with the imports of all its files."""
    graph = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        module = path.relative_to(PACKAGE_DIR).parts[0].removesuffix(".py")
        if module != "__init__":
            graph.setdefault(module, set()).update(imports_of(path))
    return {module: imported - {module} for module, imported in graph.items()}


def find_cycle(graph):
    """One import cycle as a list of modules [a, b, ..., a], or None."""
    done, path = set(), []

    def visit(module):
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            cycle = visit(imported)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"model", "weights", "layers", "training", "data", "sources"} <= set(graph)
    assert "sources" in graph["data"] and "data" not in graph["sources"]  # the pipeline reads sources, not back
    assert "model" in graph["weights"]  # loading builds; building loads nothing
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"model": {"weights"}, "weights": {"layers", "model"}, "layers": set()}) == ["model", "weights", "model"]
    assert find_cycle({"model": {"layers"}, "weights": {"model"}, "layers": set()}) is None


def test_the_scripts_flags_offer_what_the_library_accepts():
    import sys

    sys.path.insert(0, str(PACKAGE_DIR.parent / "scripts"))
    try:
        import _flags
    finally:
        sys.path.pop(0)
    from keras_alexnet import distribute, sources

    assert _flags.STRATEGIES == distribute.STRATEGIES
    assert _flags.DATASET_FORMS.split(" | ") == [source.FORM for source in sources.SOURCES.values()]


def test_build_needs_no_tensorflow_under_another_keras_backend():
    """The GPU peer benchmark (scripts/peer_benchmark.py) runs build() under Keras-JAX on machines
    without TensorFlow; here the torch backend (installed for the weight tests) stands in for JAX."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, keras_alexnet\n"
            "model = keras_alexnet.build(num_classes=3, input_shape=(67, 67, 3), seed=0)\n"
            "assert tuple(model(np.zeros((2, 67, 67, 3), 'float32')).shape) == (2, 3)\n"
            "assert not [name for name in sys.modules if name.startswith('tensorflow')], 'tensorflow was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "KERAS_BACKEND": "torch"})
    assert result.returncode == 0, result.stderr[-2000:]


def test_docstrings_keep_their_lines():
    # A backslash at a line's end inside a docstring joins two lines: train.py --help printed its
    # ImageNet command as one line with a run of spaces in the middle. Write it as \\.
    for path in sorted([*PACKAGE_DIR.rglob("*.py"), *(PACKAGE_DIR.parent / "scripts").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            body = getattr(node, "body", None)
            if not (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                continue
            docstring = body[0].value
            written = docstring.end_lineno - docstring.lineno + 1
            assert docstring.value.count("\n") + 1 == written, f"{path}:{docstring.lineno}"
