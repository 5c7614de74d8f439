// Small formatting helpers shared by the views. Pure functions, no DOM.

/** Clamp to [0, 1]; NaN becomes 0. */
export function clamp01(x) {
  if (!(x > 0)) return 0;
  return x > 1 ? 1 : x;
}

/** exp(logprob) as a probability in [0, 1]. */
export function prob(logprob) {
  return clamp01(Math.exp(logprob));
}

/** "93.1%", "0.42%", "<0.01%". */
export function percent(p) {
  const v = 100 * p;
  if (v > 0 && v < 0.01) return "<0.01%";
  if (v >= 10) return `${v.toFixed(1)}%`;
  return `${v.toFixed(2)}%`;
}

/** Seconds as "0.31 s" / "12 ms"; null stays "–". */
export function seconds(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "–";
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
}

/** "12 tokens · first token 310 ms · 28.4 tokens/s · Q4_1 weights, float32 activations" from the
 * metrics dict the kernel sends (the last part: what computed the numbers). */
export function metricsLine(m) {
  if (!m || m.tokens === undefined) return "";
  const parts = [`${m.tokens} token${m.tokens === 1 ? "" : "s"}`];
  if (m.time_to_first_token !== null && m.time_to_first_token !== undefined) {
    parts.push(`first token ${seconds(m.time_to_first_token)}`);
  }
  if (m.tokens_per_second !== null && m.tokens_per_second !== undefined) {
    parts.push(`${m.tokens_per_second.toFixed(1)} tokens/s`);
  }
  if (m.incomplete) parts.push("incomplete: max tokens ended the constrained output; it may not parse");
  if (m.weights) parts.push(m.weights);
  return parts.join(" · ");
}

/** Escapes a user can type into one-line inputs: \n, \t, \\ . */
export function decodeEscapes(s) {
  return s.replace(/\\(n|t|\\)/g, (_, c) => (c === "n" ? "\n" : c === "t" ? "\t" : "\\"));
}

export function encodeEscapes(s) {
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\t/g, "\\t");
}

const STOP_WORDS = {
  end_of_turn: "end of turn: the model's end token",
  end_of_message: "end of message: the model's end-of-message token",
  out_of_tokens: "out of tokens",
};

/** Why a run ended, in words: a stop string is told apart from the model's own end token. */
export function stopText(m) {
  if (typeof m.stop_string === "string") return `stop string ${JSON.stringify(m.stop_string)}`;
  if (m.end_token && m.stop_reason === "end_of_turn" && !m.grammar) {
    // the token a run ended on adds no text: named, so an empty answer is not a mystery
    return `ended on its end token ${m.end_token} (${(100 * (m.end_token_p || 0)).toFixed(1)}%)`;
  }
  if (m.stop_reason === "end_of_turn" && m.grammar) return "end of turn: the output is complete";
  return STOP_WORDS[m.stop_reason] || String(m.stop_reason).replace(/_/g, " ");
}
