/**
 * Reference 2: llama.cpp (through node-llama-cpp 3.21.1, prebuilt CPU binary) on the same two real
 * GGUF files, next to reference 1, transformers (fp32 forward of the GGUF dequantized to fp32).
 *
 * llama.cpp computes with the quantized weights *and quantized activations* (q8 dot products), with
 * kernels chosen for the CPU it runs on, so its distance from the exact result moves with the CPU:
 * KL between its next-token distribution and the exact one is 1e-3..1.1e-2 on an AVX2 AMD EPYC and up
 * to 1.2e-2 on an AVX-512 Intel for the same prompts. A fixed bound on KL(llama.cpp || ours) is
 * therefore a bound on llama.cpp's CPU, not on us. So, for each prompt (llama.cpp fed exactly our
 * token ids, never re-tokenizing), in the same run:
 *
 * - ours against the exact reference: KL(transformers || ours) <= OURS_KL_LIMIT (1e-3, issue 7's
 *   bound). The reference is fixed numbers (test/fixtures/real/<alias>/next_token.*, recorded by
 *   tools/reference/make_real_references.py --next-token), so this bound does not depend on the CPU,
 *   and it fails on small real errors: in SmolLM2, a 2x RoPE base moves the plain prompts' next-token
 *   distributions by KL 1e-4, 6.4e-3 and 3.1e-3, a 1e-3 RMSNorm epsilon by 1.5e-2, 3e-3 and 1.7e-3.
 *   It is stricter than "no farther from the exact result than llama.cpp" (KL(transformers || ours)
 *   <= max(OURS_KL_LIMIT, KL(transformers || llama.cpp))), which it implies; the test prints both
 *   distances and their ratio.
 * - llama.cpp against the same reference: KL(transformers || llama.cpp) <= LLAMACPP_KL_LIMIT (0.05,
 *   4x the largest seen on any CPU). llama.cpp is the independent reader of the GGUF: this proves the
 *   reference (and so our bound) reads the same model llama.cpp does (tensor layout, norms, RoPE,
 *   chat template, vocabulary), on every CPU, without asking llama.cpp for more than it can give.
 * - top-1: ours equals the reference's, except where the reference's top two probabilities are
 *   closer than sqrt(2 * OURS_KL_LIMIT) (Pinsker: within the KL bound a near-tie may flip).
 *
 * KL(llama.cpp || ours) is still printed. The tests also check our tokenizer against llama.cpp's and
 * transformers', and that the lens at the last layer is the model's own output.
 *
 * Measured values are printed as test diagnostics (`node --test` shows them as "# ..." lines).
 */
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel, type LlamaContext, type ControlledEvaluateInputItem, type Token } from "node-llama-cpp";
import { LogitLens } from "../../src/lens/logit-lens.js";
import { readSafetensors } from "../../src/formats/safetensors.js";
import { readTensorF32 } from "../../src/formats/dequantize.js";
import { loadReal, realModelPath, REAL_ALIASES, type RealAlias, type RealModel } from "../helpers/real-models.js";
import { REPO_ROOT } from "../helpers/run-cli.js";
import { klDivergence, logSoftmax } from "../helpers/distributions.js";
import { requantizeGgufMixed, type SuperBlockQuant } from "../helpers/gguf-requantize.js";
import { LoadedModel } from "../../src/engine/model.js";
import { resolveModelSource } from "../../src/sources/resolve.js";
import { createProgress } from "../../src/progress.js";

/** KL(transformers || ours) of the final next-token distribution, in nats (issue 7's bound; every position: test/real/reference.test.ts). */
const OURS_KL_LIMIT = 1e-3;
/** KL(transformers || llama.cpp), in nats: the loose check that llama.cpp and the reference run the same model. */
const LLAMACPP_KL_LIMIT = 0.05;
/** Reference top-1/top-2 probability gap under which our top-1 may be the runner-up (Pinsker, from OURS_KL_LIMIT). */
const TOP1_NEAR_TIE = Math.sqrt(2 * OURS_KL_LIMIT);

const root = REPO_ROOT;

interface Prompt {
  name: string;
  /** Plain text, encoded with the model's own special tokens (BOS where the model wants one). */
  text?: string;
  /** A user message wrapped in the model's chat template (with the assistant prefix). */
  chat?: string;
}

