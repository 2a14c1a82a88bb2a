/**
 * Lens jobs for `logit-lens serve`: one model in memory, one job running at a time, a bounded queue
 * behind it. A lens job streams events as it goes (the report's skeleton, groups of rows, generated
 * tokens and their columns, progress) and ends with the full report, the same document the CLI's
 * `--json` prints for the same request. Attribution and patching jobs (POST /api/attribute,
 * /api/patch) end with the JSON of `logit-lens attribute|patch --json`. Jobs are cancelled by their
 * client (disconnect or cancel).
 */
import { readoutHooks, parsePositions } from "../cli/options.js";
import type { LoadedModel } from "../engine/model.js";
import { UserError } from "../errors.js";
import type { Attribution } from "../explain/attribution.js";
import { attributeCommand, patchCommand, promptIds, type CommandDeps } from "../explain/cli.js";
import type { PatchSweep } from "../explain/patching.js";
import type { LensCell } from "../lens/logit-lens.js";
import { divergencesFrom, lensDistributions } from "../lens/compare.js";
import { executeLensJob, type GenerateOptions } from "../lens/job.js";
import { parseFamily, parseTextTarget } from "../lens/targets.js";
import { buildReport, REPORT_SCHEMA, reportToken, round, type LensReport, type ReportCell, type ReportTargetValue, type ReportToken, type ReportTopEntry } from "../outputs/report.js";
import { pendingBytes, readInContext } from "../tokens/in-context.js";
import { createProgress } from "../progress.js";
import { reassemble } from "../tokens/render.js";

/** A request as the API takes it (validated by the route's JSON schema before it gets here). */
export interface JobRequest {
  model?: string;
  prompt: string;
  /** Wrap the prompt in the model's chat template as one user turn (the CLI's --chat). */
  chat?: boolean;
  /** Several chat turns instead of one prompt (the report's prompt is then the last user turn). */
  messages?: { role: string; content: string }[];
  points?: string[];
  variant?: "logit" | "raw";
  topK?: number;
  positions?: string;
  track?: string[];
  trackFamily?: string[];
  generate?: { maxNewTokens?: number; temperature?: number; topP?: number; seed?: number };
}

export type JobEvent =
  | { type: "queued"; job: string; ahead: number }
  | { type: "status"; job: string; stage: string }
  | { type: "start"; job: string; report: LensReport }
  | { type: "rows"; job: string; rows: number[]; cells: ReportCell[][]; final: ReportCell[] }
  | { type: "token"; job: string; index: number; token: LensReport["tokens"][number] }
  | { type: "column"; job: string; position: number; cells: ReportCell[]; final: ReportCell }
  | { type: "progress"; job: string; done: number; total: number; unit: string }
  | { type: "report"; job: string; report: LensReport; ms: number }
  | { type: "kl"; job: string; result: KlResult; ms: number }
  | { type: "attribution"; job: string; result: Attribution; ms: number }
  | { type: "patching"; job: string; result: PatchSweep; ms: number }
  | { type: "error"; job: string; error: string }
  | { type: "cancelled"; job: string };

export type ModelLoader = (spec: string) => Promise<LoadedModel>;

export class QueueFullError extends Error {}

/** Two runs to compare by the exact per-cell KL (POST /api/kl): the lens fields that shape the cells. */
export type KlSide = Pick<JobRequest, "model" | "prompt" | "chat" | "messages" | "points" | "variant" | "positions">;
export interface KlRequest {
  a: KlSide;
  b: KlSide;
}

/** Direct logit attribution at one position (POST /api/attribute): `logit-lens attribute`'s options. */
export interface AttributeRequest {
  model?: string;
  prompt: string;
  chat?: boolean;
  /** --target: a token or text; --versus: the contrast for a logit difference. */
  target: string;
  versus?: string;
  position?: number;
}

/** An activation-patching sweep (POST /api/patch): `logit-lens patch`'s options. */
export interface PatchRequest {
  model?: string;
  /** Prompt B, the run patched (--prompt). */
  prompt: string;
  /** Prompt A, the source of the residuals (--from). */
  from: string;
  chat?: boolean;
  target: string;
  versus?: string;
  /** --layers, --positions ("0-5,8") and --map ("5:4,6:5"), as the CLI takes them. */
  layers?: string;
  positions?: string;
  map?: string;
}

/** The exact KL of each compared cell (src/lens/compare.ts), both directions, in nats. */
export interface KlResult {
  /** Compared rows: the readout hooks both runs read (in A's order), then "output". */
  rows: string[];
  /** Indices into A's report.layers for each compared row (-1: the output row). */
  layers: number[];
  /** Columns compared: the first `columns` read positions of each run. */
  columns: number;
  positions_a: number[];
  positions_b: number[];
  /** [row][column] */
  kl_ab: number[][];
  kl_ba: number[][];
}

