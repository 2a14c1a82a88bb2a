// Placeholder until the PNG renderer lands (being written now); it refuses clearly instead of faking output.
import { UserError } from "../errors.js";
import type { LensReport } from "./report.js";
export async function toPng(_report: LensReport): Promise<Uint8Array> {
  throw new UserError("--format png is not available yet");
}
