// The heatmap colours: nb_completion/palette.json, the one definition the Python side
// (nb_completion/palette.py: static HTML, SVG) reads too. Same arithmetic on both sides:
// x = clamp(value / max_nats, 0, 1) along the stops, channels rounded half up.
// Probability is coloured by surprisal -ln p (a log scale: 100%, 32%, 10%, 3%, ≤1%), entropy in
// nats on the same axis (ln 100 nats, a choice among 100 equally likely tokens, is darkest).

import PALETTE from "../../nb_completion/palette.json" with { type: "json" };
import { clamp01 } from "./format.js";

export { PALETTE };
export const MAX_NATS = PALETTE.max_nats;

const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
const DEFAULT = { probability: PALETTE.probability.stops.map(rgb), entropy: PALETTE.entropy.stops.map(rgb) };
const COLORBLIND = {
  probability: PALETTE.colorblind.probability.stops.map(rgb),
  entropy: PALETTE.colorblind.entropy.stops.map(rgb),
};
let STOPS = DEFAULT;
let current = "default";

/** The chart colours (Okabe-Ito: kept, raw, chosen, cut, excluded), the same in both palettes. */
export const CHART = PALETTE.chart;

/** Switch the heatmap ramps: "default" or "colorblind" (the page's widgets share the choice). */
export function usePalette(name) {
  current = name === "colorblind" ? "colorblind" : "default";
  STOPS = current === "colorblind" ? COLORBLIND : DEFAULT;
}
export const paletteName = () => current;

/** `x` in [0, 1] along the colour stops, as "#rrggbb" (the same arithmetic as palette.py). */
export function ramp(stops, x) {
  const at = clamp01(x) * (stops.length - 1);
  const i = Math.min(Math.floor(at), stops.length - 2);
  const f = at - i;
  const hex = stops[i].map((a, k) => Math.floor(a + (stops[i + 1][k] - a) * f + 0.5).toString(16).padStart(2, "0"));
  return `#${hex.join("")}`;
}

/** Likely tokens pale, unlikely ones dark orange-red, on a log scale (≤1% darkest). */
export function probabilityColor(logprob) {
  return ramp(STOPS.probability, -logprob / MAX_NATS);
}

/** Confident steps pale, uncertain steps dark blue; an unknown entropy is drawn as uncertain. */
export function entropyColor(h) {
  return ramp(STOPS.entropy, Number.isFinite(h) ? h / MAX_NATS : 1);
}

/** [colour, label] pairs of the legend: the palette's stops with their values. */
export function legendColors(colorBy) {
  const key = colorBy === "entropy" ? "entropy" : "probability";
  const spec = PALETTE[key];
  const stops = current === "colorblind" ? PALETTE.colorblind[key].stops : spec.stops;
  return stops.map((c, i) => [c, spec.labels[i]]);
}