interface Job {
  id: string;
  request: JobRequest | KlRequest | AttributeRequest | PatchRequest;
  kind: "lens" | "kl" | "attribute" | "patch";
  emit: (e: JobEvent) => void;
  abort: AbortController;
  done: Promise<void>;
  resolve: () => void;
}

/** Rows streamed per group: about six groups over the readouts, at least two rows each. */
function rowGroupFor(readouts: number): number {
  return Math.max(2, Math.ceil(readouts / 6));
}

export class JobQueue {
  private queue: Job[] = [];
  private running: Job | undefined;
  private model: { spec: string; model: Promise<LoadedModel> } | undefined;
  private counter = 0;
  /** Finished reports by job id, for export (the last few only). */
  readonly reports = new Map<string, LensReport>();

  constructor(
    private readonly load: ModelLoader,
    readonly defaultModel: string,
    private readonly options: { maxQueued: number; keepReports: number } = { maxQueued: 16, keepReports: 16 },
  ) {}

  get currentModel(): string | undefined {
    return this.model?.spec;
  }

  /** Jobs waiting plus the one running. */
  get size(): number {
    return this.queue.length + (this.running ? 1 : 0);
  }

  get full(): boolean {
    return this.queue.length >= this.options.maxQueued;
  }

  fullMessage(): string {
    return `the server is busy: ${this.queue.length} jobs are waiting; try again later`;
  }

  /** Queues a job; its events go to `emit`. Throws QueueFullError when the queue is full. */
  submit(request: JobRequest, emit: (e: JobEvent) => void): { id: string; cancel: () => void; done: Promise<void> } {
    return this.enqueue("lens", request, emit);
  }

  /** Queues an exact-KL comparison of two runs (POST /api/kl). */
  submitKl(request: KlRequest, emit: (e: JobEvent) => void): { id: string; cancel: () => void; done: Promise<void> } {
    return this.enqueue("kl", request, emit);
  }

  /** Queues a direct logit attribution (POST /api/attribute). */
  submitAttribute(request: AttributeRequest, emit: (e: JobEvent) => void): { id: string; cancel: () => void; done: Promise<void> } {
    return this.enqueue("attribute", request, emit);
  }

  /** Queues an activation-patching sweep (POST /api/patch). */
  submitPatch(request: PatchRequest, emit: (e: JobEvent) => void): { id: string; cancel: () => void; done: Promise<void> } {
    return this.enqueue("patch", request, emit);
  }

  private enqueue(kind: Job["kind"], request: Job["request"], emit: (e: JobEvent) => void): { id: string; cancel: () => void; done: Promise<void> } {
    if (this.full) throw new QueueFullError(this.fullMessage());
    const id = `j${++this.counter}`;
    let resolve!: () => void;
    const done = new Promise<void>((r) => (resolve = r));
    const job: Job = { id, request, kind, emit, abort: new AbortController(), done, resolve };
    this.queue.push(job);
    emit({ type: "queued", job: id, ahead: this.queue.length - 1 + (this.running ? 1 : 0) });
    void this.pump();
    return { id, cancel: () => this.cancel(id), done };
  }

  /** Cancels a queued or running job; false when there is no such job. */
  cancel(id: string): boolean {
    const i = this.queue.findIndex((j) => j.id === id);
    if (i >= 0) {
      const [job] = this.queue.splice(i, 1);
      job!.abort.abort();
      safeEmit(job!, { type: "cancelled", job: id });
      job!.resolve();
      return true;
    }
    if (this.running?.id === id) {
      this.running.abort.abort();
      return true;
    }
    return false;
  }

  private async pump(): Promise<void> {
    if (this.running) return;
    const job = this.queue.shift();
    if (!job) return;
    this.running = job;
    try {
      if (job.kind === "kl") await this.executeKl(job);
      else if (job.kind === "attribute" || job.kind === "patch") await this.executeWhyFish(job);
      else await this.execute(job);
    } catch (e) {
      if (job.abort.signal.aborted) safeEmit(job, { type: "cancelled", job: job.id });
      else safeEmit(job, { type: "error", job: job.id, error: oneLine(e) });
    } finally {
      this.running = undefined;
      job.resolve();
      void this.pump();
    }
  }

