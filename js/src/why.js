// "Why this token": one token of the shown distribution explained in words: its raw and its
// processed probability (labelled as such), its rank, whether the top-k and top-p cuts kept it,
// where the last Step's u fell, and the entropy as "about N equally likely choices". A short
// glossary sits one click away (<details>). whyFacts() is pure; whyContent() builds the DOM.

import { percent } from "./format.js";
import { appendVisibleText } from "./heatmap.js";
import { rawProbabilities, reshape, settingsOf } from "./reshape.js";

function el(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Entropy in nats of probabilities `probs` plus `rest` bins [count, mass] (uniform inside a bin). */
export function entropyOf(probs, bins = []) {
  let h = 0;
  for (const p of probs) if (p > 0) h -= p * Math.log(p);
  for (const [n, m] of bins) if (n > 0 && m > 0) h -= m * Math.log(m / n);
  return h;
}

/** exp(entropy), the number of equally likely choices with the same uncertainty. */
export const choices = (h) => Math.exp(h);

function roundChoices(n) {
  return n < 10 ? Number(n.toFixed(1)).toString() : Math.round(n).toLocaleString("en");
}

/** The raw distribution's entropy (the rest's bins spread evenly over their tokens). */
export function rawEntropy(dist) {
  const { probs } = rawProbabilities(dist);
  const z = dist.logits[0] - Math.log(probs[0]); // p_i = exp(logit_i - z)
  const bins = (dist.rest || []).map(([n, lse]) => [n, Math.exp(lse - z)]);
  return entropyOf(probs, bins);
}

/**
 * The facts about the token at `rank` (1-based) of `dist` under `controls`, and `draw` (the last
 * Step's, or null). Returns {text, id, rank, raw, processed, excluded, keptTopK, keptTopP, u, entropy, processedEntropy}.
 */
export function whyFacts(dist, controls, rank, draw = null) {
  const r = reshape(dist, controls);
  const s = settingsOf(controls);
  const i = rank - 1;
  const id = dist.ids[i];
  // top-k keeps the k most likely (the ranks follow the raw order once no penalty reorders them)
  const keptTopK = s.greedy || s.topK <= 0 ? null : rank <= s.topK;
  // top-p (the top-p strategy; top-k's strategy never sets it) keeps the nucleus
  const keptTopP = s.greedy || s.topP >= 1 || keptTopK === false ? null : !r.excluded[i];
  let u = null;
  if (draw && !draw.greedy && typeof draw.u === "number" && draw.index === dist.index) {
    let before = 0;
    let at = null;
    for (const [bid, , p] of draw.bar) {
      if (bid === id) at = [before, before + p];
      before += p;
    }
    if (draw.token_id === id) at = [draw.before, draw.before + draw.p];
    const winner = draw.bar.find(([bid]) => bid === draw.token_id);
    u = { value: draw.u, drawn: draw.token_id === id, interval: at, winner: winner ? winner[1] : draw.text ?? null };
  } else if (draw && draw.greedy && draw.index === dist.index) {
    u = { greedy: true };
  }
  const live = r.processed.filter((p) => p > 0);
  const processedEntropy = s.greedy ? 0 : entropyOf(live, r.rest > 0 ? [[1, r.rest]] : []);
  return {
    text: dist.texts[i],
    id,
    rank,
    raw: r.raw[i],
    processed: r.processed[i],
    excluded: r.excluded[i],
    greedy: s.greedy,
    topK: s.topK,
    topP: s.topP,
    keptTopK,
    keptTopP,
    u,
    entropy: rawEntropy(dist),
    processedEntropy,
  };
}

/** The facts as sentences (plain strings, one per line of the panel). */
export function whySentences(f) {
  const ord = `#${f.rank}`;
  const lines = [
    `Raw probability (the model's softmax, before any setting): ${percent(f.raw)}. Rank ${ord} of the vocabulary.`,
    f.excluded
      ? `Processed probability (after the settings): 0 — the settings exclude it.`
      : `Processed probability (after the settings, what sampling draws from): ${percent(f.processed)}.`,
  ];
  if (f.greedy) lines.push(`Greedy: only the most likely token can be chosen; top-k and top-p are not used.`);
  if (f.keptTopK !== null) lines.push(`Top-k ${f.topK}: ${f.keptTopK ? `kept (rank ${f.rank} ≤ ${f.topK})` : `cut (rank ${f.rank} > ${f.topK})`}.`);
  if (f.keptTopP !== null) lines.push(`Top-p ${f.topP}: ${f.keptTopP ? "kept (inside the nucleus)" : "cut (outside the nucleus: the tokens above already reach p)"}.`);
  if (f.u === null) lines.push("u: no Step drew at this position (press Step to see a draw).");
  else if (f.u.greedy) lines.push("u: greedy draws no random number; the argmax is taken.");
  else if (f.u.drawn) lines.push(`u = ${f.u.value.toFixed(3)} fell in this token's interval ${f.u.interval[0].toFixed(3)}–${f.u.interval[1].toFixed(3)}, so it was drawn.`);
  else {
    const where = f.u.interval ? ` (its interval is ${f.u.interval[0].toFixed(3)}–${f.u.interval[1].toFixed(3)})` : "";
    lines.push(`u = ${f.u.value.toFixed(3)} fell in ${JSON.stringify(f.u.winner)}'s interval, not this token's${where}.`);
  }
  lines.push(
    `Uncertainty here: raw entropy ${f.entropy.toFixed(2)} nats, about ${roundChoices(choices(f.entropy))} equally likely choices; after the settings about ${roundChoices(choices(f.processedEntropy))}.`,
  );
  return lines;
}

const GLOSSARY = [
  ["token", "a piece of text the model reads and writes: a word, part of a word, a space or a symbol"],
  ["raw probability", "the model's own softmax over all tokens, before any sampling setting"],
  ["processed probability", "the probability after repetition penalty, temperature, top-k and top-p: what sampling draws from"],
  ["rank", "the position among all tokens, most likely first"],
  ["temperature", "divides the scores: below 1 sharpens the distribution, above 1 flattens it"],
  ["top-k", "keeps only the k most likely tokens"],
  ["top-p (nucleus)", "keeps the most likely tokens until their raw share reaches p"],
  ["u", "a uniform random number in [0, 1); the token whose interval of the cumulative bar contains u is drawn"],
  ["entropy", "how unsure the model is, in nats; exp(entropy) is the number of equally likely choices with the same uncertainty"],
];

/** The panel's content for facts `f`. */
export function whyContent(doc, f) {
  const frag = doc.createDocumentFragment();
  const head = el(doc, "div", "nbc-why-head");
  const code = el(doc, "code");
  appendVisibleText(code, f.text, true, false); // spaces and newlines visible, as on the bars
  head.append("Why ", code, "?");
  const list = el(doc, "ul", "nbc-why-list");
  for (const line of whySentences(f)) list.append(el(doc, "li", "", line));
  const glossary = el(doc, "details", "nbc-why-glossary");
  glossary.append(el(doc, "summary", "", "Glossary"));
  const dl = el(doc, "dl");
  for (const [term, def] of GLOSSARY) dl.append(el(doc, "dt", "", term), el(doc, "dd", "", def));
  glossary.append(dl);
  frag.append(head, list, glossary);
  return frag;
}
