/**
 * The explorer (`logit-lens serve`): a form to ask (prompt or chat, model, readout points, variant,
 * top-k, targets, families, generation), the streamed run drawn by the same LensView as the HTML
 * report, a second run to compare with, exports through the server's renderers, and the whole
 * state in the URL (#...), so a link reproduces the view.
 */
import type { LensReport, ReportCell } from "../outputs/report.js";
import { append, h } from "./dom.js";
import { cellAt, type ColorBy, type ExactKl, type RowKey } from "./lens-data.js";
import { LensView, type ViewState } from "./view.js";
import { prefillWhyFish, whyFishPanel } from "./why-fish.js";
import { ndjsonEvents } from "./ndjson.js";

/** The request as the API takes it (docs/serve-api.md). */
interface LensRequest {
  model?: string;
  prompt: string;
  chat?: boolean;
  /** Several chat turns; the last is the prompt box's user turn. */
  messages?: { role: "system" | "user" | "assistant"; content: string }[];
  points?: string[];
  variant?: "logit" | "raw";
  topK?: number;
  track?: string[];
  trackFamily?: string[];
  generate?: { maxNewTokens?: number; temperature?: number; seed?: number };
}

/** What the URL holds. */
interface AppState {
  req: LensRequest;
  /** The second run to compare with: another prompt and/or model. */
  cmp?: { prompt?: string; model?: string };
  view?: { pin?: [RowKey, number]; color?: ColorBy; log?: boolean; point?: string };
}

type JobEvent =
  | { type: "queued"; job: string; ahead: number }
  | { type: "status"; job: string; stage: string }
  | { type: "start"; job: string; report: LensReport }
  | { type: "rows"; job: string; rows: number[]; cells: ReportCell[][]; final: ReportCell[] }
  | { type: "token"; job: string; index: number; token: LensReport["tokens"][number] }
  | { type: "column"; job: string; position: number; cells: ReportCell[]; final: ReportCell }
  | { type: "progress"; job: string; done: number; total: number }
  | { type: "report"; job: string; report: LensReport; ms: number }
  | { type: "kl"; job: string; result: ExactKl; ms: number }
  | { type: "error"; job: string; error: string }
  | { type: "cancelled"; job: string };

const POINTS = ["embed", "resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"];

class Explorer {
  private view: LensView | undefined;
  private jobId: string | undefined;
  private abort: AbortController | undefined;
  private compare: LensReport | undefined;
  /** The exact per-cell KL of A and B, from POST /api/kl after both runs. */
  private exactKl: ExactKl | undefined;
  private report: LensReport | undefined;
  /** Timings of the last run, for tests and the benchmark: ms to the first rows, to the end. */
  readonly timings: { firstRows?: number; report?: number } = {};
  private targets: string[] = [];
  private families: string[] = [];
  private viewState: AppState["view"];

