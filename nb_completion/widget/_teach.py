"""The widget's teaching views, kernel side: Step (one token, the draw shown), the next-token
distribution at a position, forcing a token, Score (the prompt's tokens by surprisal), the
prompt's tokens for "show tokens", and the branch tree.

The tree keeps every path: each Generate, Step, branch from an alternative and forced token. A
path is its prompt and its tokens; a child records where it split from its parent and the token
chosen there. Step extends the shown path; a branch or a forced token makes a new one. Showing a
path only swaps the shown tokens: nothing is re-run. A later Step or distribution continues the
path's exact token ids through the engine, which forks the cached prefix (``stepping.py``).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any, Optional

from ..api.bounds import ALTERNATIVES
from ..api.errors import BadRequest, CompletionError
from ..engine import registry
from ..engine.backend import is_local
from ..engine.records import TokenRecord
from ._controls import build, check_controls, first_problem
from ._session import Path, Session
from ._tokens import _finite


def prompt_token_dicts(backend: Any, ids: list[int], scored: Optional[list] = None) -> list[dict[str, Any]]:
    """The prompt's tokens for the view (``data-prompt``), with their scores when ``scored``."""
    from ..engine.detokenize import StreamingDetokenizer

    specials = set(getattr(backend.tokenizer, "all_special_ids", []) or [])
    detok = StreamingDetokenizer(backend.tokenizer)
    out = []
    for i, token_id in enumerate(ids):
        piece = backend.piece(token_id)
        item: dict[str, Any] = {
            "index": i,
            "token_id": token_id,
            "text": detok.add_token(token_id),
            "piece": piece,
            "prompt": True,
        }
        if token_id in specials:
            item["special"] = True
        if scored is not None and scored[i].logprob is not None:
            t = scored[i]
            item.update(
                logprob=round(t.logprob, 5),
                rank=t.rank,
                entropy=round(t.entropy, 4),
                top=[[a, round(_finite(lp), 5)] for a, lp in t.top],
            )
        out.append(item)
    return out


