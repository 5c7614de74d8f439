// Colours tokens with the widget's own colour functions, for tests/test_palette.py: reads
// [{logprob, entropy}...] as JSON from the file named on the command line, prints
// {probability: [...], entropy: [...], legend: {...}} as JSON.
import { readFileSync } from "node:fs";
import { tokenColor } from "../src/heatmap.js";
import { legendColors } from "../src/palette.js";

const tokens = JSON.parse(readFileSync(process.argv[2], "utf8"));
console.log(
  JSON.stringify({
    probability: tokens.map((t) => tokenColor(t, "probability")),
    entropy: tokens.map((t) => tokenColor(t, "entropy")),
    legend: { probability: legendColors("probability"), entropy: legendColors("entropy") },
  }),
);
