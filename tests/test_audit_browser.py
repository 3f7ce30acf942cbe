"""audit.html in a real headless Chromium (Chrome DevTools protocol): rows, sorting and filtering through the
page's own controls, no console errors, a screenshot. Skips with a plain message where Chromium is absent;
CI (``.ci/run``) installs it and sets VISPROMPT_REQUIRE_BROWSER=1 so it cannot skip there."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cdp import Browser, find_browser, required
from visprompt.audit.report import write_html
from visprompt.audit.score import AuditResult
from visprompt.data.records import Sample

CLASSES = ("cat", "dog", "fox")


@pytest.fixture
def page(tmp_path):
    n = 12
    samples, given, suggested = [], [], []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (24, 24), (20 * i, 100, 200 - 10 * i)).save(path)
        samples.append(Sample(index=i, path=str(path), label=i % 3, true_label=i % 3, classname=CLASSES[i % 3]))
        given.append(i % 3)
        suggested.append((i + 1) % 3 if i < 4 else i % 3)  # the first four are flagged
    given, suggested = np.array(given), np.array(suggested)
    score = np.linspace(0.95, 0.05, n)
    result = AuditResult(score=score, given=given, suggested=suggested, confidence=np.full(n, 0.8),
                         flagged=given != suggested, probs=np.full((n, 3), 1 / 3))  # fmt: skip
    return write_html(tmp_path / "audit.html", samples, result, CLASSES, thumbnails=5), n


def _ranks(b: Browser) -> list[int]:
    return b.eval("[...document.querySelectorAll('#rows tbody tr')].map(tr => Number(tr.dataset.rank))")


def test_audit_html_in_headless_chromium(page, tmp_path):
    exe = find_browser()
    if exe is None:
        if required():
            pytest.fail("VISPROMPT_REQUIRE_BROWSER=1 but no chromium found (apt-get install chromium)")
        pytest.skip("chromium is not installed here (apt-get install chromium); the browser test did not run")
    html, n = page
    (tmp_path / "profile").mkdir()
    with Browser(exe, tmp_path / "profile") as b:
        b.open(html.resolve().as_uri())
        assert _ranks(b) == list(range(1, n + 1))  # every row, ranked
        assert b.eval("document.getElementById('count').textContent") == f"{n} of {n} rows"
        assert b.eval("document.querySelectorAll('#rows img').length") == 5  # embedded thumbnails, no network
        assert b.eval("document.querySelector('#rows img').src.startsWith('data:image/jpeg;base64,')")

        b.click("th[data-key='score']")  # first click on score: most suspicious first
        assert _ranks(b) == list(range(1, n + 1))
        b.click("th[data-key='score']")  # second: reversed
        assert _ranks(b) == list(range(n, 0, -1))
        assert b.eval("document.querySelector(\"th[data-key='score']\").className") == "asc"

        b.click("#flagged-only")
        assert b.eval("document.getElementById('flagged-only').checked") is True
        assert sorted(_ranks(b)) == [1, 2, 3, 4]

        b.focus("#filter-given")
        b.press("ArrowDown", 40)  # "all" -> "cat"
        assert b.eval("document.getElementById('filter-given').value") == "cat"
        cells = b.eval("[...document.querySelectorAll('#rows tbody tr td:nth-child(4)')].map(td => td.textContent)")
        assert cells and set(cells) == {"cat"}
        assert len(cells) == 2  # flagged cats: samples 0 and 3

        b.click("#flagged-only")  # off again: every cat
        assert len(_ranks(b)) == 4
        b.focus("#filter-suggested")
        b.press("ArrowDown", 40)
        b.press("ArrowDown", 40)  # "dog"
        assert b.eval("document.getElementById('filter-suggested').value") == "dog"
        assert sorted(_ranks(b)) == [1, 4]  # samples 0 and 3: given cat, suggested dog
        shot = b.screenshot(tmp_path / "audit.png")
        errors = [m for m in b.console if m["level"] in ("error", "assert")]
        assert not errors and not b.exceptions, (errors, b.exceptions)
    assert shot.stat().st_size > 1000
    with Image.open(shot) as im:
        assert im.size[0] > 100
