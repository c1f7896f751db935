"""fastbp's modules import one another without a circle, counting imports
inside functions too (they hide a circle from Python, not from a reader)."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
# the command line imports the whole library and is laid out on its own
LEFT_OUT = {"fastbp.cli", "fastbp.run", "fastbp.__main__"}


def modules():
    """{module name: path} of every module of the fastbp package."""
    found = {}
    for path in sorted((ROOT / "fastbp").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name, path, known):
    """The fastbp modules ``name`` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # "from fastbp import archive" imports the module fastbp.archive
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in known)
    return found - {name}


def test_no_import_circle():
    known = modules()
    graph = {name: imports(name, path, known) - LEFT_OUT for name, path in known.items() if name not in LEFT_OUT}
    # the package's __init__ gathers the public names; a module importing "fastbp" itself would close a circle
    circles, state = [], {}

    def visit(name, trail):
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                circles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, "import circles: " + "; ".join(" -> ".join(circle) for circle in circles)


def test_the_walk_sees_function_level_imports():
    known = modules()
    assert "fastbp.backends.cuda" in imports("fastbp.trainer", known["fastbp.trainer"], known)  # imported inside fit
    assert "fastbp.archive" in imports("fastbp.mlp", known["fastbp.mlp"], known)