/** The same names and texts as NEXT_TOKEN_PROMPTS in tools/reference/make_real_references.py. */
const PROMPTS: Prompt[] = [
  { name: "plain: capital", text: "The capital of France is" },
  { name: "plain: sentence", text: "The quick brown fox jumps over the lazy dog. The dog was not amused, so it" },
  { name: "emoji", text: "My favourite sea creature is the tropical fish 🐠, and my second favourite is the" },
  { name: "chat", chat: "What is the capital of France? Answer in one word." },
];

/** Prompts whose tokenization is compared with llama.cpp's own tokenizer. */
const TOKENIZER_TEXTS = [
  "The capital of France is",
  "The quick brown fox jumps over the lazy dog. The dog was not amused, so it",
  "My favourite sea creature is the tropical fish 🐠, and my second favourite is the",
  "  leading spaces, tabs\tand\nnewlines; numbers 1234567 and ünïcödé — 日本語 🦄🐠!",
];

// ---------------------------------------------------------------- llama.cpp, loaded once

let llamaPromise: Promise<Llama> | undefined;
function llamaOnce(): Promise<Llama> {
  llamaPromise ??= getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  return llamaPromise;
}

interface Reference {
  model: LlamaModel;
  context: LlamaContext;
}
const references = new Map<RealAlias, Promise<Reference>>();
function reference(alias: RealAlias): Promise<Reference> {
  let r = references.get(alias);
  if (!r) {
    r = (async () => {
      const llama = await llamaOnce();
      const model = await llama.loadModel({ modelPath: await realModelPath(alias) });
      const context = await model.createContext({ contextSize: 512, batchSize: 512, threads: Math.max(1, os.availableParallelism()) });
      return { model, context };
    })();
    references.set(alias, r);
  }
  return r;
}

after(async () => {
  for (const r of references.values()) {
    const { model, context } = await r.catch(() => ({ model: undefined, context: undefined }));
    await context?.dispose();
    await model?.dispose();
  }
  if (llamaPromise) await (await llamaPromise).dispose();
});

// ---------------------------------------------------------------- helpers

/** llama.cpp's full next-token distribution after `ids` (a fresh sequence each time). */
async function llamaNextProbs(ref: Reference, ids: number[]): Promise<Map<number, number>> {
  const sequence = ref.context.getSequence();
  try {
    const tokens = ids as Token[];
    const input: ControlledEvaluateInputItem[] = tokens.slice();
    // Greedy sampler settings: llama.cpp then returns the softmax of the raw logits over the whole vocabulary.
    input[ids.length - 1] = [tokens[ids.length - 1]!, { generateNext: { probabilities: true, options: { temperature: 0 } } }];
    const out = await sequence.controlledEvaluate(input);
    const probs = out[ids.length - 1]?.next.probabilities;
    assert.ok(probs && probs.size > 0, "llama.cpp returned no probabilities");
    return probs as Map<number, number>;
  } finally {
    sequence.dispose();
  }
}

function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/** llama.cpp's probabilities (a complete map, renormalised: its float32 sum is off by ~1e-4) as log-probabilities. */
function llamaLogProbs(p: Map<number, number>, vocabSize: number): Float64Array {
  assert.equal(p.size, vocabSize, `llama.cpp gave ${p.size} of ${vocabSize} probabilities`);
  let sum = 0;
  for (const v of p.values()) sum += v;
  const out = new Float64Array(vocabSize).fill(-Infinity);
  for (const [id, v] of p) out[id] = Math.log(v / sum);
  return out;
}

/** The transformers reference for PROMPTS (tools/reference/make_real_references.py --next-token). */
interface NextTokenReference {
  vocab_size: number;
  prompts: { name: string; kind: "plain" | "chat"; text: string; input_ids: number[]; top_ids: number[]; top_logprobs: number[]; top1_margin: number }[];
}

/**
 * The reference's next-token log-probabilities after prompt `i`: float16 for the whole vocabulary
 * (rounding error <= 2.4e-4 on the likely tokens, 8e-3 below p = 1e-4), the most probable 64 exact,
 * renormalised in float64. The rounding alone makes KL(reference || exact fp32 run) 1e-7..7e-7, under
 * 0.1 % of OURS_KL_LIMIT (today's fp32 engine measures exactly that).
 */
