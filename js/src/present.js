// Presentation mode (the `present` trait): a toggle in the panel, and sliders for temperature,
// top-p and top-k. The mode itself is CSS (widget.css, .nbc-present: large type, a two-column
// layout that fits 1280x720, higher contrast); the distribution shows fewer bars.

function el(doc, tag, props = {}, children = []) {
  const node = doc.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

/** The sliders: [trait, label, min, max, step]. Setting one picks its strategy. */
export const SLIDERS = [
  ["temperature", "Temperature", 0.05, 2, 0.05, "top_p"],
  ["top_p", "Top-p", 0.05, 1, 0.01, "top_p"],
  ["top_k", "Top-k", 1, 100, 1, "top_k"],
];

let counter = 0;

/** The toggle and sliders bound to `model`; `root` gets the class nbc-present while on. */
export function createPresentation(model, root) {
  const doc = globalThis.document;
  const box = el(doc, "div", { className: "nbc-present-bar" });
  const toggle = el(doc, "input", { type: "checkbox", name: "present" });
  box.append(el(doc, "label", { className: "nbc-present-toggle" }, [toggle, " Presentation mode"]));
  const sliders = el(doc, "div", { className: "nbc-sliders", role: "group", "aria-label": "Sampling sliders" });
  const inputs = {};
  for (const [name, label, min, max, step, strategy] of SLIDERS) {
    const id = `nbc-slider-${name}-${++counter}`;
    const input = el(doc, "input", { type: "range", id, min: String(min), max: String(max), step: String(step), name: `${name}_slider` });
    const value = el(doc, "output", { className: "nbc-slider-value", htmlFor: id });
    input.addEventListener("input", () => {
      const v = name === "top_k" ? Math.round(Number(input.value)) : Number(input.value);
      model.set(name, v);
      if (model.get("strategy") !== strategy) model.set("strategy", strategy);
      model.save_changes();
    });
    inputs[name] = [input, value];
    sliders.append(el(doc, "label", { className: "nbc-slider", htmlFor: id }, [`${label} `]), input, value);
  }
  box.append(sliders);
  toggle.addEventListener("change", () => {
    model.set("present", toggle.checked);
    model.save_changes();
  });
  function render() {
    const on = Boolean(model.get("present"));
    toggle.checked = on;
    root.classList.toggle("nbc-present", on);
    for (const [name, [input, value]] of Object.entries(inputs)) {
      input.value = String(model.get(name));
      value.textContent = String(model.get(name));
    }
  }
  const events = ["change:present", ...SLIDERS.map(([n]) => `change:${n}`)];
  for (const ev of events) model.on(ev, render);
  render();
  return { el: box, toggle, inputs, render, destroy: () => events.forEach((ev) => model.off(ev, render)) };
}
