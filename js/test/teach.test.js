// The teaching views in the panel (jsdom, fake model): Step and Score buttons, the distribution
// figure (reshaped in the browser, no message to the kernel), forcing a token, the tree, the
// draw, prompt tokens with data-prompt.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import widget from "../src/index.js";
import { fakeModel, tok } from "./fake-model.js";
import FIXTURES from "./fixtures/distribution.json";

let el;
let cleanup;
const mount = (model) => {
  el = document.createElement("div");
  document.body.append(el);
  cleanup = widget.render({ model, el });
  return el;
};
const button = (name) => [...el.querySelectorAll("button")].find((b) => b.textContent === name);
const bars = () => [...el.querySelectorAll('[role="figure"] [data-token-id]')];
const kept = () => bars().filter((b) => b.dataset.excluded === "false");
const DIST = { ...FIXTURES.cases[1].distribution, index: 2, prompt: false, chosen: null, end: true };

beforeEach(() => document.body.replaceChildren());
afterEach(() => {
  if (cleanup) cleanup();
  cleanup = null;
});

describe("Step and Score", () => {
  it("send step and score", () => {
    const model = fakeModel();
    mount(model);
    button("Step").click();
    button("Score").click();
    expect(model.sent.map((m) => m.type)).toEqual(["step", "score"]);
  });
  it("Step is disabled while a run is going", () => {
    const model = fakeModel({ status: "running" });
    mount(model);
    expect(button("Step").disabled).toBe(true);
  });
});

describe("the distribution figure", () => {
  it("is a labelled figure inside the output area with at least 20 bars and the rest", () => {
    const model = fakeModel({ distribution: DIST, strategy: "top_p", temperature: 1, top_p: 1 });
    mount(model);
    const fig = el.querySelector('.nbc-output [role="figure"]');
    expect(fig.getAttribute("aria-label")).toMatch(/^Next-token distribution/);
    expect(bars().length).toBeGreaterThanOrEqual(20);
    expect(fig.querySelector(".nbc-dist-rest").textContent).toMatch(/other 2,9\d\d tokens/);
  });
  it("reshapes at once when a setting changes, with no message to the kernel", () => {
    const model = fakeModel({ distribution: DIST, strategy: "top_p", temperature: 1, top_p: 1 });
    mount(model);
    expect(kept().length).toBe(bars().length);
    model.set("strategy", "top_k");
    model.set("top_k", 3);
    expect(kept().length).toBe(3);
    expect(bars().filter((b) => b.dataset.excluded === "true").every((b) => b.classList.contains("nbc-excluded"))).toBe(true);
    model.set("strategy", "top_p");
    model.set("top_p", 0.5);
    expect(el.querySelector(".nbc-dist-cut").textContent).toMatch(/top-p cut/);
    model.set("strategy", "greedy");
    expect(kept().length).toBe(1);
    expect(model.sent).toEqual([]);
  });
  it("clicking a bar forces that token at the position", () => {
    const model = fakeModel({ distribution: DIST, strategy: "greedy" });
    mount(model);
    bars()[3].click();
    expect(model.sent).toEqual([{ type: "force", position: 2, token_id: DIST.ids[3] }]);
  });
  it("the bars are one Tab stop (roving tabindex); arrows move; focus stays after the redraw", () => {
    const model = fakeModel({ distribution: DIST, strategy: "greedy" });
    mount(model);
    const stops = () => bars().filter((b) => b.tabIndex === 0);
    expect(stops()).toHaveLength(1);
    const key = (k) => document.activeElement.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true }));
    stops()[0].focus();
    const start = bars().indexOf(document.activeElement);
    key("ArrowDown");
    expect(bars().indexOf(document.activeElement)).toBe(start + 1);
    expect(stops()).toEqual([document.activeElement]);
    key("ArrowUp");
    key("End");
    const last = bars().length - 1;
    expect(bars().indexOf(document.activeElement)).toBe(last);
    // Enter clicks the bar (forcing it); the kernel's new distribution redraws the bars
    document.activeElement.click();
    model.set("distribution", { ...DIST });
    expect(el.contains(document.activeElement)).toBe(true);
    expect(bars().indexOf(document.activeElement)).toBe(last);
  });
});

describe("a token's distribution", () => {
  it("clicking a generated or a prompt token asks for the distribution it was drawn from", () => {
    const prompt_tokens = [
      { index: 0, token_id: 5, text: "The", piece: "The", prompt: true },
      { index: 1, token_id: 9, text: " cat", piece: " cat", prompt: true },
    ];
    const model = fakeModel({ prompt_echo: "The cat", prompt_tokens, tokens: [tok(0, " sat"), tok(1, " down")] });
    mount(model);
    el.querySelector('input[name="show_tokens"]').click();
    el.querySelector('.nbc-tokens [data-token-index="1"]').click();
    el.querySelector('[data-prompt="true"][data-token-index="1"]').click();
    el.querySelector('[data-prompt="true"][data-token-index="0"]').click(); // nothing before it
    expect(model.sent).toEqual([
      { type: "distribution", index: 1, prompt: false },
      { type: "distribution", index: 1, prompt: true },
    ]);
  });
});

