// The inside views built from what the kernel sends (fixtures/inside.json, made on the tiny Llama by
// make_inside_fixtures.py): the lens grid, attention with its layer and head pickers, the bar's
// toggles and messages, Sample 5's columns and the second model's column.
import { beforeEach, describe, expect, it } from "vitest";
import { compareContent, createCompareView, createFuturesView, bestPath, futuresContent, meanText } from "../src/futures.js";
import {
  attentionColor,
  attentionContent,
  attentionWeights,
  createInsideView,
  lensContent,
  lensSummary,
  mostAttended,
  placeText,
} from "../src/inside.js";
import { probabilityColor } from "../src/palette.js";
import { fakeModel } from "./fake-model.js";
import FIX from "./fixtures/inside.json";

beforeEach(() => document.body.replaceChildren());

const rgb = (css) => {
  const probe = document.createElement("span");
  probe.style.background = css;
  return probe.style.backgroundColor;
};
const shown = (node) => node.textContent.replaceAll("·", " ");

describe("the logit lens grid", () => {
  const lens = FIX.lens;
  const fig = () => {
    const f = document.createElement("figure");
    f.append(lensContent(document, lens));
    return f;
  };

  it("has a row per layer and a column per top token, each cell the token, its probability and its colour", () => {
    const rows = fig().querySelectorAll("tbody tr");
    expect(rows.length).toBe(lens.layers.length);
    lens.layers.forEach((layer, n) => {
      const cells = rows[n].querySelectorAll("td.nbc-lens-cell");
      expect(cells.length).toBe(layer.length);
      layer.forEach(([text, logprob], c) => {
        expect(shown(cells[c].querySelector("code"))).toBe(text.replaceAll("·", " "));
        expect(cells[c].querySelector(".nbc-lens-p").textContent).toMatch(/%$/);
        expect(cells[c].style.backgroundColor).toBe(rgb(probabilityColor(logprob)));
      });
    });
  });

  it("outlines the output's answer wherever it appears and marks the layer where it first becomes top", () => {
    const f = fig();
    const finals = [...f.querySelectorAll(".nbc-lens-final")];
    const expected = lens.layers.flat().filter(([t]) => t === lens.final).length;
    expect(finals.length).toBe(expected);
    const marked = [...f.querySelectorAll("tr.nbc-lens-first")];
    expect(marked.length).toBe(1);
    expect(marked[0].querySelector("th").textContent.startsWith(`▶ ${lens.first_top + 1}`)).toBe(true);
    expect(marked[0].querySelector("td.nbc-lens-cell").classList.contains("nbc-lens-final")).toBe(true);
    expect(f.querySelector("tbody tr:last-child th").textContent).toContain("(output)");
  });

  it("tracks the answer and the token written through every layer: probability and rank, first", () => {
    const rows = fig().querySelectorAll("tbody tr");
    const heads = [...fig().querySelectorAll("thead th.nbc-lens-track-head")].map((h) => h.textContent);
    expect(heads).toEqual([`${JSON.stringify(lens.final)} (answer)`, `${JSON.stringify(lens.chosen)} (written)`]);
    lens.layers.forEach((_, n) => {
      const [answer, written] = rows[n].querySelectorAll("td.nbc-lens-track");
      expect(answer.querySelector(".nbc-lens-rank").textContent).toBe(`#${lens.answer_track[n][1]}`);
      expect(answer.style.backgroundColor).toBe(rgb(probabilityColor(lens.answer_track[n][0])));
      expect(written.querySelector(".nbc-lens-rank").textContent).toBe(`#${lens.chosen_track[n][1]}`);
      expect(rows[n].children[1]).toBe(answer); // right after the layer: it stays in view in presentation mode
    });
    expect(lens.answer_track.at(-1)[1]).toBe(1);
    expect(lens.answer_track[lens.first_top][1]).toBe(1);
    const end = document.createElement("div");
    end.append(lensContent(document, FIX.lens_end));
    expect(end.querySelectorAll("thead th.nbc-lens-track-head").length).toBe(1); // the end: nothing written yet
  });

  it("says in words where the answer first becomes top, and where the token written here stands", () => {
    const s = lensSummary(lens);
    expect(s).toContain(`first becomes top at layer ${lens.first_top + 1} of ${lens.layers.length}`);
    expect(lensSummary({ ...lens, chosen: "zzz", chosen_first: 1 })).toContain('written here, "zzz", is top at layer 2');
    expect(lensSummary({ ...lens, chosen: lens.final })).not.toContain("written here");
    const onlyAtOutput = { ...lens, first_top: lens.layers.length - 1, chosen: null };
    expect(lensSummary(onlyAtOutput)).toContain("(only at the output)");
    expect(lensSummary({ ...lens, chosen: "zzz", chosen_first: null })).toContain("is never top at any layer");
  });

  it("names its position: a generated token, the next token at the end, or a model's refusal", () => {
    expect(fig().querySelector("figcaption").textContent).toContain(`for token #${lens.index}`);
    const end = document.createElement("div");
    end.append(lensContent(document, FIX.lens_end));
    expect(end.querySelector("figcaption").textContent).toContain(`the next token (#${FIX.lens_end.index})`);
    const err = document.createElement("div");
    err.append(lensContent(document, { ...FIX.lens_error, context: [], model: "tiny-llama" }));
    expect(err.querySelector(".nbc-inside-error").textContent).toBe(FIX.lens_error.error);
    expect(err.querySelector("table")).toBeNull();
  });
});

