"""The README's ten-line example runs as written, on a Merlin file written by the test fixtures."""

import re
from pathlib import Path

from tests.conftest import make_cube
from tests.io.format_writers import write_mib

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has a python example"
    return blocks[0]


def test_readme_example_runs(tmp_path, monkeypatch):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 10
    counts = make_cube(shape=(4, 6, 64, 64), dtype="uint16", k_step=0.0125).values
    write_mib(tmp_path / "scan.mib", counts.reshape(-1, 64, 64))
    monkeypatch.chdir(tmp_path)
    code = code.replace("scan_shape=(256, 256)", "scan_shape=(4, 6)")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["bf"].shape == (4, 6)
    assert namespace["small"].shape[:2] == (2, 3)
    assert (tmp_path / "scan_binned.zarr").is_dir()
