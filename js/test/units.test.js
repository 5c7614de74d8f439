import { describe, expect, it } from "vitest";
import { decodeEscapes, encodeEscapes, metricsLine, percent, stopText } from "../src/format.js";
import {
  appendVisibleText,
  ENTROPY_MAX,
  entropyColor,
  legendElement,
  probabilityColor,
  shownText,
  tokenElement,
} from "../src/heatmap.js";
import { applyDelta, applySnapshot, createState, sameTokens } from "../src/protocol.js";
import { parseField, parseJsonSchema, parseStops } from "../src/validate.js";
import { tok } from "./fake-model.js";

describe("format", () => {
  it("formats probabilities and metrics", () => {
    expect(percent(0.931)).toBe("93.1%");
    expect(percent(0.0042)).toBe("0.42%");
    expect(percent(1e-6)).toBe("<0.01%");
    expect(metricsLine({ tokens: 12, time_to_first_token: 0.31, tokens_per_second: 28.44 })).toBe(
      "12 tokens · first token 310 ms · 28.4 tokens/s",
    );
    expect(metricsLine({})).toBe("");
  });
  it("tells a stop string from the model's end token", () => {
    expect(stopText({ stop_reason: "end_of_turn", stop_string: "\n" })).toBe('stop string "\\n"');
    expect(stopText({ stop_reason: "end_of_turn", stop_string: null })).toBe("end of turn: the model's end token");
    expect(stopText({ stop_reason: "end_of_turn", grammar: true })).toBe("end of turn: the output is complete");
    expect(stopText({ stop_reason: "out_of_tokens" })).toBe("out of tokens");
    expect(stopText({ stop_reason: "end_of_turn", end_token: "<|im_end|>", end_token_p: 0.9712 })).toBe(
      "ended on its end token <|im_end|> (97.1%)",
    );
  });
  it("round-trips escapes typed into stop-string inputs", () => {
    expect(decodeEscapes("a\\nb\\t\\\\")).toBe("a\nb\t\\");
    expect(encodeEscapes("a\nb\t\\")).toBe("a\\nb\\t\\\\");
  });
});

describe("validate", () => {
  it("flags out-of-range and malformed values with a message", () => {
    expect(parseField("temperature", "0")).toEqual({ error: "must be > 0" });
    expect(parseField("temperature", "0.7")).toEqual({ value: 0.7 });
    expect(parseField("top_p", "1.01").error).toMatch(/\(0, 1\]/);
    expect(parseField("top_p", "1")).toEqual({ value: 1 });
    expect(parseField("top_k", "2.5").error).toBe("must be a whole number");
    expect(parseField("top_k", "0").error).toMatch(/≥ 1/);
    expect(parseField("max_tokens", "").error).toBe("required");
    expect(parseField("max_tokens", "0")).toEqual({ value: 0 });
    expect(parseField("repetition_penalty", "-1").error).toMatch(/> 0/);
    expect(parseField("logprobs_top_k", "21").error).toMatch(/\[0, 20\]/);
    expect(parseField("seed", "")).toEqual({ value: null });
    expect(parseField("seed", "42")).toEqual({ value: 42 });
    expect(parseField("seed", "-3").error).toBeTruthy();
  });
  it("checks the JSON schema text and stop strings", () => {
    expect(parseJsonSchema('{"type": "object"}')).toEqual({ value: '{"type": "object"}' });
    expect(parseJsonSchema("[1]").error).toBe("must be a JSON object");
    expect(parseJsonSchema("{oops").error).toMatch(/not valid JSON/);
    expect(parseStops(["a", "", "b"])).toEqual({ value: ["a", "b"] });
    expect(parseStops(["1", "2", "3", "4", "5"]).error).toMatch(/at most 4/);
  });
});

describe("protocol", () => {
  it("appends deltas in order, ignores other runs and repeats, detects gaps", () => {
    const s = createState(3, []);
    expect(applyDelta(s, { run: 3, start: 0, tokens: [tok(0, "a"), tok(1, "b")] }).kind).toBe("append");
    expect(applyDelta(s, { run: 2, start: 2, tokens: [tok(2, "x")] }).kind).toBe("ignore");
    expect(applyDelta(s, { run: 3, start: 0, tokens: [tok(0, "a")] }).kind).toBe("ignore");
    const overlap = applyDelta(s, { run: 3, start: 1, tokens: [tok(1, "b"), tok(2, "c")] });
    expect(overlap.tokens.map((t) => t.text)).toEqual(["c"]);
    expect(applyDelta(s, { run: 3, start: 9, tokens: [tok(9, "z")] }).kind).toBe("gap");
    expect(s.tokens.map((t) => t.text)).toEqual(["a", "b", "c"]);
    expect(sameTokens(s, [tok(0, "a"), tok(1, "b"), tok(2, "c")])).toBe(true);
    expect(sameTokens(s, [tok(0, "a")])).toBe(false);
  });
  it("replaces the state with a snapshot of the same or a newer run only", () => {
    const s = createState(2, [tok(0, "old")]);
    expect(applySnapshot(s, { run: 1, tokens: [] })).toBe(false);
    expect(applySnapshot(s, { run: 2, tokens: [tok(0, "a"), tok(1, "b")] })).toBe(true);
    expect(s.tokens).toHaveLength(2);
  });
});

