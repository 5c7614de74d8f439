"""How GitHub shows a notebook's outputs, for the tests: ``text/html`` through an HTML sanitizer
with GitHub's allow-list (no ``style`` attribute, no ``<style>``, no ``class``), image outputs as
images (``<img src="data:...">``).

The allow-list is the ``WHITELIST`` of GitHub's html-pipeline ``SanitizationFilter``
(github.com/gjtorikian/html-pipeline, lib/html/pipeline/sanitization_filter.rb, MIT), restated
here for bleach.
"""

from __future__ import annotations

import base64

import bleach

TAGS = set(
    "h1 h2 h3 h4 h5 h6 h7 h8 br b i strong em a pre code img tt div ins del sup sub p ol ul table thead "
    "tbody tfoot blockquote dl dt dd kbd q samp var hr ruby rt rp li tr td th s strike summary details".split()
)
ALL = (
    "abbr accept accept-charset accesskey action align alt axis border cellpadding cellspacing char charoff "
    "charset checked clear cols colspan color compact coords datetime dir disabled enctype for frame headers "
    "height hreflang hspace ismap label lang maxlength media method multiple name nohref noshade nowrap open "
    "prompt readonly rel rev rows rowspan rules scope selected shape size span start summary tabindex target "
    "title type usemap valign value vspace width itemprop"
).split()
ATTRIBUTES = {
    "*": ALL,
    "a": ALL + ["href"],
    "img": ALL + ["src", "longdesc"],
    "div": ALL + ["itemscope", "itemtype"],
    "blockquote": ALL + ["cite"],
    "del": ALL + ["cite"],
    "ins": ALL + ["cite"],
    "q": ALL + ["cite"],
}
IMAGES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")


def github_clean(markup: str) -> str:
    """``text/html`` as GitHub shows it: disallowed tags dropped (their text kept, scripts gone)."""
    return bleach.clean(markup, tags=TAGS, attributes=ATTRIBUTES, protocols={"http", "https", "mailto"}, strip=True)


def github_output(data: dict) -> list[str]:
    """One output's fragments as GitHub renders them: its images, and its sanitized HTML."""
    shown = []
    for mime in IMAGES:
        if mime in data:
            raw = data[mime].encode() if mime == "image/svg+xml" else base64.b64decode(data[mime])
            shown.append(f'<img src="data:{mime};base64,{base64.b64encode(raw).decode()}">')
    if "text/html" in data:
        shown.append(github_clean(data["text/html"]))
    return shown
