// nb_completion's CompletionWidget front end (anywidget). Wires the controls and the output to
// the model and to the kernel's custom messages; see protocol.js for the messages.

import "./widget.css";
import { createControls } from "./controls.js";
import { createCopyHider } from "./copy_hider.js";
import { keepKeys } from "./keys.js";
import { createDistributionView } from "./distribution.js";
import { createCompareView, createFuturesView } from "./futures.js";
import { createInsideView } from "./inside.js";
import { createOutput } from "./output.js";
import { createPresentation } from "./present.js";
import {
  branchMsg,
  distributionMsg,
  forceMsg,
  attentionMsg,
  generateMsg,
  lensMsg,
  modelsMsg,
  sampleMsg,
  scoreMsg,
  showBranchMsg,
  snapshotMsg,
  stepMsg,
  stopMsg,
} from "./protocol.js";
import { createDrawView } from "./step.js";
import { createTreeView } from "./tree.js";

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "nbc-widget";
  // Keep JupyterLab's notebook shortcuts (Ctrl+Enter runs the cell) out of the panel.
  root.dataset.lmSuppressShortcuts = "true";
  const send = (msg) => model.send(msg);

  let output = null;
  let inside = null;
  const controls = createControls(model, {
    onGenerate: () => send(generateMsg()),
    onStop: () => {
      send(stopMsg());
      if (output) output.markStopping();
    },
    onModels: () => send(modelsMsg()),
    onStep: () => send(stepMsg()),
    onScore: () => send(scoreMsg()),
  });
  output = createOutput(model, {
    onBranch: (index, text) => {
      controls.flush();
      send(branchMsg(index, text));
    },
    onGap: () => send(snapshotMsg()),
    onDistribution: (index, prompt) => send(distributionMsg(index, prompt)),
    onSelect: (at) => inside && inside.select(at),
  });
  // the teaching views live inside the output area: the draw, the distribution, the tree
  const draw = createDrawView(model);
  const distribution = createDistributionView(model, {
    onForce: (index, tokenId) => {
      controls.flush();
      send(forceMsg(index, tokenId));
    },
  });
  const tree = createTreeView(model, { onShow: (id) => send(showBranchMsg(id)) });
  // inside the model: the lens and attention at the clicked token, Sample 5, a second model's column
  inside = createInsideView(model, {
    onLens: (index, prompt) => send(lensMsg(index, prompt)),
    onAttention: (index, prompt) => send(attentionMsg(index, prompt)),
    onSample: (index) => {
      controls.flush();
      send(sampleMsg(index));
    },
  });
  const futures = createFuturesView(model, { onShow: (id) => send(showBranchMsg(id)) });
  const compare = createCompareView(model);
  output.columns.append(compare.el);
  const teach = document.createElement("div");
  teach.className = "nbc-teach";
  teach.append(draw.el, distribution.el, inside.el, futures.el, tree.el);
  output.el.append(teach);
  const onRun = () => inside.reset();
  model.on("change:run", onRun);
  const onStatus = () => {
    if (["done", "stopped"].includes(model.get("status"))) inside.refresh();
  };
  model.on("change:status", onStatus);
  const onCustom = (msg) => output.onMessage(msg);
  model.on("msg:custom", onCustom);
  const copyHider = createCopyHider(model);
  const present = createPresentation(model, root);
  root.append(copyHider.el, present.el, controls.el, output.el);
  const releaseKeys = keepKeys(root);
  el.replaceChildren(root);

  // A view opened mid-generation asks for the tokens streamed so far.
  const status = model.get("status");
  if (status === "running" || status === "loading") send(snapshotMsg());

  return () => {
    model.off("msg:custom", onCustom);
    controls.destroy();
    copyHider.destroy();
    present.destroy();
    releaseKeys();
    output.destroy();
    draw.destroy();
    distribution.destroy();
    tree.destroy();
    inside.destroy();
    futures.destroy();
    compare.destroy();
    model.off("change:run", onRun);
    model.off("change:status", onStatus);
  };
}

export default { render };
