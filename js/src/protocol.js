// The messages between this view and the kernel, and how token deltas apply to a view's state.
//
// Kernel -> view (custom messages; the final state also lands in traits):
//   {type: "delta", run, start, tokens: [token...], metrics}   tokens[start..] of run `run`
//   {type: "snapshot", run, tokens: [token...], metrics}      everything sent so far
// View -> kernel:
//   {type: "generate"} | {type: "stop"} | {type: "branch", index, text} | {type: "snapshot"}
//   | {type: "models"} (refresh the list of registered models)
//   | {type: "step"} | {type: "score"} | {type: "force", position, token_id}
//   | {type: "distribution", index, prompt} | {type: "show_branch", id}
//   | {type: "lens", index, prompt} | {type: "attention", index, prompt} | {type: "sample", index}
//     (the inside views, nb_completion/widget/_inside.py; index null: the end)
// A token is {index, text, logprob, rank, top: [[text, logprob]...], entropy, forced, branch?}.

export const generateMsg = () => ({ type: "generate" });
export const stopMsg = () => ({ type: "stop" });
export const snapshotMsg = () => ({ type: "snapshot" });
export const branchMsg = (index, text) => ({ type: "branch", index, text });
export const modelsMsg = () => ({ type: "models" });
// the teaching views (nb_completion/widget/_teach.py)
export const stepMsg = () => ({ type: "step" });
export const scoreMsg = () => ({ type: "score" });
export const forceMsg = (position, tokenId) => ({ type: "force", position, token_id: tokenId });
export const distributionMsg = (index, prompt = false) => ({ type: "distribution", index, prompt });
export const showBranchMsg = (id) => ({ type: "show_branch", id });
// the inside views (nb_completion/widget/_inside.py)
export const lensMsg = (index, prompt = false) => ({ type: "lens", index, prompt });
export const attentionMsg = (index, prompt = false) => ({ type: "attention", index, prompt });
export const sampleMsg = (index) => ({ type: "sample", index });

/** A view's token state: which run it shows and the tokens it holds. */
export function createState(run = 0, tokens = []) {
  return { run, tokens: tokens.slice() };
}

/**
 * Apply a delta. Returns {kind: "append", tokens} with the tokens new to this view,
 * {kind: "ignore"} for another run's or an already-seen batch, or {kind: "gap"} when a batch
 * was missed (the view then asks for a snapshot).
 */
export function applyDelta(state, msg) {
  if (msg.run !== state.run) return { kind: "ignore" };
  const have = state.tokens.length;
  if (msg.start > have) return { kind: "gap" };
  const fresh = msg.tokens.slice(have - msg.start);
  if (fresh.length === 0) return { kind: "ignore" };
  state.tokens.push(...fresh);
  return { kind: "append", tokens: fresh };
}

/** Replace the state with a snapshot of run `msg.run`; returns whether anything changed. */
export function applySnapshot(state, msg) {
  if (msg.run < state.run) return false;
  state.run = msg.run;
  state.tokens = msg.tokens.slice();
  return true;
}

/** Whether `next` (a traits list) shows the same tokens as the state (skip a full re-render). */
export function sameTokens(state, next) {
  if (state.tokens.length !== next.length) return false;
  for (let i = 0; i < next.length; i++) {
    if (state.tokens[i].text !== next[i].text || state.tokens[i].logprob !== next[i].logprob) return false;
  }
  return true;
}
