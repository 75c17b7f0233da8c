"""The README's example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["sweep"].shape == (32, 50)
    assert namespace["patched"].shape == (1, 32, 50)


def test_ci_runs_the_readme_test_command():
    command = re.search(r"Install and run the tests.*?```bash\n(.*?)\n```", README.read_text(), re.S).group(1)
    ci = (README.parent / ".ci" / "run").read_text()
    assert command in ci
