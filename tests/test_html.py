"""hlviz.plotting.html: token heat maps are self-contained, escaped, and state their colour scale."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from hlviz.errors import OptionError, ShapeMismatchError
from hlviz.plotting.html import HTML, diverging_colour, token_heatmap_html

EVIL = "<script>alert(1)</script>"


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text, self.titles = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.titles += [v for k, v in attrs if k == "title"]

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Collect:
    parser = _Collect()
    parser.feed(page)
    return parser


def test_a_script_token_appears_as_text_never_as_markup():
    page = token_heatmap_html(["hi", EVIL, '"quoted" & <b>'], [0.1, 0.9, -0.3],
                              title=EVIL, labels=[EVIL])  # fmt: skip
    parsed = _parse(page)
    assert "script" not in parsed.tags and "b" not in parsed.tags
    assert set(parsed.tags) <= {"div", "span"}
    assert parsed.text.count(EVIL) == 3  # token, title, row label: shown as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script" not in page
    assert any(EVIL in t for t in parsed.titles)  # tooltip holds it as text too
    assert '"quoted" & <b>' in parsed.text and "&lt;b&gt;" in page


def test_attribution_to_html_escapes_its_tokens():
    from hlviz.attribution import Attribution

    a = Attribution(torch.tensor([[0.2, -0.4]]), "saliency", 0, None, None, None,
                    torch.tensor([[3, 4]]), tokens=[["ok", EVIL]])  # fmt: skip
    parsed = _parse(a.to_html(title="x"))
    assert "script" not in parsed.tags and EVIL in parsed.text


def test_self_contained_no_js_no_cdn():
    page = token_heatmap_html([["a", "b"], ["c", "d", "e"]], [[1, -1], [0, 0.5, 2]])
    assert isinstance(page, HTML) and page._repr_html_() == str(page)
    lowered = page.lower()
    for needle in ("<script", "http:", "https:", "//cdn", "<link", "<img", "onload", "onclick"):
        assert needle not in lowered
    assert page.count('class="hlviz-row"') == 2 and page.count('class="hlviz-token"') == 5


def test_one_shared_symmetric_scale_with_stated_limits():
    page = token_heatmap_html([["a", "b"], ["c"]], [[0.5, -2.0], [1.0]])
    assert "vmin -2 " in page and " vmax 2<" in page
    colours = re.findall(r"background-color: rgb\((\d+), (\d+), (\d+)\)", page)
    assert tuple(map(int, colours[1])) == (33, 102, 172)  # -2 is the blue end
    assert tuple(map(int, colours[0])) == diverging_colour(0.5, -2, 2)
    titled = _parse(token_heatmap_html(["x"], [0.25], vmin=-1, vmax=1)).titles
    assert titled == ["'x': +0.25"]
    fixed = token_heatmap_html(["x"], torch.tensor([0.25]), vmin=-1, vmax=1)
    assert "vmin -1 " in fixed and "vmax 1<" in fixed


def test_diverging_colour_ends_and_centre():
    assert diverging_colour(0, -1, 1) == (255, 255, 255)
    assert diverging_colour(1, -1, 1) == (178, 24, 43) == diverging_colour(9, -1, 1)
    assert diverging_colour(-1, -1, 1) == (33, 102, 172)
    assert diverging_colour(5, 0, 10) == (255, 255, 255)  # no zero inside: the middle is white
    assert diverging_colour(float("nan"), -1, 1) == (255, 255, 255)


def test_whitespace_is_visible_and_empty_tokens_keep_their_place():
    page = token_heatmap_html(["a", "\n", "\t", ""], np.array([0.0, 1.0, 2.0, 3.0]))
    assert "\u23ce" in page and "\u21e5" in page and "&#8203;" in page


@pytest.mark.parametrize(
    ("tokens", "values", "kwargs", "error", "message"),
    [
        ("abc", [1, 2, 3], {}, OptionError, r"tokens must be a list of strings"),
        (["a", "b"], [1.0], {}, ShapeMismatchError, r"row 0 has 2 tokens but 1 values"),
        ([["a"], ["b"]], [[1.0]], {}, ShapeMismatchError, r"2 row\(s\) of tokens but 1 row"),
        (["a"], [1.0], {"labels": ["x", "y"]}, ShapeMismatchError, r"2 labels for 1 rows"),
        (["a"], [1.0], {"vmin": 1, "vmax": 0}, OptionError, r"vmin must be below vmax"),
    ],
)
def test_errors(tokens, values, kwargs, error, message):
    with pytest.raises(error, match=message):
        token_heatmap_html(tokens, values, **kwargs)
