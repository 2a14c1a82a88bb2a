/**
 * The logit-lens figure as a PNG: the SVG of svg.ts rasterised by resvg (@resvg/resvg-js, a Rust
 * SVG renderer shipped as prebuilt native binaries inside npm packages).
 *
 * Fonts, for the same pixels on every machine: resvg is given only fonts that come with our npm
 * dependencies, never the system's (`loadSystemFonts: false`; a fresh machine may have none):
 * - DejaVu Sans regular and bold (@fontsource/dejavu-sans, whose "latin" file is in fact the full
 *   font, about 5,900 characters: Latin, Greek, Cyrillic, arrows, ␣ ↵ ⟨ ⟩ and many symbols);
 * - Noto Emoji, the monochrome outline emoji font (@fontsource/noto-emoji, 12 files by range).
 * Both packages ship WOFF (1.0) files, which resvg cannot read; `woffToSfnt` unpacks them (each
 * table is zlib-compressed, node:zlib inflates it) into plain TrueType files in a temporary folder
 * that is removed after rendering.
 *
 * Emoji: resvg-js 2.6 draws no colour-font glyphs (checked: with Noto Color Emoji, CBDT, and with
 * Twemoji, COLR, the emoji come out blank), so emoji are drawn as Noto Emoji outlines in the cell's
 * text colour. Characters that none of these fonts cover (CJK, Thai, ...) would be drawn as an
 * empty box, so the PNG shows them as their UTF-8 bytes in the report's own notation (中 ->
 * ⟨E4 B8 AD⟩): nothing is silently dropped. The SVG keeps the real characters (a browser finds a
 * font for them).
 */
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { inflateSync } from "node:zlib";
import { UserError } from "../errors.js";
import type { LensReport } from "./report.js";
import { toSvg } from "./svg.js";

/** Unpacks a WOFF 1.0 font into the TrueType/OpenType (sfnt) file it was made from. */
export function woffToSfnt(woff: Uint8Array): Uint8Array {
  const v = new DataView(woff.buffer, woff.byteOffset, woff.byteLength);
  if (woff.byteLength < 44 || v.getUint32(0) !== 0x774f4646) throw new Error("not a WOFF 1.0 file");
  const flavor = v.getUint32(4);
  const numTables = v.getUint16(12);
  const tables: { tag: number; checksum: number; data: Uint8Array }[] = [];
  for (let i = 0; i < numTables; i++) {
    const e = 44 + 20 * i;
    const [tag, offset, compLength, origLength, checksum] = [0, 4, 8, 12, 16].map((k) => v.getUint32(e + k)) as [number, number, number, number, number];
    if (offset + compLength > woff.byteLength) throw new Error("WOFF table out of range");
    const raw = woff.subarray(offset, offset + compLength);
    const data = compLength < origLength ? new Uint8Array(inflateSync(raw)) : raw;
    if (data.byteLength !== origLength) throw new Error("WOFF table has the wrong length");
    tables.push({ tag, checksum, data });
  }
  tables.sort((a, b) => a.tag - b.tag);
  const pad4 = (n: number) => (n + 3) & ~3;
  const headerLen = 12 + 16 * numTables;
  const total = headerLen + tables.reduce((s, t) => s + pad4(t.data.byteLength), 0);
  const out = new Uint8Array(total);
  const o = new DataView(out.buffer);
  const log2 = Math.floor(Math.log2(numTables));
  o.setUint32(0, flavor);
  o.setUint16(4, numTables);
  o.setUint16(6, 16 * 2 ** log2);
  o.setUint16(8, log2);
  o.setUint16(10, numTables * 16 - 16 * 2 ** log2);
  let at = headerLen;
  tables.forEach((t, i) => {
    const r = 12 + 16 * i;
    o.setUint32(r, t.tag);
    o.setUint32(r + 4, t.checksum);
    o.setUint32(r + 8, at);
    o.setUint32(r + 12, t.data.byteLength);
    out.set(t.data, at);
    at += pad4(t.data.byteLength);
  });
  return out;
}

