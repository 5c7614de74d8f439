// The next-token distribution view (role="figure", aria-label "Next-token distribution ..."): for
// the current position, a bar per top token under the raw distribution and after the sampling
// settings (reshape.js, recomputed in the browser whenever a setting changes: no forward pass),
// the rest's mass, excluded tokens struck out, the top-p cut marked. Each bar is a button
// (data-token-id, data-excluded): clicking it forces that token at this position.

import { percent } from "./format.js";
import { appendVisibleText } from "./heatmap.js";
import { CHART } from "./palette.js";
import { reshape } from "./reshape.js";
import { whyContent, whyFacts } from "./why.js";

export const BARS = 24; // tokens shown (N >= 20), plus the rest
export const PRESENT_BARS = 8; // presentation mode: the top bars fit one 1280x720 screen
const SETTINGS = ["strategy", "temperature", "top_p", "top_k", "repetition_penalty"];
export { SETTINGS as DISTRIBUTION_SETTINGS };

function el(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** What the settings do, in words: "temperature 0.8, top-p 0.95". */
export function settingsText(c) {
  if (c.strategy === "top_k") return `top-k ${c.top_k}`;
  if (c.strategy === "top_p") return `temperature ${c.temperature}, top-p ${c.top_p}`;
  return "greedy (the most likely token)";
}

/** Where the distribution is: "the next token", "before token #3", "before prompt token #2". */
export function positionText(dist) {
  if (dist.prompt) return `before prompt token #${dist.index}`;
  return dist.end ? `the next token (#${dist.index})` : `before token #${dist.index}`;
}

/** The figure's content for `dist` under `controls` (pure DOM building, unit-tested). */
export function distributionContent(doc, dist, controls, { bars: shown = BARS } = {}) {
  const r = reshape(dist, controls);
  const frag = doc.createDocumentFragment();
  const caption = el(doc, "figcaption", "nbc-dist-caption");
  caption.append(
    el(doc, "strong", "", `Next-token distribution, ${positionText(dist)}`),
    ` · grey: raw probability · blue: processed (after ${settingsText(controls)}` +
      (controls.repetition_penalty !== 1 ? `, repetition penalty ${controls.repetition_penalty}` : "") +
      ")",
  );
  frag.append(caption);
  const list = el(doc, "ol", "nbc-dist-bars");
  // one fixed scale, 0-100 %, for every figure: bars compare across positions and settings
  const header = el(doc, "li", "nbc-dist-head");
  header.setAttribute("aria-hidden", "true");
  header.append(el(doc, "span", "", "token"), el(doc, "span", "nbc-dist-scale", "0–100 %"), el(doc, "span", "", "raw → processed"));
  list.append(header);
  const n = Math.min(shown, dist.ids.length);
  const forcing = !dist.prompt;
  for (let i = 0; i < n; i++) {
    const item = el(doc, "li", "nbc-dist-item");
    const bar = el(doc, "button", "nbc-dist-bar");
    bar.type = "button";
    bar.dataset.tokenId = String(dist.ids[i]);
    bar.dataset.excluded = String(r.excluded[i]);
    bar.dataset.rank = String(i + 1);
    if (r.excluded[i]) bar.classList.add("nbc-excluded");
    const chosen = dist.chosen === dist.ids[i];
    if (chosen) bar.classList.add("nbc-dist-chosen");
    const label = el(doc, "code", "nbc-dist-label");
    appendVisibleText(label, dist.texts[i], true, false);
    const bars = el(doc, "span", "nbc-dist-track");
    const raw = el(doc, "span", "nbc-dist-raw");
    raw.style.width = `${100 * r.raw[i]}%`;
    raw.style.background = CHART.raw;
    const proc = el(doc, "span", "nbc-dist-proc");
    proc.style.width = `${100 * r.processed[i]}%`;
    proc.style.background = chosen ? CHART.chosen : CHART.kept;
    bars.append(raw, proc);
    const value = el(doc, "span", "nbc-dist-value", `${percent(r.raw[i])} → ${r.excluded[i] ? "excluded" : percent(r.processed[i])}`);
    bar.append(label, bars, value);
    const what = `${JSON.stringify(dist.texts[i])} (id ${dist.ids[i]}): raw probability ${percent(r.raw[i])}, ${r.excluded[i] ? "excluded by the settings" : `processed probability (after the settings) ${percent(r.processed[i])}`}${chosen ? ", the chosen token" : ""}`;
    bar.setAttribute("aria-label", what);
    if (forcing) bar.title = `${what}. Click to force it as the token here (a new branch).`;
    else {
      bar.disabled = true;
      bar.title = what;
    }
    item.append(bar);
    list.append(item);
    if (r.cut !== null && i + 1 === r.cut && i + 1 < n) {
      const cut = el(doc, "li", "nbc-dist-cut", `top-p cut: the ${r.cut} token${r.cut === 1 ? "" : "s"} above reach ${controls.top_p}; the rest are excluded`);
      cut.setAttribute("role", "separator");
      cut.style.borderTopColor = CHART.cut;
      list.append(cut);
    }
  }
  const others = dist.ids.length - n + (dist.rest || []).reduce((a, [k]) => a + k, 0);
  const restRaw = r.raw.slice(n).reduce((a, b) => a + b, 0) + r.rawRest;
  const restProc = r.processed.slice(n).reduce((a, b) => a + b, 0) + r.rest;
  const rest = el(doc, "li", "nbc-dist-rest", `the other ${others.toLocaleString("en")} tokens: raw ${percent(restRaw)} → processed ${percent(restProc)}`);
  list.append(rest);
  frag.append(list);
  if (r.nucleusBeyond) frag.append(el(doc, "div", "nbc-dist-note", "The top-p nucleus reaches past the tokens sent; their share is approximate."));
  if (forcing) frag.append(el(doc, "div", "nbc-dist-note", "Click a token to force it here (a new branch)."));
  return { frag, result: r };
}

/**
 * The figure bound to `model` (traits `distribution` and the sampling controls).
 * `onForce(index, tokenId)` is called when a bar is clicked.
 */
export function createDistributionView(model, { onForce } = {}) {
  const doc = globalThis.document;
  const root = el(doc, "figure", "nbc-dist");
  root.setAttribute("role", "figure");
  const controls = () => Object.fromEntries(SETTINGS.map((s) => [s, model.get(s)]));
  let result = null;
  let picked = null; // the rank the "why" panel explains (a hovered or focused bar), else the chosen
  const why = el(doc, "section", "nbc-why");
  why.setAttribute("aria-label", "Why this token");
  function renderWhy() {
    const dist = model.get("distribution");
    if (!dist || !dist.ids || dist.ids.length === 0) return;
    const chosen = dist.ids.indexOf(dist.chosen);
    const rank = picked ?? (chosen >= 0 ? chosen + 1 : 1);
    why.replaceChildren(whyContent(doc, whyFacts(dist, controls(), rank, model.get("draw"))));
  }
  function render() {
    const dist = model.get("distribution");
    root.hidden = !dist || !dist.ids || dist.ids.length === 0;
    if (root.hidden) {
      root.setAttribute("aria-label", "Next-token distribution (none yet)");
      root.replaceChildren();
      return;
    }
    root.setAttribute("aria-label", `Next-token distribution, ${positionText(dist)}, after ${settingsText(controls())}`);
    // a re-render (after Enter forced a token, or a setting changed) keeps the keyboard focus here
    const before = bars();
    const focused = before.indexOf(doc.activeElement);
    const built = distributionContent(doc, dist, controls(), { bars: model.get("present") ? PRESENT_BARS : BARS });
    result = built.result;
    if (picked !== null && picked > dist.ids.length) picked = null;
    root.replaceChildren(built.frag, why);
    renderWhy();
    rove(focused >= 0 ? focused : null);
  }
  const bars = () => [...root.querySelectorAll("button[data-token-id]")].filter((b) => !b.disabled);
  // Roving tabindex: the bars are one Tab stop; arrows, Home and End move within.
  function rove(focusAt) {
    const all = bars();
    if (all.length === 0) return;
    const chosen = all.findIndex((b) => b.closest(".nbc-dist-chosen"));
    const at = Math.min(focusAt ?? (chosen >= 0 ? chosen : 0), all.length - 1);
    all.forEach((b, i) => (b.tabIndex = i === at ? 0 : -1));
    if (focusAt !== null && focusAt !== undefined) all[at].focus();
  }
  root.addEventListener("keydown", (e) => {
    const all = bars();
    const i = all.indexOf(e.target);
    if (i < 0) return;
    const next = { ArrowDown: i + 1, ArrowUp: i - 1, Home: 0, End: all.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    rove(Math.max(0, Math.min(next, all.length - 1)));
  });
  const pick = (e) => {
    const bar = e.target.closest && e.target.closest("button[data-token-id]");
    if (!bar || !root.contains(bar)) return;
    picked = Number(bar.dataset.rank);
    renderWhy();
  };
  root.addEventListener("focusin", pick);
  root.addEventListener("mouseover", pick);
  root.addEventListener("click", (e) => {
    const bar = e.target.closest && e.target.closest("button[data-token-id]");
    const dist = model.get("distribution");
    if (!bar || bar.disabled || !dist || !onForce) return;
    onForce(dist.index, Number(bar.dataset.tokenId));
  });
  const fresh = () => {
    picked = null; // a new position: explain its chosen token first
    render();
  };
  const events = [...SETTINGS.map((s) => `change:${s}`), "change:present", "change:draw"];
  for (const ev of events) model.on(ev, render);
  model.on("change:distribution", fresh);
  render();
  return {
    el: root,
    render,
    get result() {
      return result;
    },
    destroy() {
      for (const ev of events) model.off(ev, render);
      model.off("change:distribution", fresh);
    },
  };
}
