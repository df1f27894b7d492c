"""Issue 15.10: benchmarks never overwrite the committed results under benchmarks/out unless asked
(``--update-tracked``); by default they write under benchmarks/out/latest/ (ignored by git)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import outputs  # noqa: E402

SCRIPTS = ["accuracy.py", "dynamo_zoo.py", "exporters_zoo.py", "guess_audit.py", "hf_zoo.py", "jax_opset23.py", "jax_zoo.py",
           "ort_optimized.py",
           "onnx_testdata.py",
           "recovered_start.py", "schedules.py", "sensitivity_digits.py",
           "targets.py", "zoo.py"]


def test_every_benchmark_defaults_to_latest_and_has_the_flag():
    for name in SCRIPTS:
        text = (ROOT / "benchmarks" / name).read_text()
        assert "outputs.LATEST" in text and "outputs.add_argument(ap)" in text and "outputs.check(" in text, name
    assert subprocess.run(["git", "check-ignore", "-q", str(outputs.LATEST / "x.md")], cwd=ROOT).returncode == 0


@pytest.mark.skipif(not outputs.tracked(ROOT / "benchmarks" / "out" / "schedules.md"), reason="not a git checkout")
def test_a_tracked_result_is_refused_before_any_work(tmp_path):
    target = ROOT / "benchmarks" / "out" / "schedules.md"
    before = hashlib.sha256(target.read_bytes()).hexdigest()
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "schedules.py"), "--out", str(target)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.startswith("error:") and "--update-tracked" in run.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == before
    with pytest.raises(SystemExit):
        outputs.check([target], update_tracked=False)
    outputs.check([target], update_tracked=True)          # asked: allowed
    outputs.check([tmp_path / "a" / "b.md"], update_tracked=False)
    assert (tmp_path / "a").is_dir()


def test_fig5_overlap_is_readable_whatever_the_number_of_layers(tmp_path):
    """The committed Fig. 5 was 7392x504 pixels: 7 criteria side by side, 2.2 inches a label."""
    import accuracy
    from PIL import Image

    labels = [f"/layer{i}/conv/Conv" for i in range(60)]
    ratios = [0.3, 0.5, 0.7, 0.9]
    table = {c: {r: [(lab, (i % 7) / 7, 4) for i, lab in enumerate(labels)] for r in ratios}
             for c in ("l1", "l2", "fpgm", "hrank", "hrank-star", "taylor", "random")}
    png = tmp_path / "fig5.png"
    fig = accuracy.plot_overlap(table, ratios, png, "test", keep=True)
    w, h = Image.open(png).size
    assert w <= 2200 and h <= 2200 and 0.5 <= w / h <= 3, (w, h)
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        if ax.get_visible():
            assert not legend.overlaps(ax.get_window_extent(renderer))


def test_the_readme_quotes_the_committed_jax_zoo_table_as_it_is():
    """Every row and the summary of benchmarks/out/jax_zoo.md stand in the README unchanged (a
    re-run that changes a number changes both, or this fails)."""
    table = (ROOT / "benchmarks" / "out" / "jax_zoo.md").read_text().splitlines()
    readme = (ROOT / "README.md").read_text().splitlines()
    rows = [ln for ln in table if ln.startswith("|") or ln.startswith("- ") or " models ran; " in ln]
    assert len([ln for ln in rows if ln.startswith("| ") and not ln.startswith("| model")]) >= 8
    missing = [ln for ln in rows if ln not in readme]
    assert not missing, missing
