// Placeholder until the html renderer lands (being written now); it refuses clearly instead of faking output.
import { UserError } from "../errors.js";
import type { LensReport } from "./report.js";
export function toHtml(_report: LensReport): string {
  throw new UserError("--format html is not available yet");
}