describe("heatmap", () => {
  it("colours from palette.json: probability on a log scale, entropy in nats on the same axis", () => {
    expect(probabilityColor(0)).toBe("#fef0d9"); // p = 100%: pale
    expect(probabilityColor(Math.log(0.01))).toBe("#e34a33"); // p = 1%: darkest
    expect(probabilityColor(Math.log(1e-9))).toBe("#e34a33"); // saturated below 1%
    expect(probabilityColor(Math.log(0.1))).toBe("#fdbb84"); // 10%: the middle stop (log scale)
    expect(probabilityColor(Math.log(0.5))).not.toBe(probabilityColor(Math.log(0.9))); // the top range is not flat
    expect(entropyColor(0)).toBe("#f1eef6");
    expect(entropyColor(Math.log(10))).toBe("#a6bddb"); // a choice among 10 ~ the middle stop
    expect(entropyColor(100)).toBe("#3690c0");
    expect(entropyColor(NaN)).toBe("#3690c0");
    expect(ENTROPY_MAX).toBeCloseTo(Math.log(100), 12);
  });
  it("makes spaces, tabs and newlines visible and keeps the line break", () => {
    const el = document.createElement("span");
    appendVisibleText(el, " a\tb\n");
    expect(el.textContent).toBe("·a⇥b↵");
    expect(el.querySelectorAll("br")).toHaveLength(1);
    expect(el.querySelectorAll(".nbc-ws")).toHaveLength(3);
    const hidden = document.createElement("span");
    appendVisibleText(hidden, " a", false);
    expect(hidden.textContent).toBe(" a");
    const end = document.createElement("span");
    appendVisibleText(end, "");
    expect(end.textContent).toBe("⟨end⟩");
  });
  it("renders a token as a focusable element with its index, colour and readable label", () => {
    const el = tokenElement(document, tok(4, " Paris", 0.25, { rank: 2, forced: true }));
    expect(el.tabIndex).toBe(0);
    expect(el.dataset.tokenIndex).toBe("4");
    expect(el.getAttribute("aria-label")).toBe('" Paris", 25.0%');
    expect(el.classList.contains("nbc-not-top")).toBe(true);
    expect(el.classList.contains("nbc-forced")).toBe(true);
    expect(el.style.background).not.toBe("");
  });
  it("labels the legend for each colouring; mentions grammar-forced tokens and partial bytes only when shown", () => {
    const plain = legendElement(document, "probability");
    expect(plain.textContent).toMatch(/likely \(100%\).*unlikely \(≤1%\)/);
    expect(plain.textContent).not.toMatch(/grammar|partial/);
    expect(legendElement(document, "entropy").textContent).toMatch(/0 nats \(sure\).*≥4\.6 nats \(unsure\)/);
    const both = legendElement(document, "probability", { forced: true, partial: true });
    expect(both.textContent).toMatch(/italic: forced by the grammar/);
    expect(both.textContent).toMatch(/‹E3 81›: bytes of a partial character/);
    // the "dashed" sample is drawn like a token (pale background, dark text), readable in dark themes
    const dashed = both.querySelector(".nbc-legend-sample.nbc-not-top");
    expect(dashed.textContent).toBe("dashed");
    expect(dashed.style.background).not.toBe("");
  });
  it("gives a line-break opportunity after each visible space, none inside a word", () => {
    const el = document.createElement("span");
    appendVisibleText(el, " didn't know");
    expect(el.innerHTML).toBe(
      '<span class="nbc-ws" aria-hidden="true" data-ws="space">·</span><wbr>didn\'t<span class="nbc-ws" aria-hidden="true" data-ws="space">·</span><wbr>know',
    );
    const plain = document.createElement("span");
    appendVisibleText(plain, " didn't know", false);
    expect(plain.innerHTML).toBe(" didn't know"); // real spaces break by themselves
  });
  it("shows a token holding part of a multi-byte character as its bytes, not ⟨end⟩", () => {
    const partial = { ...tok(0, "", 0.3), piece: "‹E6 9D›" };
    expect(shownText(partial)).toBe("‹E6 9D›");
    expect(shownText({ ...tok(1, "", 0.3), piece: "</s>" })).toBe(""); // a withheld end token
    const el = tokenElement(document, partial);
    expect(el.textContent).toBe("‹E6 9D›");
    expect(el.classList.contains("nbc-partial")).toBe(true);
    expect(el.querySelector(".nbc-bytes").textContent).toBe("‹E6 9D›");
    expect(el.getAttribute("aria-label")).toBe("bytes E6 9D, part of a character, 30.0%");
    const mixed = document.createElement("span");
    appendVisibleText(mixed, "a‹E3›");
    expect(mixed.textContent).toBe("a‹E3›");
    expect(mixed.querySelector(".nbc-bytes").textContent).toBe("‹E3›");
  });
});
