"""The dealer report and the run summary in headless Chromium.

Each page of a real small run is loaded at phone (390x844) and desktop
(1280x900) size. The tests check that the page renders without console
messages, shows every lead, does not scroll sideways, and screenshots to an
image of the window's size. They are skipped when no ``chromium`` binary is
installed (Debian package ``chromium``).

Run ``python tests/test_views.py NIGHT_FOLDER DEST`` to write the screenshots
kept in ``docs/screenshots/`` from a published night.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PHONE = (390, 844)
DESKTOP = (1280, 900)
SUMMARY_SCREENSHOT = (1280, 2000)
CHROMIUM_TIMEOUT_S = 90
# Chromium writes console messages to stderr with --enable-logging=stderr, as
# "[pid:tid:date:INFO:CONSOLE:line] "message", source: URL (line)".
CONSOLE_LINE = re.compile(r":CONSOLE(?:\(\d+\))?:?\d*\]")
# Headless Chromium 156 lays pages out at least 500 px wide in --dump-dom
# mode. The probe therefore pins the root element to the tested width and
# records the right edge of the widest element. An edge past that width
# means the page would scroll sideways on that screen.
WIDTH_PROBE = (
    "<style>html {{ width: {width}px; }}</style><script>"
    "let right = 0; for (const element of document.querySelectorAll('body *'))"
    " {{ right = Math.max(right, element.getBoundingClientRect().right); }}"
    "document.body.setAttribute('data-max-right', Math.ceil(right));</script>"
)


def chromium_binary() -> str | None:
    """Return the path of the Chromium binary, or None when none is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


requires_chromium = pytest.mark.skipif(
    chromium_binary() is None,
    reason="chromium is not installed (Debian: apt-get install chromium)",
)


def run_chromium(
    url: str,
    size: tuple[int, int],
    profile: Path,
    *,
    screenshot: Path | None = None,
) -> tuple[str, list[str]]:
    """Load ``url`` headless; return the DOM (or "") and the console lines.

    With ``screenshot`` the window is saved as PNG there instead of dumping
    the DOM. Host names resolve to nothing, so the page can load only what
    it carries itself.
    """
    binary = chromium_binary()
    assert binary is not None
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", f"--window-size={size[0]},{size[1]}",
    ]  # fmt: skip
    if screenshot is not None:
        command.append(f"--screenshot={screenshot}")
    else:
        command.append("--dump-dom")
    command.append(url)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, f"chromium exited {result.returncode}: {result.stderr[-2000:]}"
    console = [line for line in result.stderr.splitlines() if CONSOLE_LINE.search(line)]
    return result.stdout, console


def png_size(path: Path) -> tuple[int, int]:
    """Return (width, height) from a PNG file's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def distinct_colours(path: Path) -> int:
    """Return how many distinct colours a PNG screenshot contains."""
    from PIL import Image

    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    return len(colours) if colours is not None else 1 << 20


def with_width_probe(page: Path, folder: Path, width: int) -> Path:
    """Copy ``page`` with a script that records its widest element's right edge.

    The published reports carry no script; the probe goes into a copy only.
    """
    html = page.read_text(encoding="utf-8")
    assert "</body>" in html
    copy = folder / f"probe-{width}-{page.name}"
    probe = WIDTH_PROBE.format(width=width)
    copy.write_text(html.replace("</body>", probe + "</body>"), encoding="utf-8")
    return copy


def max_right(dom: str) -> int:
    """Return the right edge recorded by the width probe."""
    found = re.search(r'data-max-right="(\d+)"', dom)
    assert found is not None, "the width probe did not run"
    return int(found.group(1))


def busiest_dealer(night_folder: Path) -> Path:
    """Return the dealer folder with the most leads (ties: the smaller id)."""

    def lead_count(folder: Path) -> tuple[int, str]:
        with (folder / "leads.csv").open(encoding="utf-8-sig", newline="") as handle:
            return (-(sum(1 for _ in csv.reader(handle)) - 1), folder.name)

    return min((night_folder / "dealers").iterdir(), key=lead_count)


def dealer_vins(dealer_folder: Path) -> list[str]:
    """Return the VINs of a dealer's leads.csv, formula quote removed."""
    with (dealer_folder / "leads.csv").open(encoding="utf-8-sig", newline="") as handle:
        return [row["vin"].removeprefix("'") for row in csv.DictReader(handle)]


