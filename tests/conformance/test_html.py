"""The HTML reports (dmm report, --html) and the terminal report's fixes.

The known traces are seeded VMM bugs the fuzzer found and shrank (tests/conformance/reports/):
- stale-spte-after-swap-out: no_zap_on_remap, swap_out leaves the spte: the walks part at the PTE
  (the guest's gfn has no machine page, the shadow still maps one);
- user-bit-ignored: the shadow grants user access the guest's PTE clears (U/S);
- rmap-insert-forgotten: a fill forgets the rmap; the walks agree, the state shows the missing rmap.

Browser tests run the system's headless Chromium through Selenium (never a downloaded driver): the
page loads with no console error, its SVG has the expected elements, and a screenshot is saved to
tests/artifacts/ (its path printed). Without Chromium, chromedriver or Selenium they skip, saying why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dmmcheck.conformance.html import story_page
from dmmcheck.conformance.report import show_failure
from dmmcheck.conformance.story import tell
from dmmcheck.spec import load
from rich.console import Console

HERE = Path(__file__).parent
REPORTS = HERE / "reports"
ARTIFACTS = HERE.parent / "artifacts"
STALE = REPORTS / "stale-spte-after-swap-out.jsonl"
USER = REPORTS / "user-bit-ignored.jsonl"
RMAP = REPORTS / "rmap-insert-forgotten.jsonl"
BROKEN_LOCK = HERE.parent / "model" / "prove" / "broken_lock.dmm"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def spec():
    return load(None)


@pytest.fixture(scope="module")
def stories(spec):
    return {p.stem: tell(p, spec) for p in (STALE, USER, RMAP)}


def dmm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dmmcheck", *args], check=False, capture_output=True, text=True, timeout=600,
                          cwd=cwd)


# ---------------------------------------------------------------- the story: walks and where they part


def test_stale_spte_parts_at_the_pte(stories):
    s = stories["stale-spte-after-swap-out"]
    assert s.failure is not None and s.failure.kind == "invariant"
    w = s.snapshots[-1].walks  # swap_out is no access: the walks of the gva the blame names
    assert w is not None and [lv for lv, _, _ in w.guest] == [4, 3, 2, 1] and len(w.shadow) == 4
    assert w.parting == 1 and "no machine page" in w.why and "stale" in w.why
    assert w.gfn == 0xD and w.mfn is None


def test_user_bit_parts_at_the_pte_on_us(stories):
    w = stories["user-bit-ignored"].snapshots[-1].walks
    assert w is not None and w.parting == 1 and "U/S" in w.why
    assert not w.guest[-1][2] & 4 and w.shadow[-1][2] & 4  # the guest's PTE is supervisor-only; the spte is not


def test_agreeing_walks_do_not_part(stories):
    w = stories["rmap-insert-forgotten"].snapshots[-1].walks
    assert w is not None and w.parting is None and w.why.startswith("they agree")


def test_failing_step_changes_are_the_implementations(stories):
    snap = stories["rmap-insert-forgotten"].snapshots[-1]
    changed = {snap.record.op.action} | {n for n, *_ in snap.changes}
    assert "spte" in changed and "rmap" not in changed  # the fill set the spte and forgot the rmap


# ---------------------------------------------------------------- the page, without a browser


def test_page_is_self_contained(stories):
    page = story_page(stories["stale-spte-after-swap-out"])
    assert not re.search(r"<(link|img|iframe)\b|<script[^>]+src=|url\((?!#)|@import", page)
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing to fetch: opens from disk
    assert "dmm replay " + str(STALE) in page


def test_page_annotates_spec_names(stories):
    page = story_page(stories["stale-spte-after-swap-out"])
    # gva1 is 0x40023000 in this trace's scope, mfn4 machine frame 0x5: shown where the names appear
    assert "gva1<small>=0x40023000</small>" in page and "mfn4<small>=0x5</small>" in page
    assert "<h2 id=\"legend\">" in page


def test_a_fixed_bug_replays_clean_and_says_what_was_recorded(spec):
    fixed = HERE / "traces" / "wp0-smep-with-nxe-off.jsonl"  # an observation failure of the VMM, since fixed
    page = story_page(tell(fixed, spec))
    assert "no failure in 8 steps" in page and "The trace recorded another verdict: observation" in page


def test_dmm_report_writes_the_page(tmp_path):
    out = tmp_path / "sub" / "r.html"
    r = dmm("report", str(STALE), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "they part here" in out.read_text() and str(out) in r.stderr


@pytest.mark.parametrize("args, message", [
    (["report", "/nonexistent/trace.jsonl"], "cannot read"),
    (["report", str(STALE), "-o", "/"], "is a folder"),
    (["replay", str(STALE), "--html", "/"], "is a folder"),
])
def test_bad_input_exits_2(args, message):
    r = dmm(*args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_not_a_trace_exits_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{\"format\": \"something else\"}\n")
    r = dmm("report", str(bad), "-o", str(tmp_path / "x.html"))
    assert r.returncode == 2 and "not a dmm-trace/1 trace" in r.stderr and not (tmp_path / "x.html").exists()


def test_replay_html_keeps_the_verdicts_status(tmp_path):
    r = dmm("replay", str(USER), "--html", str(tmp_path / "u.html"))
    assert r.returncode == 1 and (tmp_path / "u.html").is_file()


# ---------------------------------------------------------------- the terminal report


def test_terminal_invariant_failure_shows_changes_and_legend(spec):
    from dmmcheck.conformance.trace import replay

    _, runner, failure = replay(STALE, spec)
    con = Console(width=80, record=True, color_system=None)
    show_failure(con, runner.records, failure, seed=0, trace="t.jsonl", config=runner.config,
                 first_mfn=runner.oracle.au.first_mfn)
    text = con.export_text()
    assert "what the failing step changed" in text and "p2m(vm1, gfn13)" in text
    assert "gva1 = gva 0x40023000" in text and "mfn4 = mfn 0x5" in text
    assert "is unmapped" in text and "is none" not in text


def test_terminal_hex_never_split(spec):
    from dmmcheck.conformance.trace import replay

    _, runner, failure = replay(USER, spec)
    con = Console(width=60, record=True, color_system=None)
    show_failure(con, runner.records, failure, seed=0, trace="a-long/path/to/a/trace-file-name.jsonl")
    text = con.export_text()
    assert "x=0x602000," in text  # whole, on one line
    assert "replay: dmm replay a-long/path/to/a/trace-file-name.jsonl" in text


# ---------------------------------------------------------------- in a real browser


def _browser():
    """A headless Chromium driven by Selenium, or a skip saying what is missing."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"no browser: {CHROMIUM} and {CHROMEDRIVER} are needed (Debian: chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)  # this driver: nothing downloaded


