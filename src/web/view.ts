/**
 * The lens viewer: one LensReport drawn as a header, the reassembled text, a canvas heatmap with
 * its controls, a details panel (top-k with bytes, entropy, KL, targets, families) and a chart of
 * the tracked targets across layers at the pinned position. The HTML report and the `serve` app
 * both use it; the app feeds it rows as they stream in (refresh()).
 *
 * Stable hooks (tests rely on them):
 *   #lens-heatmap (canvas; view.cellRect(row, col) gives a cell's client rectangle)
 *   #cell-details[data-row][data-hook][data-position][data-mode]   .top-entry[data-token-id][data-prob]
 *                                                        .target-entry[data-prob][data-rank] .family-entry[data-prob]
 *   #lens-chart svg path.series-target[data-label] / .series-rank / .series-family / .series-top1
 *   #lens-text .ll-span[data-tokens]   ([data-commit] on generated tokens: their commitment layer)
 */
import type { LensReport, ReportCell } from "../outputs/report.js";
import { BLUES, lensName, formatNats, formatProb, formatRank, rampRgb, RED_BLUE, rgbHex, rowLabel, rowTitle, SERIES_COLORS, spacedHex } from "../outputs/presentation.js";
import { append, h, s } from "./dom.js";
import { Heatmap } from "./heatmap.js";
import { cellAt, commitmentLayers, displayRows, exactKlAt, isDiff, layerOf, legendFor, pointsOf, rankChange, topKDivergence, type ColorBy, type ExactKl, type RowKey } from "./lens-data.js";

export interface ViewState {
  point: string;
  colorBy: ColorBy;
  log: boolean;
  outputOnTop: boolean;
  pinned: { row: RowKey; col: number };
  chartLog: boolean;
  /** The layer scrubber over generated tokens: an index into scrubRows() (default: the output). */
  scrub?: number;
}

export interface ViewOptions {
  /** Called when the pinned cell or a display setting changes (the app keeps them in the URL). */
  onChange?: (state: ViewState) => void;
  /** A second report of the same shape: enables the "difference" colouring (A vs B). */
  compare?: LensReport;
  /** The exact per-cell KL of A and B (POST /api/kl), once the server has computed it. */
  exactKl?: ExactKl;
  state?: Partial<ViewState>;
  /** Leave out the header (the app has its own). */
  noHeader?: boolean;
}

export class LensView {
  readonly state: ViewState;
  readonly heatmap: Heatmap;
  private readonly details = h("aside", { class: "ll-card ll-details", id: "cell-details" });
  private readonly chartBox = h("section", { class: "ll-card ll-chart", id: "lens-chart" });
  private readonly textBox = h("div", { class: "ll-text", id: "lens-text" });
  private readonly scrubBox = h("div", { class: "ll-scrub", id: "ll-scrub" });
  private readonly controls = h("div", { class: "ll-controls" });
  private readonly headerBox = h("header", { class: "ll-header" });
  private hovering: { row: RowKey; col: number } | null = null;

  constructor(
    readonly root: HTMLElement,
    public report: LensReport,
    private readonly options: ViewOptions = {},
  ) {
    const last = Math.max(0, report.positions.length - 1);
    this.state = { point: "all", colorBy: "prob", log: false, outputOnTop: true, pinned: { row: "final", col: last }, chartLog: true, ...options.state };
    this.heatmap = new Heatmap({
      hover: (row, col) => {
        this.hovering = row === null ? null : { row, col };
        this.renderDetails();
      },
      pin: (row, col) => this.pin(row, col),
      selectColumn: (col) => this.pin(this.state.pinned.row, col),
    });
    root.textContent = "";
    root.classList.add("ll-root");
    const heatCard = h("section", { class: "ll-card ll-heat-card" }, [
      h("div", { class: "ll-card-head" }, [
        h("h2", { text: "Top-1 prediction of every readout at every position" }),
        h("span", { class: "ll-hint", id: "ll-heat-hint" }),
      ]),
      this.controls,
      this.heatmap.element,
    ]);
    const textCard = h("section", { class: "ll-card ll-text-card" }, [
      h("div", { class: "ll-card-head" }, [h("h2", { text: "Text" }), h("span", { class: "ll-hint", text: "bytes reassembled across tokens · click a piece to select its column · generated tokens show their commitment layer" })]),
      this.textBox,
      this.scrubBox,
    ]);
    root.append(...(options.noHeader ? [] : [this.headerBox]), textCard, h("div", { class: "ll-body" }, [h("div", { class: "ll-main" }, [heatCard, this.chartBox]), this.details]));
    this.refresh();
    // Start with the pinned cell in view (by default the output at the last position).
    this.heatmap.scrollIntoView(this.rows().indexOf(this.state.pinned.row), this.state.pinned.col);
  }

