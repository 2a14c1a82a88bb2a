/**
 * Renders chat templates for chat-template.ts in a worker thread with a capped heap, so that a
 * template that loops for minutes or builds gigabytes of text cannot take the CLI down: the main
 * thread waits with a deadline and terminates this worker when it is passed.
 *
 * Protocol: the main thread posts { template, context, maxChars }; the answer ({ text } or
 * { error, phase }) goes to the MessagePort handed over in workerData, then the shared flag is set
 * to 1 and notified, which wakes the main thread's Atomics.wait.
 */
import { parentPort, workerData, type MessagePort } from "node:worker_threads";
import { Template } from "@huggingface/jinja";

const { flag, port } = workerData as { flag: SharedArrayBuffer; port: MessagePort };
const signal = new Int32Array(flag);
const compiled = new Map<string, Template>();

function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split("\n")[0] ?? msg;
}

parentPort!.on("message", (job: { template: string; context: Record<string, unknown>; maxChars: number }) => {
  let answer: { text?: string; error?: string; phase?: "parse" | "render" | "size" };
  let t = compiled.get(job.template);
  try {
    if (!t) {
      t = new Template(job.template);
      if (compiled.size > 16) compiled.clear();
      compiled.set(job.template, t);
    }
    try {
      const text = t.render(job.context);
      answer = text.length > job.maxChars ? { error: `its output is ${text.length} characters, more than the limit of ${job.maxChars}`, phase: "size" } : { text };
    } catch (e) {
      answer = { error: firstLine(e), phase: "render" };
    }
  } catch (e) {
    answer = { error: firstLine(e), phase: "parse" };
  }
  port.postMessage(answer);
  Atomics.store(signal, 0, 1);
  Atomics.notify(signal, 0);
});
