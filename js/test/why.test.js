// The "why this token" panel: its facts against reshape(), its sentences, and the panel in the
// distribution figure (chosen token first, a focused bar next, raw vs processed labelled).
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createDistributionView, distributionContent } from "../src/distribution.js";
import { choices, entropyOf, rawEntropy, whyFacts, whySentences } from "../src/why.js";
import { fakeModel } from "./fake-model.js";
import FIXTURES from "./fixtures/distribution.json";

const EXACT = FIXTURES.cases[0];
const BINNED = FIXTURES.cases[1];
const DIST = { ...EXACT.distribution, index: 3, prompt: false, chosen: EXACT.distribution.ids[1], end: false };

beforeEach(() => document.body.replaceChildren());

describe("whyFacts", () => {
  it("gives the raw and processed probability, rank and the top-k verdict", () => {
    const f = whyFacts(DIST, { strategy: "top_k", top_k: 3 }, 2);
    expect(f.rank).toBe(2);
    expect(f.raw).toBeCloseTo(EXACT.raw[1], 5);
    const expected = EXACT.expected.find((e) => e.setting.strategy === "top_k" && e.setting.top_k === 3 && !e.setting.repetition_penalty);
    expect(f.processed).toBeCloseTo(expected.processed[1], 5);
    expect(f.keptTopK).toBe(true);
    expect(f.keptTopP).toBeNull();
    expect(whyFacts(DIST, { strategy: "top_k", top_k: 3 }, 4).keptTopK).toBe(false);
  });
  it("says whether the top-p nucleus kept it", () => {
    const c = { strategy: "top_p", temperature: 1, top_p: 0.5 };
    expect(whyFacts(DIST, c, 1).keptTopP).toBe(true);
    const out = whyFacts(DIST, c, 20);
    expect(out.keptTopP).toBe(false);
    expect(out.processed).toBe(0);
  });
  it("entropy: a uniform choice among 8 is about 8 equally likely choices; binned rests count", () => {
    expect(choices(entropyOf(new Array(8).fill(1 / 8)))).toBeCloseTo(8, 9);
    expect(choices(entropyOf([0.5], [[4, 0.5]]))).toBeCloseTo(Math.exp(-0.5 * Math.log(0.5) - 0.5 * Math.log(0.125)), 9);
    const h = rawEntropy(EXACT.distribution);
    const direct = -EXACT.raw.reduce((a, p) => a + (p > 0 ? p * Math.log(p) : 0), 0);
    expect(h).toBeCloseTo(direct, 4);
    expect(rawEntropy(BINNED.distribution)).toBeGreaterThan(-BINNED.raw.reduce((a, p) => a + p * Math.log(p), 0));
  });
  it("says where u fell: in this token's interval, or in another's", () => {
    const [a, b] = DIST.ids;
    const draw = { index: 3, greedy: false, u: 0.2, token_id: b, bar: [[a, "x", 0.15], [b, "y", 0.1]], before: 0.15, p: 0.1, rest: 0.75 };
    const c = { strategy: "top_p", temperature: 1, top_p: 1 };
    expect(whyFacts(DIST, c, 2, draw).u).toMatchObject({ drawn: true, interval: [0.15, 0.25] });
    const other = whyFacts(DIST, c, 1, draw);
    expect(other.u).toMatchObject({ drawn: false, winner: "y", interval: [0, 0.15] });
    expect(whySentences(other).join("\n")).toContain(`u = 0.200 fell in "y"'s interval, not this token's`);
    expect(whyFacts(DIST, c, 1, { ...draw, index: 9 }).u).toBeNull(); // a draw at another position
  });
  it("words: raw vs processed labelled, the cut, and 'about N equally likely choices'", () => {
    const text = whySentences(whyFacts(DIST, { strategy: "top_k", top_k: 3 }, 4)).join("\n");
    expect(text).toMatch(/Raw probability \(the model's softmax, before any setting\): 8\.38%/);
    expect(text).toContain("Processed probability (after the settings): 0");
    expect(text).toContain("Top-k 3: cut (rank 4 > 3)");
    expect(text).toMatch(/about [\d.]+ equally likely choices/);
    expect(text).toContain("no Step drew at this position");
  });
});

describe("the panel in the distribution figure", () => {
  let view;
  afterEach(() => view && view.destroy());
  it("explains the chosen token, then a focused bar; the glossary is a <details>", () => {
    const model = fakeModel({ distribution: DIST, strategy: "top_k", top_k: 3 });
    view = createDistributionView(model, {});
    document.body.append(view.el);
    const why = view.el.querySelector(".nbc-why");
    expect(why.querySelector(".nbc-why-head").textContent).toBe(`Why ${DIST.texts[1]}?`);
    const bar = view.el.querySelector('[data-rank="5"]');
    bar.dispatchEvent(new Event("focusin", { bubbles: true }));
    expect(view.el.querySelector(".nbc-why-head").textContent).toBe(`Why ${DIST.texts[4]}?`);
    expect(view.el.querySelector(".nbc-why").textContent).toContain("Top-k 3: cut");
    const glossary = view.el.querySelector("details.nbc-why-glossary");
    expect(glossary.querySelector("summary").textContent).toBe("Glossary");
    expect(glossary.textContent).toContain("exp(entropy)");
    // a new position explains its chosen token again
    model.set("distribution", { ...DIST, index: 4, chosen: DIST.ids[0] });
    expect(view.el.querySelector(".nbc-why-head").textContent).toBe(`Why ${DIST.texts[0]}?`);
  });
});

describe("the bars", () => {
  it("use one fixed 0-100 % scale, and label raw and processed", () => {
    const { frag } = distributionContent(document, DIST, { strategy: "top_k", top_k: 3 });
    const box = document.createElement("div");
    box.append(frag);
    const raw = [...box.querySelectorAll(".nbc-dist-raw")].map((e) => parseFloat(e.style.width));
    raw.slice(0, 3).forEach((w, i) => expect(w).toBeCloseTo(100 * EXACT.raw[i], 3)); // not rescaled to the top bar
    expect(box.querySelector(".nbc-dist-head").textContent).toContain("raw → processed");
    expect(box.querySelector(".nbc-dist-scale").textContent).toBe("0–100 %");
    expect(box.querySelector(".nbc-dist-caption").textContent).toMatch(/grey: raw probability · blue: processed/);
    expect(box.querySelector(".nbc-dist-rest").textContent).toMatch(/raw [\d.]+% → processed/);
  });
  it("name their position: the next token is #N", () => {
    const { frag } = distributionContent(document, { ...DIST, end: true }, { strategy: "greedy" });
    const box = document.createElement("div");
    box.append(frag);
    expect(box.querySelector(".nbc-dist-caption").textContent).toContain("the next token (#3)");
  });
});