  /** Redraws everything from `report` (after rows or columns arrived, or a new report). */
  refresh(report: LensReport = this.report, compare: LensReport | undefined = this.options.compare, exactKl: ExactKl | undefined = compare ? this.options.exactKl : undefined): void {
    this.report = report;
    this.options.compare = compare;
    this.options.exactKl = exactKl;
    const n = report.positions.length;
    if (this.state.pinned.col >= n) this.state.pinned.col = Math.max(0, n - 1);
    if (isDiff(this.state.colorBy) && !compare) this.state.colorBy = "prob";
    const colorBy = this.state.colorBy;
    if (!this.validColor(colorBy)) this.state.colorBy = "prob";
    this.renderHeader();
    this.renderText();
    this.renderScrub();
    this.renderControls();
    const rows = displayRows(report, this.state.point, this.state.outputOnTop);
    this.heatmap.commitment = new Map(commitmentLayers(report).map((c) => [report.positions.indexOf(c.index - 1), c.layer]));
    this.heatmap.setData(report, rows, this.state.colorBy, this.state.log, compare, exactKl);
    this.heatmap.setPinned(this.state.pinned);
    document.getElementById("ll-heat-hint")!.textContent = `${report.layers.length} readouts × ${n} positions · the column head is the input token (→ the token that came next); the cell is what that readout predicts next · hover, click to pin, arrow keys move the pin`;
    this.renderDetails();
    this.renderChart();
  }

  pin(row: RowKey, col: number): void {
    this.state.pinned = { row, col };
    this.heatmap.setPinned(this.state.pinned);
    this.renderDetails();
    this.renderChart();
    this.options.onChange?.(this.state);
  }

  /** Rows in display order (as drawn, top to bottom). */
  rows(): RowKey[] {
    return displayRows(this.report, this.state.point, this.state.outputOnTop);
  }

  /** The client rectangle of a cell (scrolled into view): for tests and the app. */
  cellRect(row: RowKey, col: number): DOMRect | null {
    return this.heatmap.cellRect(row, col);
  }

  private validColor(by: ColorBy): boolean {
    const [kind, arg] = by.split(":");
    const i = Number(arg);
    if (kind === "target" || kind === "rank" || kind === "rankdiff") return i < this.report.targets.length;
    if (kind === "family") return i < this.report.families.length;
    return true;
  }

