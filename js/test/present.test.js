// Presentation mode: the toggle writes the `present` trait and the panel's class follows it; the
// sliders write temperature, top-p and top-k (and their strategy); the figure shows fewer bars.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import widget from "../src/index.js";
import { PRESENT_BARS } from "../src/distribution.js";
import { fakeModel } from "./fake-model.js";
import FIXTURES from "./fixtures/distribution.json";

let el;
let cleanup;
const mount = (model) => {
  el = document.createElement("div");
  document.body.append(el);
  cleanup = widget.render({ model, el });
  return el;
};
const DIST = { ...FIXTURES.cases[0].distribution, index: 2, prompt: false, chosen: null, end: true };

beforeEach(() => document.body.replaceChildren());
afterEach(() => {
  if (cleanup) cleanup();
  cleanup = null;
});

describe("presentation mode", () => {
  it("the toggle sets present; the trait sets the class", () => {
    const model = fakeModel({ present: false });
    mount(model);
    const root = el.querySelector(".nbc-widget");
    expect(root.classList.contains("nbc-present")).toBe(false);
    const toggle = el.querySelector('input[name="present"]');
    toggle.checked = true;
    toggle.dispatchEvent(new Event("change"));
    expect(model.get("present")).toBe(true);
    expect(root.classList.contains("nbc-present")).toBe(true);
    model.set("present", false);
    expect(toggle.checked).toBe(false);
    expect(root.classList.contains("nbc-present")).toBe(false);
  });
  it("sliders write temperature, top-p and top-k with their strategy, and follow the traits", () => {
    const model = fakeModel({ present: true, strategy: "greedy" });
    mount(model);
    const slider = (n) => el.querySelector(`input[type="range"][name="${n}_slider"]`);
    slider("temperature").value = "1.3";
    slider("temperature").dispatchEvent(new Event("input"));
    expect(model.get("temperature")).toBe(1.3);
    expect(model.get("strategy")).toBe("top_p");
    slider("top_k").value = "7";
    slider("top_k").dispatchEvent(new Event("input"));
    expect(model.get("top_k")).toBe(7);
    expect(model.get("strategy")).toBe("top_k");
    model.set("top_p", 0.42);
    expect(slider("top_p").value).toBe("0.42");
    expect(el.querySelector(`output[for="${slider("top_p").id}"]`).textContent).toBe("0.42");
  });
  it("shows fewer bars, and all of them again when turned off", () => {
    const model = fakeModel({ present: true, distribution: DIST });
    mount(model);
    const bars = () => el.querySelectorAll('[role="figure"] [data-token-id]').length;
    expect(bars()).toBe(PRESENT_BARS);
    model.set("present", false);
    expect(bars()).toBeGreaterThan(PRESENT_BARS);
  });
  it("the stylesheet makes every text 20 px and draws token colours as underlines", () => {
    const css = readFileSync(resolve(__dirname, "../src/widget.css"), "utf8");
    expect(css).toMatch(/\.nbc-widget\.nbc-present \* \{ font-size: 20px !important; \}/);
    expect(css).toMatch(/\.nbc-present \.nbc-token[^{]*\{[^}]*background: transparent !important;[^}]*var\(--nbc-tok/);
  });
});