describe("attention", () => {
  const row = FIX.attention_row;

  it("colours each token up to the clicked one by its weight, darkest for the largest", () => {
    const box = document.createElement("div");
    box.append(attentionContent(document, row, 1, null));
    const spans = [...box.querySelectorAll(".nbc-att-token")];
    expect(spans.length).toBe(row.tokens.length);
    const w = attentionWeights(row, 1, null);
    expect(w).toEqual(row.mean[1]);
    const top = Math.max(...w);
    spans.forEach((s, j) => {
      expect(Number(s.dataset.weight)).toBe(w[j]);
      expect(s.style.backgroundColor).toBe(rgb(attentionColor(w[j] / top)));
    });
    expect(spans.at(-1).classList.contains("nbc-att-self")).toBe(true);
    expect(box.querySelector("figcaption").textContent).toContain(`layer 2 of ${row.layers}, the mean of ${row.heads} heads`);
  });

  it("one head's weights are its own row, and the summary names the most attended tokens", () => {
    expect(attentionWeights(row, 0, 2)).toEqual(row.per_head[0][2]);
    const best = mostAttended(row.per_head[0][2], 3);
    expect(best[0][1]).toBe(Math.max(...row.per_head[0][2]));
    const box = document.createElement("div");
    box.append(attentionContent(document, row, 0, 2));
    expect(box.querySelector("figcaption").textContent).toContain("head 3 of");
    expect(box.querySelector(".nbc-inside-summary").textContent).toContain(JSON.stringify(row.tokens[best[0][0]]));
  });

  it("the colour runs from white to the chart blue at 60 %, so black text stays readable", () => {
    expect(attentionColor(0)).toBe("rgb(255, 255, 255)");
    const [r, g, b] = attentionColor(1).match(/\d+/g).map(Number);
    const lum = [r, g, b].map((x) => x / 255).map((x) => (x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4));
    const contrast = (0.2126 * lum[0] + 0.7152 * lum[1] + 0.0722 * lum[2] + 0.05) / 0.05;
    expect(contrast).toBeGreaterThan(7);
  });
});

