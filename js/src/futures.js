// Several futures and a second model, side by side, in the heatmap's colours:
// - "Sample 5" (trait `futures`): the sampled branches from one position as columns, each with its
//   mean log-probability per token (paths of different lengths compare fairly), the most likely
//   marked; "Show" puts a branch in the main view (it is in the tree too);
// - the second model's column (trait `compare_column`): the same prompt run on `compare_model`,
//   streamed beside the main text with the same palette.

import { percent } from "./format.js";
import { tokenFragment } from "./heatmap.js";

function el(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The tokens as a still picture (no Tab stops, no roles: the column's buttons are its controls),
 * read out as the plain text by a visually hidden copy. */
function stillTokens(doc, box, tokens, opts) {
  const shown = el(doc, "span", "");
  shown.setAttribute("aria-hidden", "true");
  shown.append(tokenFragment(doc, tokens, { ...opts, still: true }));
  box.append(shown, el(doc, "span", "nbc-sr", tokens.map((t) => t.text).join("")));
}

/** "mean log p −1.23 per token (≈ 29% each)": the geometric-mean probability in words. */
export function meanText(mean) {
  if (mean === null || mean === undefined) return "no tokens";
  return `mean log p ${mean.toFixed(2).replace("-", "−")} per token (≈ ${percent(Math.exp(mean))} each)`;
}

/** The best path's position in `paths` (the largest mean log-probability), or -1. */
export function bestPath(paths) {
  let best = -1;
  paths.forEach((p, i) => {
    if (p.mean_logprob !== null && p.mean_logprob !== undefined && (best < 0 || p.mean_logprob > paths[best].mean_logprob)) best = i;
  });
  return best;
}

/** The futures figure's content (pure DOM building, unit-tested). */
export function futuresContent(doc, futures, opts = {}) {
  const frag = doc.createDocumentFragment();
  const caption = el(doc, "figcaption", "nbc-futures-caption");
  const i = futures.index;
  const from = i === 0 ? "the end of the prompt" : `position #${i} (the ${i} generated token${i === 1 ? "" : "s"} before it kept)`;
  caption.append(
    el(doc, "strong", "", `${futures.paths.length} futures from ${from}`),
    ` · sampled with ${futures.setting}, one seed each, forks of one prefill; each is a branch in the tree`,
  );
  frag.append(caption);
  const row = el(doc, "div", "nbc-futures");
  const best = bestPath(futures.paths);
  futures.paths.forEach((path, i) => {
    const col = el(doc, "section", "nbc-future");
    col.dataset.branchId = String(path.id);
    col.setAttribute("aria-label", `future ${i + 1}, seed ${path.seed}: ${meanText(path.mean_logprob)}`);
    const head = el(doc, "div", "nbc-future-head");
    head.append(el(doc, "span", "nbc-future-seed", `seed ${path.seed}`), el(doc, "span", "nbc-future-mean", meanText(path.mean_logprob)));
    if (i === best) {
      col.classList.add("nbc-future-best");
      head.append(el(doc, "span", "nbc-future-badge", "★ most likely"));
    }
    const text = el(doc, "div", "nbc-future-text");
    stillTokens(doc, text, path.tokens, opts);
    const show = el(doc, "button", "nbc-future-show", "Show");
    show.type = "button";
    show.dataset.branchId = String(path.id);
    show.title = "Show this branch in the main view (nothing re-runs)";
    col.append(head, text, show);
    row.append(col);
  });
  frag.append(row);
  return frag;
}

/** The second model's column (pure DOM building, unit-tested). */
export function compareContent(doc, column, opts = {}) {
  const frag = doc.createDocumentFragment();
  const head = el(doc, "div", "nbc-compare-head");
  const state = { running: "generating…", done: `${column.tokens.length} tokens`, error: "error" }[column.status] || column.status;
  head.append(el(doc, "strong", "", column.model), ` · ${state}`);
  frag.append(head);
  if (column.error) {
    const err = el(doc, "div", "nbc-inside-error", column.error);
    err.setAttribute("role", "alert");
    frag.append(err);
  }
  const text = el(doc, "div", "nbc-compare-text");
  stillTokens(doc, text, column.tokens, opts);
  frag.append(text);
  return frag;
}

/** The futures figure bound to `model` (trait `futures`); `onShow(id)` shows a branch. */
export function createFuturesView(model, { onShow } = {}) {
  const doc = globalThis.document;
  const root = el(doc, "figure", "nbc-futures-fig");
  root.setAttribute("role", "figure");
  root.setAttribute("aria-label", "Several futures");
  const opts = () => ({ colorBy: model.get("color_by") || "probability" });
  function render() {
    const f = model.get("futures");
    root.hidden = !f || !f.paths || f.paths.length === 0;
    if (root.hidden) root.replaceChildren();
    else root.replaceChildren(futuresContent(doc, f, opts()));
  }
  root.addEventListener("click", (e) => {
    const b = e.target.closest && e.target.closest("button[data-branch-id]");
    if (b && onShow) onShow(Number(b.dataset.branchId));
  });
  const events = ["change:futures", "change:color_by", "change:palette"];
  for (const ev of events) model.on(ev, render);
  render();
  return { el: root, render, destroy: () => events.forEach((ev) => model.off(ev, render)) };
}

/** The second model's column bound to `model` (traits `compare_column`, `model_name`). */
export function createCompareView(model) {
  const doc = globalThis.document;
  const root = el(doc, "section", "nbc-compare");
  root.setAttribute("aria-label", "Second model");
  const opts = () => ({ colorBy: model.get("color_by") || "probability" });
  function render() {
    const column = model.get("compare_column");
    root.hidden = !column || !model.get("compare_model");
    if (root.hidden) root.replaceChildren();
    else root.replaceChildren(compareContent(doc, column, opts()));
    root.setAttribute("aria-label", root.hidden ? "Second model" : `Second model: ${column.model}`);
  }
  const events = ["change:compare_column", "change:compare_model", "change:color_by", "change:palette"];
  for (const ev of events) model.on(ev, render);
  render();
  return { el: root, render, destroy: () => events.forEach((ev) => model.off(ev, render)) };
}