  // The form.
  private readonly model = h("input", { id: "ask-model", list: "ask-models", placeholder: "alias, cached model, .gguf or folder path", size: 34 });
  private readonly models = h("datalist", { id: "ask-models" });
  private readonly prompt = h("textarea", { id: "ask-prompt", rows: 3, placeholder: "Type a prompt…", maxlength: 16000 });
  private readonly chat = h("input", { type: "checkbox", id: "ask-chat" });
  /** Earlier chat turns (system, user, assistant) before the prompt box's user turn. */
  private turns: { role: "system" | "user" | "assistant"; content: string }[] = [];
  private readonly turnsBox = h("div", { class: "ex-turns", id: "ask-turns" });
  private readonly variant = h("select", { id: "ask-variant" }, [h("option", { value: "logit", text: "logit lens" }), h("option", { value: "raw", text: "raw unembedding" })]);
  private readonly topK = h("input", { type: "number", id: "ask-topk", min: 1, max: 100, value: 10, style: "width:4em" });
  private readonly pointBoxes = POINTS.map((p) => h("input", { type: "checkbox", value: p, "data-point": p }));
  private readonly gen = h("input", { type: "checkbox", id: "ask-generate" });
  private readonly maxNew = h("input", { type: "number", id: "ask-max-new", min: 1, max: 512, value: 20, style: "width:4.5em" });
  private readonly temperature = h("input", { type: "number", id: "ask-temperature", min: 0, max: 10, step: 0.1, value: 0, style: "width:4em" });
  private readonly seed = h("input", { type: "number", id: "ask-seed", min: 0, value: 0, style: "width:5em" });
  private readonly targetInput = h("input", { id: "ask-target", placeholder: "a target: text, e.g. \" Paris\" or \" 🐠\"", size: 24 });
  private readonly familyInput = h("input", { id: "ask-family", placeholder: "family: emoji, bytes:f09f, contains:horse", size: 28 });
  private readonly chips = h("div", { class: "ex-chips", id: "ask-chips" });
  private readonly cmpOn = h("input", { type: "checkbox", id: "cmp-on" });
  private readonly cmpPrompt = h("textarea", { id: "cmp-prompt", rows: 2, placeholder: "B: another prompt (empty: the same prompt)" });
  private readonly cmpModel = h("input", { id: "cmp-model", list: "ask-models", placeholder: "B: another model (empty: the same), e.g. the same model in another quantization", size: 90 });
  private readonly submitButton = h("button", { type: "submit", id: "ask-run", class: "ex-primary", text: "Run" });
  private readonly cancelButton = h("button", { type: "button", id: "ask-cancel", text: "Cancel", disabled: true });
  private readonly status = h("span", { id: "ex-status", class: "ex-status", role: "status" });
  private readonly bar = h("progress", { id: "ex-progress", max: 1, value: 0 });
  private readonly exports = h("span", { class: "ex-exports", id: "ex-exports" });
  private readonly viewRoot = h("div", { id: "lens-app" });

