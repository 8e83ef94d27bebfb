"""Steps/s over time: a campaign samples [seconds, steps] about once a second (FuzzResult.rate_samples),
the JSON carries them, a many-worker campaign sums them per second, and the HTML campaign page draws
them as an inline SVG line chart (checked in the page's text; the browser tests draw the page)."""

from __future__ import annotations

import re

from dmmcheck.conformance.adapter import Config
from dmmcheck.conformance.campaign import merge, sum_samples
from dmmcheck.conformance.fuzz import FuzzResult, fuzz
from dmmcheck.conformance.html import campaign_page, rate_chart
from dmmcheck.conformance.report import as_json
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.spec import load

SPEC = load(None)
ACTIONS = list(SPEC.actions)


def test_a_short_campaign_samples_about_once_a_second():
    r = fuzz(BundledVmm, SPEC, Config(), seconds=3.5, seed_=0)
    s = as_json(r, ACTIONS, None)["rate_samples"]
    assert s[0] == [0.0, 0] and s[-1][1] == r.steps > 0  # from the start to the end
    times, steps = [t for t, _ in s], [n for _, n in s]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert steps == sorted(steps) and steps[1] > 0
    assert 4 <= len(s) <= 7  # a sample a second (not one a step, nor only the ends)
    assert all(b - a >= 0.99 for a, b in zip(times, times[1:-1]))


def test_workers_samples_sum_per_second():
    a = [[0.0, 0], [1.0, 100], [2.0, 200], [2.5, 240]]
    b = [[0.0, 0], [1.2, 50], [2.2, 150]]
    assert sum_samples([a, b]) == [[0.0, 0], [1.0, 100], [2.0, 250], [2.5, 390]]
    assert sum_samples([[], a]) == [[0.0, 0], [1.0, 100], [2.0, 200], [2.5, 240]]
    assert sum_samples([]) == []
    ra, rb = FuzzResult("vmm", 0, steps=240, rate_samples=a), FuzzResult("vmm", 1, steps=150, rate_samples=b)
    assert merge([ra, rb], 0, 2.5, "vmm", None, 4096).rate_samples[-1] == [2.5, 390]


def test_the_campaign_page_draws_steps_per_second_over_time():
    r = FuzzResult("vmm", 0, steps=300, seconds=3.0, rate_samples=[[0.0, 0], [1.0, 100], [2.0, 250], [3.0, 300]])
    page = campaign_page(r, ACTIONS, None, None)
    svg = re.search(r"<svg class=\"rate\".*?</svg>", page, re.S)
    assert svg and "steps/s over time" in svg.group(0)
    pts = re.search(r"<polyline[^>]*points=\"([^\"]+)\"", svg.group(0)).group(1).split()
    assert len(pts) == 4  # the first rate from the start, then one point per interval
    ys = [float(p.split(",")[1]) for p in pts]
    assert ys[2] < ys[1] and ys[3] > ys[1]  # 150/s is drawn above 100/s, 50/s below (SVG y grows down)
    assert ">150<" in svg.group(0)  # the axis says the top rate
    assert rate_chart([[0.0, 0]]) == "" and "<svg class=\"rate\"" not in campaign_page(
        FuzzResult("vmm", 0), ACTIONS, None, None)