describe("the branch tree", () => {
  const TREE = [
    { id: 0, parent: null, depth: 0, split: 0, kind: "generate", token: null, tokens: 6, logprob: -8.5, current: false },
    { id: 1, parent: 0, depth: 1, split: 2, kind: "force", token: " cat", tokens: 4, logprob: -12.25, current: true },
  ];
  it("has one treeitem per path, the original first, and shows a path on click or Enter", () => {
    const model = fakeModel({ tree: TREE });
    mount(model);
    const tree = el.querySelector('.nbc-output [role="tree"]');
    const items = [...tree.querySelectorAll('[role="treeitem"]')];
    expect(items).toHaveLength(2);
    expect(items[0].textContent).toMatch(/^original run/);
    expect(items[1].textContent).toContain('at #2 → " cat" (forced)');
    expect(items[1].textContent).toContain("Σ log p -12.25");
    expect(items[1].getAttribute("aria-selected")).toBe("true");
    expect(items[1].tabIndex).toBe(0);
    items[0].click();
    items[1].dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    expect(model.sent).toEqual([
      { type: "show_branch", id: 0 },
      { type: "show_branch", id: 1 },
    ]);
  });
});

describe("the draw and the prompt's tokens", () => {
  it("shows u on the cumulative bar", () => {
    const draw = { token_id: 7, greedy: false, u: 0.55, bar: [[3, "a", 0.5], [7, "b", 0.3]], rest: 0.2, before: 0.5, p: 0.3, index: 4 };
    mount(fakeModel({ draw }));
    expect(el.querySelector(".nbc-draw-caption").textContent).toContain("u = 0.550");
    expect(el.querySelector(".nbc-draw-caption").textContent).toContain("0.500–0.800 (processed probability 30.0%)");
    expect(parseFloat(el.querySelector(".nbc-draw-u").style.left)).toBeCloseTo(55, 6);
    // u is a black-and-white striped pointer with its own label (widget.css), never orange like the chosen segment
    const u = el.querySelector(".nbc-draw-u");
    expect(u.style.background).toBe("");
    expect(u.querySelector(".nbc-draw-u-label").textContent).toBe("u = 0.550");
    const css = readFileSync(resolve(__dirname, "../src/widget.css"), "utf8");
    expect(css).toMatch(/\.nbc-draw-u \{[^}]*repeating-linear-gradient\(to bottom, #000 0 4px, #fff 4px 8px\)/);
    expect(css).not.toMatch(/\.nbc-draw-u \{[^}]*#e69f00/i);
    expect(el.querySelector(".nbc-draw-title").textContent).toBe("The draw at token #4");
  });
  it("names a top-p tail token off the bar by its text and highlights its segment", () => {
    const draw = { token_id: 11347, text: " zebra", greedy: false, u: 0.837, bar: [[3, "a", 0.5], [7, "b", 0.3]], rest: 0.2, before: 0.836, p: 0.002, index: 4 };
    mount(fakeModel({ draw }));
    const caption = el.querySelector(".nbc-draw-caption").textContent;
    expect(caption).toContain("zebra");
    expect(caption).not.toContain("id 11347");
    const tail = el.querySelector('.nbc-draw-tail[data-token-id="11347"]');
    expect(tail).not.toBeNull();
    expect(parseFloat(tail.style.left)).toBeCloseTo(83.7, 6); // centred on 0.836–0.838
    expect(tail.title).toContain("zebra");
  });
  it("scored prompt tokens carry data-prompt and their own indices; generated ones start at 0", () => {
    const prompt_tokens = [
      { index: 0, token_id: 5, text: "The", piece: "The", prompt: true },
      { index: 1, token_id: 9, text: " cat", piece: " cat", prompt: true, logprob: -2.1, rank: 3, entropy: 1.5, top: [[" dog", -1.0]] },
    ];
    const model = fakeModel({ prompt_echo: "The cat", prompt_tokens, perplexity: 8.17, tokens: [tok(0, " sat", -0.5)] });
    mount(model);
    const prompt = [...el.querySelectorAll('[data-prompt="true"]')];
    expect(prompt.map((t) => t.dataset.tokenIndex)).toEqual(["0", "1"]);
    const generated = [...el.querySelectorAll(".nbc-tokens [data-token-index]")];
    expect(generated[0].dataset.tokenIndex).toBe("0");
    expect(generated[0].dataset.prompt).toBeUndefined();
    expect(el.querySelector(".nbc-score-line").textContent).toContain("perplexity 8.17");
    prompt[1].dispatchEvent(new Event("focusin", { bubbles: true }));
    expect(el.querySelector('[role="tooltip"]').textContent).toContain("rank 3");
    expect(el.querySelector('[role="tooltip"]').textContent).toContain("id 9 · bytes 20 63 61 74");
  });
});

describe("the draw's labels and the u pointer", () => {
  it("a segment whose left half holds u puts its label on the right, away from the pointer", async () => {
    const { drawContent } = await import("../src/step.js");
    const draw = { u: 0.01, token_id: 1, text: "are", p: 0.3, before: 0, greedy: false, rest: 0.1, bar: [[1, "are", 0.3], [2, "have", 0.6]] };
    const box = document.createElement("div");
    box.append(drawContent(document, draw));
    const [first, second] = box.querySelectorAll(".nbc-draw-seg");
    expect(first.classList.contains("nbc-draw-label-right")).toBe(true);
    expect(second.classList.contains("nbc-draw-label-right")).toBe(false);
    const late = document.createElement("div");
    late.append(drawContent(document, { ...draw, u: 0.25 }));
    expect(late.querySelector(".nbc-draw-seg").classList.contains("nbc-draw-label-right")).toBe(false);
  });
});
