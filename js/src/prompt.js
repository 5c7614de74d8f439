// The prompt as tokens ("show tokens", and after Score): one element per prompt token carrying
// data-token-index (its position in the prompt) and data-prompt="true"; scored tokens are
// coloured by surprisal like generated ones, unscored ones only outlined; special tokens (<s>,
// <|im_start|>) are shown as written, marked. Also the hover facts every token shares: id, bytes.

import { tokenElement } from "./heatmap.js";

/** A token's UTF-8 bytes as hex ("E3 81 93"); partial characters already show theirs (‹E3 81›). */
export function tokenBytes(token) {
  const piece = token.piece ?? token.text ?? "";
  if (/‹[0-9A-F]{2}/.test(piece)) return piece.replace(/[‹›]/g, "");
  return [...new TextEncoder().encode(piece)].map((b) => b.toString(16).toUpperCase().padStart(2, "0")).join(" ");
}

/** "id 278 · bytes 65 78" for the tooltip head. */
export function idAndBytes(token) {
  if (token.token_id === undefined || token.token_id < 0) return "";
  return `id ${token.token_id} · bytes ${tokenBytes(token) || "(none)"}`;
}

/** The element of one prompt token. */
export function promptTokenElement(doc, token, opts) {
  const scored = typeof token.logprob === "number";
  const shown = token.special ? { ...token, text: token.piece || token.text } : token;
  const el = tokenElement(doc, scored ? shown : { ...shown, logprob: 0, rank: 1 }, opts);
  el.dataset.prompt = "true";
  el.classList.add("nbc-prompt-token");
  if (!scored) {
    el.style.background = "";
    el.classList.add("nbc-unscored");
    el.setAttribute("aria-label", `prompt token ${JSON.stringify(shown.text)}, id ${token.token_id}`);
  }
  if (token.special) el.classList.add("nbc-special");
  return el;
}

export function promptFragment(doc, tokens, opts) {
  const frag = doc.createDocumentFragment();
  for (const token of tokens) frag.append(promptTokenElement(doc, token, opts));
  return frag;
}
