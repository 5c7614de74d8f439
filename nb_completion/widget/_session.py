"""The widget's run state without traitlets: the shown tokens (a branch's prefix + what the run
generated), the branch points, and the teaching tree of every path.

``CompletionWidget`` holds one ``Session`` and copies what it shows into traits; the session
itself knows nothing of traits, messages or threads beyond its lock, so it is tested directly
(``tests/test_widget_session.py``).

The tree keeps every path: each Generate, Step, branch from an alternative and forced token. A
path is its prompt and its tokens; a child records where it split from its parent and the token
chosen there.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..api.errors import BadRequest
from ..engine.records import TokenRecord
from ._tokens import _finite, branch_record, live_metrics, reindex, token_dict


@dataclass
class Path:
    id: int
    parent: Optional[int]
    split: int  # the index of the first token that differs from the parent's
    kind: str  # generate | step | branch | force
    source: str  # the content control the tree started from
    prompt: str  # the text the model reads before the tokens (templated with chat)
    records: list[TokenRecord] = field(default_factory=list)
    prompt_ids: Optional[list[int]] = None

    def logprob(self) -> float:
        return sum(_finite(r.logprob) for r in self.records)


def tree_item(path: Path, current: int, depth: int) -> dict[str, Any]:
    at = path.records[path.split] if path.parent is not None and path.split < len(path.records) else None
    return {
        "id": path.id, "parent": path.parent, "depth": depth, "split": path.split, "kind": path.kind,
        "token": at.text if at is not None else None, "tokens": len(path.records),
        "logprob": round(path.logprob(), 4), "current": path.id == current,
    }  # fmt: skip


class Tree:
    """Every path of one prompt; ``current`` is the one shown."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.current: Optional[int] = None

    def path(self) -> Optional[Path]:
        return self.paths[self.current] if self.current is not None else None

    @property
    def source(self) -> Optional[str]:
        """The content control the shown path's tree started from (None before the first path)."""
        path = self.path()
        return path.source if path is not None else None

    def new(
        self,
        kind: str,
        prompt: str,
        records: Sequence[TokenRecord],
        *,
        source: str,
        split: int = 0,
        root: bool = False,
        keep: bool = False,
    ) -> Path:
        """A new path: a new tree with ``root`` (or when there is none yet), a new root beside the
        others with ``root`` and ``keep`` (Score on another text keeps the branches); otherwise a
        Generate hangs under its tree's root, anything else under the current path."""
        if root and not keep:
            self.paths = []
        if root or not self.paths:
            parent = None
        else:
            parent = self.lineage(self.paths[self.current])[-1].id if kind == "generate" else self.current
        own = source if parent is None else self.paths[parent].source
        path = Path(len(self.paths), parent, split, kind, own, prompt, list(records))
        self.paths.append(path)
        self.current = path.id
        return path

    def start(self, prompt: str, prefix: Sequence[TokenRecord], branch: Optional[dict], source: str) -> Path:
        """The path of a run (Generate, or a branch when ``branch`` is given)."""
        if branch is None:
            return self.new("generate", prompt, prefix, source=source, root=self.source != source)
        return self.new("branch", prompt, prefix, source=source, split=branch["index"])

    def merge_duplicate(self) -> Optional[int]:
        """When the current path is the newest and another path has the same prompt and tokens (a
        Generate re-run with the same seed): drop it and show that one. Returns the kept path's
        id, or None when nothing was merged."""
        path = self.path()
        if path is None or path.id != len(self.paths) - 1:
            return None
        ids = [r.token_id for r in path.records]
        for other in self.paths[:-1]:
            if other.prompt == path.prompt and [r.token_id for r in other.records] == ids:
                self.paths.pop()
                self.current = other.id
                return other.id
        return None

    def get(self, path_id: Any) -> Path:
        if not isinstance(path_id, int) or not 0 <= path_id < len(self.paths):
            raise BadRequest("id", f"no branch {path_id!r} (the tree has {len(self.paths)})")
        return self.paths[path_id]

    def lineage(self, path: Path) -> list[Path]:
        out = [path]
        while out[-1].parent is not None:
            out.append(self.paths[out[-1].parent])
        return out

    def items(self) -> list[dict[str, Any]]:
        """The tree for the view: one item per path, with its depth, the original first."""
        items, depth = [], {}
        for path in self.paths:
            depth[path.id] = 0 if path.parent is None else depth[path.parent] + 1
            items.append(tree_item(path, self.current, depth[path.id]))
        return items


class Session:
    """The shown tokens of one widget and where they came from."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.records: list[TokenRecord] = []  # shown tokens: a branch's prefix + generated
        self.prefix_len = 0  # how many of them a branch kept (not generated by this run)
        self.branch_points: set[int] = set()
        self.constrained = False  # the run has a response_format
        self.tree = Tree()

    # ---- what is shown ----

    @property
    def generated(self) -> list[TokenRecord]:
        return self.records[self.prefix_len :]

    @property
    def prefix_text(self) -> str:
        return "".join(r.text for r in self.records[: self.prefix_len])

    @property
    def text(self) -> str:
        return "".join(r.text for r in self.records)

    def dicts(self, records: Optional[Sequence[TokenRecord]] = None) -> list[dict]:
        """``records`` (default: all shown) as the browser sees them, branch points marked."""
        records = self.records if records is None else records
        return [token_dict(r, branch=r.index in self.branch_points) for r in records]

    def live_metrics(self) -> dict[str, Any]:
        return live_metrics(self.generated)

    # ---- a run ----

    def begin(self, prefix: Sequence[TokenRecord], points: set[int], constrained: bool) -> None:
        """A run starts after ``prefix`` (a branch's kept tokens; empty for Generate)."""
        self.records = list(prefix)
        self.prefix_len = len(prefix)
        self.branch_points = set(points)
        self.constrained = constrained

    def add(self, records: Sequence[TokenRecord]) -> tuple[int, list[TokenRecord]]:
        """A batch the run generated, placed after the shown tokens: ``(start, placed records)``."""
        fresh = reindex(records, self.prefix_len)
        start = len(self.records)
        self.records.extend(fresh)
        return start, fresh

    def branch_from(self, index: Any, text: Any) -> tuple[list[TokenRecord], dict, set[int]]:
        """``(prefix, branch, points)`` of a branch that puts ``text`` (one of token ``index``'s
        alternatives) in its place; ``BadRequest`` names ``index`` or ``text``."""
        with self.lock:
            records = list(self.records)
            points = set(self.branch_points)
        if not isinstance(index, int) or not 0 <= index < len(records):
            raise BadRequest("index", f"no token #{index} (the output has {len(records)} tokens)")
        try:
            alt = branch_record(records[index], text)
        except ValueError as exc:
            raise BadRequest("text", str(exc)) from None
        branch = {"index": index, "chosen": text, "original": records[index].text, "rank": alt.rank}
        return records[:index] + [alt], branch, {p for p in points if p < index} | {index}

    def show(self, path: Path) -> None:
        """Show ``path``'s tokens (nothing is re-run): branch points from its lineage."""
        self.tree.current = path.id
        self.records = list(path.records)
        self.prefix_len = 0
        self.branch_points = {p.split for p in self.tree.lineage(path) if p.parent is not None}

    def sync_path(self, prompt: str) -> None:
        """The current path holds the shown tokens (after a run, a step, a prompt template)."""
        path = self.tree.path()
        if path is not None:
            path.records = list(self.records)
            path.prompt = prompt
            if self.tree.merge_duplicate() is not None:
                self.show(self.tree.path())
