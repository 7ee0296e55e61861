"""docs/architecture.md stays true: every hop it names as `symbol` (`path:first-last`) is
a function or class defined in that file, spanning exactly those lines."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
HOP = re.compile(r"`([A-Za-z_][\w.]*)` \(`([\w/]+\.py):(\d+)-(\d+)`\)")


def _definitions(path: Path) -> dict:
    """{"name" or "Class.name": (first line incl. decorators, last line)} of `path`."""
    found = {}

    def walk(nodes, prefix):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                found[prefix + node.name] = (first, node.end_lineno)
                if isinstance(node, ast.ClassDef):
                    walk(node.body, prefix + node.name + ".")

    walk(ast.parse(path.read_text(), str(path)).body, "")
    return found


def test_the_architecture_doc_exists_and_names_hops():
    assert len(HOP.findall(DOC.read_text())) >= 20


def test_every_hop_points_at_its_definition():
    wrong = []
    for symbol, path, first, last in HOP.findall(DOC.read_text()):
        file = ROOT / path
        if not file.exists():
            wrong.append(f"{path}: no such file (for `{symbol}`)")
            continue
        span = _definitions(file).get(symbol)
        if span is None:
            wrong.append(f"`{symbol}` is not defined in {path}")
        elif span != (int(first), int(last)):
            wrong.append(f"`{symbol}` ({path}:{first}-{last}) is now at {path}:{span[0]}-{span[1]}")
    assert not wrong, "docs/architecture.md is out of date:\n" + "\n".join(wrong)


if __name__ == "__main__":  # `python tests/test_architecture_doc.py`: rewrite the ranges that moved
    def _fix(match):
        symbol, path, _, _ = match.groups()
        span = _definitions(ROOT / path).get(symbol)
        return match.group(0) if span is None else f"`{symbol}` (`{path}:{span[0]}-{span[1]}`)"

    DOC.write_text(HOP.sub(_fix, DOC.read_text()))
