/** The statistic behind the bench's thread ratios (lib/bench/threads.ts). */
import assert from "node:assert/strict";
import { describeSpread, spreadOf } from "../lib/bench/threads.ts";

Deno.test("a side's spread: the fastest run, the median and the slowest over all its processes", () => {
  const s = spreadOf([812.4, 790.2, 1403.9, 801, 799.5, 2210], 2);
  assert.deepEqual(s, { minMs: 790.2, medianMs: 806.7, maxMs: 2210, runs: 6, processes: 2 });
  assert.equal(describeSpread(s), "790 / 807 / 2210 ms (min / median / max of 6 runs in 2 processes)");
});
