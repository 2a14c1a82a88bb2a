// Placeholder until the svg renderer lands (being written now); it refuses clearly instead of faking output.
import { UserError } from "../errors.js";
import type { LensReport } from "./report.js";
export function toSvg(_report: LensReport): string {
  throw new UserError("--format svg is not available yet");
}
