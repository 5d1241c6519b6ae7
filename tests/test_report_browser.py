"""The rendered report in a real browser (headless Chromium) and as PDF (poppler's pdftotext / pdftoppm)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fixtures_results import built_fixture
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="needs Debian chromium at /usr/bin/chromium (apt-get install chromium)"
    ),
    pytest.mark.skipif(
        not shutil.which("pdftoppm") or not shutil.which("pdftotext"),
        reason="needs poppler-utils (pdftoppm, pdftotext)",
    ),
]
SORT_JS = Path(__file__).parents[1] / "src" / "segsweep" / "report" / "templates" / "sort.js"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser")
    built_fixture(tmp_path_factory).render(out / "report.html", out / "report.pdf")
    return out


def chromium(tmp: Path, *args: str, width: int = 1280, height: int = 900) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        f"--window-size={width},{height}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console(res: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


def test_loads_without_console_errors_and_script_runs(report, tmp_path):
    res = chromium(tmp_path, "--dump-dom", (report / "report.html").as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    assert console(res) == []
    dom = res.stdout
    assert "<h1>Fixture segmentation study</h1>" in dom
    # sort.js ran: every header of a sortable table became focusable
    assert dom.count('title="sort by this column"') >= 30


def test_sort_script_sorts_numbers_and_puts_statuses_last(tmp_path):
    page = tmp_path / "sort.html"
    page.write_text(
        "<!DOCTYPE html><html><body><table class='sortable'><thead><tr><th>name</th><th>dice</th></tr></thead>"
        "<tbody><tr><td>b</td><td data-sort='0.7'>0.7</td></tr><tr><td>a</td><td data-sort=''>diverged</td></tr>"
        "<tr><td>c</td><td data-sort='0.9'>0.9</td></tr><tr><td>d</td><td data-sort='0.65'>0.65</td></tr></tbody>"
        f"</table><script>{SORT_JS.read_text()}</script><script>"
        "document.addEventListener('DOMContentLoaded', function () {"
        " var th = document.querySelectorAll('th')[1]; th.click(); var up = names();"
        " th.click(); document.title = up + '|' + names(); });"
        "function names() { return Array.prototype.map.call(document.querySelectorAll('tbody tr'),"
        " function (r) { return r.cells[0].textContent; }).join(''); }"
        "</script></body></html>"
    )
    res = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert console(res) == []
    assert "<title>dbca|cbda</title>" in res.stdout


def framed(tmp: Path, html: Path, width: int, height: int) -> Path:
    """A page showing ``html`` in an iframe ``width`` px wide. Headless Chromium lays pages out at least 500 px
    wide whatever --window-size says; an iframe gives the report a true phone-width viewport (media queries
    included). The wrapper reports the report's own viewport and scroll width in its title."""
    page = tmp / f"frame-{width}.html"
    page.write_text(
        f"<!DOCTYPE html><html><head><style>body{{margin:0}} iframe{{border:0;display:block;width:{width}px;"
        f"height:{height}px}}</style></head><body><iframe id='f' src='{html.as_uri()}'></iframe><script>"
        "document.getElementById('f').addEventListener('load', function () {"
        " document.title = 'W' + this.contentWindow.innerWidth + '/' +"
        " this.contentDocument.documentElement.scrollWidth; });</script></body></html>"
    )
    return page


@pytest.mark.parametrize("width", [1280, 390])
def test_screenshots_and_no_page_overflow(report, tmp_path, width):
    page = framed(tmp_path, report / "report.html", width, 2400)
    shot = tmp_path / f"report-{width}.png"
    res = chromium(
        tmp_path,
        "--allow-file-access-from-files",
        f"--screenshot={shot}",
        page.as_uri(),
        width=max(width, 500),
        height=2400,
    )
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    assert console(res) == []
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)[:, :width]
    assert img.std() > 10  # a rendered page, not a blank one
    # the page itself never scrolls sideways: wide tables and figures scroll inside their own boxes
    res = chromium(
        tmp_path,
        "--allow-file-access-from-files",
        "--dump-dom",
        "--virtual-time-budget=3000",
        page.as_uri(),
        width=max(width, 500),
    )
    m = re.search(r"<title>W(\d+)/(\d+)</title>", res.stdout)
    assert m and int(m.group(1)) == width and int(m.group(2)) <= width, res.stdout[:300]


