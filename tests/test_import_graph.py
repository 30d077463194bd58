"""sagan_tf's modules import each other without a circle, function-local imports included.

An AST scan of every module under sagan_tf/: each ``import`` and ``from ...
import`` anywhere in a module (also inside functions, where a circle hides)
is an edge to the sagan_tf module it names; a cycle in that graph fails.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "sagan_tf")


def _modules():
    """``{dotted name: path}`` of every module of sagan_tf (packages as their name)."""
    out = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(directory, name), ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(directory, name)
    return out


def import_graph(modules):
    """``{module: set of sagan_tf modules it imports}`` (any depth in the file)."""
    graph = {}
    for module, path in modules.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    targets.add(child if child in modules else base)
        graph[module] = {t for t in targets if t in modules and t != module}
    return graph


def find_cycle(graph):
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None
    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_sagan_tf_has_no_import_circle():
    modules = _modules()
    graph = import_graph(modules)
    assert "sagan_tf.training.devices" in graph["sagan_tf.training.distribute"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_scan_sees_function_local_imports():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    modules = _modules()
    tree_graph = import_graph(modules)
    # perf.machine imports the CPU-replica set-up inside a function.
    assert "sagan_tf.training.devices" in tree_graph["sagan_tf.perf.machine"]
