/** The statistic behind the bench's thread ratios (lib/bench/threads.ts). */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { runTimed } from "../lib/bench/child.ts";
import { compareSides, describeSpread, ProbeProcess, spreadOf } from "../lib/bench/threads.ts";
import { archConfig, MICRO_ARCH } from "../lib/vit/archs.ts";

Deno.test("a side's spread: the fastest run, the median and the slowest over all its processes", () => {
  const s = spreadOf([812.4, 790.2, 1403.9, 801, 799.5, 2210], 2);
  assert.deepEqual(s, { minMs: 790.2, medianMs: 806.7, maxMs: 2210, runs: 6, processes: 2 });
  assert.equal(describeSpread(s), "790 / 807 / 2210 ms (min / median / max of 6 runs in 2 processes)");
});

Deno.test("compareSides: one probe process per side and round, their timed runs interleaved", async () => {
  const root = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
  const r = await compareSides(root, "forward", archConfig(MICRO_ARCH)!, 1, 3, 1, [
    { label: "1 thread", env: { VIT_WASM_THREADS: "1" } },
    { label: "2 threads", env: { VIT_WASM_THREADS: "2" } },
  ]);
  if ("error" in r) throw new Error(r.error);
  assert.deepEqual(r.results.map((x) => x.threads), [1, 2]);
  for (const [i, s] of r.spreads.entries()) {
    assert.equal(s.runs, 3);
    assert.equal(s.processes, 1);
    assert.deepEqual(r.results[i].runs.length, 3);
    assert.ok(s.minMs > 0 && s.minMs <= s.medianMs && s.medianMs <= s.maxMs);
  }
});

Deno.test("runTimed: a child that outlives its timeout is killed and answers 124 with the reason", async () => {
  const start = performance.now();
  const r = await runTimed(Deno.execPath(), ["eval", "await new Promise((r) => setTimeout(r, 60_000))"], {
    timeoutMs: 300,
  });
  assert.equal(r.code, 124);
  assert.match(r.stderr, /did not exit in 0\.3 s and was killed/);
  assert.ok(performance.now() - start < 30_000, "the child was not killed");
});

Deno.test("a probe process that never answers is killed at its timeout and the bench gets an error", async () => {
  const start = performance.now();
  const p = new ProbeProcess(
    ["eval", "await new Promise((r) => setTimeout(r, 60_000))"],
    Deno.cwd(),
    {},
    300,
  );
  await assert.rejects(p.next(), /no answer in 0\.3 s; the probe process was killed/);
  await p.close();
  assert.ok(performance.now() - start < 30_000, "the probe was not killed");
});