def _pdf_pages(pdf: Path) -> list[str]:
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    return text.split("\f")[:-1]


def test_pdf_pages_numbers_and_sections(report, tmp_path):
    pages = _pdf_pages(report / "report.pdf")
    n = len(pages)
    assert n > 10
    for i, p in enumerate(pages, start=1):
        assert f"Page {i} of {n}" in p
    text = "\n".join(pages)
    for title in ("Summary", "Data", "Optimizer × learning rate", "Test set", "Failures"):  # the main part
        assert re.search(rf"^\s*\d+\s+{re.escape(title)}\s*$", text, re.M), title
    for title in ("Figures per study", "Statistics", "Secondary metrics", "Model cards", "Provenance"):
        assert re.search(rf"^\s*[A-G]\s+{re.escape(title)}\s*$", text, re.M), title
    # the main part ends where the appendix begins, on a page of its own
    first_app = next(i for i, p in enumerate(pages) if re.search(r"^\s*Appendix\s*$", p, re.M))
    assert re.search(r"^\s*A\s+Figures per study\s*$", pages[first_app], re.M)
    assert "Failures" in "\n".join(pages[:first_app]) and "Provenance" not in "\n".join(pages[1:first_app])
    assert "diverged" in text and "0.820 ± 0.020 (3)" in text
    subprocess.run(
        ["pdftoppm", "-r", "60", "-png", "-f", "1", "-l", "2", str(report / "report.pdf"), str(tmp_path / "page")],
        check=True,
    )
    assert len(list(tmp_path.glob("page-*.png"))) == 2


def test_pdf_each_study_page_holds_its_table_and_key_figure(report):
    """The main part gives each study one page: its heading, table and key figure on the page it starts, and
    the next section on the following page (the random search's 40-row table is the exception: a long table)."""
    pages = _pdf_pages(report / "report.pdf")
    first_app = next(i for i, p in enumerate(pages) if re.search(r"^\s*Appendix\s*$", p, re.M))
    titles = ("Optimizer × learning rate", "Training fraction × loss", "Learning-rate schedules")
    for title in titles:
        (i,) = [k for k, p in enumerate(pages[:first_app]) if re.search(rf"^\s*\d+\s+{re.escape(title)}\s*$", p, re.M)]
        page = pages[i]
        assert re.search(r"Table \d+\. Mean best validation Dice", page), title
        assert re.search(r"Figure \d+\. Mean per configuration \(heatmap\)\.", page), title
        assert re.search(r"more figures of this study", " ".join(page.split())), title
        assert re.search(r"^\s*\d+\s+\S", pages[i + 1], re.M), (title, "the next section starts the next page")


def test_pdf_long_table_repeats_its_header_row(report):
    pages = _pdf_pages(report / "report.pdf")
    start = next(i for i, p in enumerate(pages) if "Every run: status, epochs" in p)
    end = next(i for i, p in enumerate(pages) if "Resolved configuration" in p)
    assert end > start, "the per-run table should span several pages"
    row = re.compile(r"^\s*[0-9a-f]{12}\s+(optimizer_lr|fraction_loss|schedules|random_search)", re.M)
    header = re.compile(r"run\s+studies\s+configuration\s+seed idx\s+(fold\s+)?status\s+epochs\s+wall time \(s\)")
    spanned = [p for p in pages[start : end + 1] if row.search(p)]
    assert len(spanned) >= 2
    for p in spanned:
        assert header.search(p), p[:400]


def _words_past_the_edge(pdf: Path) -> list[tuple[int, str]]:
    """(page, word) of every word whose right edge lies in the page's last 20 pt (pdftotext -bbox); the
    margins are 16 mm (45 pt), so only a table or figure wider than the text block reaches there."""
    xml = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    pages = re.findall(r'<page width="([\d.]+)" height="[\d.]+">(.*?)</page>', xml, re.S)
    assert pages
    return [
        (i, w)
        for i, (width, body) in enumerate(pages, start=1)
        for x, w in re.findall(r'xMax="([\d.]+)"[^>]*>([^<]*)</word>', body)
        if float(x) > float(width) - 20
    ]


