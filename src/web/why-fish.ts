/**
 * "Why the fish" in the explorer (issue 10): the attribution and patching figures of
 * src/outputs/explain-charts.ts (the same SVG the CLI writes with --out x.svg), drawn from the JSON
 * that `logit-lens attribute --json` or `logit-lens patch --json` writes. The panel runs them on the
 * explorer's model and prompt through the server (POST /api/attribute, POST /api/patch, whose
 * answers are that JSON), or opens such a file (or pasted JSON); the figures keep their tooltips
 * (each bar, head and cell's exact value).
 */
import { ndjsonEvents } from "./ndjson.js";
import type { Attribution } from "../explain/attribution.js";
import type { PatchSweep } from "../explain/patching.js";
import { attributionSvg, patchSvg } from "../outputs/explain-charts.js";
import { h } from "./dom.js";

/** Which result a parsed JSON object is, by the fields each has. */
export function whyFishKind(data: unknown): "attribution" | "patching" | undefined {
  if (typeof data !== "object" || data === null) return undefined;
  const d = data as Record<string, unknown>;
  if (Array.isArray(d["parts"]) && typeof d["model_logit"] === "number") return "attribution";
  if (Array.isArray(d["patched"]) && Array.isArray(d["layers"]) && typeof d["n_layers"] === "number") return "patching";
  return undefined;
}

/**
 * The figure for a result, as an SVG element. Our SVG is built with every text escaped
 * (explain-charts.ts) and parsed as XML by DOMParser, whose documents never run scripts; no token
 * text is ever set as HTML.
 */
export function whyFishFigure(data: Attribution | PatchSweep): SVGSVGElement {
  const markup = whyFishKind(data) === "attribution" ? attributionSvg(data as Attribution) : patchSvg(data as PatchSweep);
  const doc = new DOMParser().parseFromString(markup, "image/svg+xml");
  return document.importNode(doc.documentElement, true) as unknown as SVGSVGElement;
}

/** What the panel runs on: the explorer form's model, prompt and chat template. */
export interface WhyFishContext {
  model?: string;
  prompt: string;
  chat?: boolean;
}

/**
 * A pinned cell of the lens prefills the panel: its position, and, while the target box is empty,
 * the cell's top-1 token (as its text when that is whole characters, else as #id, which the CLI's
 * token parser takes exactly). The user's own target is never overwritten.
 */
export function prefillWhyFish(position: number, top1?: { id: number; bytes: string }): void {
  const pos = document.getElementById("wf-position") as HTMLInputElement | null;
  const target = document.getElementById("wf-target") as HTMLInputElement | null;
  if (!pos || !target) return;
  pos.value = String(position);
  if (top1 && target.value === "") target.value = wholeText(top1.bytes) ?? `#${top1.id}`;
}

/** A token's bytes (hex) as text, or undefined where they are not whole UTF-8 characters. */
function wholeText(hex: string): string | undefined {
  const bytes = new Uint8Array((hex.match(/../g) ?? []).map((b) => parseInt(b, 16)));
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return text.length > 0 ? text : undefined;
  } catch {
    return undefined;
  }
}

