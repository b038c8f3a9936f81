"""The main job runs end to end and writes a self-contained page."""

import re

from stemkit.cli import main


def test_demo_writes_a_self_contained_page(tmp_path, capsys):
    output = tmp_path / "demo" / "page.html"
    assert main(["demo", "--output", str(output), "--scan", "8", "--strain-epochs", "1"]) == 0
    html = output.read_text()
    for shown in ("virtual bright field", "orientation (IPF colours)", "clusters (divisive)", "WS2 film, CC-ST-AE: exx",
                  "median disorientation", "adjusted Rand index", "mean absolute error"):
        assert shown in html, shown
    assert not re.findall(r'<script[^>]*\bsrc=', re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", html, flags=re.S))
    assert (tmp_path / "demo" / "page.zarr").is_dir()
    printed = capsys.readouterr().out
    assert "wrote" in printed and "within 5°" in printed and "lattice fit" in printed
    # a second run replaces its own outputs
    assert main(["demo", "--output", str(output), "--scan", "8", "--strain-epochs", "1"]) == 0
