// The tooltip of a token (role="tooltip"): its probability, rank and entropy, and the top-k
// alternatives with their probabilities. Clicking an alternative asks for a branch from there.

import { percent, prob } from "./format.js";
import { appendVisibleText } from "./heatmap.js";

let counter = 0;

/** The tooltip's inner content for `token` (pure DOM building, unit-tested). */
export function tooltipContent(doc, token) {
  const frag = doc.createDocumentFragment();
  const head = doc.createElement("div");
  head.className = "nbc-tip-head";
  const chosen = doc.createElement("code");
  appendVisibleText(chosen, token.text);
  const facts = [`${percent(prob(token.logprob))}`, `rank ${token.rank}`, `entropy ${token.entropy.toFixed(2)} nats`];
  if (token.forced) facts.push("forced by the grammar");
  if (token.branch) facts.push("picked by you");
  head.append(`#${token.index} `, chosen, ` ${facts.join(" · ")}`);
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
    const isChosen = text === token.text;
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
    value.textContent = percent(p) + (isChosen ? " (chosen)" : "");
    button.title = isChosen ? "Continue again from this token" : "Continue generation with this token instead";
    button.append(bar, label, value);
    item.append(button);
    list.append(item);
  });
  if (token.top.length === 0) {
    const item = doc.createElement("li");
    item.className = "nbc-tip-empty";
    item.textContent = "No alternatives recorded (alternatives top-k is 0).";
    list.append(item);
  } else if (!token.top.some(([text]) => text === token.text)) {
    const item = doc.createElement("li");
    item.className = "nbc-tip-empty";
    item.textContent = `The chosen token is rank ${token.rank}, outside the top ${token.top.length}.`;
    list.append(item);
  }
  frag.append(list);
  if (token.top.length) {
    const hint = doc.createElement("div");
    hint.className = "nbc-tip-hint";
    hint.textContent = "Click an alternative to continue from it.";
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
  function show(tokenEl, token) {
    cancelHide();
    if (anchor && anchor !== tokenEl) anchor.removeAttribute("aria-describedby");
    anchor = tokenEl;
    current = token;
    el.replaceChildren(tooltipContent(doc, token));
    el.hidden = false;
    tokenEl.setAttribute("aria-describedby", el.id);
    const box = root.getBoundingClientRect();
    const at = tokenEl.getBoundingClientRect();
    el.style.left = `${Math.max(0, Math.min(at.left - box.left, box.width - 280))}px`;
    el.style.top = `${at.bottom - box.top + 4}px`;
  }
  function focusFirst() {
    const first = el.querySelector("button");
    if (first) first.focus();
  }

  el.addEventListener("mouseenter", cancelHide);
  el.addEventListener("mouseleave", scheduleHide);
  el.addEventListener("focusin", cancelHide);
  el.addEventListener("focusout", (e) => {
    if (!el.contains(e.relatedTarget) && e.relatedTarget !== anchor) scheduleHide();
  });
  el.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      const back = anchor;
      hide();
      if (back) back.focus();
    }
  });
  el.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-alt-index]");
    if (!button || !current) return;
    const index = current.index;
    const text = button.dataset.altText;
    hide();
    if (onPick) onPick(index, text);
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
      el.remove();
    },
  };
}
