"""The README's library snippet runs as written and does what it says."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_library_snippet_reaches_its_goal(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    snippet = next(b for b in blocks if "FunctionModel" in b and "controller.act" in b)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    distance = float((namespace["state"][:2] - namespace["goal"]).norm())
    assert distance < 0.05, distance
    assert "distance to goal:" in capsys.readouterr().out