  /** The model for a spec: the one in memory, or a new one (the old one is let go first). */
  private getModel(spec: string): Promise<LoadedModel> {
    if (this.model?.spec !== spec) {
      this.model = { spec, model: this.load(spec) };
      // A model that failed to load is not kept: the next request tries again.
      const entry = this.model;
      entry.model.catch(() => {
        if (this.model === entry) this.model = undefined;
      });
    }
    return this.model.model;
  }

  private async execute(job: Job): Promise<void> {
    const t0 = Date.now();
    const r = job.request as JobRequest;
    const signal = job.abort.signal;
    const emit = (e: JobEvent) => safeEmit(job, e);
    const spec = r.model?.trim() || this.defaultModel;
    if (this.model?.spec !== spec) emit({ type: "status", job: job.id, stage: `loading ${spec}` });
    const model = await this.getModel(spec);
    signal.throwIfAborted();
    emit({ type: "status", job: job.id, stage: "running" });

    const tok = model.tokenizer;
    const topK = r.topK ?? 10;
    const { ids, hooks, points, chat, prompt, positions, variant } = encodeRequest(model, r);
    const targets = (r.track ?? []).map((t) => parseTextTarget(tok, t));
    const families = (r.trackFamily ?? []).map((f) => parseFamily(tok, f));
    const gen: GenerateOptions | undefined = r.generate
      ? {
          maxNewTokens: r.generate.maxNewTokens ?? 40,
          sampling: { temperature: r.generate.temperature ?? 0, topP: r.generate.topP ?? 1, seed: r.generate.seed ?? 0 },
          stopIds: tok.eosIds,
        }
      : undefined;

    // The skeleton: everything but the cells, which arrive in groups of rows.
    const tokenCache = new Map<number, ReportToken>();
    const token = (id: number): ReportToken => {
      let t = tokenCache.get(id);
      if (!t) tokenCache.set(id, (t = reportToken(model, id)));
      return t;
    };
    const contextToken = (id: number, i: number) => ({ ...token(id), token: tok.tokenString(id), generated: i >= ids.length, special: tok.isSpecial(id) });
    const all = reassemble(ids.map((id) => tok.tokenBytes(id)));
    const readPositions = positions ?? ids.map((_, i) => i);
    const cfg = model.config;
    const skeleton: LensReport = {
      schema: REPORT_SCHEMA,
      model: { name: model.info.name, architecture: cfg.architecture, n_layers: cfg.nLayers, hidden_size: cfg.hidden, vocab_size: cfg.vocabSize, source: model.info.source },
      lens: { variant, description: variant === "logit" ? "logit lens: the final norm (statistics recomputed from each residual), then the unembedding" : "raw unembedding of each residual, without the final norm", top_k: topK, points },
      prompt,
      chat,
      tokens: ids.map(contextToken),
      prompt_length: ids.length,
      text: all.text,
      spans: all.spans.map((s) => ({ text: s.text, tokens: s.tokens, complete: s.complete })),
      positions: readPositions,
      targets: targets.map((t) => ({ label: t.label, ids: t.ids, tokens: t.ids.map(token), sequence_probs: [] })),
      families: families.map((f) => ({ label: f.label, description: f.description, size: f.size })),
      layers: hooks.map((hook) => ({ hook, layer: /^blocks\.(\d+)\./.test(hook) ? Number(/^blocks\.(\d+)\./.exec(hook)![1]) : -1, point: hook === "hook_embed" ? "embed" : hook.replace(/^blocks\.\d+\.hook_/, ""), positions: [], top1_text: "" })),
      final: { positions: [], top1_text: "" },
      token_strings: {},
    };
    emit({ type: "start", job: job.id, report: skeleton });

    // The context so far (prompt, then generated tokens as they come): a candidate that finishes the
    // character the context stops inside reads as that character (in_context, as in the report).
    const contextIds = [...ids];
    const pending = new Map<number, Uint8Array>();
    const pendingAt = (position: number): Uint8Array => {
      let b = pending.get(position);
      if (!b) pending.set(position, (b = pendingBytes(contextIds.slice(Math.max(0, position - 3), position + 1).map((id) => tok.tokenBytes(id)))));
      return b;
    };
    const topEntry = (id: number, k: number, c: LensCell, position: number): ReportTopEntry => {
      const e: ReportTopEntry = { ...token(id), prob: round(Math.exp(c.topLogprobs[k]!)), logit: round(c.topLogits[k]!) };
      const shown = readInContext(pendingAt(position), tok.tokenBytes(id));
      if (shown !== undefined) e.in_context = shown;
      return e;
    };
    /** chain(t): target t's whole-string probability at this cell, when it came with the rows. */
    const cell = (c: LensCell, position: number, withKl: boolean, chain?: (t: number) => number): ReportCell => {
      const out: ReportCell = {
        position,
        top: c.topIds.map((id, k) => topEntry(id, k, c, position)),
        entropy: round(c.entropy),
        kl_to_final: withKl ? round(c.klToFinal) : 0,
      };
      if (targets.length) {
        out.targets = c.trackedLogprobs.map((lp, i) => {
          const v: ReportTargetValue = { prob: round(Math.exp(lp)), rank: c.trackedRanks[i]!, logit: round(c.trackedLogits[i]!) };
          if (chain && targets[i]!.ids.length > 1) v.sequence_prob = round(chain(i));
          return v;
        });
      }
      if (families.length) out.families = c.familyProbs.map((p) => round(p));
      return out;
    };
    let rowsDone = 0;
    const total = hooks.length + (gen ? gen.maxNewTokens : 0);
    let sentFinal = false;
    const result = await executeLensJob(
      model,
      {
        promptIds: ids,
        readouts: hooks,
        topK,
        variant,
        positions,
        targets,
        families,
        generate: gen,
        live: {
          signal,
          rowGroup: rowGroupFor(hooks.length),
          onRows: (rows, cells, final, chain) => {
            // chain: [target][position][row of this group, then the output] (multi-token targets).
            emit({
              type: "rows",
              job: job.id,
              rows,
              cells: cells.map((rowCells, k) => rowCells.map((c, i) => cell(c, readPositions[i]!, true, chain && ((t) => chain[t]![i]![k]!)))),
              final: sentFinal ? [] : final.map((c, i) => cell(c, readPositions[i]!, false, chain && ((t) => chain[t]![i]![rows.length]!))),
            });
            sentFinal = true;
            rowsDone += rows.length;
            emit({ type: "progress", job: job.id, done: rowsDone, total, unit: "rows" });
          },
          onToken: (index, id) => {
            contextIds.push(id);
            emit({ type: "token", job: job.id, index, token: { ...contextToken(id, index) } });
          },
          onColumn: (position, cells, final) => {
            emit({ type: "column", job: job.id, position, cells: cells.map((c) => cell(c, position, true)), final: cell(final, position, false) });
            emit({ type: "progress", job: job.id, done: hooks.length + position - ids.length + 1, total, unit: "rows" });
          },
        },
      },
      createProgress({ quiet: true }),
    );
    signal.throwIfAborted();
    const generation = gen && { maxNewTokens: gen.maxNewTokens, temperature: gen.sampling.temperature, topP: gen.sampling.topP, seed: gen.sampling.seed };
    const report = buildReport(model, { prompt, chat, job: result, targets, families, topK, points, generation });
    this.reports.set(job.id, report);
    while (this.reports.size > this.options.keepReports) this.reports.delete(this.reports.keys().next().value!);
    emit({ type: "report", job: job.id, report, ms: Date.now() - t0 });
  }

