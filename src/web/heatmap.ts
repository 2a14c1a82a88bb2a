/**
 * The heatmap on a canvas: readouts x positions, each cell coloured by the chosen value and, when
 * wide enough, labelled with its top-1 token. Only the visible cells are drawn, and hovering only
 * redraws a thin overlay canvas, so 80 layers x 512 positions stay smooth. Row labels stick to the
 * left, column heads (position, input token, next token) to the top.
 */
import type { LensReport } from "../outputs/report.js";
import { rampRgb, RED_BLUE, rgbHex, rowLabel, textColorOn, BLUES, type Rgb } from "../outputs/presentation.js";
import { h } from "./dom.js";
import { cellAt, colorValue, exactKlAt, isDiff, type ColorBy, type ExactKl, type RowKey } from "./lens-data.js";

export interface HeatmapCallbacks {
  hover(row: RowKey | null, col: number): void;
  pin(row: RowKey, col: number): void;
  selectColumn(col: number): void;
}

export const LABEL_W = 86;
export const HEAD_H = 50;
export const CELL_H = 20;

export class Heatmap {
  readonly element: HTMLElement;
  readonly scroller: HTMLDivElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly overlay: HTMLCanvasElement;
  private readonly spacer: HTMLDivElement;
  private report!: LensReport;
  private rows: RowKey[] = [];
  private colorBy: ColorBy = "prob";
  private log = false;
  private compare: LensReport | undefined;
  private exact: ExactKl | undefined;
  cellW = 66;
  private hover: { row: RowKey; col: number } | null = null;
  private pinned: { row: RowKey; col: number } | null = null;
  private drawQueued = false;
  private textWidths = new Map<string, string>();
  /** Columns whose next token is a generated one with a commitment layer (a marker is drawn). */
  commitment = new Map<number, number | null>();

  constructor(private readonly cb: HeatmapCallbacks) {
    this.canvas = h("canvas", { class: "ll-canvas", "aria-hidden": "true" });
    this.overlay = h("canvas", { class: "ll-canvas ll-overlay-canvas", "aria-hidden": "true" });
    this.spacer = h("div", { class: "ll-spacer" });
    this.scroller = h("div", { class: "ll-heatmap-scroll", id: "lens-heatmap-scroll", tabindex: "0", role: "grid", "aria-label": "lens heatmap: arrow keys move the pinned cell" }, this.spacer);
    this.element = h("div", { class: "ll-heatmap-wrap", id: "lens-heatmap" }, [this.canvas, this.overlay, this.scroller]);
    this.scroller.addEventListener("scroll", () => this.queueDraw());
    this.scroller.addEventListener("mousemove", (ev) => this.onMove(ev));
    this.scroller.addEventListener("mouseleave", () => {
      this.hover = null;
      this.drawOverlay();
      cb.hover(null, -1);
    });
    this.scroller.addEventListener("click", (ev) => {
      const hit = this.hit(ev);
      if (!hit) return;
      if (hit.row === "head") cb.selectColumn(hit.col);
      else cb.pin(hit.row, hit.col);
      this.scroller.focus({ preventScroll: true });
    });
    this.scroller.addEventListener("keydown", (ev) => this.onKey(ev));
    new ResizeObserver(() => this.queueDraw()).observe(this.scroller);
  }

  setData(report: LensReport, rows: RowKey[], colorBy: ColorBy, log: boolean, compare?: LensReport, exact?: ExactKl): void {
    this.report = report;
    this.exact = exact;
    this.rows = rows;
    this.colorBy = colorBy;
    this.log = log;
    this.compare = compare;
    const cols = report.positions.length;
    this.spacer.style.width = `${LABEL_W + cols * this.cellW}px`;
    this.spacer.style.height = `${HEAD_H + rows.length * CELL_H}px`;
    this.element.style.height = `${Math.min(HEAD_H + rows.length * CELL_H + 16, Math.max(420, window.innerHeight - 160))}px`;
    this.textWidths.clear();
    this.queueDraw();
  }

  setPinned(pinned: { row: RowKey; col: number } | null): void {
    this.pinned = pinned;
    this.drawOverlay();
  }

  /** The cell's rectangle in client coordinates (tests hover there), scrolling it into view first. */
  cellRect(row: RowKey, col: number): DOMRect | null {
    const r = this.rows.indexOf(row);
    if (r < 0) return null;
    this.scrollIntoView(r, col);
    this.draw();
    const at = () => {
      const box = this.scroller.getBoundingClientRect();
      return new DOMRect(box.left + LABEL_W + col * this.cellW - this.scroller.scrollLeft, box.top + HEAD_H + r * CELL_H - this.scroller.scrollTop, this.cellW, CELL_H);
    };
    // The page itself may need scrolling too.
    const rect = at();
    if (rect.bottom > window.innerHeight) window.scrollBy(0, rect.bottom - window.innerHeight + 8);
    else if (rect.top < HEAD_H) window.scrollBy(0, rect.top - HEAD_H - 8);
    return at();
  }