function referenceLogProbs(alias: RealAlias, ref: NextTokenReference, i: number): Float64Array {
  const file = path.join(root, "test/fixtures/real", alias, "next_token.safetensors");
  const tensor = readSafetensors(file).tensors.find((t) => t.name === `q${i}/logprobs`) ?? assert.fail(`${file} lacks q${i}/logprobs`);
  const lp = Float64Array.from(readTensorF32(tensor));
  assert.equal(lp.length, ref.vocab_size);
  const { top_ids: ids, top_logprobs: exact } = ref.prompts[i]!;
  ids.forEach((id, k) => (lp[id] = exact[k]!));
  let max = -Infinity;
  for (const v of lp) if (v > max) max = v;
  let sum = 0;
  for (const v of lp) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return lp.map((v) => v - lse);
}

const nextTokenReferences = new Map<RealAlias, NextTokenReference>();
function nextTokenReference(alias: RealAlias): NextTokenReference {
  let ref = nextTokenReferences.get(alias);
  if (!ref) {
    const file = path.join(root, "test/fixtures/real", alias, "next_token.json");
    ref = JSON.parse(fs.readFileSync(file, "utf8")) as NextTokenReference;
    nextTokenReferences.set(alias, ref);
  }
  return ref;
}

async function promptIds(real: RealModel, prompt: Prompt): Promise<number[]> {
  const tk = real.model.tokenizer;
  if (prompt.text !== undefined) return tk.encode(prompt.text);
  const text = tk.applyChatTemplate([{ role: "user", content: prompt.chat! }], { addGenerationPrompt: true });
  const ids = tk.encode(text, { addSpecialTokens: false });
  // The template writes BOS itself where the model wants it (Gemma); put it in front otherwise.
  if (tk.addBos && tk.bosId !== undefined && ids[0] !== tk.bosId) ids.unshift(tk.bosId);
  return ids;
}

function show(real: RealModel, id: number): string {
  return JSON.stringify(real.model.tokenizer.decode([id]));
}

// ---------------------------------------------------------------- tests

