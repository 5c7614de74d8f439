// Inside the model, at a clicked token (nb_completion/widget/_inside.py computes each on demand):
// - the logit lens (trait `lens`): a grid of layers x top tokens, each cell coloured by its
//   probability with the heatmap's palette, the output's answer outlined and the layer where it
//   first becomes top marked;
// - attention (trait `attention_row`): the tokens up to the clicked one, colour behind each for
//   how much it was attended to, with a layer picker and a head picker (the mean over heads, or
//   one head; each head's button names the token it attended to most), CircuitsVis-style.
// The bar above them holds the position and the buttons: Layers and Attention are toggles (while
// one is on, clicking another token reads it there), "Sample 5" asks for five futures (futures.js).

import { percent, prob } from "./format.js";
import { appendVisibleText } from "./heatmap.js";
import { CHART, probabilityColor } from "./palette.js";

const ALPHA = 0.6; // the strongest attention colour: black text on it stays >= 7:1

function el(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function code(doc, text, className = "") {
  const c = el(doc, "code", className);
  appendVisibleText(c, text, true, false); // one line: a newline shows as its mark
  for (const wbr of c.querySelectorAll("wbr")) wbr.remove(); // and no break after a space's mark
  return c;
}

/** Text on one line, for captions and buttons: newlines and tabs as their marks, spaces as they are. */
function oneLine(doc, text) {
  return el(doc, "code", "nbc-one-line", text.replace(/\r?\n/g, "↵").replace(/\t/g, "→"));
}

/** "token #3 ' Paris'", "prompt token #2", "the end". */
export function placeText(at) {
  if (!at || at.index === null || at.index === undefined) return "the end of the text";
  const what = at.text !== undefined && at.text !== null ? ` ${JSON.stringify(at.text)}` : "";
  return `${at.prompt ? "prompt token" : "token"} #${at.index}${what}`;
}

const ordinal = (n) => `${n}${["th", "st", "nd", "rd"][n % 100 > 10 && n % 100 < 14 ? 0 : Math.min(n % 10, 4) % 4] || "th"}`;

/** The lens's summary in words: where the output's answer (and the token written here) first becomes top. */
export function lensSummary(lens) {
  const n = lens.layers.length;
  const final = JSON.stringify(lens.final);
  const first = lens.first_top;
  let s = `The output's top token ${final} first becomes top at layer ${first + 1} of ${n}`;
  s += first === n - 1 ? " (only at the output)" : "";
  s += lens.answer_track && first > 0 ? `; at layer 1 it is rank #${lens.answer_track[0][1]}.` : ".";
  if (lens.chosen !== null && lens.chosen !== undefined && lens.chosen !== lens.final) {
    const c = lens.chosen_first;
    s += ` The token written here, ${JSON.stringify(lens.chosen)}, ${c === null || c === undefined ? "is never top at any layer (it was sampled)" : `is top at layer ${c + 1}`}.`;
  }
  return s;
}

/** The tracked tokens' columns: [text, "answer" | "written", [[logprob, rank] per layer]]. */
export function lensTracks(lens) {
  const out = [];
  if (lens.answer_track) out.push([lens.final, "answer", lens.answer_track]);
  if (lens.chosen_track && lens.chosen !== null && lens.chosen !== undefined) out.push([lens.chosen, "written", lens.chosen_track]);
  return out;
}

/** The lens figure's content (pure DOM building, unit-tested). */
export function lensContent(doc, lens) {
  const frag = doc.createDocumentFragment();
  const where = lens.prompt ? `prompt token #${lens.index}` : lens.chosen === null || lens.chosen === undefined ? `the next token (#${lens.index})` : `token #${lens.index}`;
  const caption = el(doc, "figcaption", "nbc-lens-caption");
  caption.append(el(doc, "strong", "", `Logit lens: what each layer predicts for ${where}`));
  const context = (lens.context || []).join("");
  caption.append(" after ", oneLine(doc, context.length > 48 ? `…${context.slice(-48)}` : context), ` (${lens.model})`);
  frag.append(caption);
  if (lens.error) {
    frag.append(el(doc, "p", "nbc-inside-error", lens.error));
    return frag;
  }
  const k = lens.layers[0].length;
  const table = el(doc, "table", "nbc-lens");
  const head = el(doc, "tr");
  head.append(el(doc, "th", "", "layer"));
  const tracks = lensTracks(lens);
  for (const [text, what] of tracks) {
    const th = el(doc, "th", "nbc-lens-track-head");
    th.append(oneLine(doc, JSON.stringify(text)), ` (${what})`);
    th.title = `${JSON.stringify(text)}'s probability and rank at each layer, however far down it is`;
    head.append(th);
  }
  for (let c = 0; c < k; c++) head.append(el(doc, "th", "", c === 0 ? "top" : ordinal(c + 1)));
  const thead = el(doc, "thead");
  thead.append(head);
  const body = el(doc, "tbody");
  lens.layers.forEach((row, n) => {
    const tr = el(doc, "tr");
    const last = n === lens.layers.length - 1;
    const label = el(doc, "th", "", String(n + 1));
    if (last) label.append(el(doc, "span", "nbc-lens-out", " (output)"));
    label.scope = "row";
    if (n === lens.first_top) {
      tr.classList.add("nbc-lens-first");
      label.textContent = `▶ ${label.textContent}`;
      label.title = `the first layer where ${JSON.stringify(lens.final)} is top`;
    }
    tr.append(label);
    for (const [, , track] of tracks) {
      const [logprob, rank] = track[n];
      const td = el(doc, "td", "nbc-lens-track");
      td.style.background = probabilityColor(logprob);
      td.append(el(doc, "span", "nbc-lens-p", percent(prob(logprob))), " ", el(doc, "span", "nbc-lens-rank", `#${rank}`));
      td.title = `layer ${n + 1}: ${percent(prob(logprob))}, rank ${rank}`;
      tr.append(td);
    }
    for (const [text, logprob] of row) {
      const td = el(doc, "td", "nbc-lens-cell");
      td.style.background = probabilityColor(logprob);
      if (text === lens.final) td.classList.add("nbc-lens-final");
      if (lens.chosen !== lens.final && text === lens.chosen) td.classList.add("nbc-lens-chosen");
      td.append(code(doc, text), " ", el(doc, "span", "nbc-lens-p", percent(prob(logprob))));
      td.title = `layer ${n + 1}: ${JSON.stringify(text)} ${percent(prob(logprob))}`;
      tr.append(td);
    }
    body.append(tr);
  });
  table.append(thead, body);
  const scroll = el(doc, "div", "nbc-lens-scroll");
  scroll.tabIndex = 0; // a scrolled region a keyboard can reach
  scroll.setAttribute("aria-label", "layers, 1 (nearest the input) to the output");
  scroll.append(table);
  frag.append(el(doc, "p", "nbc-inside-summary", lensSummary(lens)), scroll);
  const key = `First columns: the answer${lens.chosen_track ? " and the token written" : ""} at every layer (probability, rank). Outlined: the output's answer ${JSON.stringify(lens.final)}; ▶ the layer where it first becomes top; colours: the heatmap's probability scale.`;
  frag.append(el(doc, "p", "nbc-inside-note", lens.note ? `${key} ${lens.note}` : key));
  return frag;
}

/** The decoder layer of the row's `n`-th attention, counted from 1 (a hybrid such as Jamba attends
 * only in some layers: `layer_ids` says which). */
export function decoderLayer(row, n) {
  return (row.layer_ids && row.layer_ids.length > n ? row.layer_ids[n] : n) + 1;
}

/** "layer 15 of 30", or for a hybrid "layer 4 of 8 (attention layer 1 of 1)". */
export function layerText(row, n) {
  const total = row.decoder_layers || row.layers;
  const text = `layer ${decoderLayer(row, n)} of ${total}`;
  return row.layers === total ? text : `${text} (attention layer ${n + 1} of ${row.layers}; the others keep a recurrent state)`;
}

/** One layer's weights: the mean over heads (`head` null) or head `head`. */
export function attentionWeights(row, layer, head) {
  return head === null || head === undefined ? row.mean[layer] : row.per_head[layer][head];
}

/** The largest weights, best first: [[token index, weight]...]. */
export function mostAttended(weights, n = 3) {
  return weights
    .map((w, j) => [j, w])
    .sort((a, b) => b[1] - a[1] || a[0] - b[0])
    .slice(0, n);
}

/** The attention figure's content for `row` in `layer`, `head` (pure DOM building, unit-tested). */
export function attentionContent(doc, row, layer, head, { skipFirst = false } = {}) {
  const frag = doc.createDocumentFragment();
  const caption = el(doc, "figcaption", "nbc-att-caption");
  if (row.error) {
    caption.append(el(doc, "strong", "", "Attention"));
    frag.append(caption, el(doc, "p", "nbc-inside-error", row.error));
    return frag;
  }
  const who = head === null || head === undefined ? `the mean of ${row.heads} heads` : `head ${head + 1} of ${row.heads}`;
  const last = row.tokens.length - 1;
  caption.append(el(doc, "strong", "", `Attention of ${JSON.stringify(row.tokens[last])} (#${row.position ?? row.index})`));
  caption.append(` in ${layerText(row, layer)}, ${who}: the colour behind each token is how much it was attended to`);
  frag.append(caption);
  const weights = attentionWeights(row, layer, head);
  // the first token often takes most of a head's attention (an "attention sink"): scaling without
  // it shows how the rest is shared; its own chip is then drawn at full colour
  const scaled = skipFirst && weights.length > 1 ? weights.slice(1) : weights;
  const top = Math.max(...scaled) || 1;
  const text = el(doc, "div", "nbc-att-text");
  row.tokens.forEach((token, j) => {
    const span = el(doc, "span", "nbc-att-token");
    const w = weights[j];
    span.style.background = attentionColor(w / top);
    span.dataset.weight = String(w);
    if (j === last) span.classList.add("nbc-att-self");
    const seen = el(doc, "span", "");
    seen.setAttribute("aria-hidden", "true");
    appendVisibleText(seen, token || "∅");
    span.append(seen, el(doc, "span", "nbc-sr", `${JSON.stringify(token)} ${percent(w)}; `));
    span.title = `${JSON.stringify(token)}: ${percent(w)}`;
    text.append(span);
  });
  const best = mostAttended(weights).map(([j, w]) => `${JSON.stringify(row.tokens[j])} ${percent(w)}`);
  const scale = skipFirst ? `the largest weight after the first token (${percent(top)})` : `the largest weight (${percent(top)})`;
  frag.append(text, el(doc, "p", "nbc-inside-summary", `Most attention to: ${best.join(", ")}. Darkest: ${scale}; outlined: the attending token.`));
  return frag;
}

/** The colour behind a token attended with `x` of the row's largest weight: white to the chart's
 * blue at ALPHA, solid (a light chip with black text in either theme). */
export function attentionColor(x) {
  const a = ALPHA * Math.max(0, Math.min(1, x));
  const mix = [1, 3, 5].map((i) => Math.round(255 * (1 - a) + parseInt(CHART.kept.slice(i, i + 2), 16) * a));
  return `rgb(${mix.join(", ")})`;
}

/**
 * The inside views bound to `model` (traits `lens`, `attention_row`): the bar with the position
 * and the buttons, the lens figure and the attention figure. `send(msg)` posts to the kernel;
 * `select(at)` moves the position ({index, prompt, text}; null: the end).
 */
export function createInsideView(model, { onLens, onAttention, onSample } = {}) {
  const doc = globalThis.document;
  const root = el(doc, "section", "nbc-inside");
  root.setAttribute("aria-label", "Inside the model");
  const bar = el(doc, "div", "nbc-inside-bar");
  const where = el(doc, "span", "nbc-inside-where");
  const button = (label, title) => {
    const b = el(doc, "button", "nbc-inside-button", label);
    b.type = "button";
    b.title = title;
    return b;
  };
  const lensButton = button("Layers", "The logit lens: what each layer would predict at this position");
  const attButton = button("Attention", "Which earlier tokens this token attended to, per layer and head");
  const sampleButton = button("Sample 5", "Five sampled continuations from this position, side by side (new branches)");
  for (const b of [lensButton, attButton]) b.setAttribute("aria-pressed", "false");
  const busy = el(doc, "span", "nbc-inside-busy");
  busy.setAttribute("aria-live", "polite");
  bar.append(el(doc, "strong", "", "Inside the model"), " at ", where, lensButton, attButton, sampleButton, busy);

  const lensFig = el(doc, "figure", "nbc-lens-fig");
  lensFig.setAttribute("role", "figure");
  lensFig.setAttribute("aria-label", "Logit lens");
  const attFig = el(doc, "figure", "nbc-att-fig");
  attFig.setAttribute("role", "figure");
  attFig.setAttribute("aria-label", "Attention");
  const pickers = el(doc, "div", "nbc-att-pickers");
  const layerSel = doc.createElement("select");
  layerSel.name = "attention_layer";
  layerSel.setAttribute("aria-label", "layer");
  const heads = el(doc, "div", "nbc-att-heads");
  heads.setAttribute("role", "group");
  heads.setAttribute("aria-label", "head");
  const layerLabel = el(doc, "label", "", "Layer ");
  layerLabel.append(layerSel);
  const sinkBox = doc.createElement("input");
  sinkBox.type = "checkbox";
  sinkBox.name = "attention_skip_first";
  const sinkLabel = el(doc, "label", "nbc-att-sink");
  sinkLabel.append(sinkBox, " scale without the first token");
  sinkLabel.title = "Most heads put much of their attention on the first token (an attention sink); scale the colours by the rest";
  pickers.append(layerLabel, heads, sinkLabel);
  const attBody = el(doc, "div", "nbc-att-body");
  attFig.append(pickers, attBody);
  root.append(bar, lensFig, attFig);

  let at = null; // the position: {index, prompt, text}; null: the end
  let layer = null; // the attention picker's layer (null: the last) and head (null: the mean)
  let head = null;
  let waiting = { lens: false, attention: false };
  const pressed = (b) => b.getAttribute("aria-pressed") === "true";
  const idx = () => (at ? at.index : null);

  function renderBar() {
    where.textContent = placeText(at);
    sampleButton.disabled = Boolean(at && at.prompt);
    sampleButton.title = sampleButton.disabled
      ? "Sample 5 starts from a generated token or the end"
      : "Five sampled continuations from this position, side by side (new branches)";
    const parts = [];
    if (waiting.lens) parts.push("reading the layers…");
    if (waiting.attention) parts.push("reading the attention…");
    busy.textContent = parts.join(" ");
  }
  function renderLens() {
    const lens = model.get("lens");
    lensFig.hidden = !pressed(lensButton) || !lens;
    if (lensFig.hidden) return;
    lensFig.replaceChildren(lensContent(doc, lens));
    // the layers scroll: bring the layer where the answer first becomes top into view
    const scroll = lensFig.querySelector(".nbc-lens-scroll");
    const first = lensFig.querySelector("tr.nbc-lens-first");
    if (scroll && first) scroll.scrollTop = Math.max(0, first.offsetTop - scroll.clientHeight / 2);
  }
  function renderAttention() {
    const row = model.get("attention_row");
    attFig.hidden = !pressed(attButton) || !row;
    if (attFig.hidden) return;
    pickers.hidden = Boolean(row.error);
    if (!row.error) {
      if (layer === null || layer >= row.layers) layer = row.layers - 1;
      if (head !== null && head >= row.heads) head = null;
      if (layerSel.options.length !== row.layers) {
        layerSel.replaceChildren(...Array.from({ length: row.layers }, (_, n) => Object.assign(doc.createElement("option"), { value: String(n), textContent: String(decoderLayer(row, n)) })));
      }
      layerSel.value = String(layer);
      heads.replaceChildren(headButton(null, row), ...Array.from({ length: row.heads }, (_, h) => headButton(h, row)));
    }
    attBody.replaceChildren(attentionContent(doc, row, layer ?? 0, head, { skipFirst: sinkBox.checked }));
  }
  function headButton(h, row) {
    const b = el(doc, "button", "nbc-att-head");
    b.type = "button";
    b.dataset.head = h === null ? "mean" : String(h);
    b.setAttribute("aria-pressed", String(h === head));
    const [j] = mostAttended(attentionWeights(row, layer, h), 1)[0];
    b.append(h === null ? "mean " : `${h + 1} `, oneLine(doc, row.tokens[j] || "∅"));
    b.title = `${h === null ? "the mean over heads" : `head ${h + 1}`}: attends most to ${JSON.stringify(row.tokens[j])}`;
    return b;
  }

  function ask(kind) {
    waiting[kind] = true;
    renderBar();
    if (kind === "lens" && onLens) onLens(idx(), Boolean(at && at.prompt));
    if (kind === "attention" && onAttention) onAttention(idx(), Boolean(at && at.prompt));
  }
  function toggle(b, kind) {
    const on = !pressed(b);
    b.setAttribute("aria-pressed", String(on));
    if (on) ask(kind);
    else waiting[kind] = false;
    renderBar();
    renderLens();
    renderAttention();
  }
  lensButton.addEventListener("click", () => toggle(lensButton, "lens"));
  attButton.addEventListener("click", () => toggle(attButton, "attention"));
  sampleButton.addEventListener("click", () => onSample && onSample(idx()));
  sinkBox.addEventListener("change", () => renderAttention());
  layerSel.addEventListener("change", () => {
    layer = Number(layerSel.value);
    renderAttention();
  });
  heads.addEventListener("click", (e) => {
    const b = e.target.closest && e.target.closest("button[data-head]");
    if (!b) return;
    head = b.dataset.head === "mean" ? null : Number(b.dataset.head);
    renderAttention();
    const again = heads.querySelector(`[data-head="${b.dataset.head}"]`);
    if (again) again.focus();
  });

  /** A token was clicked (or the text changed: null, the end): the pressed views follow it. */
  function select(position) {
    at = position;
    renderBar();
    if (pressed(lensButton)) ask("lens");
    if (pressed(attButton)) ask("attention");
  }
  const onLensTrait = () => {
    waiting.lens = false;
    renderBar();
    renderLens();
  };
  const onAttTrait = () => {
    waiting.attention = false;
    renderBar();
    renderAttention();
  };
  model.on("change:lens", onLensTrait);
  model.on("change:attention_row", onAttTrait);
  renderBar();
  renderLens();
  renderAttention();
  /** A new run: the position goes back to the end (the figures stay, each names its context). */
  function reset() {
    at = null;
    renderBar();
  }
  /** A run ended: the pressed views read the text as it is now. */
  function refresh() {
    if (pressed(lensButton) || pressed(attButton)) select(at);
  }
  return {
    el: root,
    select,
    reset,
    refresh,
    buttons: { lens: lensButton, attention: attButton, sample: sampleButton },
    destroy() {
      model.off("change:lens", onLensTrait);
      model.off("change:attention_row", onAttTrait);
    },
  };
}
