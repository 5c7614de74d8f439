// The output view: status and live metrics, the colour toggle and legend, the branch banner, the
// error box, and the token heatmap that grows as deltas arrive.

import { metricsLine, stopText } from "./format.js";
import { legendElement, legendKeys, recolor, tokenFragment } from "./heatmap.js";
import { usePalette } from "./palette.js";
import { promptFragment } from "./prompt.js";
import { applyDelta, applySnapshot, createState, sameTokens } from "./protocol.js";
import { createTooltip } from "./tooltip.js";

const STATUS_TEXT = {
  idle: "Ready",
  loading: "Loading the model…",
  running: "Generating…",
  done: "Done",
  stopped: "Stopped",
  error: "Error",
};

function el(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * Build the output bound to `model`. `onBranch(index, text)` is called when an alternative is
 * clicked; `onGap()` when a delta was missed (ask the kernel for a snapshot); `onDistribution(index,
 * prompt)` and `onSelect({index, prompt, text})` when a token is clicked (the inside views follow it).
 */
export function createOutput(model, { onBranch, onGap, onDistribution, onSelect } = {}) {
  const doc = globalThis.document;
  const root = el(doc, "div", "nbc-output");
  const statusLine = el(doc, "div", "nbc-statusline");
  const status = el(doc, "span", "nbc-status");
  status.setAttribute("role", "status");
  status.setAttribute("aria-live", "polite");
  const metrics = el(doc, "span", "nbc-metrics");
  statusLine.append(status, metrics);

  const view = el(doc, "div", "nbc-view");
  const colorLabel = el(doc, "label", "nbc-toggle");
  const colorBy = doc.createElement("select");
  colorBy.name = "color_by";
  for (const [value, text] of [
    ["probability", "probability"],
    ["entropy", "entropy"],
  ]) {
    const o = el(doc, "option", "", text);
    o.value = value;
    colorBy.append(o);
  }
  colorLabel.append("Colour by ", colorBy);
  const wsLabel = el(doc, "label", "nbc-toggle");
  const showWs = doc.createElement("input");
  showWs.type = "checkbox";
  showWs.checked = true;
  showWs.name = "show_whitespace";
  wsLabel.append(showWs, " show spaces");
  const tokLabel = el(doc, "label", "nbc-toggle");
  const showTok = doc.createElement("input");
  showTok.type = "checkbox";
  showTok.name = "show_tokens";
  tokLabel.append(showTok, " show tokens");
  const palLabel = el(doc, "label", "nbc-toggle");
  const palette = doc.createElement("select");
  palette.name = "palette";
  for (const [value, label] of [
    ["default", "default"],
    ["colorblind", "colour-blind safe"],
  ]) {
    const o = el(doc, "option", "", label);
    o.value = value;
    palette.append(o);
  }
  palLabel.append("Palette ", palette);
  const legendSlot = el(doc, "span", "nbc-legend-slot");
  view.append(colorLabel, wsLabel, tokLabel, palLabel, legendSlot);
  const scoreLine = el(doc, "div", "nbc-score-line");
  scoreLine.setAttribute("aria-live", "polite");

  const banner = el(doc, "div", "nbc-branch-banner");
  const error = el(doc, "div", "nbc-error");
  error.setAttribute("role", "alert");
  const text = el(doc, "div", "nbc-text");
  text.setAttribute("aria-label", "completion");
  const promptEcho = el(doc, "span", "nbc-prompt-echo");
  const tokensBox = el(doc, "span", "nbc-tokens");
  // the run ended on the model's own end token: a marked chip where the text stops
  const endChip = el(doc, "span", "nbc-end", "⟨end⟩");
  endChip.title = "the model's end token: it chose to stop here";
  endChip.hidden = true;
  text.append(promptEcho, tokensBox, endChip);
  // with a second model (futures.js) the text is the first of two columns, each headed by its model
  const mainHead = el(doc, "div", "nbc-compare-head nbc-main-head");
  const mainCol = el(doc, "div", "nbc-main-col");
  mainCol.append(mainHead, text);
  const columns = el(doc, "div", "nbc-columns");
  columns.append(mainCol);
  root.append(statusLine, view, banner, error, scoreLine, columns);

  // After a pick the tooltip hides and the tokens are redrawn under a still pointer: hovering
  // stays quiet until the pointer really moves, so no tooltip pops up on another token.
  let quietAt = null;
  const tooltip = createTooltip(root, {
    onPick: (index, alt, event) => {
      quietAt = [event?.clientX ?? 0, event?.clientY ?? 0];
      if (onBranch) onBranch(index, alt);
    },
  });
  const state = createState(model.get("run") ?? 0, model.get("tokens") || []);
  const opts = () => ({ colorBy: model.get("color_by") || "probability", showSpaces: showWs.checked });

  let keys = "";
  function renderTokens() {
    tooltip.hide();
    tokensBox.replaceChildren(tokenFragment(doc, state.tokens, opts()));
    renderLegend();
  }
  function appendTokens(tokens) {
    const nearBottom = text.scrollHeight - text.scrollTop - text.clientHeight < 40;
    tokensBox.append(tokenFragment(doc, tokens, opts()));
    if (nearBottom) text.scrollTop = text.scrollHeight;
    renderLegend();
  }
  function renderStatus() {
    const s = model.get("status") || "idle";
    status.dataset.status = s;
    root.dataset.status = s;
    let label = STATUS_TEXT[s] || s;
    const m = model.get("metrics") || {};
    if (s === "done" && m.stop_reason) label += ` (${stopText(m)})`;
    status.textContent = label;
    endChip.hidden = !(s === "done" && m.stop_reason === "end_of_turn" && typeof m.stop_string !== "string");
  }
  function renderMetrics(m) {
    const line = metricsLine(m || model.get("metrics"));
    metrics.textContent = model.get("branch") && line ? `branch: ${line}` : line;
  }
  function renderError() {
    const e = model.get("error") || {};
    error.replaceChildren();
    error.hidden = !e.title;
    if (e.title) {
      const title = el(doc, "strong", "nbc-error-title", `${e.status ?? ""} ${e.title}`.trim());
      error.append(title, el(doc, "div", "nbc-error-detail", e.detail || ""));
    }
  }
  function renderMainHead() {
    const second = model.get("compare_model");
    mainHead.hidden = !second;
    columns.classList.toggle("nbc-two", Boolean(second));
    mainHead.replaceChildren(el(doc, "strong", "", model.get("model_name") || "the default model"));
  }
  function renderBanner() {
    const b = model.get("branch");
    banner.hidden = !b;
    if (b) {
      banner.textContent = b.forced
        ? `Branch: at token #${b.index} the model chose ${JSON.stringify(b.original)}; ${JSON.stringify(b.chosen)} is forced in its place (one token: Generate or Step goes on).`
        : `Branch: at token #${b.index} the model chose ${JSON.stringify(b.original)}; continuing from ${JSON.stringify(b.chosen)} instead.`;
    }
  }
  function promptTokens() {
    const tokens = model.get("prompt_tokens") || [];
    const echo = model.get("prompt_echo") || "";
    const scored = tokens.some((t) => typeof t.logprob === "number");
    const matches = tokens.map((t) => t.text).join("") === echo || tokens.some((t) => t.special);
    return (showTok.checked || scored) && matches ? tokens : null;
  }
  function renderPrompt() {
    const tokens = promptTokens();
    if (tokens) promptEcho.replaceChildren(promptFragment(doc, tokens, opts()));
    else promptEcho.textContent = model.get("prompt_echo") || "";
    const ppl = model.get("perplexity");
    scoreLine.hidden = ppl === null || ppl === undefined;
    if (!scoreLine.hidden) {
      const n = (model.get("prompt_tokens") || []).filter((t) => typeof t.logprob === "number").length;
      scoreLine.textContent = `Score: perplexity ${ppl.toFixed(2)} over ${n} prompt tokens (exp of the mean surprisal; hover a prompt token for its rank and the alternatives the model expected)`;
    }
  }
  function renderPalette() {
    const name = model.get("palette") || "default";
    palette.value = name;
    usePalette(name);
    keys = "";
    renderLegend();
    recolor(tokensBox, state.tokens, model.get("color_by"));
    renderPrompt();
  }
  function renderLegend() {
    // the marks explained follow the shown tokens (italic only when a grammar forced a token)
    const by = model.get("color_by") || "probability";
    const want = legendKeys(state.tokens);
    const now = JSON.stringify([by, want]);
    if (now === keys) return;
    keys = now;
    colorBy.value = by;
    legendSlot.replaceChildren(legendElement(doc, by, want));
  }
  function syncFromTraits() {
    const run = model.get("run") ?? 0;
    const tokens = model.get("tokens") || [];
    const live = ["running", "loading"].includes(model.get("status"));
    if (run !== state.run) {
      // a new run starts from its prefix (a branch keeps the tokens before the picked one)
      state.run = run;
      state.tokens = tokens.slice();
      renderTokens();
    } else if (sameTokens(state, tokens)) {
      state.tokens = tokens.slice(); // the final traits: what the deltas built, no re-render
    } else if (!live || tokens.length > state.tokens.length) {
      state.tokens = tokens.slice(); // the traits know more than the deltas brought
      renderTokens();
    }
  }

  function onMessage(msg) {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "delta") {
      const r = applyDelta(state, msg);
      if (r.kind === "append") appendTokens(r.tokens);
      else if (r.kind === "gap" && onGap) onGap();
      if (msg.metrics && r.kind !== "ignore") renderMetrics(msg.metrics);
    } else if (msg.type === "snapshot") {
      if (applySnapshot(state, msg)) renderTokens();
      if (msg.metrics) renderMetrics(msg.metrics);
    }
  }

  // hover / focus a token -> tooltip
  const tokenOf = (target) => {
    const t = target.closest && target.closest("[data-token-index]");
    if (t && tokensBox.contains(t)) return [t, state.tokens[Number(t.dataset.tokenIndex)]];
    if (t && promptEcho.contains(t)) {
      const token = (model.get("prompt_tokens") || [])[Number(t.dataset.tokenIndex)];
      return token ? [t, { ...token, prompt: true, top: token.top || [] }] : [null, null];
    }
    return [null, null];
  };
  const over = (e) => {
    if (quietAt && e.type === "mouseover") return;
    const [t, token] = tokenOf(e.target);
    if (token) tooltip.show(t, token);
  };
  const out = (e) => {
    const [t] = tokenOf(e.target);
    if (t && !t.contains(e.relatedTarget) && !tooltip.el.contains(e.relatedTarget)) tooltip.scheduleHide();
  };
  // a click on a token shows the distribution it was drawn from (prompt tokens: the one before it)
  text.addEventListener("click", (e) => {
    const [, token] = tokenOf(e.target);
    if (!token) return;
    if (onDistribution && !(token.prompt && token.index === 0)) onDistribution(token.index, Boolean(token.prompt));
    if (onSelect) onSelect({ index: token.index, prompt: Boolean(token.prompt), text: token.text });
  });
  for (const box of [tokensBox, promptEcho]) {
    box.addEventListener("mouseover", over);
    box.addEventListener("focusin", over);
    box.addEventListener("mouseout", out);
    box.addEventListener("focusout", out);
  }
  tokensBox.addEventListener("mousemove", (e) => {
    if (quietAt && Math.hypot(e.clientX - quietAt[0], e.clientY - quietAt[1]) > 3) {
      quietAt = null;
      over(e);
    }
  });
  text.addEventListener("keydown", (e) => {
    const [t, token] = tokenOf(e.target);
    if (!token) return;
    if (e.key === "Escape") tooltip.hide();
    else if (e.key === "ArrowDown" || e.key === "Enter") {
      e.preventDefault();
      tooltip.show(t, token);
      tooltip.focusFirst();
    } else if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      const box = token.prompt ? promptEcho : tokensBox;
      const next = box.querySelector(`[data-token-index="${token.index + (e.key === "ArrowRight" ? 1 : -1)}"]`);
      if (next) {
        e.preventDefault();
        next.focus();
      }
    }
  });

  colorBy.addEventListener("change", () => {
    model.set("color_by", colorBy.value);
    model.save_changes();
  });
  showWs.addEventListener("change", () => {
    renderTokens();
    renderPrompt();
  });
  showTok.addEventListener("change", () => {
    root.classList.toggle("nbc-show-tokens", showTok.checked);
    renderPrompt();
  });
  palette.addEventListener("change", () => {
    model.set("palette", palette.value);
    model.save_changes();
    renderPalette();
  });

  const handlers = {
    "change:status": () => {
      renderStatus();
      renderMetrics();
      syncFromTraits();
    },
    "change:metrics": () => {
      renderMetrics();
      renderStatus();
    },
    "change:error": renderError,
    "change:branch": renderBanner,
    "change:compare_model": renderMainHead,
    "change:model_name": renderMainHead,
    "change:prompt_echo": renderPrompt,
    "change:prompt_tokens": renderPrompt,
    "change:perplexity": renderPrompt,
    "change:palette": renderPalette,
    "change:run": syncFromTraits,
    "change:tokens": syncFromTraits,
    "change:color_by": () => {
      renderLegend();
      recolor(tokensBox, state.tokens, model.get("color_by"));
    },
  };
  for (const [event, fn] of Object.entries(handlers)) model.on(event, fn);

  usePalette(model.get("palette") || "default");
  palette.value = model.get("palette") || "default";
  renderStatus();
  renderMetrics();
  renderError();
  renderBanner();
  renderMainHead();
  renderPrompt();
  renderLegend();
  renderTokens();

  /** Immediate feedback for a Stop click; the kernel's status follows within a token. */
  function markStopping() {
    const s = model.get("status");
    if (s === "running" || s === "loading") status.textContent = "Stopping…";
  }

  return {
    el: root,
    state,
    markStopping,
    tooltip,
    onMessage,
    tokensBox,
    columns,
    destroy() {
      for (const [event, fn] of Object.entries(handlers)) model.off(event, fn);
      tooltip.destroy();
    },
  };
}