  /**
   * Attribution or patching: the CLI's own command (src/explain/cli.ts) runs on the model in memory
   * and its `--json` text is the result, so the API and `logit-lens attribute|patch --json` cannot
   * drift apart (one parser of targets, positions, layer lists and maps; one set of UserErrors).
   */
  private async executeWhyFish(job: Job): Promise<void> {
    const t0 = Date.now();
    const signal = job.abort.signal;
    const emit = (e: JobEvent) => safeEmit(job, e);
    const r = job.request as AttributeRequest | PatchRequest;
    const spec = r.model?.trim() || this.defaultModel;
    if (this.model?.spec !== spec) emit({ type: "status", job: job.id, stage: `loading ${spec}` });
    const model = await this.getModel(spec);
    signal.throwIfAborted();
    emit({ type: "status", job: job.id, stage: "running" });
    const prompts = job.kind === "patch" ? [r.prompt, (r as PatchRequest).from] : [r.prompt];
    for (const p of prompts) {
      const n = promptIds(model, p, r.chat, job.kind).length;
      if (n > MAX_PROMPT_TOKENS) throw new UserError(`the prompt is ${n} tokens; this server reads at most ${MAX_PROMPT_TOKENS}`);
    }
    let json: string | undefined;
    const deps: CommandDeps = { loadModel: async () => model, emit: async (text) => void (json = text), signal };
    const common = { prompt: r.prompt, chat: r.chat, target: r.target, versus: r.versus, json: true };
    if (job.kind === "attribute") {
      const a = r as AttributeRequest;
      await attributeCommand({ ...common, position: a.position === undefined ? undefined : String(a.position) }, deps);
    } else {
      const p = r as PatchRequest;
      await patchCommand({ ...common, from: p.from, layers: p.layers, positions: p.positions, map: p.map }, deps);
    }
    signal.throwIfAborted();
    const ms = Date.now() - t0;
    if (job.kind === "attribute") emit({ type: "attribution", job: job.id, result: JSON.parse(json!) as Attribution, ms });
    else emit({ type: "patching", job: job.id, result: JSON.parse(json!) as PatchSweep, ms });
  }

