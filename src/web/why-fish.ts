/**
 * "Why the fish" in the explorer (issue 10): the attribution and patching figures of
 * src/outputs/explain-charts.ts (the same SVG the CLI writes with --out x.svg), drawn from the JSON
 * that `logit-lens attribute --json` or `logit-lens patch --json` writes. The explorer's server has
 * no attribution or patching route yet, so the panel opens such a file (or pasted JSON); the
 * figures keep their tooltips (each bar, head and cell's exact value).
 */
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

/** The panel: a file picker and a paste box for attribute/patch JSON, and the figure. */
export function whyFishPanel(): HTMLElement {
  const figure = h("div", { class: "wf-figure", id: "why-fish-figure", style: "overflow-x:auto" });
  const status = h("span", { class: "ll-hint", id: "why-fish-status", text: "logit-lens attribute … --json > a.json, or patch … --json > p.json, then open it here" });
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
  return h("details", { class: "ll-card wf-panel", id: "why-fish" }, [
    h("summary", null, "why the fish: attribution and patching figures"),
    h("div", { class: "ex-row" }, [file, status]),
    h("div", { class: "ex-row" }, [paste]),
    figure,
  ]);
}
