"""Pure parts of the dashboard: the signed session cookie, page arithmetic and the SVG charts."""

import re
import time

from fleet_server.dashboard.charts import Bar, Series, bar_chart, line_chart, nice_ticks, stacked_bar
from fleet_server.dashboard.pagination import Pager, clamp_page
from fleet_server.dashboard.session import (
    UiSession,
    csrf_token,
    csrf_valid,
    decode_session,
    encode_session,
    new_session,
)

SECRET = "s" * 43


def test_session_round_trips_and_rejects_tampering() -> None:
    session = new_session("token:ci#3", "operator", "ab" * 32)
    cookie = encode_session(session, SECRET)
    assert decode_session(cookie, SECRET) == session
    assert decode_session(cookie, "other-secret") is None
    version, payload, mac = cookie.split(".")
    forged = encode_session(UiSession("admin", "admin", session.token_hash, session.expires, session.nonce), "x")
    assert decode_session(f"{version}.{forged.split('.')[1]}.{mac}", SECRET) is None  # payload swapped
    for garbage in (None, "", "v1", "v1.a.b.c", "v2." + payload + "." + mac, "v1.!!!." + mac, cookie + "x"):
        assert decode_session(garbage, SECRET) is None


def test_expired_session_is_no_session() -> None:
    expired = UiSession("admin", "admin", "00" * 32, int(time.time()) - 1, "nonce")
    assert decode_session(encode_session(expired, SECRET), SECRET) is None


def test_csrf_token_is_per_session_and_per_secret() -> None:
    one, two = new_session("a", "admin", "00" * 32), new_session("a", "admin", "00" * 32)
    token = csrf_token(one, SECRET)
    assert csrf_valid(one, SECRET, token)
    assert not csrf_valid(two, SECRET, token)
    assert not csrf_valid(one, "other", token)
    assert not csrf_valid(one, SECRET, None) and not csrf_valid(one, SECRET, "")


def test_pager_links_keep_the_filters() -> None:
    pager = Pager(page=2, size=50, total=1000, params=(("tag", "eu"), ("online", "online")))
    assert pager.pages == 20 and pager.offset == 50 and (pager.first_item, pager.last_item) == (51, 100)
    assert pager.previous == "?tag=eu&online=online&page=1"
    assert pager.next == "?tag=eu&online=online&page=3"
    last = Pager(page=20, size=50, total=1000)
    assert last.next is None and last.last_item == 1000
    empty = Pager(page=1, size=50, total=0)
    assert empty.pages == 1 and empty.first_item == 0 and empty.previous is None and empty.next is None
    assert clamp_page(99, 50, 1000) == 20 and clamp_page(0, 50, 1000) == 1 and clamp_page(5, 50, 0) == 1


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    assert nice_ticks(0, 95) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0, 0.37) == [0, 0.1, 0.2, 0.3, 0.4]
    assert nice_ticks(5, 5)[0] <= 5 <= nice_ticks(5, 5)[-1]


def test_line_chart_breaks_lines_at_gaps_and_escapes_labels() -> None:
    series = [Series("p95 <ms>", [(0, 1.0), (60, 2.0), (120, None), (180, 4.0), (240, 3.0)]),
              Series("errors", [(0, 0.0)], css_class="s2")]
    svg = str(line_chart(series, title="latency & <errors>", unit=" ms"))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<polyline") == 2  # one gap splits the first series
    assert svg.count("<circle") == 1  # a single point is a dot
    assert "latency &amp; &lt;errors&gt;" in svg and "p95 &lt;ms&gt;" in svg and "<errors>" not in svg
    assert "no data" in str(line_chart([Series("x", [(0, None)])], title="empty"))


def test_bar_chart_scales_bars_to_the_largest_value() -> None:
    svg = str(bar_chart([Bar("digits v2", 750), Bar("digits v1", 250, note="of 1000")], title="versions",
                        max_value=1000))
    widths = [float(width) for width in re.findall(r'<rect class="bar" x="\d+" y="[\d.]+" width="([\d.]+)"', svg)]
    assert len(widths) == 2 and abs(widths[0] / widths[1] - 3) < 0.01
    assert "of 1000" in svg
    assert "no data" in str(bar_chart([], title="none"))


def test_stacked_bar_splits_the_width_by_value() -> None:
    svg = str(stacked_bar([Bar("succeeded", 3, css_class="seg good"), Bar("failed", 1, css_class="seg bad"),
                           Bar("pending", 0)], title="states", width=400))
    widths = [float(width) for width in re.findall(r'<rect class="seg [a-z]+" x="[\d.]+" y="0" width="([\d.]+)"',
                                                    svg)]
    assert widths == [300.0, 100.0]


def test_model_selector_accepts_name_or_name_and_version() -> None:
    from fleet_server.services.device_query import parse_model_selector

    assert parse_model_selector("digits") == ("digits", None)
    assert parse_model_selector("digits:3") == parse_model_selector("digits@3") == ("digits", 3)
    assert parse_model_selector(" digits v12 ") == ("digits", 12)
    assert parse_model_selector("model:v2") == ("model:v2", None)  # not a version: the whole text is the name
