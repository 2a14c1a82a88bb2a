/**
 * safetensors header reader (https://github.com/huggingface/safetensors#format):
 *   u64 little-endian N, then N bytes of JSON
 *   { "__metadata__"?: {string: string}, "<tensor>": { dtype, shape, data_offsets: [begin, end] } },
 *   then the data buffer; offsets are relative to its first byte (8 + N).
 * Only the header is read; TensorRefs point at the bytes for dequantize.ts or for onnxruntime's
 * external data. Hugging Face checkpoints come either as one `model.safetensors` or sharded, with
 * `model.safetensors.index.json` mapping each tensor name to its shard file.
 */
import fs from "node:fs";
import path from "node:path";
import { UserError, check } from "../errors.js";
import { isSafeRelativePath, openForReading } from "./files.js";
import type { TensorRef } from "./tensor-ref.js";

export interface SafetensorsFile {
  /** Absolute path of the file. */
  path: string;
  /** The header's `__metadata__` (free-form strings, e.g. `{"format": "pt"}`); empty when absent. */
  metadata: Record<string, string>;
  /** Tensors in file order (by data offset). */
  tensors: TensorRef[];
}

/**
 * Element sizes of every safetensors dtype. Only F32/F16/BF16 can be read as weights
 * (dequantize.ts refuses the others when read); the rest are listed so that checkpoints carrying
 * integer buffers (position ids, masks) still open.
 */
const ITEM_SIZE: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1 };
/** The reference implementation refuses headers over 100 MB; a larger one means a corrupt length. */
const MAX_HEADER = 100_000_000;

export function readSafetensors(file: string): SafetensorsFile {
  const abs = path.resolve(file);
  const fd = openForReading(file, abs, "safetensors file");
  let headerText: string;
  let fileSize: number;
  let headerLen: number;
  try {
    fileSize = fs.fstatSync(fd).size;
    check(fileSize >= 8, `${file}: not a safetensors file (only ${fileSize} bytes)`);
    const lenBuf = Buffer.alloc(8);
    readFully(fd, lenBuf, 0, file);
    const big = lenBuf.readBigUInt64LE(0);
    check(big <= BigInt(fileSize - 8),
      `${file}: header length ${big} is larger than the file (${fileSize} bytes); the file is truncated or not safetensors`);
    headerLen = Number(big);
    check(headerLen <= MAX_HEADER, `${file}: header length ${headerLen} exceeds ${MAX_HEADER} bytes; the file is corrupt`);
    const headerBuf = Buffer.alloc(headerLen);
    readFully(fd, headerBuf, 8, file);
    headerText = headerBuf.toString("utf8");
  } finally {
    fs.closeSync(fd);
  }

  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (e) {
    throw new UserError(`${file}: header is not valid JSON (${(e as Error).message}); the file is corrupt or not safetensors`);
  }
  check(isObject(header), `${file}: header is not a JSON object; the file is corrupt or not safetensors`);

  const dataStart = 8 + headerLen;
  const metadata: Record<string, string> = {};
  const tensors: TensorRef[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      check(isObject(entry), `${file}: __metadata__ is not an object`);
      for (const [k, v] of Object.entries(entry)) {
        check(typeof v === "string", `${file}: __metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    check(isObject(entry), `${file}: entry for tensor ${name} is not an object`);
    const { dtype, shape, data_offsets: offsets } = entry;
    check(typeof dtype === "string", `${file}: tensor ${name} has no dtype`);
    const itemSize = ITEM_SIZE[dtype];
    if (itemSize === undefined) {
      throw new UserError(`${file}: tensor ${name} has unknown dtype ${dtype}; the file is corrupt or from a newer safetensors`);
    }
    check(Array.isArray(shape) && shape.every((d) => Number.isSafeInteger(d) && d >= 0),
      `${file}: tensor ${name} has an invalid shape ${JSON.stringify(shape)}`);
    check(Array.isArray(offsets) && offsets.length === 2 && offsets.every((o) => Number.isSafeInteger(o) && o >= 0) && offsets[0] <= offsets[1],
      `${file}: tensor ${name} has invalid data_offsets ${JSON.stringify(offsets)}`);
    const [begin, end] = offsets as [number, number];
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    check(end - begin === count * itemSize,
      `${file}: tensor ${name} is ${dtype} [${shape.join(", ")}] (${count * itemSize} bytes) but its data_offsets span ${end - begin} bytes`);
    check(dataStart + end <= fileSize,
      `${file}: tensor ${name} ends at byte ${dataStart + end} but the file has only ${fileSize} bytes; the file is truncated (incomplete download?)`);
    tensors.push({ name, shape: (shape as number[]).slice(), dtype, file: abs, offset: dataStart + begin, byteLength: end - begin });
  }
  tensors.sort((a, b) => a.offset - b.offset);
  return { path: abs, metadata, tensors };
}

/**
 * All tensors of a Hugging Face checkpoint folder: `model.safetensors.index.json` (sharded) when
 * present, else `model.safetensors`.
 */
export function readSafetensorsFolder(dir: string): TensorRef[] {
  const indexPath = path.join(dir, "model.safetensors.index.json");
  const singlePath = path.join(dir, "model.safetensors");
  if (!fs.existsSync(indexPath)) {
    check(fs.existsSync(singlePath), `${dir}: no model.safetensors or model.safetensors.index.json in this folder`);
    return readSafetensors(singlePath).tensors;
  }

  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexPath, "utf8"));
  } catch (e) {
    throw new UserError(`${indexPath}: not valid JSON (${(e as Error).message})`);
  }
  check(isObject(index) && isObject(index.weight_map), `${indexPath}: has no "weight_map" object`);
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(index.weight_map)) {
    check(typeof shard === "string" && shard.length > 0, `${indexPath}: weight_map entry for ${name} is not a file name`);
    // The index may only name files inside its own folder (a downloaded index is untrusted).
    check(isSafeRelativePath(shard),
      () => `${indexPath}: weight_map names the shard ${JSON.stringify(shard).slice(0, 200)} for ${name}, which is not a file inside ${dir}; refusing it`);
    let names = byShard.get(shard);
    if (!names) byShard.set(shard, (names = []));
    names.push(name);
  }

  const out: TensorRef[] = [];
  for (const [shard, names] of byShard) {
    const shardPath = path.join(dir, shard);
    check(fs.existsSync(shardPath), `${indexPath}: shard ${shard} (holding ${names[0]}${names.length > 1 ? ` and ${names.length - 1} more` : ""}) is missing from ${dir}`);
    const byName = new Map(readSafetensors(shardPath).tensors.map((t) => [t.name, t]));
    // Take exactly what the index assigns to this shard; a name the shard lacks is a broken download.
    for (const name of names) {
      const ref = byName.get(name);
      check(ref !== undefined, `${shardPath}: has no tensor ${name}, which ${path.basename(indexPath)} says it holds`);
      out.push(ref);
    }
  }
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function readFully(fd: number, buf: Buffer, position: number, file: string): void {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, buf.length - done, position + done);
    if (n === 0) throw new UserError(`${file}: file shrank while being read`);
    done += n;
  }
}
