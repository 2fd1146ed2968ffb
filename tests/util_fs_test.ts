/**
 * The atomic folder writes every layer uses (lib/util/fs.ts): a folder is replaced whole or not at all, a
 * staged folder waits for its commit, and a commit that fails loses neither the old folder nor leaves the
 * new one half in place.
 */
import assert from "node:assert/strict";
import { stageDir, writeDirAtomic } from "../lib/util/fs.ts";

const list = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

Deno.test("stageDir / writeDirAtomic: whole folders, staged until committed, the old one kept on failure", async () => {
  const root = await Deno.makeTempDir({ prefix: "vit-fs-" });
  const dir = `${root}/m`;
  const fill = (text: string) => (tmp: string) => Deno.writeTextFile(`${tmp}/a.txt`, text);
  try {
    await writeDirAtomic(dir, fill("one"));
    assert.deepEqual(list(root), ["m"]);
    // Staged: invisible at `dir` until committed, then replaces it whole.
    const staged = await stageDir(dir, fill("two"));
    assert.equal(await Deno.readTextFile(`${dir}/a.txt`), "one");
    assert.equal(list(root).length, 2);
    await staged.commit();
    assert.equal(await Deno.readTextFile(`${dir}/a.txt`), "two");
    assert.deepEqual(list(root), ["m"]);
    await staged.discard(); // a no-op once committed
    assert.equal(await Deno.readTextFile(`${dir}/a.txt`), "two");
    // Discarded: nothing left.
    await (await stageDir(dir, fill("three"))).discard();
    assert.deepEqual(list(root), ["m"]);
    // A fill that fails leaves nothing either.
    await assert.rejects(() => stageDir(dir, () => Promise.reject(new Error("disk full"))), /disk full/);
    assert.deepEqual(list(root), ["m"]);
    // The rename into place fails: the old folder is put back, the staged one removed.
    const failing = await stageDir(dir, fill("four"));
    const rename = Deno.rename;
    Deno.rename = (from, to) =>
      String(from) === failing.path ? Promise.reject(new Error("rename refused")) : rename(from, to);
    try {
      await assert.rejects(() => failing.commit(), /rename refused/);
    } finally {
      Deno.rename = rename;
    }
    assert.equal(await Deno.readTextFile(`${dir}/a.txt`), "two");
    assert.deepEqual(list(root), ["m"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
