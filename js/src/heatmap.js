// The heatmap: one focusable element per token, coloured by probability or entropy, whitespace
// and newlines made visible, the bytes of partial characters set apart, and the legend.

import { percent, prob } from "./format.js";
import { entropyColor, legendColors, MAX_NATS, PALETTE, probabilityColor } from "./palette.js";

export { entropyColor, probabilityColor };
/** Entropy (nats) at which the entropy colour saturates (palette.json, shared with Python). */
export const ENTROPY_MAX = MAX_NATS;

/** The bytes of a partial character as the kernel writes them: ‹E3 81› (engine/token_text.py). */
export const PARTIAL_BYTES = /‹[0-9A-F]{2}(?: [0-9A-F]{2})*›/g;

export function tokenColor(token, colorBy) {
  return colorBy === "entropy" ? entropyColor(token.entropy) : probabilityColor(token.logprob);
}

/** Whether `text` holds the bytes of a partial character. */
export function hasPartialBytes(text) {
  PARTIAL_BYTES.lastIndex = 0;
  return typeof text === "string" && PARTIAL_BYTES.test(text);
}

/**
 * What a token shows: its text; for a token holding only part of a multi-byte character (its
 * text is empty until the next token completes the character) its bytes, "‹E3 81›"; "" for a
 * withheld end token.
 */
export function shownText(token) {
  if (token.text) return token.text;
  return hasPartialBytes(token.piece) ? token.piece : "";
}

const MARKS = { " ": "·", "\t": "⇥", "\n": "↵" };

/**
 * Append `text` to `el` with whitespace visible: newlines as ↵ then a real line break, tabs as ⇥,
 * and (with showSpaces) spaces as a faint middle dot followed by a line-break opportunity, so
 * lines wrap between words, never inside one. The bytes of partial characters (‹E3 81›) get
 * their own element. Empty text shows ⟨end⟩ (a withheld end token). `breaks` false: a newline is
 * its mark only (a label or caption on one line).
 */
export function appendVisibleText(el, text, showSpaces = true, breaks = true) {
  const doc = el.ownerDocument;
  if (text === "") {
    el.append(mark(doc, "⟨end⟩", "nbc-empty"));
    return el;
  }
  let at = 0;
  PARTIAL_BYTES.lastIndex = 0;
  for (const m of text.matchAll(PARTIAL_BYTES)) {
    appendChars(el, text.slice(at, m.index), showSpaces, breaks);
    const bytes = doc.createElement("span");
    bytes.className = "nbc-bytes";
    bytes.textContent = m[0];
    bytes.title = "bytes of a partial character (UTF-8): it takes more than one token";
    el.append(bytes);
    at = m.index + m[0].length;
  }
  appendChars(el, text.slice(at), showSpaces, breaks);
  return el;
}

function appendChars(el, text, showSpaces, breaks = true) {
  const doc = el.ownerDocument;
  let plain = "";
  const flush = () => {
    if (plain) el.append(doc.createTextNode(plain));
    plain = "";
  };
  for (const ch of text) {
    if (ch === "\n") {
      flush();
      el.append(mark(doc, MARKS[ch], "nbc-ws"));
      if (breaks) el.append(doc.createElement("br"));
    } else if (ch === "\t" || (ch === " " && showSpaces)) {
      flush();
      const m = mark(doc, MARKS[ch], "nbc-ws");
      m.dataset.ws = ch === " " ? "space" : "tab";
      el.append(m, doc.createElement("wbr")); // the mark is not a space: say where a line may break
    } else {
      plain += ch;
    }
  }
  flush();
}

function mark(doc, text, cls) {
  const span = doc.createElement("span");
  span.className = cls;
  span.textContent = text;
  span.setAttribute("aria-hidden", "true");
  return span;
}

/** A token's colour: its background, and --nbc-tok (presentation mode draws it as a thick underline). */
function paint(el, color) {
  el.style.background = color;
  el.style.setProperty("--nbc-tok", color);
}

