/**
 * Reference 2: llama.cpp (through node-llama-cpp 3.21.1, prebuilt CPU binary) on the same two real
 * GGUF files. llama.cpp computes with the quantized weights and its own kernels, we dequantize to
 * fp32 and run onnxruntime, so the distributions are close, not equal: the tests ask for the same
 * top-1 next token and KL(llama.cpp || ours) < 0.01 at the last position, with llama.cpp fed
 * exactly our token ids (it never re-tokenizes). They also check our tokenizer against
 * llama.cpp's, and that the lens at the last layer is the model's own output.
 *
 * Measured KLs are printed as test diagnostics (`node --test` shows them as "# ..." lines).
 */
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import os from "node:os";
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel, type LlamaContext, type ControlledEvaluateInputItem, type Token } from "node-llama-cpp";
import { LogitLens } from "../src/lens/logit-lens.js";
import { loadReal, realModelPath, REAL_ALIASES, type RealAlias, type RealModel } from "./helpers/real-models.js";

const KL_LIMIT = 0.01;

interface Prompt {
  name: string;
  /** Plain text, encoded with the model's own special tokens (BOS where the model wants one). */
  text?: string;
  /** A user message wrapped in the model's chat template (with the assistant prefix). */
  chat?: string;
}

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

/** log-softmax (float64) of one row of logits. */
function logSoftmax(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of row) if (v > max) max = v;
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(row, (v) => v - lse);
}

function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/**
 * KL(p || q) in nats, p = llama.cpp's distribution (renormalised: its float32 sum is off by ~1e-4),
 * q = ours as log-probabilities. When llama.cpp gives only part of the vocabulary, the tokens it
 * leaves out form one remainder bucket on both sides.
 */
function klDivergence(p: Map<number, number>, logq: Float64Array): { kl: number; covered: number } {
  let pSum = 0;
  for (const v of p.values()) pSum += v;
  let kl = 0;
  let qCovered = 0;
  for (const [id, raw] of p) {
    const lq = logq[id]!;
    qCovered += Math.exp(lq);
    const pi = raw / pSum;
    if (pi > 0) kl += pi * (Math.log(pi) - lq);
  }
  const complete = p.size >= logq.length;
  if (!complete) {
    // Remainder bucket: llama.cpp's left-out mass is 1 - pSum before renormalising; with a
    // complete map it is ~0, so this branch is only for truncated distributions.
    const pRest = Math.max(0, 1 - pSum);
    const qRest = Math.max(1e-30, 1 - qCovered);
    if (pRest > 0) kl += pRest * (Math.log(pRest) - Math.log(qRest));
  }
  return { kl, covered: p.size / logq.length };
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

    for (const prompt of PROMPTS) {
      test(`next token matches llama.cpp: ${prompt.name}`, async (t) => {
        const real = await loadReal(alias);
        const ref = await reference(alias);
        const tk = real.model.tokenizer;
        const ids = await promptIds(real, prompt);
        if (alias === "gemma3-270m") assert.equal(ids[0], tk.bosId, "Gemma prompts must start with BOS");

        const forward = await real.model.forward([], true);
        const result = await forward.run(ids);
        assert.ok(result.logits, "forward returned no logits");
        const T = ids.length;
        const V = result.logits.length / T;
        assert.equal(V, real.model.config.vocabSize);
        const logq = logSoftmax(result.logits.subarray((T - 1) * V, T * V));

        const p = await llamaNextProbs(ref, ids);
        const llamaTop = p.keys().next().value as number;
        const ourTop = argmax(logq);
        const { kl, covered } = klDivergence(p, logq);
        t.diagnostic(
          `${alias} / ${prompt.name}: ${T} tokens, KL(llama.cpp || ours) = ${kl.toExponential(3)}, ` +
            `top-1 llama.cpp ${llamaTop} ${show(real, llamaTop)} p=${p.get(llamaTop)!.toFixed(4)}, ` +
            `ours ${ourTop} ${show(real, ourTop)} p=${Math.exp(logq[ourTop]!).toFixed(4)}, vocabulary covered ${(100 * covered).toFixed(1)}%`,
        );
        assert.equal(ourTop, llamaTop, `top-1 differs: ours ${show(real, ourTop)}, llama.cpp ${show(real, llamaTop)}`);
        assert.ok(kl < KL_LIMIT, `KL(llama.cpp || ours) = ${kl} >= ${KL_LIMIT}`);
      });
    }

    test("the lens at the last layer is the model's own output", async (t) => {
      const real = await loadReal(alias);
      const ids = real.model.tokenizer.encode("The capital of France is Paris, and the capital of Italy is");
      const K = 10;
      const lens = await new LogitLens(real.model).run(ids, { topK: K });
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