for (const alias of REAL_ALIASES) {
  describe(`llama.cpp reference: ${alias}`, () => {
    test("tokenizer ids equal llama.cpp's tokenize()", async () => {
      const real = await loadReal(alias);
      const ref = await reference(alias);
      const tk = real.model.tokenizer;
      for (const text of TOKENIZER_TEXTS) {
        // Without special tokens on both sides: the pure text segmentation.
        const theirs = ref.model.tokenize(text, false);
        assert.deepEqual(tk.encode(text, { addSpecialTokens: false }), theirs as number[], `tokens of ${JSON.stringify(text)}`);
        // With special tokens: BOS exactly where llama.cpp would put it.
        const withBos = ref.model.tokens.shouldPrependBosToken && ref.model.tokens.bos !== null ? [ref.model.tokens.bos as number, ...theirs] : theirs;
        assert.deepEqual(tk.encode(text), withBos, `tokens of ${JSON.stringify(text)} with BOS handling`);
      }
    });

    test("chat template string tokenizes like llama.cpp (special tokens parsed)", async () => {
      const real = await loadReal(alias);
      const ref = await reference(alias);
      const tk = real.model.tokenizer;
      const text = tk.applyChatTemplate([{ role: "user", content: PROMPTS[3]!.chat! }], { addGenerationPrompt: true });
      assert.deepEqual(tk.encode(text, { addSpecialTokens: false }), ref.model.tokenize(text, true) as number[]);
    });

    for (const [i, prompt] of PROMPTS.entries()) {
      test(`next token: ours within ${OURS_KL_LIMIT} of transformers, llama.cpp within ${LLAMACPP_KL_LIMIT}: ${prompt.name}`, async (t) => {
        const real = await loadReal(alias);
        const ref = await reference(alias);
        const exact = nextTokenReference(alias);
        const want = exact.prompts[i];
        const regenerate = "regenerate with tools/reference/make_real_references.py --next-token";
        assert.ok(want && want.name === prompt.name && want.text === (prompt.text ?? prompt.chat), `next_token.json prompt ${i} is not ${JSON.stringify(prompt.name)}: ${regenerate}`);
        const tk = real.model.tokenizer;
        const ids = await promptIds(real, prompt);
        assert.deepEqual(ids, want.input_ids, "token ids differ from transformers'");
        if (alias === "gemma3-270m") assert.equal(ids[0], tk.bosId, "Gemma prompts must start with BOS");

        const forward = await real.model.forward([], true);
        const result = await forward.run(ids);
        assert.ok(result.logits, "forward returned no logits");
        const T = ids.length;
        const V = result.logits.length / T;
        assert.equal(V, real.model.config.vocabSize);
        assert.equal(V, exact.vocab_size);
        const ours = logSoftmax(result.logits.subarray((T - 1) * V, T * V));
        const theirs = referenceLogProbs(alias, exact, i);
        const llama = llamaLogProbs(await llamaNextProbs(ref, ids), V);

        const klOurs = klDivergence(theirs, ours);
        const klLlama = klDivergence(theirs, llama);
        const klLlamaOurs = klDivergence(llama, ours);
        const refTop = want.top_ids[0]!;
        const ourTop = argmax(ours);
        const llamaTop = argmax(llama);
        const p = (lp: Float64Array, id: number) => Math.exp(lp[id]!).toFixed(4);
        t.diagnostic(
          `${alias} / ${prompt.name}: ${T} tokens, KL(transformers || ours) = ${klOurs.toExponential(3)}, ` +
            `KL(transformers || llama.cpp) = ${klLlama.toExponential(3)} (ratio ${(klOurs / klLlama).toExponential(1)}), ` +
            `KL(llama.cpp || ours) = ${klLlamaOurs.toExponential(3)}; top-1 transformers ${refTop} ${show(real, refTop)} p=${p(theirs, refTop)}, ` +
            `ours ${ourTop} p=${p(ours, ourTop)}, llama.cpp ${llamaTop} p=${p(llama, llamaTop)}`,
        );
        assert.ok(klOurs <= OURS_KL_LIMIT, `KL(transformers || ours) = ${klOurs} > ${OURS_KL_LIMIT} (llama.cpp's on this CPU: ${klLlama})`);
        assert.ok(klLlama <= LLAMACPP_KL_LIMIT, `KL(transformers || llama.cpp) = ${klLlama} > ${LLAMACPP_KL_LIMIT}: llama.cpp and the reference disagree about this model (${regenerate}?)`);
        if (ourTop !== refTop) {
          const gap = Math.exp(theirs[refTop]!) - Math.exp(theirs[ourTop]!);
          assert.ok(gap < TOP1_NEAR_TIE, `top-1 differs: ours ${show(real, ourTop)}, transformers ${show(real, refTop)} (probability gap ${gap.toFixed(4)} >= ${TOP1_NEAR_TIE.toFixed(4)})`);
        }
      });
    }

    test("the lens at the last layer is the model's own output", async (t) => {
      const real = await loadReal(alias);
      const ids = real.model.tokenizer.encode("The capital of France is Paris, and the capital of Italy is");
      const K = 10;
      const lens = await new LogitLens(real.model).apply(ids, { topK: K });
      const fwd = await (await real.model.forward([], true)).run(ids);
      const T = ids.length;
      const V = fwd.logits!.length / T;
      assert.equal(lens.final.length, T);
      let worst = { diff: 0, where: "" };
      for (let pos = 0; pos < T; pos++) {
        const row = fwd.logits!.subarray(pos * V, (pos + 1) * V);
        const logq = logSoftmax(row);
        const order = Array.from(logq.keys()).sort((a, b) => logq[b]! - logq[a]!).slice(0, K);
        const cell = lens.final[pos]!;
        assert.equal(cell.topIds.length, K);
        for (let i = 0; i < K; i++) {
          const id = cell.topIds[i]!;
          // Same ids, except for exact near-ties, which may come in either order.
          if (id !== order[i]) {
            assert.ok(Math.abs(logq[id]! - logq[order[i]!]!) < 1e-5, `position ${pos} rank ${i}: lens ${id}, forward ${order[i]}`);
          }
          assert.ok(Math.abs(cell.topLogits[i]! - row[id]!) < 1e-4, `position ${pos} rank ${i} (id ${id}): lens logit ${cell.topLogits[i]}, forward ${row[id]}`);
          // logprob = logit - logsumexp over the vocabulary; the reference here sums in float64.
          const diff = Math.abs(cell.topLogprobs[i]! - logq[id]!);
          if (diff > worst.diff) worst = { diff, where: `position ${pos} rank ${i} (id ${id}): lens ${cell.topLogprobs[i]}, float64 log-softmax of the forward logits ${logq[id]}` };
        }
      }
      t.diagnostic(`${alias}: lens final vs forward output, max |logprob difference| over top-${K} x ${T} positions = ${worst.diff.toExponential(2)}`);
      // 2e-4: the lens and the forward graph compute the same logits with two fp32 GEMM kernels (the
      // lens reads the unembedding unpacked), which round differently by up to ~1e-4 on Gemma's
      // logits (|logit| ~ 30); the log-sum-exp over 262k of them adds its own rounding.
      assert.ok(worst.diff < 2e-4, `lens logprobs off by ${worst.diff.toExponential(2)} at ${worst.where}`);
      // The last readout (hook_resid_post of the last block, through the final norm and head) is
      // the model's output too, and its KL to the final layer is zero.
      const lastLayer = lens.readouts[lens.readouts.length - 1]!;
      for (let pos = 0; pos < T; pos++) {
        assert.deepEqual(lastLayer.cells[pos]!.topIds, lens.final[pos]!.topIds, `last layer vs final at position ${pos}`);
        assert.ok(Math.abs(lastLayer.cells[pos]!.klToFinal) < 1e-4, `last layer KL to final ${lastLayer.cells[pos]!.klToFinal}`);
      }
    });
  });
}