class TeachingMixin:
    """Mixed into ``CompletionWidget`` (which holds the traits, ``_session`` and ``_start``)."""

    _session: Session

    def _teach_init(self) -> None:
        self._generator: Any = None  # the sampling generator Step continues
        self._generator_path: Optional[int] = None
        self._step_lock = threading.Lock()
        self._dist: Any = None  # the Distribution shown (stepping.Distribution)
        self._dist_key: tuple = ()
        self._scored_text: Optional[str] = None  # the text the shown perplexity belongs to
        self.observe(self._forget_stale_score, names=["content"])

    # ---- the tree ------------------------------------------------------------------------------

    def _path(self) -> Optional[Path]:
        return self._session.tree.path()

    def _new_path(self, kind: str, prompt: str, records: list[TokenRecord], split: int = 0, root: bool = False) -> Path:
        return self._session.tree.new(kind, prompt, records, source=self.content, split=split, root=root)

    def _tree_start(self, prompt: str, prefix: list[TokenRecord], branch: Optional[dict], generator: Any) -> None:
        """A run starts (Generate or a branch): its path, and the generator a later Step continues."""
        path = self._session.tree.start(prompt, prefix, branch, source=self.content)
        self._generator, self._generator_path = generator, path.id

    def _tree_sync(self) -> None:
        """The shown tokens are the current path's (after a run, a step, a prompt template)."""
        before = self._session.tree.current
        self._session.sync_path(self.prompt_echo)
        if self._generator_path == before:  # a duplicate run merged into its twin: Step continues there
            self._generator_path = self._session.tree.current
        self._publish_tree()

    def _publish_tree(self) -> None:
        self.tree = self._session.tree.items()

    def show_branch(self, path_id: int) -> None:
        """Show the tree's path ``path_id`` (nothing is re-run)."""
        path = self._session.tree.get(path_id)
        self.stop(wait=True)
        with self._lock:
            self._show(path, status="done")
            # what is on screen is this path: its count, no other run's speed or draw
            self.metrics, self.draw = {"tokens": len(path.records)}, None
        self._probe_end()
        self._refresh_static_copy()

    def _show(self, path: Path, status: Optional[str] = None, new_run: bool = True) -> None:
        session = self._session
        session.show(path)
        with self.hold_sync():
            if new_run:
                self.run = self.run + 1
            self.prompt_echo = path.prompt
            self.tokens = session.dicts()
            self.text = session.text
            self.branch = None
            if status:
                self.status = status
            self._publish_tree()

    # ---- Step, force, distribution ---------------------------------------------------------------

    def _local(self) -> Any:
        from ..service import load_backend

        backend = load_backend(self.model_name or None)
        if not is_local(backend):
            raise BadRequest(
                "model_id", f"'{self.model_name}' is remote: Step, Score and the distribution need a model in this kernel"
            )
        return backend

    def _request(self, prompt: str):
        values = self._values()
        bad = check_controls(values)
        if bad:
            self.invalid = bad
            raise first_problem(bad)
        return build(values, prompt)

    def _ids_before(self, backend: Any, path: Path, i: int) -> list[int]:
        """The token ids before the path's token ``i``, as the engine saw them: a branch from a
        tooltip alternative whose id is unknown (token id -1) ran on the re-tokenized text up to it."""
        if path.prompt_ids is None:
            path.prompt_ids = backend.encode(path.prompt)
        records = path.records[:i]
        cut = max((k for k, r in enumerate(records) if r.token_id < 0), default=-1)
        if cut < 0:
            return path.prompt_ids + [r.token_id for r in records]
        head = backend.encode(path.prompt + "".join(r.text for r in records[: cut + 1]))
        return head + [r.token_id for r in records[cut + 1 :]]

    def _path_ids(self, backend: Any, path: Path) -> list[int]:
        return self._ids_before(backend, path, len(path.records))

    def step(self, n: int = 1) -> Any:
        """Generate exactly ``n`` tokens (default 1) one at a time with the current settings,
        continuing the shown path (after Generate, Stop or another Step); each draw is shown.
        With a seed, Step x n from a fresh prompt draws what Generate with ``max_tokens`` n draws.
        Returns the last ``stepping.StepResult``."""
        from ..engine.sampling import make_generator
        from ..stepping import step as step_once

        with self._step_lock:
            self.stop(wait=True)
            backend = self._local()
            result = None
            for _ in range(n):
                path = self._path()
                if path is None or self.content != self._session.tree.source:
                    prompt = self.content
                    if self.chat:
                        from ..service import apply_chat

                        prompt = apply_chat(self._request(prompt)).content
                    path = self._new_path("step", prompt, [], root=True)
                    self._generator = None
                request = self._request(path.prompt)
                if self._generator is None or self._generator_path != path.id:
                    self._generator = make_generator(self.seed, backend.device)
                    self._generator_path = path.id
                ids = self._path_ids(backend, path)
                result = step_once(backend, request, ids, self._generator)
                with self._lock:
                    if result.record is not None:
                        path.records.append(dataclasses.replace(result.record, index=len(path.records)))
                    self._show(path, status="done", new_run=False)
                    m = (
                        {"tokens": len(path.records), "stop_reason": "end_of_turn"}
                        if result.record is None
                        else {"tokens": len(path.records)}
                    )
                    self.metrics = m
                    self.draw = {
                        **result.draw.to_dict(),
                        "index": len(path.records) - 1 if result.record else None,
                        "text": result.record.text if result.record else None,  # names a tail token off the bar
                    }
                if result.record is None:
                    break
            self._probe_end()
            self._refresh_static_copy()
            return result

    def force(self, position: int, token_id: int) -> None:
        """Put ``token_id`` at generated index ``position`` (``len(tokens)``: as the next token)
        as a new branch of the tree; its probability is the shown distribution's."""
        from ..engine.detokenize import StreamingDetokenizer

        self.stop(wait=True)
        backend = self._local()
        path = self._path()
        if path is None:
            raise BadRequest("position", "nothing is shown yet: Generate or Step first")
        if not isinstance(position, int) or not 0 <= position <= len(path.records):
            raise BadRequest("position", f"no token position {position!r} (the output has {len(path.records)} tokens)")
        prefix_ids = self._ids_before(backend, path, position)
        dist = self._distribution_for(backend, path, prefix_ids)
        if token_id not in dist.ids:
            raise BadRequest("token_id", f"{token_id!r} is not among the {len(dist.ids)} tokens of this distribution")
        log_z = dist.log_z
        top = tuple((t, lp - log_z) for t, lp in zip(dist.texts[: max(self.logprobs_top_k, ALTERNATIVES)], dist.logits))
        record = TokenRecord(
            index=position,
            token_id=int(token_id),
            text=StreamingDetokenizer(backend.tokenizer, prefix_ids).add_token(token_id),
            logprob=dist.logprob(token_id),
            rank=dist.ids.index(token_id) + 1,
            top=top,
            entropy=_entropy(dist),
            piece=backend.piece(token_id),
        )
        with self._lock:
            new = self._new_path("force", path.prompt, path.records[:position] + [record], split=position)
            new.prompt_ids = list(path.prompt_ids)
            self._generator = None  # a new path draws from a fresh generator (the seed)
            self._show(new, status="done")
            self.draw = None
        self._probe_end()
        self._refresh_static_copy()

    def pick_alternative(self, index: Any, text: Any) -> None:
        """A tooltip alternative clicked: like a bar of the distribution, it forces that one token
        at ``index`` (a new branch; Generate or Step goes on). A remote model, whose logits are not
        in this kernel, or an alternative without a token id continues from it instead."""
        backend = registry.registered(self.model_name or registry.DEFAULT_MODEL_ID)
        path = self._path()
        record = path.records[index] if path is not None and isinstance(index, int) and 0 <= index < len(path.records) else None
        ids = [i for (t, _), i in zip(record.top, record.top_ids) if t == text] if record is not None else []
        if not is_local(backend) or not ids:
            self.continue_from(index, text)
            return
        original = record.text
        self.force(index, ids[0])
        with self._lock:
            chosen = self.tokens[index] if index < len(self.tokens) else {}
            self.branch = {"index": index, "chosen": text, "original": original, "rank": chosen.get("rank"), "forced": True}

    def _distribution_for(self, backend: Any, path: Path, prefix: list[int]) -> Any:
        from ..stepping import distribution_at

        key = (self.model_name, tuple(prefix))
        if self._dist is None or self._dist_key != key:
            self._dist = distribution_at(backend, self._request(path.prompt), prefix)
            self._dist_key = key
        return self._dist

    def show_distribution(self, index: Optional[int] = None, prompt: bool = False) -> None:
        """Show the next-token distribution before generated token ``index`` (None: after the
        last one, the next token), or before prompt token ``index`` with ``prompt=True``."""
        backend = self._local()
        path = self._path()
        if path is None:
            if not self.content:
                raise BadRequest("content", "write a prompt first")
            path = self._new_path("step", self.content, [], root=True)
            self._show(path, new_run=False)
        self._ids_before(backend, path, 0)  # the prompt's ids
        n = len(path.records)
        if prompt:
            if not isinstance(index, int) or not 1 <= index < len(path.prompt_ids):
                raise BadRequest("index", f"prompt token {index!r} has no distribution (1..{len(path.prompt_ids) - 1})")
            prefix, chosen, end = path.prompt_ids[:index], path.prompt_ids[index], False
        else:
            i = n if index is None else index
            if not isinstance(i, int) or not 0 <= i <= n:
                raise BadRequest("index", f"no token #{index} (the output has {n} tokens)")
            prefix, end = self._ids_before(backend, path, i), i == n
            chosen = path.records[i].token_id if i < n and path.records[i].token_id >= 0 else None
            index = i
        dist = self._distribution_for(backend, path, prefix)
        self.distribution = {**dist.to_dict(), "index": index, "prompt": bool(prompt), "chosen": chosen, "end": end}

    def _probe_end(self) -> None:
        """After a run or a step: the distribution of the next token (quietly skipped when remote)."""
        try:
            self.show_distribution(None)
        except CompletionError:
            self.distribution = None
        self._refresh_prompt_tokens()

    # ---- Score and the prompt's tokens ---------------------------------------------------------

    def score_prompt(self) -> Any:
        """Score the prompt text (the ``content`` control): each prompt token's surprisal, rank and
        alternatives, and the perplexity; nothing is generated. Returns the ``Scored``."""
        from ..scoring import Scored, score_ids

        self.stop(wait=True)
        backend = self._local()
        ids = backend.encode(self.content)
        scored = Scored(self.content, backend.info.identifier, score_ids(backend, ids))
        with self._lock:
            path = self._path()
            fresh = path is None or path.prompt != self.content
            if fresh:  # another text: a new root beside the branches kept so far, generating nothing
                path = self._session.tree.new("score", self.content, [], source=self.content, root=True, keep=True)
                path.prompt_ids = ids
                self._show(path, status="done")
                self.metrics, self.draw = {}, None
        if fresh:
            self._probe_end()  # the distribution of the token after the scored text
        with self._lock:
            self.prompt_tokens = prompt_token_dicts(backend, ids, scored.tokens)
            self.perplexity = None if math.isnan(scored.perplexity) else round(scored.perplexity, 4)
            self._scored_text = self.content
        self._refresh_static_copy()
        return scored

    def _forget_stale_score(self, change: Any) -> None:
        """An edited prompt: the perplexity and surprisals of the old text are cleared."""
        if self.perplexity is None or change["new"] == self._scored_text:
            return
        with self._lock:
            self.perplexity = None
            self.prompt_tokens = []
            self._refresh_prompt_tokens()  # the shown path's prompt, unscored

    def _refresh_prompt_tokens(self) -> None:
        path = self._path()
        backend = registry.registered(self.model_name) if self.model_name else None
        if path is None or backend is None or not is_local(backend):
            return
        ids = path.prompt_ids if path.prompt_ids is not None else backend.encode(path.prompt)
        now = self.prompt_tokens or []
        if [t.get("token_id") for t in now] != list(ids):
            self.prompt_tokens = prompt_token_dicts(backend, list(ids))
            self.perplexity = None

    def teaching_svgs(self) -> list[str]:
        """The Score line, the last Step's draw, the distribution chart (under the current
        settings) and the branch tree, as SVG images (each with its alt text)."""
        from ..notebook.render_teach_svg import distribution_svg, draw_svg, score_svg, tree_svg

        out = []
        if self.perplexity is not None:
            scored = sum(1 for t in self.prompt_tokens or [] if isinstance(t.get("logprob"), (int, float)))
            out.append(score_svg(self.perplexity, scored))
        if self.draw:
            out.append(draw_svg(self.draw))
        if self.distribution and self.distribution.get("ids"):
            controls = {k: getattr(self, k) for k in ("strategy", "temperature", "top_p", "top_k", "repetition_penalty")}
            out.append(distribution_svg(self.distribution, controls))
        if self.tree:
            out.append(tree_svg(self.tree))
        return out

    def _teach_msg(self, kind: str, content: dict) -> bool:
        """Handle a teaching message from the browser; False if ``kind`` is not one."""
        if kind == "step":
            threading.Thread(target=self._guarded, args=(self.step,), daemon=True).start()
        elif kind == "score":
            threading.Thread(target=self._guarded, args=(self.score_prompt,), daemon=True).start()
        elif kind == "force":
            self.force(content.get("position"), content.get("token_id"))
        elif kind == "distribution":
            self.show_distribution(content.get("index"), bool(content.get("prompt")))
        elif kind == "show_branch":
            self.show_branch(content.get("id"))
        else:
            return False
        return True

    def _guarded(self, fn: Any) -> None:
        try:
            fn()
        except CompletionError as exc:
            self._show_error(exc)
        except Exception as exc:  # the panel must keep working
            from ..api.errors import EngineFailure

            self._show_error(EngineFailure(f"The widget failed ({type(exc).__name__}: {exc})."))


def _entropy(dist: Any) -> float:
    """The raw distribution's entropy (nats); the rest's bins count as equally likely tokens."""
    log_z = dist.log_z
    h = 0.0
    for v in dist.logits:
        lp = v - log_z
        h -= math.exp(lp) * lp
    for n, lse in dist.rest:
        lp = lse - math.log(n) - log_z
        h -= n * math.exp(lp) * lp
    return h