  private renderHeader(): void {
    const r = this.report;
    const m = r.model;
    const gen = r.generation;
    this.headerBox.textContent = "";
    const meta = (label: string, value: string) => h("div", { class: "ll-meta-item" }, [h("span", { class: "ll-label", text: label }), h("span", { text: value })]);
    append(this.headerBox, [
      h("div", { class: "ll-title" }, [
        h("h1", null, ["logit lens ", h("span", { class: "ll-model", text: m.name })]),
        h("span", { class: "ll-badge", text: lensName(r.lens) }),
        r.chat ? h("span", { class: "ll-badge", text: "chat template" }) : null,
        gen ? h("span", { class: "ll-badge ll-badge-gen", text: "generation" }) : null,
      ]),
      h("div", { class: "ll-meta" }, [
        meta("model", `${m.architecture}, ${m.n_layers} layers, hidden ${m.hidden_size}, vocab ${m.vocab_size.toLocaleString("en-US")}`),
        meta("lens", r.lens.description),
        meta("readouts", `${r.lens.points.join(", ")} · top-${r.lens.top_k} per cell`),
        gen ? meta("generation", `max ${gen.max_new_tokens} new tokens, ${gen.temperature === 0 ? "greedy" : `temperature ${gen.temperature}, top-p ${gen.top_p}, seed ${gen.seed}`} · stopped by ${gen.stop_reason}`) : null,
        meta("source", m.source),
      ]),
      h("div", { class: "ll-prompt" }, [h("span", { class: "ll-label", text: "prompt" }), h("span", { class: "ll-prompt-text", text: r.prompt })]),
    ]);
  }

  private renderText(): void {
    const r = this.report;
    const commits = new Map(commitmentLayers(r).map((c) => [c.index, c.layer]));
    this.textBox.textContent = "";
    for (const sp of r.spans) {
      const [a, b] = sp.tokens;
      const ts = r.tokens.slice(a, b + 1);
      const generated = ts.length > 0 && ts.every((t) => t.generated);
      const special = ts.length > 0 && ts.every((t) => t.special);
      const commit = generated && a === b ? commits.get(a) : undefined;
      const cls = `ll-span${generated ? " generated" : ""}${special ? " special" : ""}${sp.complete ? "" : " partial"}${a !== b ? " multi" : ""}`;
      const title = `${a === b ? `token ${a}` : `tokens ${a}–${b}`}: ${ts.map((t) => t.text).join(" ")}\nbytes: ${ts.map((t) => spacedHex(t.bytes)).join(" | ")}${commit !== undefined ? `\ncommitted at ${commit === null ? "no layer (the lens never settles on it)" : commit < 0 ? "the embedding" : `layer ${commit}`}` : ""}`;
      const el = h("span", { class: cls, "data-tokens": `${a}-${b}`, "data-commit": commit === undefined ? null : commit === null ? "none" : String(commit), title, text: sp.text });
      el.addEventListener("click", () => {
        for (let p = b; p >= a; p--) {
          const col = r.positions.indexOf(p);
          if (col >= 0) return this.pin(this.state.pinned.row, col);
        }
      });
      this.textBox.append(el);
    }
  }

  /** The rows the scrubber steps through: embed and each layer's resid_post, then the output. */
  scrubRows(): RowKey[] {
    return [...this.report.layers.map((l, i) => ({ l, i })).filter(({ l }) => l.point === "resid_post" || l.point === "embed").map(({ i }) => i), "final"];
  }

  /**
   * Scrubbing through layers during generation: a slider over the layers, and for each generated
   * token what that layer's lens predicted at the position before it (its top-1), marked when it
   * is the token the model chose.
   */
  private renderScrub(): void {
    const r = this.report;
    const box = this.scrubBox;
    box.textContent = "";
    if (r.tokens.length <= r.prompt_length) return;
    const rows = this.scrubRows();
    const k = Math.max(0, Math.min(this.state.scrub ?? rows.length - 1, rows.length - 1));
    const slider = h("input", { type: "range", id: "ll-scrub-layer", min: 0, max: rows.length - 1, step: 1, value: k, "aria-label": "layer" });
    const label = h("span", { class: "ll-scrub-label", id: "ll-scrub-label" });
    const line = h("div", { class: "ll-scrub-line", id: "ll-scrub-line" });
    const fill = (k: number) => {
      const row = rows[k]!;
      const layer = layerOf(r, row);
      label.textContent = layer ? rowLabel(layer) : "output";
      box.setAttribute("data-row", String(row));
      line.textContent = "";
      let agree = 0;
      let n = 0;
      for (let t = r.prompt_length; t < r.tokens.length; t++) {
        const col = r.positions.indexOf(t - 1);
        const top = col < 0 ? undefined : cellAt(r, row, col)?.top[0];
        const chosen = r.tokens[t]!;
        if (top) n++;
        if (top?.id === chosen.id) agree++;
        line.append(
          h("span", { class: `ll-tokbox ll-scrub-tok${top ? (top.id === chosen.id ? " agrees" : " differs") : " pending"}`, "data-index": t, "data-token-id": top?.id ?? null, title: top ? `${layer ? rowLabel(layer) : "output"} at position ${t - 1}: ${top.in_context ?? top.text} (${formatProb(top.prob)}); chosen ${chosen.text}` : "not computed yet", text: top ? (top.in_context ?? top.text) : "·" }),
        );
      }
      label.textContent += ` · ${agree}/${n} agree with the generated tokens`;
    };
    slider.addEventListener("input", () => {
      this.state.scrub = Number(slider.value);
      fill(this.state.scrub);
      this.options.onChange?.(this.state);
    });
    fill(k);
    append(box, [h("label", { class: "ll-scrub-head" }, [h("span", { class: "ll-label", text: "scrub layers" }), " embed ", slider, " output "]), label, line]);
  }