describe("the inside bar", () => {
  function setup(initial = {}) {
    const model = fakeModel(initial);
    const asked = [];
    const view = createInsideView(model, {
      onLens: (i, p) => asked.push(["lens", i, p]),
      onAttention: (i, p) => asked.push(["attention", i, p]),
      onSample: (i) => asked.push(["sample", i]),
    });
    document.body.append(view.el);
    return { model, asked, view };
  }

  it("Layers asks for the lens at the position; while pressed, each clicked token asks again", () => {
    const { model, asked, view } = setup();
    expect(view.el.querySelector(".nbc-inside-where").textContent).toBe("the end of the text");
    view.buttons.lens.click();
    expect(view.buttons.lens.getAttribute("aria-pressed")).toBe("true");
    expect(asked).toEqual([["lens", null, false]]);
    expect(view.el.querySelector(".nbc-inside-busy").textContent).toContain("reading the layers");
    view.select({ index: 3, prompt: false, text: " Paris" });
    expect(asked.at(-1)).toEqual(["lens", 3, false]);
    expect(view.el.querySelector(".nbc-inside-where").textContent).toBe('token #3 " Paris"');
    model.set("lens", FIX.lens);
    expect(view.el.querySelector(".nbc-inside-busy").textContent).toBe("");
    expect(view.el.querySelector(".nbc-lens-fig").hidden).toBe(false);
    expect(view.el.querySelectorAll(".nbc-lens tbody tr").length).toBe(FIX.lens.layers.length);
    view.buttons.lens.click(); // off: hidden, and clicks no longer ask
    expect(view.el.querySelector(".nbc-lens-fig").hidden).toBe(true);
    view.select({ index: 1, prompt: false, text: "x" });
    expect(asked.filter(([k]) => k === "lens").length).toBe(2);
  });

  it("Attention shows the layer and head pickers; picking a head or layer redraws without asking", () => {
    const { model, asked, view } = setup();
    view.select({ index: 3, prompt: false, text: "Fr" });
    view.buttons.attention.click();
    expect(asked).toEqual([["attention", 3, false]]);
    model.set("attention_row", FIX.attention_row);
    const fig = view.el.querySelector(".nbc-att-fig");
    expect(fig.hidden).toBe(false);
    const layer = fig.querySelector("select[name='attention_layer']");
    expect(layer.options.length).toBe(FIX.attention_row.layers);
    expect(layer.value).toBe(String(FIX.attention_row.layers - 1)); // the last layer first
    const heads = [...fig.querySelectorAll("button[data-head]")];
    expect(heads.length).toBe(FIX.attention_row.heads + 1);
    expect(heads[0].getAttribute("aria-pressed")).toBe("true"); // the mean first
    heads[2].click();
    expect(fig.querySelector("button[data-head='1']").getAttribute("aria-pressed")).toBe("true");
    expect(fig.querySelector("figcaption").textContent).toContain("head 2 of");
    layer.value = "0";
    layer.dispatchEvent(new Event("change"));
    expect(fig.querySelector("figcaption").textContent).toContain("layer 1 of");
    const spans = [...fig.querySelectorAll(".nbc-att-token")].map((s) => Number(s.dataset.weight));
    expect(spans).toEqual(FIX.attention_row.per_head[0][1]);
    expect(asked.length).toBe(1);
  });

  it("Sample 5 asks from the position, not from a prompt token; a new run goes back to the end", () => {
    const { asked, view } = setup();
    view.select({ index: 2, prompt: false, text: "x" });
    view.buttons.sample.click();
    expect(asked).toEqual([["sample", 2]]);
    view.select({ index: 2, prompt: true, text: "x" });
    expect(view.buttons.sample.disabled).toBe(true);
    view.reset();
    expect(view.buttons.sample.disabled).toBe(false);
    view.buttons.sample.click();
    expect(asked.at(-1)).toEqual(["sample", null]);
    expect(placeText(null)).toBe("the end of the text");
  });

  it("a refusal from the kernel shows as the figure's message, without pickers", () => {
    const { model, view } = setup();
    view.buttons.attention.click();
    model.set("attention_row", { index: 2, prompt: false, error: "RwkvForCausalLM returns no attention weights" });
    const fig = view.el.querySelector(".nbc-att-fig");
    expect(fig.querySelector(".nbc-inside-error").textContent).toContain("no attention weights");
    expect(fig.querySelector(".nbc-att-pickers").hidden).toBe(true);
  });

  it("destroy removes its listeners", () => {
    const { model, view } = setup();
    const before = model.listenerCount();
    view.destroy();
    expect(model.listenerCount()).toBe(before - 2);
  });
});

