"""The layout of `recipes/` (docs/architecture.md): entry points over one library, checked by parsing the imports.

The rule: `recipes/*.py` are entry points and `recipes/lib/` is what they share. No module imports an entry point,
except `recipes/pipeline.py`, whose job is to run the others, and which then uses only what runs one: `make_parser`,
`DEFAULT_CONFIG`, `parse_args` and `main`.
"""

import ast
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
ENTRY_POINTS = sorted(path.stem for path in RECIPES.glob("*.py") if path.stem != "__init__")
LIBRARY = sorted((RECIPES / "lib").glob("*.py"))
RUNNER = "pipeline"
WHAT_RUNS_A_RECIPE = {"make_parser", "DEFAULT_CONFIG", "parse_args", "main"}


def imported_entry_points(tree: ast.Module) -> set[str]:
    """The entry points a module imports anywhere in it (`from recipes import sft`, `from recipes.sft import x`,
    `import recipes.sft`)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "recipes":
            modules = [f"recipes.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        found |= {module.split(".")[1] for module in modules if module.startswith("recipes.")} & set(ENTRY_POINTS)
    return found


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_the_layout_has_entry_points_and_a_library():
    assert {"grpo", "sft", "distill", "rejection_sampling", "reward_model", "pretrain", "pipeline"} <= set(ENTRY_POINTS)
    assert LIBRARY, "recipes/lib/ holds what the entry points share"


@pytest.mark.parametrize(
    "path",
    [RECIPES / f"{name}.py" for name in ENTRY_POINTS if name != RUNNER] + LIBRARY,
    ids=lambda path: str(path.relative_to(RECIPES)),
)
def test_no_module_but_the_pipeline_imports_an_entry_point(path):
    assert imported_entry_points(parse(path)) == set(), f"{path} imports an entry point: move what it needs to lib/"


def test_the_pipeline_uses_entry_points_only_to_run_them():
    tree = parse(RECIPES / f"{RUNNER}.py")
    imported = imported_entry_points(tree)
    assert imported, "the pipeline runs the other recipes"
    from_imports = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.removeprefix("recipes.") in imported
        for alias in node.names
    ]
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) in imported
    }
    assert set(from_imports) | used <= WHAT_RUNS_A_RECIPE


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_entry_point_has_a_parser_and_a_main(name):
    defined = {
        target.id if isinstance(target, ast.Name) else target.name
        for node in parse(RECIPES / f"{name}.py").body
        for target in (node.targets if isinstance(node, ast.Assign) else [node])
        if isinstance(target, ast.Name | ast.FunctionDef)
    }
    assert {"make_parser", "main"} <= defined