  private renderControls(): void {
    const r = this.report;
    const st = this.state;
    this.controls.textContent = "";
    const points = pointsOf(r);
    const select = (id: string, label: string, value: string, opts: [string, string][], onChange: (v: string) => void) => {
      const el = h("select", { id, "aria-label": label }, opts.map(([v, t]) => h("option", { value: v, text: t })));
      el.value = value;
      el.addEventListener("change", () => onChange(el.value));
      return h("label", null, [`${label} `, el]);
    };
    const colorOpts: [string, string][] = [
      ["prob", "top-1 probability"],
      ["entropy", "entropy"],
      ["kl", "KL to the output"],
      ...r.targets.flatMap((t, i): [string, string][] => [[`target:${i}`, `P(“${t.label}”)`], [`rank:${i}`, `rank of “${t.label}”`]]),
      ...r.families.map((f, i): [string, string] => [`family:${i}`, `family ${f.label}`]),
      ...(this.options.compare ? [["diff", this.options.exactKl ? "A vs B: KL (exact)" : "A vs B: KL (estimate from top-k)"] as [string, string]] : []),
      ...(this.options.compare ? r.targets.map((t, i): [string, string] => [`rankdiff:${i}`, `A vs B: rank change of “${t.label}”`]) : []),
    ];
    const logBox = h("input", { type: "checkbox", id: "ll-log-color" });
    logBox.checked = st.log;
    logBox.addEventListener("change", () => {
      st.log = logBox.checked;
      this.changed();
    });
    const order = h("button", { type: "button", id: "ll-order", class: "ll-button", text: st.outputOnTop ? "⇅ output at the bottom" : "⇅ output on top" });
    order.addEventListener("click", () => {
      st.outputOnTop = !st.outputOnTop;
      this.changed();
    });
    const leg = legendFor(st.colorBy, r, st.log, Boolean(this.options.exactKl));
    const stops = st.colorBy === "diff" ? RED_BLUE.slice(4) : isDiff(st.colorBy) ? RED_BLUE : BLUES;
    const grad = Array.from({ length: 11 }, (_, i) => `${rgbHex(rampRgb(i / 10, stops))} ${i * 10}%`).join(", ");
    append(this.controls, [
      points.length > 1 ? select("ll-point", "show", st.point, [["all", "all points"], ...points.map((p): [string, string] => [p, p])], (v) => ((st.point = v), this.changed())) : null,
      select("ll-color-by", "colour by", st.colorBy, colorOpts, (v) => {
        st.colorBy = v as ColorBy;
        // Target and family probabilities are usually tiny: read them on a log scale.
        st.log = /^(target|family):/.test(v);
        this.changed();
      }),
      h("label", null, [logBox, " log scale"]),
      order,
      h("div", { class: "ll-legend", id: "ll-legend" }, [
        h("span", { class: "ll-legend-label", text: leg.label }),
        h("div", { class: "ll-legend-body" }, [
          h("div", { class: "ll-legend-bar", style: `background: linear-gradient(to right, ${grad})` }),
          h("div", { class: "ll-legend-ticks" }, leg.ticks.map(([t, label]) => h("span", { style: `left:${(t * 100).toFixed(1)}%`, text: label }))),
        ]),
        h("span", { class: "ll-legend-note" }, [h("b", { text: "bold" }), " = the token that came next"]),
      ]),
    ]);
  }