  scrollIntoView(r: number, col: number): void {
    const sc = this.scroller;
    const x = col * this.cellW;
    const y = r * CELL_H;
    const viewW = sc.clientWidth - LABEL_W;
    const viewH = sc.clientHeight - HEAD_H;
    if (x < sc.scrollLeft) sc.scrollLeft = x;
    else if (x + this.cellW > sc.scrollLeft + viewW) sc.scrollLeft = x + this.cellW - viewW;
    if (y < sc.scrollTop) sc.scrollTop = y;
    else if (y + CELL_H > sc.scrollTop + viewH) sc.scrollTop = y + CELL_H - viewH;
  }

  queueDraw(): void {
    if (this.drawQueued) return;
    this.drawQueued = true;
    requestAnimationFrame(() => {
      this.drawQueued = false;
      this.draw();
    });
  }

  private size(c: HTMLCanvasElement): CanvasRenderingContext2D {
    const dpr = window.devicePixelRatio || 1;
    const w = this.scroller.clientWidth;
    const hgt = this.scroller.clientHeight;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(hgt * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(hgt * dpr);
      c.style.width = `${w}px`;
      c.style.height = `${hgt}px`;
    }
    const ctx = c.getContext("2d")!;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return ctx;
  }

  private visible(): { r0: number; r1: number; c0: number; c1: number } {
    const sc = this.scroller;
    const cols = this.report.positions.length;
    const c0 = Math.max(0, Math.floor(sc.scrollLeft / this.cellW));
    const c1 = Math.min(cols, Math.ceil((sc.scrollLeft + sc.clientWidth - LABEL_W) / this.cellW) + 1);
    const r0 = Math.max(0, Math.floor(sc.scrollTop / CELL_H));
    const r1 = Math.min(this.rows.length, Math.ceil((sc.scrollTop + sc.clientHeight - HEAD_H) / CELL_H) + 1);
    return { r0, r1, c0, c1 };
  }

  private fitText(ctx: CanvasRenderingContext2D, text: string, max: number): string {
    const key = `${max}\u0000${text}`;
    let t = this.textWidths.get(key);
    if (t !== undefined) return t;
    t = text;
    if (ctx.measureText(t).width > max) {
      const chars = [...text];
      while (chars.length > 1 && ctx.measureText(`${chars.join("")}…`).width > max) chars.pop();
      t = `${chars.join("")}…`;
    }
    this.textWidths.set(key, t);
    return t;
  }

  /**
   * Token text centred at (cx, cy), cut to `max` px. The byte brackets ⟨ ⟩ are drawn as strokes:
   * at 12 px the ⟨ ⟩ glyphs of DejaVu Sans (Mono), the fonts that have them on Linux, are tall thin
   * angles that read exactly as "(" ")" on a canvas, so "⟨F0 9F⟩" looked like "(F0 9F)".
   */
  private drawText(ctx: CanvasRenderingContext2D, text: string, max: number, cx: number, cy: number): void {
    const t = this.fitText(ctx, text, max);
    if (!t.includes("⟨") && !t.includes("⟩")) return void ctx.fillText(t, cx, cy);
    const size = Number(/(\d+(?:\.\d+)?)px/.exec(ctx.font)?.[1] ?? 12);
    const bold = /bold|[6-9]00/.test(ctx.font);
    const bw = size * 0.5;
    const parts = t.split(/([⟨⟩])/).filter((p) => p !== "");
    const widths = parts.map((p) => (p === "⟨" || p === "⟩" ? bw : ctx.measureText(p).width));
    let x = cx - widths.reduce((a, b) => a + b, 0) / 2;
    const align = ctx.textAlign;
    ctx.textAlign = "left";
    ctx.save();
    ctx.strokeStyle = ctx.fillStyle;
    ctx.lineWidth = bold ? 1.6 : 1.1;
    ctx.lineJoin = "miter";
    parts.forEach((p, k) => {
      if (p === "⟨" || p === "⟩") {
        const hh = size * 0.38;
        const [tip, open] = p === "⟨" ? [x + bw * 0.22, x + bw * 0.72] : [x + bw * 0.78, x + bw * 0.28];
        ctx.beginPath();
        ctx.moveTo(open, cy - hh - 0.5);
        ctx.lineTo(tip, cy - 0.5);
        ctx.lineTo(open, cy + hh - 0.5);
        ctx.stroke();
      } else ctx.fillText(p, x, cy);
      x += widths[k]!;
    });
    ctx.restore();
    ctx.textAlign = align;
  }

