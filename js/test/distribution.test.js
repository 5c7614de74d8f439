// The distribution view's numbers against the engine's own processors: fixtures/distribution.json
// is written by fixtures/make_distribution_fixtures.py (checked current by
// tests/test_distribution_fixtures.py) from nb_completion/engine/batch_sampling.py on full logits.
import { describe, expect, it } from "vitest";
import { reshape } from "../src/reshape.js";

import FIXTURES from "./fixtures/distribution.json";

describe("reshape() equals the engine's processors", () => {
  for (const c of FIXTURES.cases) {
    // whole vocabulary sent: exact; top 256 of 3000: the rest is one summarised block
    const tol = c.exact ? 1e-6 : 5e-4; // measured: 3.4e-4 at T 1.7 (the rest has 45% of the mass there)
    for (const e of c.expected) {
      // the penalty is applied to the tokens sent, not to the summarised rest: exact cases only
      if (!c.exact && e.setting.repetition_penalty) continue;
      it(`${c.name}: ${JSON.stringify(e.setting)}`, () => {
        const r = reshape(c.distribution, e.setting);
        r.raw.forEach((p, i) => expect(Math.abs(p - c.raw[i])).toBeLessThan(1e-6));
        r.processed.forEach((p, i) => expect(Math.abs(p - e.processed[i])).toBeLessThan(tol));
        expect(Math.abs(r.rest - e.rest)).toBeLessThan(tol);
        expect(r.excluded).toEqual(e.excluded);
      });
    }
  }

  it("top-k 3 leaves exactly 3 tokens", () => {
    const c = FIXTURES.cases[1];
    const r = reshape(c.distribution, { strategy: "top_k", top_k: 3 });
    expect(r.excluded.filter((x) => !x)).toHaveLength(3);
    expect(r.processed.slice(0, 3).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 9);
  });

  it("marks the top-p cut: the nucleus is the first tokens whose mass reaches p", () => {
    const c = FIXTURES.cases[0];
    const r = reshape(c.distribution, { strategy: "top_p", temperature: 1, top_p: 0.5 });
    const mass = r.raw.slice(0, r.cut - 1).reduce((a, b) => a + b, 0);
    expect(mass).toBeLessThan(0.5);
    expect(mass + r.raw[r.cut - 1]).toBeGreaterThanOrEqual(0.5);
  });
});
