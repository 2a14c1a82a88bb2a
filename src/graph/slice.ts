/**
 * Cutting a built graph into pieces that run one after another: the piece for layers a..b of a
 * model takes the residual stream at layer a as an input and gives it at layer b as an output.
 * The model code stays one plain forward pass over all layers; the cut is pure graph surgery.
 *
 * A piece keeps exactly the nodes its outputs need, found by walking back from them and stopping
 * at graph inputs, initializers and the cut value. So a piece only references (and onnxruntime
 * only loads) its own layers' weights.
 */
import { GraphBuilder } from "./builder.js";

export interface SliceSpec {
  name: string;
  /** Existing graph outputs to keep. */
  keep: string[];
  /** A value computed inside the graph that becomes an input of the piece instead (float32). */
  cut?: { value: string; shape: (number | string)[] };
  /** Values to expose as new outputs, under new names. */
  expose?: { value: string; as: string }[];
}

/** The value an output (or Identity-named hook) of `g` is computed from. */
export function sourceOf(g: GraphBuilder, output: string): string {
  const node = g.nodes.find((n) => n.opType === "Identity" && n.output?.[0] === output);
  if (!node) throw new Error(`graph ${g.name} has no output '${output}'`);
  return node.input![0]!;
}

export function sliceGraph(g: GraphBuilder, spec: SliceSpec): GraphBuilder {
  const out = new GraphBuilder(spec.name);
  for (const [domain, version] of g.domains) out.domains.set(domain, version);

  const producer = new Map<string, number>();
  g.nodes.forEach((n, i) => n.output?.forEach((o) => producer.set(o, i)));
  const needed = new Set<number>();
  const usedNames = new Set<string>();
  const stack: string[] = [...spec.keep, ...(spec.expose ?? []).map((e) => e.value)];
  while (stack.length) {
    const name = stack.pop()!;
    if (usedNames.has(name)) continue;
    usedNames.add(name);
    if (name === spec.cut?.value) continue;
    const i = producer.get(name);
    if (i === undefined || needed.has(i)) continue;
    needed.add(i);
    for (const input of g.nodes[i]!.input ?? []) if (input) stack.push(input);
  }

  out.nodes.push(...g.nodes.filter((_, i) => needed.has(i)));
  for (const e of spec.expose ?? []) out.nodes.push({ opType: "Identity", input: [e.value], output: [e.as], name: e.as });
  out.initializers.push(...g.initializers.filter((t) => usedNames.has(t.name!)));
  out.inputs.push(...g.inputs.filter((v) => usedNames.has(v.name!)));
  if (spec.cut) out.input(spec.cut.value, "float32", spec.cut.shape);
  const keep = new Set(spec.keep);
  out.outputs.push(...g.outputs.filter((v) => keep.has(v.name!)));
  for (const e of spec.expose ?? []) out.output({ name: e.as }, e.as);
  return out;
}

/**
 * Bytes a session of this graph holds for its weights: the external data its initializers
 * reference, or, for a quantized matrix whose fp32 scales and mins are computed at load from
 * stored codes, the `resident=` size the builder noted on it (the codes themselves count 0).
 */
export function externalBytes(g: GraphBuilder): number {
  let total = 0;
  for (const t of g.initializers) {
    const resident = t.docString?.startsWith("resident=") ? Number(t.docString.slice(9)) : undefined;
    const length = t.externalData?.find((e) => e.key === "length")?.value;
    if (resident !== undefined) total += resident;
    else if (length) total += Number(length);
  }
  return total;
}
