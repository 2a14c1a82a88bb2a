/**
 * The HTML report's script (bundled into dist/web/lens-view.js and inlined by src/outputs/html.ts):
 * `LensView.renderLensReport(element, report)` draws the viewer and returns it.
 */
import type { LensReport } from "../outputs/report.js";
import { formatProb } from "../outputs/presentation.js";
import { LensView, type ViewOptions } from "./view.js";

function renderLensReport(root: HTMLElement, report: LensReport, options?: ViewOptions): LensView {
  const view = new LensView(root, report, options);
  (globalThis as unknown as { lensView: LensView }).lensView = view;
  return view;
}

(globalThis as unknown as { LensView: unknown }).LensView = { renderLensReport, formatProb };
