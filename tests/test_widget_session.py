"""The widget's run state (``widget/_session.py``) on its own: no traitlets, no widget, no
engine; hand-made token records."""

from __future__ import annotations

import dataclasses
import math

import pytest

from nb_completion.api.errors import BadRequest
from nb_completion.engine.records import TokenRecord
from nb_completion.widget import _protocol as protocol
from nb_completion.widget._session import Session, Tree
from nb_completion.widget._tokens import branch_ids
from nb_completion.engine.backend import BackendKind


def rec(index: int, text: str) -> TokenRecord:
    top = ((text, math.log(0.6)), (" dog", math.log(0.3)), (" bird", math.log(0.1)))
    return TokenRecord(index, 100 + index, text, math.log(0.6), 1, top, 0.9)


WORDS = [" the", " cat", " sat", " on"]


def test_a_run_places_its_batches_after_a_branchs_prefix():
    s = Session()
    s.begin([rec(0, " a"), rec(1, " dog")], points={1}, constrained=True)
    start, placed = s.add([rec(0, " ran"), rec(1, " off")])  # the engine counts from 0
    assert start == 2 and [r.index for r in placed] == [2, 3]
    assert s.prefix_text == " a dog" and s.text == " a dog ran off"
    assert [r.text for r in s.generated] == [" ran", " off"] and s.constrained
    assert [d.get("branch", False) for d in s.dicts()] == [False, True, False, False]
    assert s.live_metrics()["tokens"] == 2  # what this run generated, not the kept prefix


def test_a_branch_keeps_the_tokens_before_it_and_the_earlier_branch_points():
    s = Session()
    s.begin([], points={0, 3}, constrained=False)
    s.add([rec(i, w) for i, w in enumerate(WORDS)])
    prefix, branch, points = s.branch_from(2, " dog")
    assert [r.text for r in prefix] == [" the", " cat", " dog"]
    assert prefix[-1].token_id == -1 and prefix[-1].rank == 2  # measured by the replaced token's distribution
    assert branch == {"index": 2, "chosen": " dog", "original": " sat", "rank": 2}
    assert points == {0, 2}  # 3 lay after the branch: gone
    with pytest.raises(BadRequest) as missing:
        s.branch_from(4, " dog")
    assert missing.value.field == "index"
    with pytest.raises(BadRequest) as unknown:
        s.branch_from(1, " fish")
    assert unknown.value.field == "text"


def test_the_tree_hangs_runs_under_the_root_and_branches_under_the_shown_path():
    s = Session()
    tree = s.tree
    root = tree.start("P", [], None, source="P")
    root.records = [rec(i, w) for i, w in enumerate(WORDS)]
    branch = tree.start("P", root.records[:1], {"index": 1}, source="P")
    again = tree.start("P", [], None, source="P")  # another Generate of the same prompt
    assert (root.parent, branch.parent, again.parent) == (None, 0, 0)
    assert [i["depth"] for i in tree.items()] == [0, 1, 1] and tree.items()[-1]["current"]
    s.show(branch)
    assert tree.current == branch.id and s.branch_points == {1} and s.prefix_len == 0
    s.records = s.records + [rec(1, " dog")]
    s.sync_path("templated P")
    assert [r.text for r in branch.records] == [" the", " dog"] and branch.prompt == "templated P"
    fresh = tree.start("Q", [], None, source="Q")  # another prompt: a new tree
    assert fresh.id == 0 and len(tree.paths) == 1 and tree.source == "Q"
    with pytest.raises(BadRequest) as bad:
        tree.get(5)
    assert bad.value.field == "id"


def test_scoring_another_text_adds_a_root_and_keeps_the_branches():
    tree = Tree()
    root = tree.start("P", [], None, source="P")
    branch = tree.new("force", "P", [], source="P", split=0)
    scored = tree.new("score", "Q", [], source="Q", root=True, keep=True)  # Score on a new prompt
    assert [p.id for p in tree.paths] == [root.id, branch.id, scored.id] and scored.parent is None
    assert tree.source == "Q" and [i["depth"] for i in tree.items()] == [0, 1, 0]
    step = tree.new("step", "Q", [], source="Q")  # a Step on the scored text hangs under it
    again = tree.start("Q", [], None, source="Q")  # a Generate of it: under its own root, not P's
    assert (step.parent, again.parent, again.source) == (scored.id, scored.id, "Q")
    tree.current = branch.id
    assert tree.source == "P"  # showing an old branch: its tree's prompt


def test_an_empty_tree_has_no_source_and_nothing_shown():
    tree = Tree()
    assert tree.source is None and tree.path() is None and tree.items() == []


def test_the_kernels_messages_have_the_shape_protocol_js_reads():
    assert protocol.delta(3, 2, [{"index": 2}], {"tokens": 1}) == {
        "type": "delta", "run": 3, "start": 2, "tokens": [{"index": 2}], "metrics": {"tokens": 1},
    }  # fmt: skip
    assert protocol.snapshot(3, [], {}) == {"type": "snapshot", "run": 3, "tokens": [], "metrics": {}}
    assert protocol.kind_of({"type": "step"}) == "step" and protocol.kind_of("step") is None


def test_the_view_messages_are_the_ones_protocol_js_sends():
    import re
    from pathlib import Path

    js = (Path(__file__).resolve().parent.parent / "js" / "src" / "protocol.js").read_text()
    sent = set(re.findall(r'=> \(\{ type: "(\w+)"', js))
    assert sent == set(protocol.VIEW_MESSAGES)


def test_a_branch_carries_the_alternatives_token_id_when_the_record_knows_it():
    s = Session()
    s.begin([], points=set(), constrained=False)
    s.add([dataclasses.replace(rec(i, w), top_ids=(100 + i, 7, 8)) for i, w in enumerate(WORDS)])
    prefix, _, _ = s.branch_from(2, " bird")
    assert [r.token_id for r in prefix] == [100, 101, 8] and prefix[-1].piece == " bird"


class EncodingBackend:
    kind = BackendKind.LOCAL

    def encode(self, text: str) -> list[int]:
        return [1, len(text)]


def test_branch_ids_are_the_prompt_ids_then_the_kept_and_chosen_ids_or_none():
    kept = [rec(0, " the"), dataclasses.replace(rec(1, " dog"), token_id=7)]
    assert branch_ids(EncodingBackend(), "Once", kept) == [1, 4, 100, 7]
    unknown = kept[:1] + [dataclasses.replace(kept[1], token_id=-1)]  # a remote model's alternative
    assert branch_ids(EncodingBackend(), "Once", unknown) is None

    class Remote:
        kind = BackendKind.REMOTE

    assert branch_ids(Remote(), "Once", kept) is None  # a backend that takes no ids
