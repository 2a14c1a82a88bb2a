/**
 * Running a model within a memory budget: the forward graph is cut into pieces of consecutive
 * stages (embedding, layers, final norm) at the residual stream, and the pieces' sessions are
 * opened on demand and closed when the budget needs room (the model then streams from disk).
 */
import type ort from "onnxruntime-node";
import type { ModelConfig } from "../architectures/config.js";
import { blockHook, type LogitsOutput } from "../architectures/forward.js";
import type { GraphBuilder } from "../graph/builder.js";
import { createSession } from "../graph/session.js";
import { externalBytes, sliceGraph, sourceOf } from "../graph/slice.js";
import type { Progress } from "../progress.js";

/**
 * One piece of the forward pass: layers [first, end) as their own onnxruntime session (see
 * graph/slice.ts). The embedding rides with the first piece, the final norm and logits with the
 * last. Sessions are opened on demand and closed by the memory budget (LayerBlocks).
 */
export interface Piece {
  first: number;
  end: number;
  graph: GraphBuilder;
  /** The residual value the piece starts from (a graph input), absent for the first piece. */
  cutInput?: string;
  /** Weight bytes it maps. */
  bytes: number;
  session?: Promise<ort.InferenceSession>;
  lastUsed: number;
  announced?: boolean;
}

export function layerRange(p: { first: number; end: number }, nLayers: number): string {
  const name = (s: number) => (s < 0 ? "embedding" : s >= nLayers ? "final norm" : `layer ${s}`);
  return p.end - p.first === 1 ? name(p.first) : `${name(p.first)} to ${name(p.end - 1)}`;
}

/**
 * Which pieces' sessions stay open, within the memory budget. A piece that does not fit beside
 * the others closes the least recently used ones first; when even all of them closed would not
 * make room, it runs alone (the model streams from disk a block of layers at a time).
 * Session memory is counted as 1.25x the weights it maps: a resident layer of the 70B shape
 * measured 1.0x (onnxruntime packs the quantized matrices and lets the mapped pages go), plus room
 * for activations (bench, see docs/big-models.md).
 */
export class LayerBlocks {
  private readonly opened = new Set<Piece>();
  private clock = 0;
  private floorNoted = false;

  constructor(readonly budget: number, private readonly dir: string, private readonly progress: Progress) {}

  /** Bytes a piece is expected to hold in memory once its session is open. */
  static cost(piece: Piece): number {
    return 1.25 * piece.bytes;
  }

  /** Bytes held by open sessions now. */
  get held(): number {
    let total = 0;
    for (const p of this.opened) total += LayerBlocks.cost(p);
    return total;
  }

  async open(piece: Piece, label?: string): Promise<ort.InferenceSession> {
    piece.lastUsed = ++this.clock;
    if (!piece.session) {
      const need = LayerBlocks.cost(piece);
      const byAge = [...this.opened].sort((a, b) => a.lastUsed - b.lastUsed);
      while (byAge.length && this.held + need > this.budget) await this.close(byAge.shift()!);
      // Said once per piece: a streamed model reloads every piece on every forward pass.
      if (label && !piece.announced) this.progress.info(`running ${label} from disk, a block at a time (${(piece.bytes / 2 ** 20).toFixed(0)} MiB; budget ${(this.budget / 2 ** 30).toFixed(1)} GiB)`);
      piece.announced = true;
      piece.session = createSession(piece.graph, this.dir);
      this.opened.add(piece);
    }
    return piece.session;
  }

  /**
   * Says once when even one block at a time cannot keep the budget: a stage (the embedding, a
   * layer, the final norm with the head) is never split, so a stage bigger than the whole budget
   * runs whole, and the model takes more memory than it was given.
   */
  noteFloor(pieces: Piece[], nLayers: number): void {
    if (this.floorNoted || !pieces.length) return;
    const largest = pieces.reduce((a, b) => (LayerBlocks.cost(b) > LayerBlocks.cost(a) ? b : a));
    if (LayerBlocks.cost(largest) <= this.budget) return;
    this.floorNoted = true;
    const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
    this.progress.info(
      `warning: this model's largest block, the ${layerRange(largest, nLayers)} (about ${mib(LayerBlocks.cost(largest))} once open), is bigger than ` +
        `the memory budget (${mib(this.budget)}) and cannot be split: it runs whole, so the model takes more memory than that`,
    );
  }

  /** After a piece ran: close it at once if it alone is over the budget's share left. */
  release(piece: Piece): void {
    if (this.held > this.budget) void this.close(piece);
  }

  /** Closes a piece's session now (it reopens on its next run). */
  async close(piece: Piece): Promise<void> {
    const s = piece.session;
    piece.session = undefined;
    this.opened.delete(piece);
    if (s) await (await s).release();
  }
}

/**
 * Cuts a forward graph into pieces of consecutive stages whose weights fit `budget` each (all in
 * one piece when the whole model fits). Stages: -1 the embedding, 0..L-1 the layers, L the final
 * norm and logits. Cuts happen at the residual stream entering a stage ("boundary" 0..L), the only
 * value that crosses from one stage to the next. `cuts` are boundaries where a piece must start
 * (activation patching replaces the residual there).
 */
export function cutIntoPieces(g: GraphBuilder, cfg: ModelConfig, hooks: string[], logits: LogitsOutput, budget: number, cuts: ReadonlySet<number>): Piece[] {
  const L = cfg.nLayers;
  const boundary = (b: number) => sourceOf(g, b < L ? blockHook(b, "hook_resid_pre") : blockHook(L - 1, "hook_resid_post"));
  const stageOf = (name: string): number => {
    const m = /^(?:blocks|present_key|present_value)\.(\d+)/.exec(name);
    if (m) return Number(m[1]);
    return name === "hook_embed" || name === "hook_pos_embed" ? -1 : L;
  };
  const outputs = [...hooks, ...(logits !== "none" ? ["logits"] : [])];
  for (let l = 0; l < L; l++) outputs.push(`present_key.${l}`, `present_value.${l}`);
  /** Stages [first, end). */
  const piece = (first: number, end: number): Piece => {
    const keep = outputs.filter((o) => stageOf(o) >= first && stageOf(o) < end);
    const graph = sliceGraph(g, {
      name: `forward-${first}-${end}`,
      keep,
      cut: first >= 0 ? { value: boundary(first), shape: ["T", cfg.hidden] } : undefined,
      expose: end <= L ? [{ value: boundary(end), as: "resid_out" }] : [],
    });
    return { first, end, graph, cutInput: first >= 0 ? boundary(first) : undefined, bytes: externalBytes(graph), lastUsed: 0 };
  };
  if (cuts.size === 0) {
    const whole = piece(-1, L + 1);
    if (LayerBlocks.cost(whole) <= budget) return [whole];
  }
  // Greedy: as many stages per piece as fit (each piece measured as built: the first and last
  // also carry the embedding and the unembedding), never across a required cut.
  const pieces: Piece[] = [];
  let first = -1;
  while (first <= L) {
    let end = first + 1;
    let best = piece(first, end);
    while (end <= L && !cuts.has(end)) {
      const next = piece(first, end + 1);
      if (LayerBlocks.cost(next) > budget) break;
      best = next;
      end++;
    }
    pieces.push(best);
    first = end;
  }
  // A last piece with nothing to give (no logits or final hooks asked for) is not run at all.
  return pieces.filter((p) => p.graph.outputs.length > 0);
}