// ---------------------------------------------------------------- formats no published test model has

test(`SmolLM2 with MLP down-projections in Q2_K, Q3_K, IQ4_XS: llama.cpp reads the same model (KL(ours || llama.cpp) <= ${LLAMACPP_KL_LIMIT})`, async (t) => {
  // The only independent reader of these block layouts here is llama.cpp (ggml-quants.c); gguf-py's
  // numpy port is the other (test/formats). SmolLM2's down-projections (1536 inputs) are the
  // matrices with rows of 256; the layers take the three types in turn. Measured: KL 1e-3..1.9e-2
  // (llama.cpp's q8 activations; Q2_K damages the model most). A misread block layout moves the
  // distribution far beyond the bound (a sign error in IQ4_XS's scale codes: KL > 1).
  const types: SuperBlockQuant[] = ["Q2_K", "Q3_K", "IQ4_XS"];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-llamacpp-formats-"));
  try {
    const file = path.join(dir, "smollm2-superblocks.gguf");
    requantizeGgufMixed(await realModelPath("smollm2-135m-instruct"), file, (name) => {
      const layer = /^blk\.(\d+)\.ffn_down\.weight$/.exec(name);
      return layer ? types[Number(layer[1]) % types.length] : undefined;
    });
    const ours = await LoadedModel.load(await resolveModelSource(file, { progress: createProgress({ quiet: true }) }), createProgress({ quiet: true }));
    assert.equal(ours.store.sourceDtype("model.layers.1.mlp.down_proj.weight"), "Q3_K");
    const llama = await llamaOnce();
    const model = await llama.loadModel({ modelPath: file });
    const context = await model.createContext({ contextSize: 256, batchSize: 256, threads: Math.max(1, os.availableParallelism()) });
    try {
      const forward = await ours.forward([], "last");
      for (const prompt of PROMPTS.filter((p) => p.text)) {
        const ids = ours.tokenizer.encode(prompt.text!);
        const logp = logSoftmax((await forward.run(ids)).logits!);
        const kl = klDivergence(logp, llamaLogProbs(await llamaNextProbs({ model, context }, ids), logp.length));
        t.diagnostic(`${prompt.name}: KL(ours || llama.cpp) = ${kl.toExponential(2)}`);
        assert.ok(kl <= LLAMACPP_KL_LIMIT, `${prompt.name}: KL ${kl}`);
      }
    } finally {
      await context.dispose();
      await model.dispose();
      fs.rmSync(ours.store.dir, { recursive: true, force: true }); // the file is temporary: so is its conversion
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