  constructor(private readonly root: HTMLElement) {
    this.pointBoxes[5]!.checked = true;
    const form = h("form", { class: "ex-form ll-card", id: "ask-form" }, [
      h("div", { class: "ex-row" }, [h("label", { class: "ex-grow" }, ["model ", this.model, this.models]), h("label", null, [this.chat, " chat template"]), h("label", null, ["lens ", this.variant]), h("label", null, ["top-k ", this.topK])]),
      this.turnsBox,
      h("div", { class: "ex-row" }, [this.prompt]),
      h("div", { class: "ex-row" }, [h("button", { type: "button", id: "ask-add-turn", text: "+ chat turn before the prompt", title: "multi-turn chat: add a system, user or assistant message before the prompt (the last user turn)", onclick: () => this.addTurn() })]),
      h("div", { class: "ex-row" }, [h("span", { class: "ll-label", text: "readouts" }), ...this.pointBoxes.map((b) => h("label", null, [b, ` ${b.value}`]))]),
      h("div", { class: "ex-row" }, [
        this.targetInput,
        h("button", { type: "button", id: "ask-add-target", text: "+ target", onclick: () => this.addChip("target") }),
        this.familyInput,
        h("button", { type: "button", id: "ask-add-family", text: "+ family", onclick: () => this.addChip("family") }),
        this.chips,
      ]),
      h("div", { class: "ex-row" }, [h("label", null, [this.gen, " generate"]), h("label", null, ["max new tokens ", this.maxNew]), h("label", null, ["temperature ", this.temperature]), h("label", null, ["seed ", this.seed])]),
      h("details", { class: "ex-compare", id: "cmp" }, [h("summary", null, [this.cmpOn, " compare with B (another prompt or model)"]), h("div", { class: "ex-row" }, [this.cmpPrompt, this.cmpModel])]),
      h("div", { class: "ex-row" }, [this.submitButton, this.cancelButton, this.bar, this.status, this.exports]),
    ]);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.submit();
    });
    this.cancelButton.addEventListener("click", () => void this.cancel());
    for (const [input, kind] of [[this.targetInput, "target"], [this.familyInput, "family"]] as const) {
      input.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") {
          ev.preventDefault();
          this.addChip(kind);
        }
      });
    }
    root.append(h("header", { class: "ex-header" }, [h("h1", null, ["logit lens ", h("span", { class: "ex-sub", text: "explorer" })]), h("span", { class: "ll-hint", text: "what every layer would predict if it were the last" })]), form, this.viewRoot, whyFishPanel(() => this.whyFishContext()));
    void this.loadModels();
    const fromUrl = this.readUrl();
    if (fromUrl) {
      this.fill(fromUrl);
      void this.submit();
    } else this.prompt.value = "The capital of France is";
  }

  private async loadModels(): Promise<void> {
    try {
      const res = await fetch("/api/models");
      const data = (await res.json()) as { default: string; aliases: { alias: string; description: string; cached: boolean }[]; cached: { model: string }[] };
      if (!this.model.value) this.model.placeholder = `${data.default} (default) · alias, cached model or path`;
      const seen = new Set<string>();
      for (const a of data.aliases) {
        seen.add(a.alias);
        this.models.append(h("option", { value: a.alias, text: `${a.description}${a.cached ? " (cached)" : ""}` }));
      }
      for (const c of data.cached) if (!seen.has(c.model)) this.models.append(h("option", { value: c.model, text: "in the cache" }));
    } catch {
      // The list is a convenience; typing a model still works.
    }
  }

  private addChip(kind: "target" | "family", value?: string): void {
    const input = kind === "target" ? this.targetInput : this.familyInput;
    const v = value ?? input.value;
    if (!v) return;
    (kind === "target" ? this.targets : this.families).push(v);
    input.value = "";
    this.renderChips();
    // Added as you go: a finished view reruns with it (warm: well under a second on a small model).
    if (value === undefined && this.report) void this.submit();
  }

  private addTurn(turn: { role: "system" | "user" | "assistant"; content: string } = { role: this.turns.length === 0 ? "system" : this.turns.at(-1)!.role === "user" ? "assistant" : "user", content: "" }): void {
    this.turns.push(turn);
    this.chat.checked = true;
    this.renderTurns();
  }

  private renderTurns(): void {
    this.turnsBox.textContent = "";
    this.turns.forEach((turn, i) => {
      const role = h("select", { class: "ex-turn-role", "aria-label": "role" }, ["system", "user", "assistant"].map((r) => h("option", { value: r, text: r })));
      role.value = turn.role;
      role.addEventListener("change", () => (turn.role = role.value as typeof turn.role));
      const content = h("textarea", { class: "ex-turn-content", rows: 1, maxlength: 16000, placeholder: `${turn.role} message` });
      content.value = turn.content;
      content.addEventListener("input", () => (turn.content = content.value));
      const remove = h("button", { type: "button", class: "ex-x", title: "remove this turn", text: "×", onclick: () => (this.turns.splice(i, 1), this.renderTurns()) });
      this.turnsBox.append(h("div", { class: "ex-row ex-turn", "data-index": i }, [role, content, remove]));
    });
    if (this.turns.length) this.turnsBox.append(h("div", { class: "ex-row ll-hint", text: "then the prompt below as the last user turn, in the model's chat template" }));
  }

  private renderChips(): void {
    this.chips.textContent = "";
    const chip = (kind: "target" | "family", v: string, i: number) =>
      h("span", { class: `ex-chip ex-chip-${kind}`, "data-kind": kind }, [
        h("span", { class: "ll-tokbox", text: kind === "family" ? `family ${v}` : JSON.stringify(v) }),
        h("button", {
          type: "button",
          class: "ex-x",
          title: "remove",
          text: "×",
          onclick: () => {
            (kind === "target" ? this.targets : this.families).splice(i, 1);
            this.renderChips();
          },
        }),
      ]);
    append(this.chips, [...this.targets.map((t, i) => chip("target", t, i)), ...this.families.map((f, i) => chip("family", f, i))]);
  }

  private request(): LensRequest {
    const points = this.pointBoxes.filter((b) => b.checked).map((b) => b.value);
    const req: LensRequest = { prompt: this.prompt.value };
    if (this.model.value.trim()) req.model = this.model.value.trim();
    if (this.chat.checked) req.chat = true;
    const turns = this.turns.filter((t) => t.content !== "");
    if (turns.length) req.messages = [...turns.map((t) => ({ ...t })), { role: "user", content: this.prompt.value }];
    if (points.length && !(points.length === 1 && points[0] === "resid_post")) req.points = points;
    if (this.variant.value === "raw") req.variant = "raw";
    const k = Number(this.topK.value);
    if (Number.isInteger(k) && k !== 10) req.topK = k;
    if (this.targets.length) req.track = [...this.targets];
    if (this.families.length) req.trackFamily = [...this.families];
    if (this.gen.checked) req.generate = { maxNewTokens: Number(this.maxNew.value) || 20, temperature: Number(this.temperature.value) || 0, seed: Number(this.seed.value) || 0 };
    return req;
  }

  /** What the why-fish panel runs on: this form's model, prompt and chat template. */
  private whyFishContext(): { model?: string; prompt: string; chat?: boolean } {
    const r = this.request();
    return { prompt: this.prompt.value, ...(r.model ? { model: r.model } : {}), ...(r.chat || r.messages ? { chat: true } : {}) };
  }

  private fill(st: AppState): void {
    const r = st.req;
    this.prompt.value = r.prompt ?? "";
    this.model.value = r.model ?? "";
    this.chat.checked = Boolean(r.chat || r.messages?.length);
    this.turns = r.messages?.length ? r.messages.slice(0, -1).map((m) => ({ ...m })) : [];
    if (r.messages?.length) this.prompt.value = r.messages.at(-1)!.content;
    this.renderTurns();
    this.variant.value = r.variant ?? "logit";
    this.topK.value = String(r.topK ?? 10);
    const points = r.points ?? ["resid_post"];
    for (const b of this.pointBoxes) b.checked = points.includes(b.value);
    this.targets = [...(r.track ?? [])];
    this.families = [...(r.trackFamily ?? [])];
    this.renderChips();
    this.gen.checked = Boolean(r.generate);
    if (r.generate) {
      this.maxNew.value = String(r.generate.maxNewTokens ?? 20);
      this.temperature.value = String(r.generate.temperature ?? 0);
      this.seed.value = String(r.generate.seed ?? 0);
    }
    this.cmpOn.checked = Boolean(st.cmp);
    this.cmpPrompt.value = st.cmp?.prompt ?? "";
    this.cmpModel.value = st.cmp?.model ?? "";
    if (st.cmp) (document.getElementById("cmp") as HTMLDetailsElement | null)?.setAttribute("open", "");
    this.viewState = st.view;
  }

  private readUrl(): AppState | undefined {
    const hash = location.hash.slice(1);
    if (!hash) return undefined;
    try {
      const st = JSON.parse(decodeURIComponent(hash)) as AppState;
      return st && typeof st.req?.prompt === "string" ? st : undefined;
    } catch {
      this.status.textContent = "the link's state could not be read";
      return undefined;
    }
  }

  private writeUrl(view?: ViewState): void {
    const st: AppState = { req: this.request() };
    if (this.cmpOn.checked) st.cmp = { ...(this.cmpPrompt.value ? { prompt: this.cmpPrompt.value } : {}), ...(this.cmpModel.value ? { model: this.cmpModel.value } : {}) };
    if (view) st.view = { pin: [view.pinned.row, view.pinned.col], color: view.colorBy, log: view.log, point: view.point };
    history.replaceState(null, "", `#${encodeURIComponent(JSON.stringify(st))}`);
  }

  private async cancel(): Promise<void> {
    if (this.jobId) await fetch(`/api/jobs/${this.jobId}/cancel`, { method: "POST" }).catch(() => undefined);
    this.abort?.abort();
  }

  async submit(): Promise<void> {
    this.abort?.abort();
    const req = this.request();
    this.writeUrl(this.view?.state);
    this.submitButton.disabled = true;
    this.cancelButton.disabled = false;
    this.exports.textContent = "";
    this.compare = undefined;
    this.exactKl = undefined;
    this.timings.firstRows = undefined;
    this.timings.report = undefined;
    document.body.dataset["state"] = "running";
    try {
      const report = await this.stream(req, true);
      if (!report) return;
      this.report = report;
      if (this.cmpOn.checked) {
        const b: LensRequest = { ...req, prompt: this.cmpPrompt.value || req.prompt, model: this.cmpModel.value || req.model };
        this.status.textContent = "running B…";
        this.compare = await this.stream(b, false);
        if (this.compare && this.view) {
          if (this.compare.positions.length !== report.positions.length || this.compare.layers.length !== report.layers.length) {
            this.status.textContent = `B has ${this.compare.layers.length} readouts x ${this.compare.positions.length} positions, A ${report.layers.length} x ${report.positions.length}: cells are compared where both exist`;
          }
          else this.status.textContent = "A and B done · colour: KL(A ‖ B) per cell, an estimate from the two top-k lists until the exact one arrives";
          this.view.state.colorBy = "diff";
          this.view.refresh(report, this.compare);
          // Then the exact KL over the whole vocabulary, computed by the server from both runs.
          const status = this.status.textContent;
          this.status.textContent = `${status} · computing the exact KL…`;
          try {
            this.exactKl = await this.streamKl(req, b);
            if (this.exactKl && this.view) {
              const names = report.model.name === this.compare.model.name ? "" : ` (A: ${report.model.name}, B: ${this.compare.model.name})`;
              this.status.textContent = `A and B done${names} · colour: the exact KL(A ‖ B) per cell over the whole vocabulary (or pick a target's rank change)`;
              this.view.refresh(report, this.compare, this.exactKl);
            }
          } catch (e) {
            if ((e as Error).name === "AbortError") throw e;
            this.status.textContent = `${status} · no exact KL: ${(e as Error).message}`;
          }
        }
      }
      this.showExports();
      document.body.dataset["state"] = "done";
    } catch (e) {
      document.body.dataset["state"] = "error";
      this.status.textContent = (e as Error).name === "AbortError" ? "cancelled" : `error: ${(e as Error).message}`;
    } finally {
      this.submitButton.disabled = false;
      this.cancelButton.disabled = true;
    }
  }

  /** Runs one request, streaming it into the view when `show`; resolves to the final report. */
  private async stream(req: LensRequest, show: boolean): Promise<LensReport | undefined> {
    const abort = (this.abort = new AbortController());
    const t0 = performance.now();
    const res = await fetch("/api/lens", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(req), signal: abort.signal });
    if (!res.ok || !res.body) {
      const err = (await res.json().catch(() => ({ error: res.statusText }))) as { error: string };
      throw new Error(err.error);
    }
    let partial: LensReport | undefined;
    let final: LensReport | undefined;
    let drawQueued = false;
    const redraw = () => {
      if (!show || drawQueued || !partial) return;
      drawQueued = true;
      requestAnimationFrame(() => {
        drawQueued = false;
        if (partial && !final) this.show(partial);
      });
    };
    for await (const e of ndjsonEvents<JobEvent>(res.body)) {
      switch (e.type) {
        case "queued":
          if (show) this.jobId = e.job;
          this.status.textContent = e.ahead ? `queued: ${e.ahead} ahead` : "starting…";
          break;
        case "status":
          this.status.textContent = e.stage === "running" ? "running…" : `${e.stage}…`;
          break;
        case "start":
          partial = e.report;
          redraw();
          break;
        case "rows":
          if (!partial) break;
          e.rows.forEach((ri, k) => (partial!.layers[ri]!.positions = e.cells[k]!));
          if (e.final.length) partial.final.positions = e.final;
          if (show && this.timings.firstRows === undefined) this.timings.firstRows = performance.now() - t0;
          redraw();
          break;
        case "token":
          if (!partial) break;
          partial.tokens.push(e.token);
          break;
        case "column":
          if (!partial) break;
          partial.positions.push(e.position);
          e.cells.forEach((c, k) => partial!.layers[k]!.positions.push(c));
          partial.final.positions.push(e.final);
          redraw();
          break;
        case "progress":
          this.bar.max = e.total;
          this.bar.value = e.done;
          this.status.textContent = `${e.done} / ${e.total} rows`;
          break;
        case "report":
          final = e.report;
          if (show) {
            this.timings.report = performance.now() - t0;
            this.status.textContent = `done in ${(e.ms / 1000).toFixed(2)} s (first rows after ${((this.timings.firstRows ?? this.timings.report) / 1000).toFixed(2)} s)`;
            this.show(final);
            // The link's view state applies to the view it opened, not to later runs.
            this.viewState = undefined;
          }
          break;
        case "error":
          throw new Error(e.error);
        case "cancelled":
          this.status.textContent = "cancelled";
          return undefined;
      }
    }
    return final;
  }

  /** The exact per-cell KL of two requests (POST /api/kl): the fields that shape the cells. */
  private async streamKl(a: LensRequest, b: LensRequest): Promise<ExactKl | undefined> {
    const side = (r: LensRequest) => ({ prompt: r.prompt, ...(r.model ? { model: r.model } : {}), ...(r.chat ? { chat: true } : {}), ...(r.messages ? { messages: r.messages } : {}), ...(r.points ? { points: r.points } : {}), ...(r.variant ? { variant: r.variant } : {}) });
    const abort = (this.abort = new AbortController());
    const res = await fetch("/api/kl", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ a: side(a), b: side(b) }), signal: abort.signal });
    if (!res.ok || !res.body) throw new Error(((await res.json().catch(() => ({ error: res.statusText }))) as { error: string }).error);
    const text = await res.text();
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      const e = JSON.parse(line) as JobEvent;
      if (e.type === "kl") return e.result;
      if (e.type === "error") throw new Error(e.error);
      if (e.type === "cancelled") return undefined;
    }
    return undefined;
  }

  private show(report: LensReport): void {
    if (!this.view || this.view.report.prompt !== report.prompt || this.view.report.model.name !== report.model.name || this.view.report.layers.length !== report.layers.length) {
      const v = this.viewState;
      const state: Partial<ViewState> = {};
      if (v?.pin) state.pinned = { row: v.pin[0], col: v.pin[1] };
      if (v?.color) state.colorBy = v.color;
      if (v?.log !== undefined) state.log = v.log;
      if (v?.point) state.point = v.point;
      this.view = new LensView(this.viewRoot, report, {
        state,
        onChange: (s) => {
          this.writeUrl(s);
          // A pinned cell prefills the why-fish panel (its position; its top-1 as the target).
          const shown = this.view?.report;
          const position = shown?.positions[s.pinned.col];
          if (shown && position !== undefined) prefillWhyFish(position, cellAt(shown, s.pinned.row, s.pinned.col)?.top[0]);
        },
      });
      (globalThis as unknown as { lensView: LensView }).lensView = this.view;
    } else this.view.refresh(report);
  }

  private showExports(): void {
    this.exports.textContent = "";
    if (!this.jobId) return;
    append(this.exports, [
      "export: ",
      ...["json", "html", "svg", "png", "csv"].map((f) => h("a", { href: `/api/jobs/${this.jobId}/export?format=${f}`, download: "", class: "ex-export", "data-format": f, text: f })),
    ]);
  }
}

const root = document.getElementById("lens-explorer");
if (root) (globalThis as unknown as { explorer: Explorer }).explorer = new Explorer(root);