def test_pdf_nothing_falls_off_the_page(report):
    assert _words_past_the_edge(report / "report.pdf") == []


def test_pdf_wide_tables_keep_their_last_columns_on_the_page(tmp_path_factory):
    """The widest tables (the test set's single runs vs ensemble: 7 columns of long metric names, which ran
    past the right edge before) wrap their headers instead of pushing their last columns off the page."""
    from test_report_testset import FINAL, TEST_FRACTION, fxt

    fx = fxt.__wrapped__(tmp_path_factory)
    path = fx.results / "studies" / "optimizer_lr" / "table.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "final": FINAL}))
    out = tmp_path_factory.mktemp("wide")
    fx.render(out / "report.html", out / "report.pdf")
    text = " ".join(" ".join(_pdf_pages(out / "report.pdf")).split())
    assert "Single runs and their ensemble" in text and TEST_FRACTION > 0
    assert _words_past_the_edge(out / "report.pdf") == []


@pytest.mark.parametrize("width", [1280, 390])
def test_cover_cards_hold_their_labels(report, tmp_path, width):
    """The cover's fact cards ("CONFIGURATIONS", uppercase) are wide enough for their label at laptop and phone
    widths: no card's content is wider than the card."""
    html = (report / "report.html").read_text()
    probe = (
        "<script>window.addEventListener('load', function () { var o = [];"
        " document.querySelectorAll('.facts div').forEach(function (d) {"
        " if (d.scrollWidth > d.clientWidth) o.push(d.querySelector('dt').textContent); });"
        " document.title = 'OVER:' + o.join('|') + ':' + document.querySelectorAll('.facts div').length; });</script>"
    )
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", probe + "</body>"))
    res = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=3000", page.as_uri(), width=width)
    m = re.search(r"<title>OVER:([^:<]*):(\d+)</title>", res.stdout)
    assert m and int(m.group(2)) >= 6 and m.group(1) == "", res.stdout[:300]


def test_legend_says_how_the_best_cell_is_marked(report, tmp_path):
    """The legend's words for the best configuration ("shaded, outlined") are what the browser draws: the best
    cell of each study table has a background other than its row's and a solid outline."""
    html = (report / "report.html").read_text()
    assert html.count('<span class="key best-all">shaded, outlined</span> best overall') == 4  # one per study
    probe = (
        "<script>window.addEventListener('load', function () { var o = [];"
        " document.querySelectorAll('table.layout td.best-all').forEach(function (td) {"
        " var s = getComputedStyle(td), r = getComputedStyle(td.parentElement);"
        " o.push([s.backgroundColor !== r.backgroundColor && s.backgroundColor !== 'rgba(0, 0, 0, 0)',"
        " s.outlineStyle === 'solid' && parseFloat(s.outlineWidth) >= 1].join(',')); });"
        " document.title = 'BEST:' + o.join('|'); });</script>"
    )
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", probe + "</body>"))
    res = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=3000", page.as_uri())
    m = re.search(r"<title>BEST:([^<]*)</title>", res.stdout)
    assert m, res.stdout[:300]
    marks = m.group(1).split("|")
    assert len(marks) == 4 and set(marks) == {"true,true"}, marks


def test_long_unbreakable_values_wrap_on_a_phone(report, tmp_path):
    """A model card's sha256 (64 characters, no break) wraps inside its key-value list instead of widening
    the page past a 390 px screen (the demo's report scrolled sideways to 476 px)."""
    html = (report / "report.html").read_text()
    sha = "c3f43504bdff4f7183b331ec0b34704a3169459b" + "0" * 24
    long = (
        f'<dl class="kv"><dt>weights</dt><dd><code>results/cells/x/best.pt</code>, sha256 <code>{sha}</code></dd></dl>'
    )
    page = tmp_path / "long.html"
    page.write_text(html.replace("<main>", "<main>" + long, 1))
    res = chromium(
        tmp_path,
        "--allow-file-access-from-files",
        "--dump-dom",
        "--virtual-time-budget=3000",
        framed(tmp_path, page, 390, 1200).as_uri(),
        width=500,
    )
    m = re.search(r"<title>W(\d+)/(\d+)</title>", res.stdout)
    assert m and int(m.group(1)) == 390 and int(m.group(2)) <= 390, res.stdout[:300]
