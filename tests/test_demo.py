"""The main job runs end to end and writes a self-contained page."""

import re

from stemkit.cli import main


def test_demo_writes_a_self_contained_page(tmp_path, capsys):
    output = tmp_path / "demo" / "page.html"
    assert main(["demo", "--output", str(output), "--scan", "8"]) == 0
    html = output.read_text()
    assert "virtual bright field" in html and "Bragg peaks per pattern" in html
    assert not re.findall(r'<script[^>]*\bsrc=', re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", html, flags=re.S))
    assert (tmp_path / "demo" / "page.zarr").is_dir()
    assert "wrote" in capsys.readouterr().out
    # a second run replaces its own outputs
    assert main(["demo", "--output", str(output), "--scan", "8"]) == 0
