"""The saved static copy is hidden only under its own live widget (issue 22, item 3): the copy
carries the widget's key, the front end hides that key only, and no global CSS rule hides every
copy (which made copies saved before a kernel restart vanish beside any other live widget)."""

from __future__ import annotations

import re
from pathlib import Path

from nb_completion import CompletionWidget

JS = Path(__file__).resolve().parent.parent / "js" / "src"


def test_each_widgets_static_copy_carries_its_own_key():
    first, second = CompletionWidget("a"), CompletionWidget("b")
    keys = []
    for widget in (first, second):
        assert widget.copy_key == widget.model_id and widget.copy_key
        html = widget._static_copy()["text/html"]
        (key,) = re.findall(r'<div class="nbc-static-copy" data-nbc-copy="([^"]+)">', html)
        keys.append(key)
    assert keys == [first.model_id, second.model_id] and keys[0] != keys[1]
    assert "copy_key" in first.keys  # synced: the front end reads it


def test_the_stylesheet_has_no_rule_hiding_every_copy():
    css = (JS / "widget.css").read_text()
    rules = [r for r in re.split(r"}", re.sub(r"/\*.*?\*/", "", css, flags=re.S)) if "nbc-static-copy" in r]
    assert rules == []
    hider = (JS / "copy_hider.js").read_text()
    assert 'data-nbc-copy="${key}"' in hider