# -- tests -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def night_folder(chain) -> Path:  # type: ignore[no-untyped-def]
    """Return the last night of the session chain: it has new and escalated leads."""
    return chain.night_folder(chain.nights[-1])


@requires_chromium
def test_console_check_catches_errors(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>x</p>"
        "<script>console.error('probe-error'); missingFunction();</script>"
        "</body></html>"
    )
    _, console = run_chromium(page.as_uri(), PHONE, tmp_path / "profile")
    assert any("probe-error" in line for line in console)
    assert any("missingFunction" in line for line in console)


@requires_chromium
def test_width_probe_catches_overflow(tmp_path: Path) -> None:
    page = tmp_path / "wide.html"
    page.write_text(
        '<!DOCTYPE html><html><body><div style="width: 600px">wide</div></body></html>'
    )
    dom, _ = run_chromium(
        with_width_probe(page, tmp_path, PHONE[0]).as_uri(), PHONE, tmp_path / "profile"
    )
    assert max_right(dom) > PHONE[0]


@requires_chromium
@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_dealer_report_in_chromium(
    night_folder: Path, tmp_path: Path, size: tuple[int, int]
) -> None:
    dealer = busiest_dealer(night_folder)
    vins = dealer_vins(dealer)
    assert len(vins) >= 3, f"dealer {dealer.name} has too few leads to check"
    probe = with_width_probe(dealer / "report.html", tmp_path, size[0])

    dom, console = run_chromium(probe.as_uri(), size, tmp_path / "profile")
    assert console == []
    assert f"Dealer {dealer.name}" in dom
    assert "Service leads for" in dom
    missing = [vin for vin in vins if vin not in dom]
    assert missing == []
    assert max_right(dom) <= size[0]

    shot = tmp_path / "report.png"
    _, console = run_chromium(
        (dealer / "report.html").as_uri(), size, tmp_path / "profile", screenshot=shot
    )
    assert console == []
    assert png_size(shot) == size
    assert distinct_colours(shot) > 50


@requires_chromium
def test_summary_in_chromium(night_folder: Path, tmp_path: Path) -> None:
    page = night_folder / "summary.html"
    html = page.read_text(encoding="utf-8")
    assert re.search(r"https?://", html.replace("http://www.w3.org/", "")) is None
    for size in (PHONE, DESKTOP):
        probe = with_width_probe(page, tmp_path, size[0])
        dom, console = run_chromium(probe.as_uri(), size, tmp_path / "profile")
        assert console == []
        assert dom.count("<svg") == 5
        for section in ("throughput", "stages", "severity", "regions", "cost"):
            assert f'<section id="{section}">' in dom
        assert max_right(dom) <= size[0]
    shot = tmp_path / "summary.png"
    run_chromium(page.as_uri(), DESKTOP, tmp_path / "profile", screenshot=shot)
    assert png_size(shot) == DESKTOP
    assert distinct_colours(shot) > 50


# -- screenshots for the docs ------------------------------------------------------


def write_screenshots(night_folder: Path, destination: Path) -> list[Path]:
    """Write the docs screenshots of a published night into ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    dealer = busiest_dealer(night_folder)
    profile = destination / f".chromium-profile-{dt.datetime.now():%H%M%S}"
    shots = [
        (dealer / "report.html", PHONE, destination / "dealer-report-phone.png"),
        (dealer / "report.html", DESKTOP, destination / "dealer-report-desktop.png"),
        (night_folder / "summary.html", SUMMARY_SCREENSHOT, destination / "summary.png"),
    ]
    try:
        for page, size, path in shots:
            _, console = run_chromium(page.as_uri(), size, profile, screenshot=path)
            if console:
                raise RuntimeError(f"{page} logged console messages: {console}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return [path for _, _, path in shots]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/test_views.py NIGHT_FOLDER DEST")
    for written in write_screenshots(Path(sys.argv[1]).resolve(), Path(sys.argv[2])):
        print(written)
