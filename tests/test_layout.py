"""boostmd's four wings: imports only go down, and no module imports itself in a circle."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "boostmd"
# what each wing may import of boostmd (itself included); the top level may import all
ALLOWED = {
    "forcefields": {"forcefields"},
    "dynamics": {"dynamics", "forcefields"},
    "training": {"training", "dynamics", "forcefields"},
    "validation": {"validation", "dynamics", "forcefields"},
}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The boostmd modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name == "boostmd" or name.startswith("boostmd.")}
    return found


MODULES = {_module(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("wing", sorted(ALLOWED))
def test_a_wing_imports_only_the_wings_below_it(wing):
    for module, imports in MODULES.items():
        if not module.startswith(f"boostmd.{wing}"):
            continue
        for imported in imports:
            target = imported.split(".")[1] if "." in imported else "boostmd"
            assert target in ALLOWED[wing], f"{module} imports {imported}"


def test_no_module_imports_itself_through_others():
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for imported in MODULES.get(todo.pop(), ()):
                if imported in MODULES and imported not in seen:
                    seen.add(imported)
                    todo.append(imported)
        return seen

    circles = [m for m in MODULES if m != "boostmd" and m in reach(m)]
    assert not circles, f"import circles through {circles}"


def test_every_wing_says_what_it_holds_and_may_import():
    for wing in ALLOWED:
        doc = ast.get_docstring(ast.parse((PACKAGE / wing / "__init__.py").read_text()))
        assert doc and "Import" in doc, wing


@pytest.mark.parametrize(
    "command", ["demo", "validate", "train", "data", "make_reference", "water_data"]
)
def test_documented_commands_still_run(command):
    done = subprocess.run(
        [sys.executable, "-m", f"boostmd.{command}", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
