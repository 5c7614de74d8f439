// The tooltip of a token (role="tooltip"): its probability, rank and entropy, and the top-k
// alternatives with their probabilities. Clicking an alternative asks for a branch from there.

import { percent, prob } from "./format.js";
import { appendVisibleText, hasPartialBytes, shownText } from "./heatmap.js";
import { idAndBytes } from "./prompt.js";

let counter = 0;

/** The tooltip's inner content for `token` (pure DOM building, unit-tested). */
export function tooltipContent(doc, token) {
  const frag = doc.createDocumentFragment();
  const head = doc.createElement("div");
  head.className = "nbc-tip-head";
  const chosen = doc.createElement("code");
  appendVisibleText(chosen, token.special ? token.piece : shownText(token));
  const where = token.prompt ? `prompt #${token.index} ` : `#${token.index} `;
  const ids = idAndBytes(token);
  if (typeof token.logprob !== "number") {
    // a prompt token that is not scored (or the first one: nothing before it)
    const note = token.index === 0 ? "the first token: nothing before it to score" : "press Score for its surprisal";
    head.append(where, chosen, ` ${[ids, token.special ? "special token" : "", note].filter(Boolean).join(" · ")}`);
    frag.append(head);
    return frag;
  }
  const facts = [`${percent(prob(token.logprob))}`, `rank ${token.rank}`, `entropy ${token.entropy.toFixed(2)} nats`];
  if (token.forced) facts.push("forced by the grammar");
  if (!token.text && shownText(token)) facts.push("part of a character: the next token completes it");
  if (token.branch) facts.push("picked by you");
  if (ids) facts.push(ids);
  if (token.prompt) facts.push(`surprisal ${(-token.logprob).toFixed(2)} nats`);
  head.append(where, chosen, ` ${facts.join(" · ")}`);
  frag.append(head);

  const list = doc.createElement("ol");
  list.className = "nbc-alts";
  list.setAttribute("aria-label", "alternatives");
  token.top.forEach(([text, logprob], k) => {
    const item = doc.createElement("li");
    const button = doc.createElement("button");
    button.type = "button";
    button.className = "nbc-alt";
    button.dataset.altIndex = String(k);
    button.dataset.altText = text;
    const p = prob(logprob);
    const isChosen = k === token.rank - 1; // top is sorted: the chosen token sits at its rank
    if (isChosen) {
      button.classList.add("nbc-chosen");
      button.setAttribute("aria-current", "true");
    }
    const bar = doc.createElement("span");
    bar.className = "nbc-alt-bar";
    bar.style.width = `${Math.max(1, Math.round(60 * p))}px`;
    const label = doc.createElement("code");
    appendVisibleText(label, text);
    const value = doc.createElement("span");
    value.className = "nbc-alt-p";
    value.textContent = percent(p) + (isChosen ? (token.prompt ? " (in the text)" : " (chosen)") : "");
    button.title = isChosen ? "Continue again from this token" : "Continue generation with this token instead";
    if (token.prompt) {
      button.disabled = true; // what the model expected in the prompt: nothing to continue from
      button.title = "What the model expected here";
    } else if (hasPartialBytes(text)) {
      // a prompt is text: it cannot end in part of a character
      button.disabled = true;
      button.title = "Part of a multi-byte character: generation cannot continue from part of a character";
    }
    button.append(bar, label, value);
    item.append(button);
    list.append(item);
  });
  if (token.top.length === 0) {
    const item = doc.createElement("li");
    item.className = "nbc-tip-empty";
    item.textContent = "No alternatives recorded (alternatives top-k is 0).";
    list.append(item);
  } else if (token.rank > token.top.length) {
    const item = doc.createElement("li");
    item.className = "nbc-tip-empty";
    item.textContent = `The chosen token is rank ${token.rank}, outside the top ${token.top.length}.`;
    list.append(item);
  }
  frag.append(list);
  if (token.top.length && !token.prompt) {
    const hint = doc.createElement("div");
    hint.className = "nbc-tip-hint";
    hint.textContent =
      "Click an alternative to force it here (one token, a new branch), as a bar of the distribution does; on a remote model, generation continues from it.";
    frag.append(hint);
  }
  return frag;
}

/**
 * One tooltip element per view. show() places it under a token element; it stays open while the
 * pointer is over it (so alternatives can be clicked) and hides after a short delay otherwise.
 */
export function createTooltip(root, { onPick, delay = 250 } = {}) {
  const doc = root.ownerDocument;
  const el = doc.createElement("div");
  el.className = "nbc-tooltip";
  el.setAttribute("role", "tooltip");
  el.id = `nbc-tooltip-${++counter}`;
  el.hidden = true;
  root.append(el);
  let anchor = null;
  let current = null;
  let timer = null;

  function cancelHide() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  }
  function hide() {
    cancelHide();
    el.hidden = true;
    if (anchor) anchor.removeAttribute("aria-describedby");
    anchor = null;
    current = null;
  }
  function scheduleHide() {
    cancelHide();
    timer = setTimeout(hide, delay);
  }
  // Fixed positioning keeps the tooltip out of the notebook output's overflow clipping; it sits
  // under the token, or above it when the viewport has no room below, and follows scrolling.
  function place() {
    if (!anchor || el.hidden) return;
    const view = doc.defaultView;
    const at = anchor.getBoundingClientRect();
    const w = el.offsetWidth;
    const h = el.offsetHeight;
    const left = Math.max(4, Math.min(at.left, view.innerWidth - w - 4));
    let top = at.bottom + 4;
    if (top + h > view.innerHeight - 4 && at.top - h - 4 >= 4) top = at.top - h - 4;
    // An ancestor with `transform` or `contain` (JupyterLab's windowed notebook) becomes the
    // containing block of a fixed element: measure where (0, 0) lands and correct for it.
    el.style.left = "0px";
    el.style.top = "0px";
    const origin = el.getBoundingClientRect();
    el.style.left = `${Math.round(left - origin.left)}px`;
    el.style.top = `${Math.round(top - origin.top)}px`;
  }
  function show(tokenEl, token) {
    cancelHide();
    if (anchor && anchor !== tokenEl) anchor.removeAttribute("aria-describedby");
    anchor = tokenEl;
    current = token;
    el.replaceChildren(tooltipContent(doc, token));
    el.hidden = false;
    tokenEl.setAttribute("aria-describedby", el.id);
    place();
  }
  function focusFirst() {
    const first = el.querySelector("button");
    if (first) first.focus();
  }

  const onScroll = () => place();
  doc.addEventListener("scroll", onScroll, true);
  el.addEventListener("mouseenter", cancelHide);
  el.addEventListener("mouseleave", scheduleHide);
  el.addEventListener("focusin", cancelHide);
  el.addEventListener("focusout", (e) => {
    if (!el.contains(e.relatedTarget) && e.relatedTarget !== anchor) scheduleHide();
  });
  el.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault(); // handled here: the widget keeps focus (keys.js)
      if (anchor) anchor.focus(); // back to the token first (its focus would show us again), then hide
      hide();
    }
  });
  el.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-alt-index]");
    if (!button || !current) return;
    const index = current.index;
    const text = button.dataset.altText;
    hide();
    if (onPick) onPick(index, text, e);
  });

  return {
    el,
    show,
    hide,
    scheduleHide,
    cancelHide,
    focusFirst,
    get token() {
      return current;
    },
    destroy() {
      cancelHide();
      doc.removeEventListener("scroll", onScroll, true);
      el.remove();
    },
  };
}
