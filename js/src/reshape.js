// The next-token distribution reshaped in the browser, with no new forward pass: the same steps
// as the engine's processors (nb_completion/engine/batch_sampling.py), in the same order:
// repetition penalty -> temperature -> top-k -> top-p, then softmax; greedy takes the argmax.
//
// Input (stepping.py's Distribution.to_dict): the top N raw logits (most likely first) with
// `seen` flags, and the other tokens summarised in bins [count, logsumexp]. The rest's mass under
// temperature T is logsumexp_b(log n_b + (lse_b - log n_b) / T): exact at T = 1, and the rest is
// treated as one block (never in the top-k; in the nucleus only if the nucleus reaches it; the
// repetition penalty is not applied to it). js/test/distribution.test.js checks these numbers
// against vectors computed by the engine's own processors.

const NEG = -Infinity;

function logsumexp(values) {
  let top = NEG;
  for (const v of values) if (v > top) top = v;
  if (top === NEG) return NEG;
  let s = 0;
  for (const v of values) s += Math.exp(v - top);
  return top + Math.log(s);
}

/** The rest's log-mass (unnormalised) under temperature `t`. */
export function restLogMass(rest, t = 1) {
  return logsumexp(rest.filter(([n]) => n > 0).map(([n, lse]) => Math.log(n) + (lse - Math.log(n)) / t));
}

/** Raw probabilities of the top tokens and of the rest. */
export function rawProbabilities(dist) {
  const restLog = restLogMass(dist.rest || []);
  const z = logsumexp([...dist.logits, restLog]);
  return { probs: dist.logits.map((l) => Math.exp(l - z)), rest: restLog === NEG ? 0 : Math.exp(restLog - z) };
}

/** The processor settings the controls describe (the engine's RowParams). */
export function settingsOf({ strategy = "greedy", temperature = 1, top_p = 1, top_k = 0, repetition_penalty = 1 } = {}) {
  if (strategy === "top_k") return { greedy: false, temperature: 1, topK: top_k, topP: 1, penalty: repetition_penalty };
  if (strategy === "top_p") return { greedy: false, temperature, topK: 0, topP: top_p, penalty: repetition_penalty };
  return { greedy: true, temperature: 1, topK: 0, topP: 1, penalty: repetition_penalty };
}

/**
 * Reshape `dist` under `controls` ({strategy, temperature, top_p, top_k, repetition_penalty}).
 * Returns {raw, rawRest, processed, rest, excluded, kept, cut, nucleusBeyond}: per top token its raw
 * and processed probability and whether the processors exclude it; the rest's raw and processed
 * mass; how many tokens survive; `cut`, the number of tokens inside the top-p nucleus (null when
 * top-p is off); `nucleusBeyond`, whether the nucleus reaches past the tokens sent.
 */
export function reshape(dist, controls) {
  const s = settingsOf(controls);
  const n = dist.logits.length;
  const { probs: raw, rest: rawRest } = rawProbabilities(dist);
  let x = dist.logits.slice();
  if (s.penalty !== 1) {
    const seen = dist.seen || [];
    x = x.map((l, i) => (seen[i] ? (l < 0 ? l * s.penalty : l / s.penalty) : l));
  }
  const excluded = new Array(n).fill(false);
  if (s.greedy) {
    let best = 0;
    for (let i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    const processed = x.map((_, i) => (i === best ? 1 : 0));
    return { raw, rawRest, processed, rest: 0, excluded: processed.map((p) => p === 0), kept: 1, cut: null, nucleusBeyond: false };
  }
  x = x.map((l) => l / s.temperature);
  let restLog = restLogMass(dist.rest || [], s.temperature);
  let restExcluded = restLog === NEG;
  if (s.topK > 0 && s.topK < n + (restExcluded ? 0 : 1)) {
    const kth = x.slice().sort((a, b) => b - a)[Math.min(s.topK, n) - 1];
    x.forEach((l, i) => {
      if (l < kth) excluded[i] = true;
    });
    if (s.topK <= n) restExcluded = true;
  }
  let cut = null;
  let nucleusBeyond = false;
  if (s.topP < 1) {
    const live = [...x.map((l, i) => (excluded[i] ? NEG : l)), restExcluded ? NEG : restLog];
    const z = logsumexp(live);
    // the rest's tokens are each less likely than any token sent: the block comes last
    const order = live.slice(0, n).map((_, i) => i).filter((i) => live[i] > NEG);
    order.sort((a, b) => live[b] - live[a] || a - b);
    if (live[n] > NEG) order.push(n);
    let before = 0;
    let keep = 0;
    for (const i of order) {
      if (keep > 0 && !(before < s.topP)) break;
      before += Math.exp(live[i] - z);
      keep++;
    }
    const inside = new Set(order.slice(0, keep));
    for (let i = 0; i < n; i++) if (!inside.has(i)) excluded[i] = true;
    if (!inside.has(n)) restExcluded = true;
    else nucleusBeyond = true;
    cut = order.slice(0, keep).filter((i) => i < n).length;
  }
  const live = [...x.map((l, i) => (excluded[i] ? NEG : l)), restExcluded ? NEG : restLog];
  const z = logsumexp(live);
  const processed = x.map((l, i) => (excluded[i] ? 0 : Math.exp(l - z)));
  const rest = restExcluded ? 0 : Math.exp(restLog - z);
  return { raw, rawRest, processed, rest, excluded, kept: excluded.filter((e) => !e).length, cut, nucleusBeyond };
}