@pytest.fixture(scope="module")
def browser():
    driver = _browser()
    yield driver
    driver.quit()


def _open(browser, path: Path, shot: str) -> list[dict]:
    """Load a page from disk, save a full-page screenshot; the console's messages."""
    browser.get(path.resolve().as_uri())
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1400, min(int(height) + 40, 16000))
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / shot
    browser.save_screenshot(str(out))
    print(f"screenshot: {out}")
    return browser.get_log("browser")


def _no_errors(logs: list[dict]) -> None:
    assert [entry for entry in logs if entry.get("level") == "SEVERE"] == []


def test_browser_stale_spte_diagram(browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = tmp_path / "stale.html"
    assert dmm("report", str(STALE), "-o", str(page)).returncode == 0
    _no_errors(_open(browser, page, "report-stale-spte.png"))
    step = browser.find_element(By.CSS_SELECTOR, "details.step.failing")
    assert step.get_attribute("open") is not None  # the failing step opens by itself
    svg = step.find_element(By.CSS_SELECTOR, "svg.walk")
    assert len(svg.find_elements(By.CSS_SELECTOR, "g.level")) == 4  # PML4E, PDPTE, PDE, PTE
    parting = svg.find_elements(By.CSS_SELECTOR, "g.level.parting")
    assert [p.get_attribute("data-level") for p in parting] == ["1"]
    guest = parting[0].find_element(By.CSS_SELECTOR, "g.entry.guest").get_attribute("data-entry")
    shadow = parting[0].find_element(By.CSS_SELECTOR, "g.entry.shadow").get_attribute("data-entry")
    assert (guest, shadow) == ("0xd021", "0x5021")  # gfn 0xd in the guest's PTE, mfn 0x5 in the spte
    why = svg.find_element(By.CSS_SELECTOR, "text.why").text  # wrapped in two lines
    assert "no machine page" in why and "stale" in why
    assert browser.find_element(By.CSS_SELECTOR, "li.failing").text.startswith("5. swap_out")


def test_browser_user_bit_marks_the_bit(browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = tmp_path / "user.html"
    page.write_text(story_page(tell(USER, load(None))))
    _no_errors(_open(browser, page, "report-user-bit.png"))
    row = browser.find_element(By.CSS_SELECTOR, "details.failing svg.walk g.level.parting")
    bits = {b.get_attribute("data-bit"): "on" in b.get_attribute("class").split()
            for b in row.find_elements(By.CSS_SELECTOR, "g.entry.guest g.bit")}
    assert bits["P"] and not bits["US"]
    shadow = {b.get_attribute("data-bit"): "on" in b.get_attribute("class").split()
              for b in row.find_elements(By.CSS_SELECTOR, "g.entry.shadow g.bit")}
    assert shadow["US"]


def test_browser_timeline_opens_a_step(browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = tmp_path / "rmap.html"
    page.write_text(story_page(tell(RMAP, load(None))))
    _no_errors(_open(browser, page, "report-rmap.png"))
    first = browser.find_element(By.ID, "step-1")
    assert first.get_attribute("open") is None
    browser.find_element(By.CSS_SELECTOR, "li[data-step='1'] a").click()
    assert first.get_attribute("open") is not None
    blamed = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "table.blamed-points tr.blamed td:first-child")]
    assert any(t.startswith("rmap(mfn4") for t in blamed) and any(t.startswith("spte(vm1") for t in blamed)
    _no_errors(browser.get_log("browser"))


def test_browser_prover_counterexample(browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = tmp_path / "prove.html"
    r = dmm("prove", str(BROKEN_LOCK), "-j", "1", "--no-cache", "--html", str(page), "--trace-dir", str(tmp_path))
    assert r.returncode == 1, r.stderr  # a reachable violation
    _no_errors(_open(browser, page, "report-prove.png"))
    cx = browser.find_element(By.ID, "ob-inductive-acquire-mutex")
    assert cx.find_element(By.CSS_SELECTOR, ".src div.hit").text.strip().endswith("implies a = b")
    _, after = cx.find_elements(By.CSS_SELECTOR, "svg.relations")
    nodes = [n.get_attribute("data-element") for n in after.find_elements(By.CSS_SELECTOR, "g.node")]
    assert sorted(nodes) == ["client0", "client1"]
    assert len(after.find_elements(By.CSS_SELECTOR, "g.node.marked")) == 2  # a and b of the blame
    assert "holds" in after.find_element(By.CSS_SELECTOR, "text.attrs.changed").text
    changed = [r.text for r in cx.find_elements(By.CSS_SELECTOR, "table.states tr.changed")]
    assert any(t.startswith("holds(client0)") for t in changed)


def test_browser_campaign_page(browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = tmp_path / "fuzz.html"
    r = dmm("fuzz", "--examples", "3", "--steps", "8", "--html", str(page), "--trace-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    _no_errors(_open(browser, page, "report-campaign.png"))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.coverage tbody tr")
    assert len(rows) == len(load(None).actions)
    assert browser.find_elements(By.CSS_SELECTOR, "table.coverage tr.weak")  # 3 short cases leave gaps


def test_browser_failing_campaign_puts_the_failure_first(browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = tmp_path / "fuzz-fail.html"
    r = dmm("fuzz", "--mutant", "user_bit_ignored", "--examples", "50", "--html", str(page),
            "--trace-dir", str(tmp_path))
    assert r.returncode == 1, r.stderr
    _no_errors(_open(browser, page, "report-campaign-failure.png"))
    # the failing step (whatever the verdict: the walk diagrams have tests of their own above)
    failing = browser.find_element(By.CSS_SELECTOR, "section.failure details.failing")
    assert failing.get_attribute("open") is not None  # it opens by itself
    coverage = browser.find_element(By.CSS_SELECTOR, "table.coverage")
    assert failing.location["y"] < coverage.location["y"]  # the failure above the statistics


def test_browser_mutants_page(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from dmmcheck.conformance.html import mutants_page
    from dmmcheck.conformance.mutation import MutantResult, summary

    results = [MutantResult("rmap_insert_forgotten", True, 1.5, 40, 4, "invariant", description="rmap not filled"),
               MutantResult("quota_ignored", False, 30.0, None, None, None, description="<quota> & more")]
    page = tmp_path / "mutants.html"
    page.write_text(mutants_page(results, summary(results), "full"))
    _no_errors(_open(browser, page, "report-mutants.png"))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.mutants tbody tr")
    assert [r.get_attribute("class") for r in rows] == ["", "blamed"]  # the survivor in red
    assert rows[1].text.endswith("<quota> & more")  # text is escaped, not markup
    assert "1/2 killed" in browser.find_element(By.ID, "verdict").text


def test_model_pages_import_nothing_of_the_harness():
    """The prover's page and ITF writer live in model/, which never imports the conformance harness."""
    for name in ("html.py", "prove_html.py", "itf.py"):
        text = (HERE.parent.parent / "model" / name).read_text()
        assert "conformance" not in re.sub(r'""".*?"""|#.*', "", text, flags=re.S), name


def test_artifacts_folder_is_ignored():
    assert "tests/artifacts/" in (HERE.parent.parent / ".gitignore").read_text()
