/**
 * Activation patching (issue 10, item 4): A patched into itself changes nothing; the final residual
 * of A's last position patched into B gives A's output exactly; prompts of different lengths need a
 * position map, and a map is honoured. The sweep (run from a cut, with B's cache before the patch)
 * equals B run whole with the same patch.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { blockHook } from "../../src/architectures/forward.js";
import { LoadedModel } from "../../src/engine/model.js";
import { patchSweep } from "../../src/explain/patching.js";
import { createProgress } from "../../src/progress.js";
import { REPO_ROOT } from "../helpers/run-cli.js";
import { rejectsOneLine } from "../helpers/assert-user-error.js";

const quiet = createProgress({ quiet: true });

for (const family of ["llama", "gemma3", "gpt2"]) {
  test(`patching sweep (tiny ${family}): A into A is a no-op, A's final residual into B restores A`, { timeout: 120_000 }, async () => {
    const model = await LoadedModel.load({ kind: "hf-folder", dir: path.join(REPO_ROOT, "test/fixtures/tiny", family) }, quiet);
    const tok = model.tokenizer;
    const A = tok.encode("The capital of France is");
    // B: A with one early token swapped (tiny tokenizers give country names different lengths).
    const B = [...A];
    B[1] = A[2]!;
    assert.equal(A.length, B.length);
    const L = model.config.nLayers;
    const self = await patchSweep(model, A, A, { target: 11, versus: 5 });
    assert.equal(self.patched.length, L + 1);
    for (const row of self.patched) for (const v of row) assert.ok(Math.abs(v - self.clean) < 1e-5, `${v} vs ${self.clean}`);
    const ab = await patchSweep(model, A, B, { target: 11 }, { layers: [0, L], positions: [A.length - 1] });
    assert.ok(Math.abs(ab.patched[1]![0]! - ab.clean) < 1e-5, `final residual patched: ${ab.patched[1]![0]} vs A's ${ab.clean}`);
    assert.notEqual(ab.clean, ab.corrupted);
    // The sweep runs from a cut with B's cache; each cell must equal B run whole with that one patch.
    const mid = Math.floor(L / 2);
    const cut = await patchSweep(model, A, B, { target: 11, versus: 5 }, { layers: [0, mid], positions: [1, A.length - 1] });
    const direct = await model.forward([blockHook(0, "hook_resid_pre"), blockHook(mid, "hook_resid_pre")], "last", { cutsAt: [0, mid] });
    const ra = await direct.run(A);
    const H = model.config.hidden;
    const V = model.config.vocabSize;
    for (const [li, l] of [0, mid].entries()) {
      for (const [pi, p] of [1, A.length - 1].entries()) {
        const vector = ra.hooks.get(blockHook(l, "hook_resid_pre"))!.slice(p * H, (p + 1) * H);
        const r = await direct.run(B, undefined, [{ layer: l, position: p, vector }]);
        const row = r.logits!.subarray(r.logits!.length - V);
        const want = row[11]! - row[5]!;
        assert.ok(Math.abs(cut.patched[li]![pi]! - want) < 1e-4, `layer ${l} position ${p}: ${cut.patched[li]![pi]} vs ${want}`);
      }
    }
    await model.release(direct);
    // Different lengths: refused without a map; with one, each B position reads its mapped A position.
    const longer = [A[0]!, ...A];
    await rejectsOneLine(patchSweep(model, longer, B, { target: 11 }), /different lengths .* give a position map/);
    const map = new Map([[B.length - 1, longer.length - 1]]);
    const mapped = await patchSweep(model, longer, B, { target: 11 }, { layers: [L], positionMap: map });
    const own = await patchSweep(model, longer, longer, { target: 11 }, { layers: [L], positions: [longer.length - 1] });
    assert.ok(Math.abs(mapped.patched[0]![0]! - own.clean) < 1e-5);
  });
}