  /**
   * The exact KL(A ‖ B) and KL(B ‖ A) of every cell both runs read (src/lens/compare.ts). One model
   * is in memory at a time, so one run's full distributions are kept while the other's model is
   * loaded: the run whose model is already loaded goes first (no reload when B's model is the one
   * the last job used).
   */
  private async executeKl(job: Job): Promise<void> {
    const t0 = Date.now();
    const { a, b } = job.request as KlRequest;
    const signal = job.abort.signal;
    const emit = (e: JobEvent) => safeEmit(job, e);
    const specA = a.model?.trim() || this.defaultModel;
    const specB = b.model?.trim() || this.defaultModel;
    const bFirst = specA !== specB && this.model?.spec === specB;
    const [first, second] = bFirst ? ([["B", b, specB], ["A", a, specA]] as const) : ([["A", a, specA], ["B", b, specB]] as const);
    const read = async ([name, side, spec]: readonly [string, KlSide, string]) => {
      if (this.model?.spec !== spec) emit({ type: "status", job: job.id, stage: `loading ${spec}` });
      const model = await this.getModel(spec);
      signal.throwIfAborted();
      emit({ type: "status", job: job.id, stage: `reading ${name}` });
      const e = encodeRequest(model, side);
      return { model, run: { ids: e.ids, readouts: e.hooks, variant: e.variant, positions: e.positions ?? e.ids.map((_, i) => i) } };
    };
    const one = await read(first);
    const reference = await lensDistributions(one.model, one.run, signal);
    const two = await read(second);
    const d = await divergencesFrom(two.model, reference, two.run, signal);
    signal.throwIfAborted();
    const runA = bFirst ? two.run : one.run;
    const runB = bFirst ? one.run : two.run;
    const result: KlResult = {
      rows: d.rows,
      layers: d.rows.map((hook) => (hook === "output" ? -1 : runA.readouts.indexOf(hook))),
      columns: d.columns,
      positions_a: runA.positions.slice(0, d.columns),
      positions_b: runB.positions.slice(0, d.columns),
      // The reference is the first run read: KL(ref ‖ run) is KL(A ‖ B) when A went first.
      kl_ab: (bFirst ? d.runToRef : d.refToRun).map((row) => row.map((x) => round(x))),
      kl_ba: (bFirst ? d.refToRun : d.runToRef).map((row) => row.map((x) => round(x))),
    };
    emit({ type: "kl", job: job.id, result, ms: Date.now() - t0 });
  }
}

/** The request's tokens, readouts and read positions, as the CLI's lens options make them. */
function encodeRequest(model: LoadedModel, r: KlSide) {
  const tok = model.tokenizer;
  const { hooks, points } = readoutHooks(r.points?.join(","), model.config);
  const messages = r.messages?.length ? r.messages : undefined;
  const chat = Boolean(r.chat || messages);
  const prompt = messages ? messages.filter((m) => m.role === "user").at(-1)?.content ?? "" : r.prompt;
  const ids = messages
    ? tok.encodeChat(messages, { addGenerationPrompt: true })
    : r.chat
      ? tok.encodeChat([{ role: "user", content: r.prompt }], { addGenerationPrompt: true })
      : tok.encode(r.prompt);
  if (ids.length === 0) throw new UserError("the prompt tokenizes to nothing");
  if (ids.length > MAX_PROMPT_TOKENS) throw new UserError(`the prompt is ${ids.length} tokens; this server reads at most ${MAX_PROMPT_TOKENS}`);
  const positions = parsePositions(r.positions, ids.length);
  return { ids, hooks, points, chat, prompt, positions, variant: r.variant ?? "logit" };
}

/** Prompts longer than this are refused (the lens over 2048 positions is already minutes on a CPU). */
export const MAX_PROMPT_TOKENS = 2048;

function safeEmit(job: Job, e: JobEvent): void {
  try {
    job.emit(e);
  } catch {
    // A client that went away: the job is cancelled through its signal, not here.
  }
}

function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  const line = msg.split("\n")[0]!.trim();
  return line.length > 300 ? `${line.slice(0, 299)}…` : line;
}