  draw(): void {
    if (!this.report) return;
    const ctx = this.size(this.canvas);
    const sc = this.scroller;
    const W = sc.clientWidth;
    const H = sc.clientHeight;
    const { r0, r1, c0, c1 } = this.visible();
    const report = this.report;
    const tokens = report.tokens;
    const ox = LABEL_W - sc.scrollLeft;
    const oy = HEAD_H - sc.scrollTop;
    const cw = this.cellW;
    const stops: readonly Rgb[] = this.colorBy === "diff" ? RED_BLUE.slice(4) : isDiff(this.colorBy) ? RED_BLUE : BLUES;
    ctx.clearRect(0, 0, W, H);
    ctx.font = '12px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace, "Noto Color Emoji"';
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    const showText = cw >= 28;
    for (let r = r0; r < r1; r++) {
      const row = this.rows[r]!;
      const y = oy + r * CELL_H;
      for (let c = c0; c < c1; c++) {
        const x = ox + c * cw;
        const cell = cellAt(report, row, c);
        if (!cell) {
          ctx.fillStyle = "#eef0f3";
          ctx.fillRect(x, y, cw - 1, CELL_H - 1);
          continue;
        }
        const other = this.compare ? cellAt(this.compare, row, c) : undefined;
        const t = colorValue(report, cell, this.colorBy, this.log, other, this.colorBy === "diff" && this.exact ? (exactKlAt(this.exact, row, c)?.ab ?? NaN) : undefined);
        const rgb = Number.isNaN(t) ? ([238, 240, 243] as Rgb) : rampRgb(t, stops);
        ctx.fillStyle = rgbHex(rgb);
        ctx.fillRect(x, y, cw - 1, CELL_H - 1);
        if (showText && cell.top[0]) {
          const next = tokens[cell.position + 1];
          const hit = next !== undefined && next.id === cell.top[0].id;
          ctx.font = `${hit ? "bold " : ""}12px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace, "Noto Color Emoji"`;
          ctx.fillStyle = textColorOn(rgb);
          // A byte that finishes the context's pending character reads as that character (⟨A0⟩ → 🐠).
          this.drawText(ctx, cell.top[0].in_context ?? cell.top[0].text, cw - 6, x + cw / 2, y + CELL_H / 2 + 1);
        }
      }
      // The output row: a rule under (or over) it.
      if (row === "final") {
        ctx.fillStyle = "#667085";
        ctx.fillRect(LABEL_W, this.rows[0] === "final" ? y + CELL_H - 1 : y - 1, Math.min(W, ox + report.positions.length * cw) - LABEL_W, 2);
      }
    }
    // Row labels (sticky left).
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "right";
    ctx.fillStyle = "#f8f9fb";
    ctx.fillRect(0, HEAD_H, LABEL_W, H - HEAD_H);
    for (let r = r0; r < r1; r++) {
      const row = this.rows[r]!;
      const y = oy + r * CELL_H;
      const layer = row === "final" ? "final" : report.layers[row]!;
      ctx.fillStyle = row === "final" ? "#e8590c" : layer !== "final" && layer.point === "attn_out" ? "#b54708" : layer !== "final" && layer.point === "mlp_out" ? "#067647" : "#344054";
      ctx.fillText(rowLabel(layer), LABEL_W - 8, y + CELL_H / 2 + 1);
    }
    // Column heads (sticky top).
    ctx.fillStyle = "#f8f9fb";
    ctx.fillRect(0, 0, W, HEAD_H);
    ctx.textAlign = "center";
    for (let c = c0; c < c1; c++) {
      const x = ox + c * cw;
      if (x + cw < LABEL_W) continue;
      const p = report.positions[c]!;
      const tok = tokens[p];
      const next = tokens[p + 1];
      if (tok?.generated) {
        ctx.fillStyle = "#fff1e0";
        ctx.fillRect(x, 0, cw - 1, HEAD_H);
        ctx.fillStyle = "#f59f00";
        ctx.fillRect(x, 0, cw - 1, 3);
      }
      ctx.fillStyle = "#667085";
      ctx.font = "10px system-ui, sans-serif";
      ctx.fillText(String(p), x + cw / 2, 10);
      ctx.fillStyle = tok?.special ? "#7a5af8" : "#1d2330";
      ctx.font = 'bold 12px ui-monospace, "DejaVu Sans Mono", monospace, "Noto Color Emoji"';
      this.drawText(ctx, tok?.text ?? "?", cw - 6, x + cw / 2, 25);
      ctx.fillStyle = "#667085";
      ctx.font = '10px ui-monospace, "DejaVu Sans Mono", monospace, "Noto Color Emoji"';
      const commit = this.commitment.get(c);
      const nextText = next ? `→ ${next.text}` : "→ ?";
      this.drawText(ctx, commit !== undefined ? `${nextText} @${commit === null ? "–" : commit < 0 ? "emb" : `L${commit}`}` : nextText, cw - 4, x + cw / 2, 40);
    }
    ctx.fillStyle = "#f8f9fb";
    ctx.fillRect(0, 0, LABEL_W, HEAD_H);
    ctx.fillStyle = "#dde1e7";
    ctx.fillRect(0, HEAD_H - 1, W, 1);
    ctx.fillRect(LABEL_W - 1, 0, 1, H);
    ctx.fillStyle = "#667085";
    ctx.textAlign = "left";
    ctx.font = "10px system-ui, sans-serif";
    ctx.fillText("readout \\ position", 6, 12);
    ctx.fillText(this.rows[0] === "final" ? "output on top" : "output at bottom", 6, 26);
    this.drawOverlay();
  }

