"""The report page as people see it: rendered by headless Chromium at a laptop's size.

A copy of each page gets a probe script that measures every chart label against its
chart and the page against the window; the page itself has no script. Chromium's
console (errors, refused loads) must stay silent. scripts/test.sh installs chromium.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from metering.cli import main
from metering.demo import run_demo

WINDOW = (1366, 900)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
PROBE = """<script>
window.addEventListener('load', () => {
  const charts = [];
  for (const svg of document.querySelectorAll('svg.chart')) {
    const box = svg.getBoundingClientRect();
    const texts = [...svg.querySelectorAll('text')].map(t => {
      const r = t.getBoundingClientRect();
      return {text: t.textContent, cls: t.getAttribute('class'),
              left: r.left - box.left, right: box.right - r.right,
              top: r.top - box.top, bottom: box.bottom - r.bottom,
              x0: r.left, x1: r.right};
    });
    charts.push({unit: svg.dataset.unit, entity: svg.dataset.entity, texts});
  }
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify({charts, scroll: document.documentElement.scrollWidth,
                                    width: window.innerWidth});
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("METERING_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is missing (scripts/test.sh installs it)")
        pytest.skip("chromium is not installed (scripts/test.sh installs it)")
    return found


def render(page: str, tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    """(what the probe measured, Chromium's console messages)."""
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                "--enable-logging=stderr",
                "--v=0",
                "--dump-dom",
                probed.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match is not None, done.stdout[-2000:]
    text = match.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(text), console


def overlaps(texts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    labels = sorted((t for t in texts if t["cls"] == "period"), key=lambda t: t["x0"])
    return [(a["text"], b["text"]) for a, b in itertools.pairwise(labels) if a["x1"] > b["x0"]]


def check_page(page: str, tmp_path: Path, charts: int) -> None:
    measured, console = render(page, tmp_path)
    assert console == []
    assert len(measured["charts"]) == charts
    for chart in measured["charts"]:
        texts = chart["texts"]
        assert {t["cls"] for t in texts} == {"tick", "period"}
        clipped = [
            t["text"] for t in texts if min(t["left"], t["right"], t["top"], t["bottom"]) < 0
        ]
        assert clipped == [], chart["unit"]
        assert overlaps(texts) == [], chart["unit"]
        assert len([t for t in texts if t["cls"] == "tick"]) >= 3
    # Tables included: nothing wider than a laptop's window.
    assert measured["scroll"] <= measured["width"] == WINDOW[0]


@pytest.fixture(scope="module")
def demo_url() -> Any:
    with tempfile.TemporaryDirectory() as where:
        result = run_demo(Path(where), days=2, seed=3)
        yield result.database_url


def report(url: str, *args: str) -> str:
    result = CliRunner().invoke(
        main,
        ["--log-format", "json", "--database-url", url, "report", "--format", "html", *args],
        env={"METERING_CONFIG": ""},
    )
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("--by", "day"),
        ("--by", "hour"),
        ("--by", "hour", "--group", "offering", "--units", "iec"),
        ("--by", "hour", "--account", "acme-corp", "--until", "2016-12-12T05:00Z"),
        ("--by", "month", "--group", "resource"),
    ],
    ids=["day", "hour", "hour-offering-iec", "few-hours", "month-resource"],
)
def test_labels_stay_inside_their_charts(demo_url: str, tmp_path: Path, args: tuple[str]) -> None:
    page = report(demo_url, *args)
    check_page(page, tmp_path, charts=page.count('<svg xmlns="http://www.w3.org/2000/svg"'))


def test_an_empty_report_and_a_single_day(demo_url: str, tmp_path: Path) -> None:
    check_page(report(demo_url, "--since", "2030-01-01T00:00Z"), tmp_path, charts=0)
    single = report(demo_url, "--since", "2016-12-12T00:00Z", "--until", "2016-12-13T00:00Z")
    check_page(single, tmp_path, charts=3)