  private changed(): void {
    this.refresh();
    this.options.onChange?.(this.state);
  }

  private renderDetails(): void {
    const r = this.report;
    const target = this.hovering ?? this.state.pinned;
    const mode = this.hovering ? "hover" : "pinned";
    const { row, col } = target;
    const cell = cellAt(r, row, col);
    const box = this.details;
    box.textContent = "";
    const layer = layerOf(r, row);
    box.setAttribute("data-row", String(row));
    box.setAttribute("data-hook", row === "final" ? "final" : (layer?.hook ?? ""));
    box.setAttribute("data-position", String(r.positions[col] ?? ""));
    box.setAttribute("data-mode", mode);
    const p = r.positions[col];
    if (p === undefined) return;
    const tok = r.tokens[p];
    const next = r.tokens[p + 1];
    append(box, [
      h("div", { class: "ll-details-title" }, [h("h2", { text: layer ? rowTitle(layer) : rowTitle("final") }), h("span", { class: `ll-mode ${mode}`, text: mode })]),
      h("code", { class: "ll-hook", text: layer ? layer.hook : "the model's logits" }),
      h("div", { class: "ll-details-pos" }, [`position ${p}: `, h("span", { class: "ll-tokbox", text: tok?.text ?? "?" }), h("span", { class: "ll-bytes", text: spacedHex(tok?.bytes ?? "") })]),
      h("div", { class: "ll-details-pos" }, ["next: ", next ? h("span", { class: "ll-tokbox", text: next.text }) : h("i", { text: "(end: predicts what comes next)" })]),
    ]);
    if (!cell) {
      box.append(h("p", { class: "ll-hint", text: "not computed yet" }));
      return;
    }
    append(box, h("div", { class: "ll-stats" }, [h("span", null, ["entropy ", h("b", { class: "ll-entropy", text: formatNats(cell.entropy) }), " nats"]), h("span", null, ["KL to output ", h("b", { class: "ll-kl", text: row === "final" ? "—" : formatNats(cell.kl_to_final) }), row === "final" ? "" : " nats"])]));
    const other = this.options.compare ? cellAt(this.options.compare, row, col) : undefined;
    box.append(h("h3", { text: `top ${cell.top.length}` }), topTable(cell, next?.id));
    if (other) {
      const est = topKDivergence(cell, other);
      const exact = exactKlAt(this.options.exactKl, row, col);
      box.append(
        h("h3", { text: "B (compared)" }),
        h("div", { class: "ll-stats ll-diff-stats" }, [
          exact
            ? h("span", { title: "computed by the server over the whole vocabulary (POST /api/kl)" }, [
                "KL(A ‖ B) ",
                h("b", { class: "ll-diff-kl-exact", "data-kl": exact.ab, text: formatNats(exact.ab) }),
                " · KL(B ‖ A) ",
                h("b", { class: "ll-diff-kl-exact-ba", "data-kl": exact.ba, text: formatNats(exact.ba) }),
                " nats ",
                h("span", { class: "ll-exact", text: "exact" }),
              ])
            : null,
          h("span", { title: "KL(A ‖ B) from the two top-k lists only (each list plus one bucket for the rest): an estimate, not the exact KL over the vocabulary" }, ["KL(A ‖ B) ≈ ", h("b", { class: "ll-diff-kl", "data-kl": est, text: formatNats(est) }), " nats ", h("span", { class: "ll-estimate", text: exact ? "top-k estimate" : "estimate from top-k" })]),
          ...r.targets.map((t, i) => {
            const d = rankChange(cell, other, i);
            return Number.isFinite(d) ? h("span", { class: "ll-rank-change", "data-index": i, "data-delta": d }, [`rank of ${t.label}: `, h("b", { text: `${formatRank(cell.targets![i]!.rank)} → ${formatRank(other.targets![i]!.rank)}` })]) : null;
          }),
        ]),
        topTable(other, undefined),
      );
    }
    if (r.targets.length && cell.targets) {
      box.append(h("h3", { text: "targets" }));
      box.append(
        h(
          "table",
          { class: "ll-targets" },
          r.targets.map((t, i) => {
            const v = cell.targets![i]!;
            return h("tr", { class: "target-entry", "data-index": i, "data-prob": v.prob, "data-rank": v.rank }, [
              h("td", null, [h("span", { class: "ll-swatch", style: `background:${SERIES_COLORS[i % SERIES_COLORS.length]}` }), h("span", { class: "ll-tokbox", text: t.label })]),
              h("td", { class: "prob", text: formatProb(v.prob) }),
              h("td", { class: "rank", text: formatRank(v.rank) }),
            ]);
          }),
        ),
      );
    }
    if (r.families.length && cell.families) {
      box.append(h("h3", { text: "families" }));
      box.append(h("table", { class: "ll-families" }, r.families.map((f, i) => h("tr", { class: "family-entry", "data-index": i, "data-prob": cell.families![i]! }, [h("td", { text: f.label }), h("td", { class: "prob", text: formatProb(cell.families![i]!) })]))));
    }
  }

