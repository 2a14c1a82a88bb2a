/**
 * CSV: one row per readout point x position x rank, for spreadsheets and pandas. Tracked targets
 * and families are extra columns repeated on each rank row of their cell (empty when none). The
 * model's own prediction is hook and point "final" (as in the JSON), layer n_layers.
 */
import type { LensReport, ReportCell } from "./report.js";

function field(v: string | number): string {
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function toCsv(report: LensReport): string {
  const targetCols = report.targets.flatMap((t) => [`target ${t.label} prob`, `target ${t.label} rank`]);
  const familyCols = report.families.map((f) => `family ${f.label} prob`);
  const header = ["hook", "layer", "point", "position", "input_token", "rank", "token_id", "token_text", "token_bytes", "prob", "logit", "entropy", "kl_to_final", ...targetCols, ...familyCols];
  const rows: string[] = [header.map(field).join(",")];
  const emit = (hook: string, layer: number, point: string, cell: ReportCell) => {
    const extra = [
      ...(cell.targets ?? []).flatMap((t) => [t.prob, t.rank]),
      ...(cell.families ?? []),
    ];
    cell.top.forEach((t, rank) => {
      rows.push([hook, layer, point, cell.position, report.tokens[cell.position]!.text, rank, t.id, t.text, t.bytes, t.prob, t.logit, cell.entropy, cell.kl_to_final, ...extra].map(field).join(","));
    });
  };
  for (const l of report.layers) for (const c of l.positions) emit(l.hook, l.layer, l.point, c);
  for (const c of report.final.positions) emit("final", report.model.n_layers, "final", c);
  return rows.join("\n") + "\n";
}
