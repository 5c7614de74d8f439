// The heatmap: one focusable element per token, coloured by probability or entropy, whitespace
// and newlines made visible, and the legend that explains the colours.

import { clamp01, percent, prob } from "./format.js";

/** Entropy (nats) at which the entropy colour saturates. */
export const ENTROPY_MAX = 4;

// The same colour-blind-safe ColorBrewer ramps as nb_completion/render.py (the static HTML), so the
// live panel and an exported notebook read alike: pale = unremarkable, dark = look here.
const SURPRISE = [[0xfe, 0xf0, 0xd9], [0xfd, 0xd4, 0x9e], [0xfd, 0xbb, 0x84], [0xfc, 0x8d, 0x59], [0xe3, 0x4a, 0x33]];
const UNCERTAINTY = [[0xf1, 0xee, 0xf6], [0xd0, 0xd1, 0xe6], [0xa6, 0xbd, 0xdb], [0x74, 0xa9, 0xcf], [0x36, 0x90, 0xc0]];

/** `x` in [0, 1] along the colour stops, as "#rrggbb". */
export function ramp(stops, x) {
  const at = clamp01(x) * (stops.length - 1);
  const i = Math.min(Math.floor(at), stops.length - 2);
  const f = at - i;
  const hex = stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f).toString(16).padStart(2, "0"));
  return `#${hex.join("")}`;
}

/** Likely tokens pale, unlikely ones dark orange-red. */
export function probabilityColor(p) {
  return ramp(SURPRISE, 1 - clamp01(p));
}

/** Confident steps pale, uncertain steps dark blue. */
export function entropyColor(h) {
  return ramp(UNCERTAINTY, Number.isFinite(h) ? h / ENTROPY_MAX : 1);
}

export function tokenColor(token, colorBy) {
  return colorBy === "entropy" ? entropyColor(token.entropy) : probabilityColor(prob(token.logprob));
}

const MARKS = { " ": "·", "\t": "⇥", "\n": "↵" };

/**
 * Append `text` to `el` with whitespace visible: newlines as ↵ then a real line break, tabs as ⇥,
 * and (with showSpaces) spaces as a faint middle dot. Empty text shows ⟨end⟩ (a withheld end token).
 */
export function appendVisibleText(el, text, showSpaces = true) {
  const doc = el.ownerDocument;
  if (text === "") {
    el.append(mark(doc, "⟨end⟩", "nbc-empty"));
    return el;
  }
  let plain = "";
  const flush = () => {
    if (plain) el.append(doc.createTextNode(plain));
    plain = "";
  };
  for (const ch of text) {
    if (ch === "\n") {
      flush();
      el.append(mark(doc, MARKS[ch], "nbc-ws"), doc.createElement("br"));
    } else if (ch === "\t" || (ch === " " && showSpaces)) {
      flush();
      const m = mark(doc, MARKS[ch], "nbc-ws");
      m.dataset.ws = ch === " " ? "space" : "tab";
      el.append(m);
    } else {
      plain += ch;
    }
  }
  flush();
  return el;
}

function mark(doc, text, cls) {
  const span = doc.createElement("span");
  span.className = cls;
  span.textContent = text;
  span.setAttribute("aria-hidden", "true");
  return span;
}

/** The element of one token. */
export function tokenElement(doc, token, { colorBy = "probability", showSpaces = true } = {}) {
  const el = doc.createElement("span");
  el.className = "nbc-token";
  if (token.forced) el.classList.add("nbc-forced");
  if (token.branch) el.classList.add("nbc-branch");
  if (token.rank > 1) el.classList.add("nbc-not-top"); // sampled something other than the top choice
  el.tabIndex = 0;
  el.dataset.tokenIndex = String(token.index);
  el.style.background = tokenColor(token, colorBy);
  // Screen readers read the real text; the visible marks are aria-hidden.
  el.setAttribute("aria-label", `${JSON.stringify(token.text)}, ${percent(prob(token.logprob))}`);
  appendVisibleText(el, token.text, showSpaces);
  return el;
}

/** A DocumentFragment with the elements of `tokens`, to append in one go. */
export function tokenFragment(doc, tokens, opts) {
  const frag = doc.createDocumentFragment();
  for (const token of tokens) frag.append(tokenElement(doc, token, opts));
  return frag;
}

/** Re-colour existing token elements (the colour toggle) without rebuilding them. */
export function recolor(container, tokens, colorBy) {
  for (const el of container.querySelectorAll("[data-token-index]")) {
    const token = tokens[Number(el.dataset.tokenIndex)];
    if (token) el.style.background = tokenColor(token, colorBy);
  }
}

/** The legend: a gradient bar with its scale's ends. */
export function legendElement(doc, colorBy) {
  const el = doc.createElement("div");
  el.className = "nbc-legend";
  const steps = [0, 0.25, 0.5, 0.75, 1];
  const colours =
    colorBy === "entropy"
      ? steps.map((x) => entropyColor(x * ENTROPY_MAX))
      : steps.map((x) => probabilityColor(1 - x));
  const [lo, hi, title] =
    colorBy === "entropy"
      ? ["0 nats (sure)", `≥${ENTROPY_MAX} nats (unsure)`, "Entropy:"]
      : ["likely (100%)", "unlikely (0%)", "Probability:"];
  const label = doc.createElement("span");
  label.className = "nbc-legend-title";
  label.textContent = title;
  const low = doc.createElement("span");
  low.textContent = lo;
  const bar = doc.createElement("span");
  bar.className = "nbc-legend-bar";
  bar.style.background = `linear-gradient(to right, ${colours.join(", ")})`;
  const high = doc.createElement("span");
  high.textContent = hi;
  const keys = doc.createElement("span");
  keys.className = "nbc-legend-keys";
  keys.innerHTML =
    '<span class="nbc-not-top">dashed</span>: not the top choice · <i>italic</i>: forced by the grammar · “·” space, “↵” newline';
  el.append(label, low, bar, high, keys);
  return el;
}
