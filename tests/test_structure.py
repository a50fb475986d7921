"""The code's shape: no import circle anywhere in semigen (imports inside functions included),
the run's file names spelled only by the run package, and no function longer than a screen."""

import ast
import io
import tokenize
from pathlib import Path

import grimp

from semigen.run.layout import OWN_ENTRIES

SRC = Path(__file__).resolve().parents[1] / "src" / "semigen"
LONGEST = 60  # lines: a function reads on one screen
DOCSTRING = ('"""', "'''")


def test_no_import_circle():
    graph = grimp.build_graph("semigen")
    circles = sorted({tuple(sorted((a, b))) for a in graph.modules
                      for b in graph.find_modules_directly_imported_by(a)
                      if b != a and graph.chain_exists(importer=b, imported=a)})
    assert circles == []


def spelled_run_files(path: Path, root: Path = SRC) -> list[str]:
    """String literals in `path` that name a run file (``"metrics.json"``), or a run folder
    joined to a path (``run / "checkpoints"``); a folder's name alone is an ordinary word
    (the ``review`` command, a ``samples`` entry)."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    found, previous = [], None
    for token in tokens:
        if token.type == tokenize.STRING and not token.string.startswith(DOCSTRING):
            try:
                value = ast.literal_eval(token.string)
            except ValueError:  # an f-string
                value = None
            joined = previous is not None and previous.string == "/"
            if value in OWN_ENTRIES and ("." in value or joined):
                found.append(f"{path.relative_to(root)}:{token.start[0]}: {value}")
        if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            previous = token
    return found


def test_only_the_run_package_spells_a_run_file():
    found = [hit for path in sorted(SRC.rglob("*.py"))
             if path.relative_to(SRC).parts[0] != "run"
             for hit in spelled_run_files(path)]
    assert found == []


def test_the_check_sees_a_spelled_name(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('path = run / "metrics.json"\nfolder = run / "samples"\n'
                      'word = {"samples": 1, "metrics": 2}\n')
    assert [hit.split(": ")[1] for hit in spelled_run_files(module, tmp_path)] == [
        "metrics.json", "samples"]


def function_lengths() -> list[tuple[int, str]]:
    """(lines, where) of every function and method in semigen, longest first."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((node.end_lineno - node.lineno + 1,
                              f"{path.relative_to(SRC)}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def test_no_function_is_longer_than_a_screen():
    assert [f"{where} ({n} lines)" for n, where in function_lengths() if n > LONGEST] == []