/** Reads a job's NDJSON stream to its end: the result event, or the job's one-line error. */
async function runJob(route: "attribute" | "patch", body: unknown, signal: AbortSignal, onStatus: (text: string) => void): Promise<unknown> {
  const res = await fetch(`/api/${route}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal });
  if (!res.ok || !res.body) throw new Error(((await res.json().catch(() => ({ error: res.statusText }))) as { error: string }).error);
  for await (const e of ndjsonEvents<{ type: string; ahead?: number; stage?: string; result?: unknown; error?: string; ms?: number }>(res.body)) {
    if (e.type === "queued") onStatus(e.ahead ? `queued: ${e.ahead} ahead` : "starting…");
    else if (e.type === "status") onStatus(e.stage === "running" ? `running ${route === "attribute" ? "attribution" : "the patching sweep"}…` : `${e.stage}…`);
    else if (e.type === "error") throw new Error(e.error);
    else if (e.type === "cancelled") throw new DOMException("cancelled", "AbortError");
    else if (e.type === "attribution" || e.type === "patching") return e.result;
  }
  throw new Error("the server ended the job without a result");
}

/**
 * The panel: a form that runs attribution (target, optional contrast, position) or a patching sweep
 * (prompt A patched into the explorer's prompt) on the explorer's model and prompt; a file picker
 * and a paste box for attribute/patch JSON; and the figure.
 */
export function whyFishPanel(context?: () => WhyFishContext): HTMLElement {
  const figure = h("div", { class: "wf-figure", id: "why-fish-figure", style: "overflow-x:auto" });
  const status = h("span", { class: "ll-hint", id: "why-fish-status", role: "status", text: context ? "run on the prompt above, or open the output of logit-lens attribute|patch … --json" : "logit-lens attribute … --json > a.json, or patch … --json > p.json, then open it here" });
  const show = (text: string) => {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      status.textContent = "not JSON: open the output of attribute --json or patch --json";
      return;
    }
    const kind = whyFishKind(data);
    figure.textContent = "";
    if (!kind) {
      status.textContent = "this JSON is neither an attribution (attribute --json) nor a patching sweep (patch --json)";
      return;
    }
    figure.append(whyFishFigure(data as Attribution | PatchSweep));
    status.textContent = kind === "attribution" ? "direct logit attribution: bars per layer, heads below (hover for values)" : "activation patching: recovered fraction per layer and position (hover for values)";
  };
  const file = h("input", { type: "file", id: "why-fish-file", accept: ".json,application/json" });
  file.addEventListener("change", () => {
    const f = file.files?.[0];
    if (f) void f.text().then(show);
  });
  const paste = h("textarea", { id: "why-fish-json", rows: 2, placeholder: "…or paste the JSON here", style: "width:100%" });
  paste.addEventListener("input", () => paste.value.trim() && show(paste.value));

  // Running on the server: the explorer's model, prompt and chat template, with these fields.
  const target = h("input", { id: "wf-target", placeholder: 'target, e.g. " 🐴" or " Paris"', size: 18 });
  const versus = h("input", { id: "wf-versus", placeholder: 'versus (optional), e.g. " 🐠"', size: 18, title: "a contrast: the logit difference target - versus, read at the first token where the two texts part" });
  const position = h("input", { type: "number", id: "wf-position", placeholder: "-1", style: "width:5em", title: "the position read (default: the last; a target/versus pair that shares leading tokens is read where they part)" });
  const from = h("textarea", { id: "wf-from", rows: 1, maxlength: 16000, placeholder: "patching: prompt A, whose residuals are copied into the explorer's prompt (B), e.g. the same prompt with 🐴 for 🐠", style: "flex:1 1 30em" });
  const layers = h("input", { id: "wf-layers", placeholder: "layers: all", size: 10, title: "patched layers, e.g. 0-10,20 (n_layers is the final residual)" });
  const positions = h("input", { id: "wf-positions", placeholder: "positions: all", size: 10, title: "patched positions of B, e.g. 3-6" });
  let abort: AbortController | undefined;
  const cancel = h("button", { type: "button", id: "wf-cancel", text: "Cancel", disabled: true, onclick: () => abort?.abort() });
  const run = async (route: "attribute" | "patch") => {
    if (!context) return;
    const ctx = context();
    if (!target.value) {
      status.textContent = "give a target (a token or text)";
      return;
    }
    const body: Record<string, unknown> = { prompt: ctx.prompt, target: target.value };
    if (ctx.model) body["model"] = ctx.model;
    if (ctx.chat) body["chat"] = true;
    if (versus.value) body["versus"] = versus.value;
    if (route === "attribute" && position.value.trim() !== "") body["position"] = Number(position.value);
    if (route === "patch") {
      if (!from.value) {
        status.textContent = "patching needs prompt A (the source of the residuals)";
        return;
      }
      body["from"] = from.value;
      if (layers.value.trim()) body["layers"] = layers.value.trim();
      if (positions.value.trim()) body["positions"] = positions.value.trim();
    }
    abort?.abort();
    const mine = (abort = new AbortController());
    cancel.disabled = false;
    panel.dataset["state"] = "running";
    try {
      const result = await runJob(route, body, mine.signal, (t) => (status.textContent = t));
      show(JSON.stringify(result));
      panel.dataset["state"] = "done";
    } catch (e) {
      if (mine !== abort) return; // replaced by a newer run
      panel.dataset["state"] = "error";
      status.textContent = (e as Error).name === "AbortError" ? "cancelled" : `error: ${(e as Error).message}`;
    } finally {
      if (mine === abort) cancel.disabled = true;
    }
  };
  const runRows = context
    ? [
        h("div", { class: "ex-row" }, [
          h("label", null, ["target ", target]),
          h("label", null, ["versus ", versus]),
          h("label", null, ["position ", position]),
          h("button", { type: "button", id: "wf-attribute", class: "ex-primary", text: "Attribute", title: "direct logit attribution on the explorer's model and prompt", onclick: () => void run("attribute") }),
          cancel,
        ]),
        h("div", { class: "ex-row" }, [h("span", { class: "ll-label", text: "A" }), from, layers, positions, h("button", { type: "button", id: "wf-patch", text: "Patch A → B", title: "activation patching sweep: each residual of A written into the explorer's prompt B", onclick: () => void run("patch") })]),
      ]
    : [];
  const panel = h("details", { class: "ll-card wf-panel", id: "why-fish" }, [
    h("summary", null, context ? "why the fish: attribution and patching on this model and prompt" : "why the fish: attribution and patching figures"),
    ...runRows,
    h("div", { class: "ex-row" }, [file, status]),
    h("div", { class: "ex-row" }, [paste]),
    figure,
  ]);
  return panel;
}