describe("Sample 5: the futures side by side", () => {
  const f = FIX.futures;

  it("one column per path with its tokens in the heatmap colours and its mean log-probability", () => {
    const box = document.createElement("div");
    box.append(futuresContent(document, f));
    const cols = [...box.querySelectorAll(".nbc-future")];
    expect(cols.length).toBe(f.paths.length);
    cols.forEach((col, j) => {
      const p = f.paths[j];
      expect(col.dataset.branchId).toBe(String(p.id));
      expect(col.querySelector(".nbc-future-mean").textContent).toBe(meanText(p.mean_logprob));
      expect(col.querySelectorAll(".nbc-token").length).toBe(p.tokens.length);
      const mean = p.tokens.reduce((a, t) => a + t.logprob, 0) / p.tokens.length;
      expect(p.mean_logprob).toBeCloseTo(mean, 3);
    });
    const best = bestPath(f.paths);
    expect(cols[best].classList.contains("nbc-future-best")).toBe(true);
    expect(box.querySelectorAll(".nbc-future-best").length).toBe(1);
    expect(f.paths.every((p) => p.mean_logprob <= f.paths[best].mean_logprob)).toBe(true);
  });

  it("mean log p in words: per token, with its geometric-mean probability", () => {
    expect(meanText(-Math.log(2))).toBe("mean log p −0.69 per token (≈ 50.0% each)");
    expect(meanText(null)).toBe("no tokens");
  });

  it("Show puts a path in the main view; the figure hides until futures arrive", () => {
    const model = fakeModel({ futures: null });
    const shownIds = [];
    const view = createFuturesView(model, { onShow: (id) => shownIds.push(id) });
    document.body.append(view.el);
    expect(view.el.hidden).toBe(true);
    model.set("futures", f);
    expect(view.el.hidden).toBe(false);
    view.el.querySelectorAll("button.nbc-future-show")[1].click();
    expect(shownIds).toEqual([f.paths[1].id]);
  });
});

describe("a second model's column", () => {
  it("shows the model, its state and its tokens in the same palette as the main text", () => {
    const col = FIX.compare_column;
    const box = document.createElement("div");
    box.append(compareContent(document, col));
    expect(box.querySelector(".nbc-compare-head").textContent).toBe(`${col.model} · ${col.tokens.length} tokens`);
    const spans = [...box.querySelectorAll(".nbc-token")];
    expect(spans.length).toBe(col.tokens.length);
    spans.forEach((s, j) => expect(s.style.backgroundColor).toBe(rgb(probabilityColor(col.tokens[j].logprob))));
  });

  it("appears only while a second model is chosen, and says its error", () => {
    const model = fakeModel({ compare_model: "", compare_column: null });
    const view = createCompareView(model);
    expect(view.el.hidden).toBe(true);
    model.set("compare_model", "m2");
    model.set("compare_column", { model: "m2", status: "running", prompt: "p", tokens: [] });
    expect(view.el.hidden).toBe(false);
    expect(view.el.textContent).toContain("m2 · generating…");
    model.set("compare_column", { model: "m2", status: "error", prompt: "p", tokens: [], error: "Model 'm2' not found" });
    expect(view.el.querySelector("[role='alert']").textContent).toContain("not found");
    model.set("compare_model", "");
    expect(view.el.hidden).toBe(true);
  });
});

describe("the inside views in the whole widget", () => {
  it("a clicked token moves the position; the compare box writes compare_model and splits the text into two columns", async () => {
    const { default: widget } = await import("../src/index.js");
    const model = fakeModel({ tokens: FIX.tokens, run: 1, status: "done", compare_model: "", compare_column: null });
    const el = document.createElement("div");
    document.body.append(el);
    const cleanup = widget.render({ model, el });
    el.querySelector(".nbc-inside-button").click(); // Layers, at the end
    expect(model.sent.at(-1)).toEqual({ type: "lens", index: null, prompt: false });
    el.querySelector(".nbc-tokens [data-token-index='3']").click();
    expect(model.sent.slice(-2)).toEqual([
      { type: "distribution", index: 3, prompt: false },
      { type: "lens", index: 3, prompt: false },
    ]);
    expect(el.querySelector(".nbc-inside-where").textContent).toBe(`token #3 ${JSON.stringify(FIX.tokens[3].text)}`);
    const box = el.querySelector("select[name='compare_model']");
    expect([...box.options].map((o) => o.value)).toEqual(["", "m1", "m2"]);
    box.value = "m2";
    box.dispatchEvent(new Event("change"));
    expect(model.get("compare_model")).toBe("m2");
    model.set("compare_column", FIX.compare_column);
    const columns = el.querySelector(".nbc-columns");
    expect(columns.classList.contains("nbc-two")).toBe(true);
    expect(columns.querySelector(".nbc-main-head").textContent).toBe("m1");
    expect(columns.querySelectorAll(".nbc-compare .nbc-token").length).toBe(FIX.compare_column.tokens.length);
    el.querySelector(".nbc-inside-bar button[title^='Five']").click();
    expect(model.sent.at(-1)).toEqual({ type: "sample", index: 3 });
    // a new run puts the position at the end; when it ends, the pressed lens reads the new text
    model.set("run", 2);
    model.set("status", "running");
    const sent = model.sent.length;
    model.set("status", "done");
    expect(model.sent.slice(sent)).toEqual([{ type: "lens", index: null, prompt: false }]);
    cleanup();
    expect(model.listenerCount()).toBe(0);
  });
});

