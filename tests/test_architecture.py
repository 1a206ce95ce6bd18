"""The package's shape: no import cycle, each folder importing only from the folders below it,
modules and functions of a readable size (the exceptions are named, with the reason)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "skelpipe"

# Lower folders first: a module may import from its own folder and the ones before it.
LAYERS = ("core", "skeleton", "pose", "data", "learn", "pipeline", "bench", "commands")

MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 60
# Longer on purpose: parsers of a file format read best as one pass over its lines.
LONG_FUNCTIONS = {
    "data/datasets/ntu_skeleton.py:read_skeleton_file": "the .skeleton format, line by line, as the dataset's MATLAB reader",
    "data/datasets/penn.py:read_label_file": "checks every field of a Penn Action .mat file in one place",
}

MAX_PARAMETERS = 8  # self / cls not counted; *args and **kwargs count one each
# More on purpose, each with its reason (none at present). A click command is exempt by rule: it
# receives one parameter per command-line option.
MANY_PARAMETERS: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def top_level_imports(path: Path, known: dict) -> set[str]:
    """The skelpipe modules a module imports when it is imported (top-level statements only)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("skelpipe"):
            for alias in node.names:  # `from skelpipe.data import datasets` imports a module
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("skelpipe")}
    return out - {"skelpipe"}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: top_level_imports(path, known) for name, path in known.items()}


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def layer(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_folders_import_only_downwards():
    wrong = [f"{a} imports {b}" for a, targets in graph().items() for b in targets
             if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)]
    assert not wrong, "\n".join(wrong)


def test_the_detector_sees_a_cycle(tmp_path):
    """The cycle test is not vacuous: two modules importing each other are found."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from skelpipe.x.b import f\n")
    b.write_text("from skelpipe.x.a import g\n")
    known = {"skelpipe.x.a": a, "skelpipe.x.b": b}
    assert top_level_imports(a, known) == {"skelpipe.x.b"}
    assert top_level_imports(b, known) == {"skelpipe.x.a"}


def test_modules_and_functions_are_of_readable_size():
    too_long = []
    for name, path in modules().items():
        text = path.read_text()
        rel = path.relative_to(PACKAGE).as_posix()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and f"{rel}:{node.name}" not in LONG_FUNCTIONS:
                    too_long.append(f"{rel}:{node.name}: {n} lines")
    assert not too_long, "\n".join(too_long)


def functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function and method in a module, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = prefix + node.name
            if not isinstance(node, ast.ClassDef):
                yield name, node
            yield from functions(node, name + ".")
        else:
            yield from functions(node, prefix)


def parameters(node) -> int:
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return len(names) - (names[:1] in (["self"], ["cls"]))


def is_click_command(node) -> bool:
    """Decorated with ``@click.command(...)``, ``@click.group(...)`` or ``@<group>.command(...)``."""
    calls = (d.func if isinstance(d, ast.Call) else d for d in node.decorator_list)
    return any(isinstance(f, ast.Attribute) and f.attr in ("command", "group") for f in calls)


def too_many_parameters() -> dict[str, int]:
    found = {}
    for path in modules().values():
        rel = path.relative_to(PACKAGE).as_posix()
        for name, node in functions(ast.parse(path.read_text())):
            if parameters(node) > MAX_PARAMETERS and not is_click_command(node):
                found[f"{rel}:{name}"] = parameters(node)
    return found


def test_functions_take_few_parameters():
    """State a function needs is grouped in an object that means something (a config, a run, an
    output), not threaded through as loose parameters."""
    found = too_many_parameters()
    named = MANY_PARAMETERS
    over = [f"{name}: {n} parameters" for name, n in sorted(found.items()) if name not in named]
    assert not over, "\n".join(over)
    fixed = [f"{name}: no longer over {MAX_PARAMETERS}, take it off the list"
             for name in named if name not in found]
    assert not fixed, "\n".join(fixed)


def test_the_parameter_count_leaves_out_self_and_exempts_click_commands():
    tree = ast.parse("class A:\n    def m(self, a, b, *c, d, **e): pass\n"
                     "@click.command('x')\n@click.option('--a')\ndef cmd(a, b, c, d, e, f, g, h, i): pass\n"
                     "def f(a, b, c, d, e, f, g, h, i):\n    def inner(x): pass\n")
    found = {name: (parameters(node), is_click_command(node)) for name, node in functions(tree)}
    assert found == {"A.m": (5, False), "cmd": (9, True), "f": (9, False), "f.inner": (1, False)}


def test_imports_inside_functions_only_for_heavy_optional_dependencies():
    # torch: doctor checks a broken one; tensorboard, mediapipe: optional extras
    allowed = ("openpifpaf", "matplotlib", "cv2", "torch", "torchvision", "tensorboard", "mediapipe")
    found = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        mod = sub.module if isinstance(sub, ast.ImportFrom) else sub.names[0].name
                        if (mod or "").split(".")[0] not in allowed:
                            found.append(f"{name}:{sub.lineno} imports {mod}")
    assert not found, "\n".join(found)


def test_the_cache_knows_no_stage():
    """pipeline/cache.py keys, locks and records entries of any stage: what a stage is (its
    version, settings, build) lives in pipeline/stages.py, so the cache imports no stage's code."""
    stage_code = ("skelpipe.pose", "skelpipe.data", "skelpipe.learn")
    found = []
    for node in ast.walk(ast.parse((PACKAGE / "pipeline" / "cache.py").read_text())):
        names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        found += [f"line {node.lineno}: {n}" for n in names if n.startswith(stage_code)]
    assert not found, "\n".join(found)