  private renderChart(): void {
    const r = this.report;
    const col = this.state.pinned.col;
    const box = this.chartBox;
    box.textContent = "";
    const p = r.positions[col];
    const rows: RowKey[] = [...r.layers.map((l, i) => ({ l, i })).filter(({ l }) => this.state.point === "all" || l.point === this.state.point).map(({ i }) => i), "final"];
    append(box, h("div", { class: "ll-card-head" }, [h("h2", { text: `Across layers at position ${p ?? "–"} ${p !== undefined ? `(${r.tokens[p]?.text ?? ""})` : ""}` }), chartLogToggle(this)]));
    if (p === undefined) return;
    const series: { kind: string; label: string; color: string; values: number[]; dashed?: boolean; index: number }[] = [];
    r.targets.forEach((t, i) => {
      const color = SERIES_COLORS[i % SERIES_COLORS.length]!;
      series.push({ kind: "target", index: i, label: t.label, color, values: rows.map((row) => cellAt(r, row, col)?.targets?.[i]?.prob ?? NaN) });
      if (t.ids.length > 1 && rows.some((row) => cellAt(r, row, col)?.targets?.[i]?.sequence_prob !== undefined)) {
        series.push({ kind: "sequence", index: i, label: `${t.label} (whole string)`, color, dashed: true, values: rows.map((row) => cellAt(r, row, col)?.targets?.[i]?.sequence_prob ?? NaN) });
      }
    });
    r.families.forEach((f, i) => series.push({ kind: "family", index: i, label: `family ${f.label}`, color: SERIES_COLORS[(r.targets.length + i) % SERIES_COLORS.length]!, dashed: true, values: rows.map((row) => cellAt(r, row, col)?.families?.[i] ?? NaN) }));
    series.push({ kind: "top1", index: 0, label: "top-1", color: "#9aa3ae", values: rows.map((row) => cellAt(r, row, col)?.top[0]?.prob ?? NaN) });
    box.append(lineChart(rows, r, series, this.state.chartLog, "probability", (i) => this.pin(rows[i]!, col)));
    if (r.targets.length) {
      const ranks = r.targets.map((t, i) => ({ kind: "rank", index: i, label: t.label, color: SERIES_COLORS[i % SERIES_COLORS.length]!, values: rows.map((row) => cellAt(r, row, col)?.targets?.[i]?.rank ?? NaN) }));
      box.append(rankChart(rows, r, ranks));
    }
    const legend = h("div", { class: "ll-chart-legend" });
    for (const se of series) {
      const t = se.kind === "target" ? r.targets[se.index] : undefined;
      legend.append(
        h("span", { class: `ll-legend-entry legend-${se.kind}` }, [
          h("span", { class: `ll-swatch${se.dashed ? " dashed" : ""}`, style: se.dashed ? `border-color:${se.color}` : `background:${se.color}` }),
          h("span", { class: "ll-tokbox", text: se.label }),
          t && t.tokens.length > 1 && se.kind === "target" ? h("span", { class: "ll-small", text: ` first token ${t.tokens[0]!.text} of ${t.tokens.length}; whole sequence at the output ${formatProb(t.sequence_probs[col] ?? NaN)}` }) : null,
        ]),
      );
    }
    box.append(legend);
    if (!r.targets.length && !r.families.length) box.append(h("p", { class: "ll-hint", text: "add a target or a family to follow it across the layers" }));
  }
}