  /** Hover and pin outlines, and the hovered row and column marked in the labels: cheap, every mouse move. */
  drawOverlay(): void {
    if (!this.report) return;
    const ctx = this.size(this.overlay);
    const sc = this.scroller;
    ctx.clearRect(0, 0, sc.clientWidth, sc.clientHeight);
    const box = (cell: { row: RowKey; col: number } | null, color: string, width: number) => {
      if (!cell) return;
      const r = this.rows.indexOf(cell.row);
      if (r < 0) return;
      const x = LABEL_W - sc.scrollLeft + cell.col * this.cellW;
      const y = HEAD_H - sc.scrollTop + r * CELL_H;
      if (x + this.cellW < LABEL_W || y + CELL_H < HEAD_H) return;
      ctx.save();
      ctx.beginPath();
      ctx.rect(LABEL_W, HEAD_H, sc.clientWidth - LABEL_W, sc.clientHeight - HEAD_H);
      ctx.clip();
      ctx.strokeStyle = color;
      ctx.lineWidth = width;
      ctx.strokeRect(x + width / 2, y + width / 2, this.cellW - 1 - width, CELL_H - 1 - width);
      ctx.restore();
      // Marks in the sticky labels.
      ctx.fillStyle = color;
      if (x >= LABEL_W - this.cellW) ctx.fillRect(Math.max(LABEL_W, x), HEAD_H - 3, this.cellW - 1, 3);
      if (y >= HEAD_H - CELL_H) ctx.fillRect(LABEL_W - 4, Math.max(HEAD_H, y), 3, CELL_H - 1);
    };
    box(this.pinned, "#e8590c", 2);
    box(this.hover, "#1d2330", 2);
  }

  private hit(ev: MouseEvent): { row: RowKey | "head"; col: number } | null {
    const box = this.scroller.getBoundingClientRect();
    const x = ev.clientX - box.left;
    const y = ev.clientY - box.top;
    if (x < LABEL_W || x > this.scroller.clientWidth || y > this.scroller.clientHeight) return null;
    const col = Math.floor((x - LABEL_W + this.scroller.scrollLeft) / this.cellW);
    if (col < 0 || col >= this.report.positions.length) return null;
    if (y < HEAD_H) return { row: "head", col };
    const r = Math.floor((y - HEAD_H + this.scroller.scrollTop) / CELL_H);
    if (r < 0 || r >= this.rows.length) return null;
    return { row: this.rows[r]!, col };
  }

  private onMove(ev: MouseEvent): void {
    const hit = this.hit(ev);
    const cell = hit && hit.row !== "head" ? { row: hit.row, col: hit.col } : null;
    if (cell?.row === this.hover?.row && cell?.col === this.hover?.col) return;
    this.hover = cell;
    this.drawOverlay();
    this.cb.hover(cell ? cell.row : null, cell ? cell.col : -1);
  }

  private onKey(ev: KeyboardEvent): void {
    if (!this.pinned) return;
    let r = this.rows.indexOf(this.pinned.row);
    let c = this.pinned.col;
    if (ev.key === "ArrowLeft") c--;
    else if (ev.key === "ArrowRight") c++;
    else if (ev.key === "ArrowUp") r--;
    else if (ev.key === "ArrowDown") r++;
    else return;
    ev.preventDefault();
    if (r < 0 || r >= this.rows.length || c < 0 || c >= this.report.positions.length) return;
    this.scrollIntoView(r, c);
    this.cb.pin(this.rows[r]!, c);
  }
}