/** The element of one token. `still`: a picture, not a control (the futures' and the second
 * model's columns): no Tab stop, no role, its probability in a hover title. */
export function tokenElement(doc, token, { colorBy = "probability", showSpaces = true, still = false } = {}) {
  const el = doc.createElement("span");
  el.className = "nbc-token";
  if (token.forced) el.classList.add("nbc-forced");
  if (token.branch) el.classList.add("nbc-branch");
  if (token.rank > 1) el.classList.add("nbc-not-top"); // sampled something other than the top choice
  const shown = shownText(token);
  if (!token.text && shown) el.classList.add("nbc-partial");
  el.dataset.tokenIndex = String(token.index);
  paint(el, tokenColor(token, colorBy));
  appendVisibleText(el, shown, showSpaces);
  if (still) {
    el.title = `${JSON.stringify(token.text)} ${percent(prob(token.logprob))}${token.rank > 1 ? `, rank ${token.rank}` : ""}`;
    return el;
  }
  el.tabIndex = 0;
  // a control: a click shows the distribution it was drawn from, Enter opens its alternatives
  // (a labelled span without a role is not read; a token that is only a space would be silent)
  el.setAttribute("role", "button");
  el.setAttribute("aria-roledescription", "token");
  // Screen readers read the real text; the visible marks are aria-hidden.
  const said = !token.text && shown ? `bytes ${shown.slice(1, -1)}, part of a character` : JSON.stringify(token.text);
  el.setAttribute("aria-label", `${said}, ${percent(prob(token.logprob))}`);
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
    if (token) paint(el, tokenColor(token, colorBy));
  }
}

/** Which marks the legend explains for `tokens`: grammar-forced tokens, partial characters. */
export function legendKeys(tokens) {
  return {
    forced: tokens.some((t) => t.forced),
    partial: tokens.some((t) => !t.text && hasPartialBytes(t.piece)),
  };
}

/** A legend sample drawn like a token (pale palette background, dark text) in either theme. */
function sample(doc, text, cls) {
  const s = doc.createElement("span");
  s.className = `nbc-token nbc-legend-sample ${cls}`;
  s.style.background = PALETTE.probability.stops[0];
  s.textContent = text;
  return s;
}

/** The legend: a gradient bar with its scale's ends, and the marks the shown tokens use. */
export function legendElement(doc, colorBy, { forced = false, partial = false } = {}) {
  const el = doc.createElement("div");
  el.className = "nbc-legend";
  const cells = legendColors(colorBy);
  const colours = cells.map(([c]) => c);
  const [lo, hi, title] =
    colorBy === "entropy"
      ? [`${cells[0][1]} nats (sure)`, `${cells[cells.length - 1][1]} (unsure)`, "Entropy:"]
      : [`likely (${cells[0][1]})`, `unlikely (${cells[cells.length - 1][1]})`, "Probability:"];
  const label = doc.createElement("span");
  label.className = "nbc-legend-title";
  label.textContent = title;
  const low = doc.createElement("span");
  low.textContent = lo;
  const bar = doc.createElement("span");
  bar.className = "nbc-legend-bar";
  bar.style.background = `linear-gradient(to right, ${colours.join(", ")})`;
  bar.title = cells.map(([, text]) => text).join(" · ");
  const high = doc.createElement("span");
  high.textContent = hi;
  const keys = doc.createElement("span");
  keys.className = "nbc-legend-keys";
  keys.append(sample(doc, "dashed", "nbc-not-top"), ": not the top choice");
  if (forced) keys.append(" · ", sample(doc, "italic", "nbc-forced"), ": forced by the grammar");
  if (partial) keys.append(" · ", sample(doc, "‹E3 81›", "nbc-bytes"), ": bytes of a partial character");
  keys.append(" · “·” space, “↵” newline");
  el.append(label, low, bar, high, keys);
  return el;
}