function chartLogToggle(view: LensView): HTMLElement {
  const box = h("input", { type: "checkbox", id: "ll-chart-log" });
  box.checked = view.state.chartLog;
  box.addEventListener("change", () => {
    view.state.chartLog = box.checked;
    view.refresh();
  });
  return h("label", null, [box, " log scale"]);
}

function topTable(cell: ReportCell, nextId: number | undefined): HTMLTableElement {
  return h("table", { class: "ll-topk" }, [
    h("tr", null, [h("th", { text: "#" }), h("th", { text: "token" }), h("th", { text: "bytes" }), h("th", { class: "prob", text: "prob" }), h("th", { class: "logit", text: "logit" })]),
    ...cell.top.map((t, k) =>
      h("tr", { class: `top-entry${t.id === nextId ? " is-next" : ""}`, "data-token-id": t.id, "data-prob": t.prob }, [
        h("td", { class: "rank", text: String(k + 1) }),
        // A byte that finishes the context's pending character: the byte, then the character it completes.
        h("td", { class: "tok", "data-in-context": t.in_context ?? null }, t.in_context !== undefined ? [h("span", { class: "ll-tokbox", text: t.text }), " → ", h("span", { class: "ll-tokbox ll-in-context", text: t.in_context })] : h("span", { class: "ll-tokbox", text: t.text })),
        h("td", { class: "bytes", text: spacedHex(t.bytes), title: spacedHex(t.bytes) }),
        h("td", { class: "prob", style: `--w:${(t.prob * 100).toFixed(1)}%`, text: formatProb(t.prob) }),
        h("td", { class: "logit", text: t.logit.toFixed(2) }),
      ]),
    ),
  ]);
}

const W = 760;
const L = 58;
const R = 18;

function xTicks(svg: SVGElement, rows: RowKey[], r: LensReport, x: (i: number) => number, y0: number): void {
  const every = Math.max(1, Math.ceil(rows.length / 16));
  rows.forEach((row, i) => {
    if (row !== "final" && i % every !== 0) return;
    const label = row === "final" ? "out" : r.layers[row]!.point === "embed" ? "emb" : String(r.layers[row]!.layer);
    svg.append(s("text", { x: x(i), y: y0 + 14, class: `ll-axis${row === "final" ? " out" : ""}`, "text-anchor": "middle", text: label }));
  });
}

