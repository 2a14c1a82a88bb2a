// node tools/synthetic/check_llamacpp.mjs FILE.gguf: llama.cpp (node-llama-cpp, CPU) loads the file, tokenizes a
// prompt with its vocabulary, evaluates it and checks that the next-token probabilities are finite.
const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
const file = process.argv[2];
const t0 = Date.now();
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: file });
const ctx = await model.createContext({ contextSize: 256, batchSize: 256, threads: 2 });
const text = "The capital of France is Paris. Fish emoji: 🐠";
const ids = [model.tokens.bos, ...model.tokenize(text, false)];
console.log("bos", model.tokens.bos, "eos", model.tokens.eos, "tokens", ids.length, ids.slice(0, 12).join(","), "detok", JSON.stringify(model.detokenize(ids.slice(1))));
const seq = ctx.getSequence();
const input = ids.slice();
input[ids.length - 1] = [ids[ids.length - 1], { generateNext: { probabilities: true, options: { temperature: 0 } } }];
const t1 = Date.now();
const out = await seq.controlledEvaluate(input);
const probs = out[ids.length - 1].next.probabilities;
let sum = 0, bad = 0, max = 0, ent = 0;
for (const p of probs.values()) { if (!Number.isFinite(p)) bad++; sum += p; max = Math.max(max, p); if (p > 0) ent -= p * Math.log(p); }
console.log(`loaded in ${(t1 - t0) / 1000}s, eval ${ids.length} tokens in ${(Date.now() - t1) / 1000}s; probabilities: ${probs.size}, non-finite ${bad}, sum ${sum.toFixed(4)}, max ${max.toExponential(3)}, entropy ${ent.toFixed(3)} (uniform ${Math.log(probs.size).toFixed(3)})`);
await ctx.dispose(); await model.dispose(); await llama.dispose();