/** The code points an sfnt font maps to a glyph (cmap formats 4 and 12). */
export function fontCoverage(sfnt: Uint8Array): Set<number> {
  const v = new DataView(sfnt.buffer, sfnt.byteOffset, sfnt.byteLength);
  const n = v.getUint16(4);
  let cmap = -1;
  for (let i = 0; i < n; i++) if (v.getUint32(12 + 16 * i) === 0x636d6170) cmap = v.getUint32(12 + 16 * i + 8);
  const cover = new Set<number>();
  if (cmap < 0) return cover;
  const nSub = v.getUint16(cmap + 2);
  for (let i = 0; i < nSub; i++) {
    const platform = v.getUint16(cmap + 4 + 8 * i);
    const encoding = v.getUint16(cmap + 4 + 8 * i + 2);
    const sub = cmap + v.getUint32(cmap + 4 + 8 * i + 4);
    const unicode = platform === 0 || (platform === 3 && (encoding === 1 || encoding === 10));
    if (!unicode) continue;
    const format = v.getUint16(sub);
    if (format === 12) {
      const groups = v.getUint32(sub + 12);
      for (let g = 0; g < groups; g++) {
        const start = v.getUint32(sub + 16 + 12 * g);
        const end = v.getUint32(sub + 16 + 12 * g + 4);
        for (let c = start; c <= end; c++) cover.add(c);
      }
    } else if (format === 4) {
      const segX2 = v.getUint16(sub + 6);
      const ends = sub + 14;
      const starts = ends + segX2 + 2;
      const deltas = starts + segX2;
      const rangeOffsets = deltas + segX2;
      for (let s = 0; s < segX2 / 2; s++) {
        const end = v.getUint16(ends + 2 * s);
        const start = v.getUint16(starts + 2 * s);
        const delta = v.getUint16(deltas + 2 * s);
        const ro = v.getUint16(rangeOffsets + 2 * s);
        for (let c = start; c <= end && c !== 0xffff; c++) {
          let glyph: number;
          if (ro === 0) glyph = (c + delta) & 0xffff;
          else {
            const at = rangeOffsets + 2 * s + ro + 2 * (c - start);
            glyph = at + 2 <= sfnt.byteLength ? v.getUint16(at) : 0;
            if (glyph !== 0) glyph = (glyph + delta) & 0xffff;
          }
          if (glyph !== 0) cover.add(c);
        }
      }
    }
  }
  return cover;
}

interface Fonts {
  /** File name -> sfnt bytes. */
  files: Map<string, Uint8Array>;
  coverage: Set<number>;
}

let fontsPromise: Promise<Fonts> | undefined;

function loadFonts(): Promise<Fonts> {
  fontsPromise ??= (async () => {
    const require = createRequire(import.meta.url);
    const dir = (pkg: string) => {
      try {
        return join(dirname(require.resolve(`${pkg}/package.json`)), "files");
      } catch {
        throw new UserError(`--format png needs the npm package ${pkg} (reinstall logit-lens's dependencies)`);
      }
    };
    const dejavu = dir("@fontsource/dejavu-sans");
    const emoji = dir("@fontsource/noto-emoji");
    const woffs = [
      join(dejavu, "dejavu-sans-latin-400-normal.woff"),
      join(dejavu, "dejavu-sans-latin-700-normal.woff"),
      ...readdirSync(emoji)
        .filter((f) => /-400-normal\.woff$/.test(f))
        .sort()
        .map((f) => join(emoji, f)),
    ];
    const files = new Map<string, Uint8Array>();
    const coverage = new Set<number>();
    for (const path of woffs) {
      const sfnt = woffToSfnt(readFileSync(path));
      files.set(path.split(/[\\/]/).pop()!.replace(/\.woff$/, ".ttf"), sfnt);
      for (const c of fontCoverage(sfnt)) coverage.add(c);
    }
    return { files, coverage };
  })();
  fontsPromise.catch(() => (fontsPromise = undefined));
  return fontsPromise;
}