function lineChart(rows: RowKey[], r: LensReport, series: { kind: string; label: string; color: string; values: number[]; dashed?: boolean; index: number }[], log: boolean, title: string, onPick: (i: number) => void): SVGElement {
  const H = 240;
  const T = 12;
  const B = 34;
  let minPos = 1;
  for (const se of series) for (const v of se.values) if (v > 0 && v < minPos) minPos = v;
  const lo = Math.max(-12, Math.min(-1, Math.floor(Math.log10(minPos))));
  const y = (v: number) => {
    const t = log ? (Math.log10(Math.max(v > 0 ? v : 10 ** lo, 10 ** lo)) - lo) / -lo : Number.isFinite(v) ? v : 0;
    return T + (1 - t) * (H - T - B);
  };
  const n = rows.length;
  const x = (i: number) => L + (n <= 1 ? 0 : (i * (W - L - R)) / (n - 1));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", class: "ll-svg ll-chart-prob", role: "img", "aria-label": `${title} across layers` });
  const ticks: [number, string][] = log ? Array.from({ length: -lo + 1 }, (_, k) => [10 ** -k, k === 0 ? "1" : `1e-${k}`] as [number, string]).filter((_, k) => -lo <= 8 || k % 2 === 0) : [0, 0.25, 0.5, 0.75, 1].map((v) => [v, `${v * 100}%`]);
  for (const [v, label] of ticks) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "ll-grid" }));
    svg.append(s("text", { x: L - 6, y: y(v) + 4, class: "ll-axis", "text-anchor": "end", text: label }));
  }
  xTicks(svg, rows, r, x, H - B);
  svg.append(s("text", { x: (L + W - R) / 2, y: H - 4, class: "ll-axis-title", "text-anchor": "middle", text: `${title}: layer (forward order), then the output` }));
  for (const se of [...series].reverse()) {
    let d = "";
    let pen = false;
    se.values.forEach((v, i) => {
      if (!Number.isFinite(v)) return void (pen = false);
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)} ${y(v).toFixed(1)} `;
      pen = true;
    });
    svg.append(s("path", { d: d.trim(), class: `ll-series series-${se.kind}`, "data-index": se.index, "data-label": se.label, fill: "none", stroke: se.color, "stroke-width": se.kind === "top1" ? 1.5 : 2.2, "stroke-dasharray": se.dashed ? "6 4" : null }));
  }
  const overlay = s("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "transparent", class: "ll-overlay" });
  overlay.addEventListener("click", (ev) => {
    const rect = svg.getBoundingClientRect();
    const px = (((ev as MouseEvent).clientX - rect.left) / rect.width) * W;
    onPick(Math.max(0, Math.min(n - 1, Math.round(((px - L) / (W - L - R)) * (n - 1)))));
  });
  svg.append(overlay);
  return svg;
}

function rankChart(rows: RowKey[], r: LensReport, series: { kind: string; label: string; color: string; values: number[]; index: number }[]): SVGElement {
  const H = 150;
  const T = 10;
  const B = 30;
  const V = r.model.vocab_size;
  const top = Math.log10(V);
  const y = (rank: number) => T + (Math.log10(rank + 1) / top) * (H - T - B);
  const n = rows.length;
  const x = (i: number) => L + (n <= 1 ? 0 : (i * (W - L - R)) / (n - 1));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", class: "ll-svg ll-chart-rank", role: "img", "aria-label": "rank across layers" });
  for (let k = 0; k <= Math.floor(top); k++) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(10 ** k - 1), y2: y(10 ** k - 1), class: "ll-grid" }));
    svg.append(s("text", { x: L - 6, y: y(10 ** k - 1) + 4, class: "ll-axis", "text-anchor": "end", text: `#${(10 ** k).toLocaleString("en-US")}` }));
  }
  xTicks(svg, rows, r, x, H - B);
  svg.append(s("text", { x: (L + W - R) / 2, y: H - 2, class: "ll-axis-title", "text-anchor": "middle", text: "rank of each target (first token); #1 = the top token" }));
  for (const se of series) {
    let d = "";
    let pen = false;
    se.values.forEach((v, i) => {
      if (!Number.isFinite(v)) return void (pen = false);
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)} ${y(v).toFixed(1)} `;
      pen = true;
    });
    svg.append(s("path", { d: d.trim(), class: "ll-series series-rank", "data-index": se.index, "data-label": se.label, fill: "none", stroke: se.color, "stroke-width": 2 }));
  }
  return svg;
}
