// The draw of the last Step: the processed distribution as a cumulative bar (one segment per token,
// most likely first, the chosen one highlighted), the uniform random number u and where it fell.
// Greedy draws nothing: the argmax takes the whole bar. The kernel computes u from the engine's
// own draw (stepping.py: the Gumbel-max winner's value), so the picture is the real draw.

import { percent } from "./format.js";
import { appendVisibleText } from "./heatmap.js";
import { CHART } from "./palette.js";

function el(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The draw's content (pure DOM building). */
export function drawContent(doc, draw) {
  const frag = doc.createDocumentFragment();
  const chosen = draw.bar.find(([id]) => id === draw.token_id);
  const text = chosen ? chosen[1] : typeof draw.text === "string" ? draw.text : `id ${draw.token_id}`;
  const caption = el(doc, "div", "nbc-draw-caption");
  const code = el(doc, "code");
  appendVisibleText(code, text, true, false);
  const at = draw.index === null || draw.index === undefined ? "the end token" : `token #${draw.index}`;
  frag.append(el(doc, "div", "nbc-draw-title", draw.index === null || draw.index === undefined ? "The draw (the end token)" : `The draw at token #${draw.index}`));
  if (draw.greedy) caption.append(`Step (greedy): the argmax `, code, ` is ${at}; nothing is drawn.`);
  else {
    caption.append(
      `Step drew u = ${draw.u.toFixed(3)}: it fell in `,
      code,
      `'s interval ${draw.before.toFixed(3)}–${(draw.before + draw.p).toFixed(3)} (processed probability ${percent(draw.p)}) of the cumulative distribution → ${at}.`,
    );
  }
  frag.append(caption);
  const bar = el(doc, "div", "nbc-draw-bar");
  bar.setAttribute("role", "img");
  bar.setAttribute(
    "aria-label",
    draw.greedy ? `greedy: ${JSON.stringify(text)} takes the whole bar` : `cumulative bar, u = ${draw.u.toFixed(3)} in ${JSON.stringify(text)}`,
  );
  let x = 0;
  for (const [id, t, p] of draw.bar) {
    if (p <= 0) continue;
    const seg = el(doc, "span", "nbc-draw-seg");
    seg.style.left = `${100 * x}%`;
    seg.style.width = `${100 * p}%`;
    seg.style.background = id === draw.token_id ? CHART.chosen : CHART.kept;
    if (id === draw.token_id) seg.classList.add("nbc-draw-chosen"); // dark text on orange (7.7:1)
    seg.dataset.tokenId = String(id);
    seg.title = `${JSON.stringify(t)} ${percent(p)} (${x.toFixed(3)}–${(x + p).toFixed(3)})`;
    if (p > 0.06) seg.textContent = t;
    // u in the left half of this segment: its label goes right, so the pointer never covers a letter
    if (!draw.greedy && draw.u >= x && draw.u < x + p / 2) seg.classList.add("nbc-draw-label-right");
    bar.append(seg);
    x += p;
  }
  if (draw.rest > 0) {
    const seg = el(doc, "span", "nbc-draw-seg nbc-draw-rest");
    seg.style.left = `${100 * x}%`;
    seg.style.width = `${100 * draw.rest}%`;
    seg.title = `other tokens ${percent(draw.rest)}`;
    bar.append(seg);
  }
  if (!chosen && !draw.greedy && draw.p > 0) {
    // a tail token (top-p kept it, too small for the bar): its own segment inside "other tokens",
    // at least a sliver wide so the eye finds where u fell
    const seg = el(doc, "span", "nbc-draw-seg nbc-draw-tail");
    // centred on its interval and at least 12px wide, so it shows on both sides of the u marker
    seg.style.left = `${100 * (draw.before + draw.p / 2)}%`;
    seg.style.width = `max(${100 * draw.p}%, 12px)`;
    seg.style.transform = "translateX(-50%)";
    seg.style.background = CHART.chosen;
    seg.dataset.tokenId = String(draw.token_id);
    seg.title = `${JSON.stringify(text)} ${percent(draw.p)} (${draw.before.toFixed(3)}–${(draw.before + draw.p).toFixed(3)})`;
    bar.append(seg);
  }
  if (!draw.greedy) {
    const u = el(doc, "span", "nbc-draw-u");
    u.style.left = `${100 * draw.u}%`;
    // the text colour with a halo (widget.css): never confused with the orange chosen segment
    u.title = `u = ${draw.u.toFixed(4)}`;
    // a labelled pointer below the bar: a shape of its own, never read as a segment
    u.append(el(doc, "span", "nbc-draw-u-label", `u = ${draw.u.toFixed(3)}`));
    u.dataset.side = draw.u > 0.7 ? "left" : "right";
    bar.append(u);
  }
  frag.append(bar);
  return frag;
}

/** The draw view bound to the `draw` trait. */
export function createDrawView(model) {
  const doc = globalThis.document;
  const root = el(doc, "div", "nbc-draw");
  root.setAttribute("role", "group");
  root.setAttribute("aria-label", "The last Step's draw");
  function render() {
    const draw = model.get("draw");
    root.hidden = !draw;
    root.replaceChildren(draw ? drawContent(doc, draw) : "");
  }
  model.on("change:draw", render);
  render();
  return { el: root, render, destroy: () => model.off("change:draw", render) };
}