/**
 * Replaces characters the bundled fonts cannot draw with their UTF-8 bytes, one ⟨…⟩ per run:
 * 中文 -> ⟨E4 B8 AD E6 96 87⟩.
 */
export function coveredText(coverage: Set<number>): (s: string) => string {
  const enc = new TextEncoder();
  const hexOf = (run: string) => `⟨${Array.from(enc.encode(run), (b) => b.toString(16).toUpperCase().padStart(2, "0")).join(" ")}⟩`;
  return (s: string) => {
    let out = "";
    let run = "";
    for (const ch of s) {
      const cp = ch.codePointAt(0)!;
      if (coverage.has(cp) || cp < 0x20) {
        if (run) out += hexOf(run);
        run = "";
        out += ch;
      } else run += ch;
    }
    return run ? out + hexOf(run) : out;
  };
}

/**
 * Resolution: 2x for figures up to 4,000 px (crisp when zoomed or printed), 1x up to 16,000 px,
 * and scaled down beyond that, so that no side passes 16,000 px nor the image 64 M pixels.
 */
export function pngZoom(width: number, height: number): number {
  const side = Math.max(width, height, 1);
  const zoom = side <= 4000 ? 2 : Math.min(1, 16000 / side);
  return Math.min(zoom, Math.sqrt(64e6 / Math.max(1, width * height)));
}

function pngSvg(report: LensReport, fonts: Fonts): string {
  return toSvg(report, { mapText: coveredText(fonts.coverage), fontFamily: "DejaVu Sans" });
}

/** The SVG that `toPng` rasterises: text the fonts cannot draw already replaced by its bytes. */
export async function toPngSvg(report: LensReport): Promise<string> {
  return pngSvg(report, await loadFonts());
}

/** The code points the PNG's fonts can draw. */
export async function pngFontCoverage(): Promise<Set<number>> {
  return (await loadFonts()).coverage;
}

export async function toPng(report: LensReport): Promise<Uint8Array> {
  return svgToPng(pngSvg(report, await loadFonts()));
}

/**
 * Options for drawing another figure (the attribution and patching charts) for `svgToPng`: the
 * bundled font, and text its fonts cannot draw replaced by its bytes.
 */
export async function pngFigureOptions(): Promise<{ mapText: (s: string) => string; fontFamily: string }> {
  return { mapText: coveredText((await loadFonts()).coverage), fontFamily: "DejaVu Sans" };
}

/** Any of our SVG figures rasterised with the bundled fonts (see the top of this file). */
export async function svgToPng(svg: string): Promise<Uint8Array> {
  let Resvg: typeof import("@resvg/resvg-js").Resvg;
  try {
    ({ Resvg } = await import("@resvg/resvg-js"));
  } catch {
    throw new UserError("--format png needs the npm package @resvg/resvg-js (reinstall logit-lens's dependencies)");
  }
  const fonts = await loadFonts();
  const size = /<svg[^>]* width="(\d+)" height="(\d+)"/.exec(svg);
  const zoom = size ? pngZoom(Number(size[1]), Number(size[2])) : 1;

  const dir = mkdtempSync(join(tmpdir(), "logit-lens-fonts-"));
  try {
    const fontFiles: string[] = [];
    for (const [name, bytes] of fonts.files) {
      const path = join(dir, `${createHash("sha1").update(bytes).digest("hex").slice(0, 8)}-${name}`);
      writeFileSync(path, bytes);
      fontFiles.push(path);
    }
    const resvg = new Resvg(svg, {
      font: { loadSystemFonts: false, fontFiles, defaultFontFamily: "DejaVu Sans", sansSerifFamily: "DejaVu Sans" },
      fitTo: { mode: "zoom", value: zoom },
      background: "#ffffff",
      logLevel: "off",
    });
    return new Uint8Array(resvg.render().asPng());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
