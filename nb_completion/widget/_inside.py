"""The widget's inside views, kernel side: the logit lens and the attention of a clicked token,
"Sample 5" (five sampled branches from a position, forks of one prefill, added to the tree) and a
second model's column for the same prompt.

Each is computed on demand, off the generation path (a thread of its own, never while a run
goes on), and lands in a trait the view draws: ``lens`` (``LogitLens.grid()`` of the position),
``attention_row`` (``Attention.row()`` of the token), ``futures`` (the sampled branches) and
``compare_column``. A view the model cannot give (no final norm to read through, no attention
weights, a remote model) is the same trait with ``error``: the message the panel shows.

Positions are the teaching views': generated token ``index`` (``prompt``: a prompt token), or
``None`` for the end. The lens at a token is what the model predicted *for* it (the tokens before
it, as the distribution); the attention of a token is what it attended to (its row).
"""

from __future__ import annotations

import threading
from typing import Any, Optional

import traitlets as t

from ..api.errors import BadRequest, CompletionError
from ..engine.records import Delta
from . import _protocol as protocol
from ._controls import build
from ._session import Path
from ._tokens import reindex, token_dict

LENS_TOP = 5
SAMPLES = 5


class InsideMixin(t.HasTraits):
    """Mixed into ``CompletionWidget`` (which holds ``_session``, the teaching helpers and the controls)."""

    lens = t.Dict(default_value=None, allow_none=True).tag(sync=True)
    attention_row = t.Dict(default_value=None, allow_none=True).tag(sync=True)
    futures = t.Dict(default_value=None, allow_none=True).tag(sync=True)
    compare_model = t.Unicode("").tag(sync=True)  # a second model's column for the same prompt ("": none)
    compare_column = t.Dict(default_value=None, allow_none=True).tag(sync=True)

    def _inside_init(self) -> None:
        self._inside_thread: Optional[threading.Thread] = None
        self._compare_thread: Optional[threading.Thread] = None
        self._compare_cancel = threading.Event()
        self._futures_records: list[list] = []  # the sampled paths' records (the static copy's columns)
        self._compare_records: list = []
        self.observe(self._compare_on_run, names=["run"])
        self.observe(self._compare_model_changed, names=["compare_model"])

    # ---- where a position is -------------------------------------------------------------------

    def _inside_path(self, backend: Any) -> Path:
        path = self._path()
        if path is None:
            if not self.content:
                raise BadRequest("content", "write a prompt first")
            path = self._new_path("step", self.content, [], root=True)
            with self._lock:
                self._show(path, new_run=False)
        self._ids_before(backend, path, 0)  # sets path.prompt_ids
        return path

    def _context(
        self, backend: Any, index: Optional[int], prompt: bool, through: bool
    ) -> tuple[list[int], Any, Optional[str], Optional[int]]:
        """``(ids, index, token text, token id)``: the ids before the position (``through``: up
        to and including it), the position and the token there (None at the end)."""
        if self.running:
            raise BadRequest("index", "a generation is running: look inside once it ends (or press Stop)")
        path = self._inside_path(backend)
        ids, n = path.prompt_ids, len(path.records)
        if prompt:
            low = 0 if through else 1
            if isinstance(index, bool) or not isinstance(index, int) or not low <= index < len(ids):
                raise BadRequest("index", f"no prompt token {index!r} here ({low}..{len(ids) - 1})")
            return (ids[: index + 1] if through else ids[:index]), index, backend.piece(ids[index]), ids[index]
        i = n if index is None else index
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= n:
            raise BadRequest("index", f"no token #{index} (the output has {n} tokens)")
        if through and i == n:  # the end: the last token there is
            return self._ids_before(backend, path, n), None, None, None
        upto = self._ids_before(backend, path, i + 1) if i < n else None
        text = backend.piece(upto[-1]) if upto is not None else None  # as the lens names tokens
        return (upto if through else self._ids_before(backend, path, i)), i, text, (upto[-1] if upto is not None else None)

    # ---- the logit lens and attention ------------------------------------------------------------

    def show_lens(self, index: Optional[int] = None, prompt: bool = False) -> dict:
        """The logit lens where generated token ``index`` was predicted (``prompt``: a prompt
        token; None: the next token after the end): each layer's top tokens, the final answer and
        the layer where it first becomes top. Sets and returns ``lens``."""
        from ..inside.lens import lens_of_ids

        try:
            backend = self._local()
            ids, at, chosen, chosen_id = self._context(backend, index, prompt, through=False)
            lens = lens_of_ids(backend, ids, last_only=True)
            grid = lens.grid(len(ids) - 1, LENS_TOP, chosen_id=chosen_id)
            out = {
                **grid,
                "index": at,
                "prompt": prompt,
                "chosen": chosen,
                "chosen_first": lens.first_layer_with(len(ids) - 1, chosen) if chosen else None,
            }
        except CompletionError as exc:
            out = {"index": index, "prompt": prompt, "error": _said(exc)}
        self.lens = out
        self._refresh_static_copy()
        return out

    def show_attention(self, index: Optional[int] = None, prompt: bool = False) -> dict:
        """What generated token ``index`` (``prompt``: a prompt token; None: the last token)
        attended to, in every layer and head. Sets and returns ``attention_row``."""
        from ..inside.attention import attention_of_ids

        try:
            backend = self._local()
            ids, at, _, _ = self._context(backend, index, prompt, through=True)
            row = attention_of_ids(backend, ids).row()
            out = {**row, "position": at, "prompt": prompt}
        except CompletionError as exc:
            out = {"index": index, "prompt": prompt, "error": _said(exc)}
        self.attention_row = out
        self._refresh_static_copy()
        return out

    # ---- Sample 5 --------------------------------------------------------------------------------

    def sample_futures(self, index: Optional[int] = None, n: int = SAMPLES) -> dict:
        """``n`` sampled continuations from before generated token ``index`` (None: the end),
        forks of one prefill, each a new branch of the tree (kind "sample"); the shown path stays.
        Samples with the controls' settings, or at temperature 1 when the strategy is greedy.
        Sets and returns ``futures``."""
        from ..service import open_events

        self.stop(wait=True)
        backend = self._local()
        origin = self._inside_path(backend)
        i = len(origin.records) if index is None else index
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= len(origin.records):
            raise BadRequest("index", f"no token #{index} (the output has {len(origin.records)} tokens)")
        values = dict(self._values())
        greedy = values["strategy"] == "greedy"
        if greedy:
            values.update(strategy="top_p", temperature=1.0, top_p=1.0)
        request = build(values, origin.prompt + "".join(r.text for r in origin.records[:i]))
        ids = self._ids_before(backend, origin, i)
        seed = values["seed"] if values["seed"] is not None else 0
        cancel = threading.Event()
        try:  # all opened before any is read: one prefill, the paths stepped together
            streams = [
                open_events(request, seed=seed + j, cancel=cancel, plan=backend.prepare(request, ids=list(ids))) for j in range(n)
            ]
            runs = [[r for e in s if isinstance(e, Delta) for r in e.tokens] for s in streams]
        except BaseException:
            cancel.set()
            raise
        paths = []
        with self._lock:
            tree = self._session.tree
            for j, records in enumerate(runs):
                tree.current = origin.id
                made = self._new_path("sample", origin.prompt, origin.records[:i] + reindex(records, i), split=i)
                made.prompt_ids = list(origin.prompt_ids)
                mean = sum(r.logprob for r in records) / len(records) if records else None
                paths.append({
                    "id": made.id, "seed": seed + j, "text": "".join(r.text for r in records),
                    "mean_logprob": None if mean is None else round(mean, 4), "tokens": [token_dict(r) for r in reindex(records, i)],
                })  # fmt: skip
            tree.current = origin.id
            self._publish_tree()
            setting = "temperature 1 (the strategy is greedy)" if greedy else "the current settings"
            self._futures_records = runs
            self.futures = {"index": i, "from": origin.id, "setting": setting, "paths": paths}
        self._refresh_static_copy()
        return self.futures

    # ---- a second model's column -------------------------------------------------------------------

    def _compare_on_run(self, change: Any) -> None:
        """A Generate started: the second column runs the same prompt on its model."""
        path = self._path()
        if self.compare_model and path is not None and path.kind == "generate" and not path.records:
            self.run_compare()

    def _compare_model_changed(self, change: Any) -> None:
        self._compare_cancel.set()
        if not change["new"]:
            self.compare_column = None
        elif self.content:
            self.run_compare()

    def run_compare(self, wait: bool = False) -> Optional[dict]:
        """Run the prompt (the ``content`` control, with the current settings and seed) on
        ``compare_model``, into ``compare_column`` (tokens as the heatmap shows them)."""
        self._compare_cancel.set()
        cancel = self._compare_cancel = threading.Event()
        values = {**self._values(), "model_name": self.compare_model}
        model = self.compare_model
        self.compare_column = {"model": model, "status": "running", "tokens": [], "prompt": self.content}

        def work() -> None:
            from ..service import apply_chat, open_events

            records: list = []
            try:
                request = build(values, self.content)
                if values["chat"]:
                    request = apply_chat(request)
                for event in open_events(request, seed=values["seed"], cancel=cancel):
                    if cancel.is_set():
                        return
                    if isinstance(event, Delta) and event.tokens:
                        records.extend(event.tokens)
                        self._set_column(cancel, model, "running", request.content, records)
                self._set_column(cancel, model, "done", request.content, records)
                if not cancel.is_set():
                    self._compare_records = list(records)
                    self._refresh_static_copy()
            except CompletionError as exc:
                self._set_column(cancel, model, "error", self.content, records, _said(exc))
            except Exception as exc:  # the panel must keep working
                self._set_column(cancel, model, "error", self.content, records, f"{type(exc).__name__}: {exc}")

        self._compare_thread = threading.Thread(target=work, daemon=True, name="nb_completion-compare")
        self._compare_thread.start()
        if wait:
            self._compare_thread.join()
        return self.compare_column

    def _set_column(self, cancel: threading.Event, model: str, status: str, prompt: str, records: list, error: str = "") -> None:
        if cancel.is_set() and status != "error":
            return
        column = {"model": model, "status": status, "prompt": prompt, "tokens": [token_dict(r) for r in records]}
        if error:
            column["error"] = error
        self.compare_column = column

    # ---- the static copy ----------------------------------------------------------------------------

    def inside_svgs(self) -> list[str]:
        """The inside views shown, as SVG images for the saved notebook's copy (each with its alt
        text): the lens grid, the attention row (the last layer, the mean over heads), the futures
        and the second model's column as heatmap columns."""
        from ..notebook.render_inside_svg import attention_svg, lens_svg
        from ..notebook.render_svg import columns_svg

        out = []
        if self.lens and "error" not in self.lens:
            out.append(lens_svg(self.lens))
        row = self.attention_row
        if row and "error" not in row:
            out.append(attention_svg(row, row["layers"] - 1))
        if self.futures and self._futures_records:
            columns = [
                (f"seed {p['seed']}", f"mean log p {p['mean_logprob']:.2f} per token" if p["mean_logprob"] is not None else "", r)
                for p, r in zip(self.futures["paths"], self._futures_records)
            ]
            where = f"{len(columns)} futures from position #{self.futures['index']}"
            out.append(
                columns_svg(columns, header=where, width=24, label=f"{where}, each with its mean log-probability per token")
            )
        column = self.compare_column
        if self.compare_model and column and column.get("status") == "done" and self._compare_records:
            second = f"the second model, {column['model']}, on the same prompt"
            out.append(columns_svg([(column["model"], "", self._compare_records)], header=column["prompt"][-80:], label=second))
        return out

    # ---- messages ----------------------------------------------------------------------------------

    def _inside_msg(self, kind: str, content: dict) -> bool:
        """Handle an inside message from the browser (on a thread of its own, errors shown as the
        teaching views' are: ``_guarded``); False if ``kind`` is not one."""
        index, prompt = content.get("index"), bool(content.get("prompt"))
        if kind == protocol.LENS:
            job = lambda: self.show_lens(index, prompt)  # noqa: E731
        elif kind == protocol.ATTENTION:
            job = lambda: self.show_attention(index, prompt)  # noqa: E731
        elif kind == protocol.SAMPLE:
            job = lambda: self.sample_futures(index)  # noqa: E731
        else:
            return False
        self._inside_thread = threading.Thread(target=self._guarded, args=(job,), daemon=True)
        self._inside_thread.start()
        return True


def _said(exc: CompletionError) -> str:
    """The message for the panel: a ``BadRequest``'s own words (no field prefix), else the detail."""
    return exc.message if isinstance(exc, BadRequest) else exc.detail