describe("a hybrid model's attention layers and one-line labels", () => {
  it("labels a Jamba-like row by its decoder layers, not its count of attention layers", async () => {
    const { decoderLayer, layerText } = await import("../src/inside.js");
    const row = { ...FIX.attention_row, layers: 1, decoder_layers: 2, layer_ids: [1], mean: [FIX.attention_row.mean[0]], per_head: [FIX.attention_row.per_head[0]] };
    expect(decoderLayer(row, 0)).toBe(2);
    expect(layerText(row, 0)).toBe("layer 2 of 2 (attention layer 1 of 1; the others keep a recurrent state)");
    expect(layerText(FIX.attention_row, 1)).toBe(`layer 2 of ${FIX.attention_row.decoder_layers}`);
    const model = fakeModel();
    const view = createInsideView(model, {});
    view.buttons.attention.click();
    model.set("attention_row", row);
    expect([...view.el.querySelectorAll("select[name='attention_layer'] option")].map((o) => o.textContent)).toEqual(["2"]);
  });

  it("a newline token shows its mark in a lens cell and a caption, with no line break", () => {
    const lens = { ...FIX.lens, context: ["a", "\n"], layers: FIX.lens.layers.map((r) => [["\n", r[0][1]], ...r.slice(1)]) };
    const box = document.createElement("div");
    box.append(lensContent(document, lens));
    expect(box.querySelectorAll("br").length).toBe(0);
    expect(box.querySelector("td code").textContent).toBe("↵");
    expect(box.querySelector("figcaption .nbc-one-line").textContent).toBe("a↵");
  });
});

describe("attention without the first token's share, and hover titles in the columns", () => {
  it("scaling without the first token: the rest's largest weight is darkest, the first at full colour", () => {
    const row = { ...FIX.attention_row, mean: [[0.7, 0.2, 0.1]], per_head: [[[0.7, 0.2, 0.1]]], layers: 1, heads: 1, tokens: ["a", "b", "c"] };
    const box = document.createElement("div");
    box.append(attentionContent(document, row, 0, null, { skipFirst: true }));
    const spans = [...box.querySelectorAll(".nbc-att-token")];
    expect(spans.map((s) => s.style.backgroundColor)).toEqual([1, 1, 0.5].map((x) => rgb(attentionColor(x))));
    expect(box.querySelector(".nbc-inside-summary").textContent).toContain("the largest weight after the first token (20.0%)");
    const plain = document.createElement("div");
    plain.append(attentionContent(document, row, 0, null));
    expect([...plain.querySelectorAll(".nbc-att-token")].map((s) => s.style.backgroundColor)).toEqual(
      [1, 0.2 / 0.7, 0.1 / 0.7].map((x) => rgb(attentionColor(x))),
    );
  });

  it("the checkbox in the view redraws with it", () => {
    const model = fakeModel();
    const view = createInsideView(model, {});
    view.buttons.attention.click();
    model.set("attention_row", FIX.attention_row);
    const box = view.el.querySelector("input[name='attention_skip_first']");
    box.checked = true;
    box.dispatchEvent(new Event("change"));
    expect(view.el.querySelector(".nbc-att-fig .nbc-inside-summary").textContent).toContain("after the first token");
  });

  it("a future's and the second column's tokens say their probability on hover", () => {
    const box = document.createElement("div");
    box.append(futuresContent(document, FIX.futures));
    const first = FIX.futures.paths[0].tokens[0];
    expect(box.querySelector(".nbc-future .nbc-token").title).toMatch(new RegExp(`^${JSON.stringify(first.text).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} \\d`));
  });
});
