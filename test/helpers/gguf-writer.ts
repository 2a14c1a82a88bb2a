/**
 * A minimal GGUF v3 writer for tests that need a hand-made file (bad metadata, unknown
 * architectures, odd shapes): metadata of the common types and zero-filled F32 tensors.
 */
import fs from "node:fs";

export type GgufMeta = string | number | boolean | { u32: number } | { f32: number } | { u64: bigint } | string[];

/** A minimal GGUF v3 writer: metadata and zero-filled F32 tensors (shapes outermost first). */
export function writeGguf(file: string, metadata: Record<string, GgufMeta>, tensors: { name: string; shape: number[] }[]): string {
  const parts: Buffer[] = [];
  const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); parts.push(b); };
  const u64 = (v: number | bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); parts.push(b); };
  const str = (s: string) => { const b = Buffer.from(s, "utf8"); u64(b.length); parts.push(b); };
  parts.push(Buffer.from("GGUF", "latin1"));
  u32(3);
  u64(tensors.length);
  u64(Object.keys(metadata).length);
  for (const [key, v] of Object.entries(metadata)) {
    str(key);
    if (typeof v === "string") { u32(8); str(v); }
    else if (typeof v === "number") { u32(4); u32(v); }
    else if (typeof v === "boolean") { u32(7); parts.push(Buffer.from([v ? 1 : 0])); }
    else if (Array.isArray(v)) { u32(9); u32(8); u64(v.length); for (const s of v) str(s); }
    else if ("u32" in v) { u32(4); u32(v.u32); }
    else if ("u64" in v) { u32(10); u64(v.u64); }
    else { u32(6); const b = Buffer.alloc(4); b.writeFloatLE(v.f32); parts.push(b); }
  }
  let offset = 0;
  for (const t of tensors) {
    str(t.name);
    u32(t.shape.length);
    for (const d of t.shape.slice().reverse()) u64(d);
    u32(0);
    u64(offset);
    offset += Math.ceil((4 * t.shape.reduce((a, b) => a * b, 1)) / 32) * 32;
  }
  let header = Buffer.concat(parts);
  header = Buffer.concat([header, Buffer.alloc(Math.ceil(header.length / 32) * 32 - header.length)]);
  fs.writeFileSync(file, Buffer.concat([header, Buffer.alloc(offset)]));
  return file;
}

