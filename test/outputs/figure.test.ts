/**
 * The SVG and PNG figures, drawn from real lens reports of SmolLM2-135M-Instruct: the SVG parsed
 * back with a strict little XML parser (well-formed, one cell per readout x position plus the
 * output row, each cell's text the report's top-1 token, colours that follow the probability),
 * and the PNG decoded with node:zlib (signature, IHDR, pixels that match the cell colours).
 */
import assert from "node:assert/strict";
import { before, test } from "node:test";
import { inflateSync } from "node:zlib";
import { readoutHooks } from "../../src/cli/options.js";
import { executeLensJob } from "../../src/lens/job.js";
import { parseTextTarget } from "../../src/lens/targets.js";
import { coveredText, pngFontCoverage, toPng, toPngSvg } from "../../src/outputs/png.js";
import { buildReport, type LensReport } from "../../src/outputs/report.js";
import { escapeXml, probColor, textColorFor, toSvg, truncate } from "../../src/outputs/svg.js";
import { createProgress } from "../../src/progress.js";
import { loadReal } from "../helpers/real-models.js";

// ---------------------------------------------------------------------------------------------
// A strict, minimal XML parser: elements, attributes, text, the five predefined entities and
// numeric character references, comments and the XML declaration. Throws on anything malformed.

interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: (XmlElement | string)[];
}

const NAME = /^[A-Za-z_:][A-Za-z0-9_:.-]*/;

function decodeEntities(s: string): string {
  return s.replace(/&([^;]*);?/g, (m, body: string) => {
    if (!m.endsWith(";")) throw new Error(`bare & in ${JSON.stringify(s.slice(0, 60))}`);
    const named: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };
    if (body in named) return named[body]!;
    const num = /^#(?:x([0-9a-fA-F]+)|([0-9]+))$/.exec(body);
    if (!num) throw new Error(`unknown entity &${body};`);
    return String.fromCodePoint(num[1] ? parseInt(num[1], 16) : Number(num[2]));
  });
}

function checkChars(s: string): void {
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    const ok = cp === 0x9 || cp === 0xa || cp === 0xd || (cp >= 0x20 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) || cp >= 0x10000;
    if (!ok) throw new Error(`character U+${cp.toString(16)} is not allowed in XML`);
  }
}

function parseXml(xml: string): XmlElement {
  checkChars(xml);
  let i = 0;
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  const skipSpace = () => {
    while (i < xml.length && /\s/.test(xml[i]!)) i++;
  };
  if (xml.startsWith("<?xml")) {
    const end = xml.indexOf("?>");
    if (end < 0) throw new Error("unterminated XML declaration");
    i = end + 2;
  }
  while (i < xml.length) {
    if (xml.startsWith("<!--", i)) {
      const end = xml.indexOf("-->", i + 4);
      if (end < 0) throw new Error("unterminated comment");
      i = end + 3;
    } else if (xml.startsWith("</", i)) {
      i += 2;
      const m = NAME.exec(xml.slice(i));
      if (!m) throw new Error(`bad end tag at ${i}`);
      i += m[0].length;
      skipSpace();
      if (xml[i] !== ">") throw new Error(`bad end tag at ${i}`);
      i++;
      const open = stack.pop();
      if (!open || open.name !== m[0]) throw new Error(`</${m[0]}> closes <${open?.name}>`);
    } else if (xml[i] === "<") {
      i++;
      const m = NAME.exec(xml.slice(i));
      if (!m) throw new Error(`bad tag at ${i}`);
      i += m[0].length;
      const el: XmlElement = { name: m[0], attrs: {}, children: [] };
      for (;;) {
        const before = i;
        skipSpace();
        if (xml.startsWith("/>", i) || xml[i] === ">") break;
        if (i === before) throw new Error(`attributes need white space between them at ${i}`);
        const a = NAME.exec(xml.slice(i));
        if (!a) throw new Error(`bad attribute at ${i}: ${xml.slice(i, i + 20)}`);
        i += a[0].length;
        skipSpace();
        if (xml[i] !== "=") throw new Error(`attribute without = at ${i}`);
        i++;
        skipSpace();
        const q = xml[i];
        if (q !== '"' && q !== "'") throw new Error(`unquoted attribute at ${i}`);
        const end = xml.indexOf(q, i + 1);
        if (end < 0) throw new Error("unterminated attribute");
        const raw = xml.slice(i + 1, end);
        if (raw.includes("<")) throw new Error(`< in attribute value at ${i}`);
        if (a[0] in el.attrs) throw new Error(`duplicate attribute ${a[0]}`);
        el.attrs[a[0]] = decodeEntities(raw);
        i = end + 1;
      }
      const selfClosing = xml.startsWith("/>", i);
      i += selfClosing ? 2 : 1;
      if (stack.length) stack[stack.length - 1]!.children.push(el);
      else if (root) throw new Error("more than one root element");
      else root = el;
      if (!selfClosing) stack.push(el);
    } else {
      const end = xml.indexOf("<", i);
      const text = xml.slice(i, end < 0 ? xml.length : end);
      if (text.includes(">") && text.includes("]]>")) throw new Error("]]> in text");
      if (stack.length) stack[stack.length - 1]!.children.push(decodeEntities(text));
      else if (text.trim()) throw new Error(`text outside the root element: ${JSON.stringify(text.slice(0, 40))}`);
      i = end < 0 ? xml.length : end;
    }
  }
  if (stack.length) throw new Error(`<${stack[stack.length - 1]!.name}> is never closed`);
  if (!root) throw new Error("no root element");
  return root;
}

function* walk(el: XmlElement): Generator<XmlElement> {
  yield el;
  for (const c of el.children) if (typeof c !== "string") yield* walk(c);
}

const textOf = (el: XmlElement): string => el.children.map((c) => (typeof c === "string" ? c : textOf(c))).join("");
const child = (el: XmlElement, name: string) => el.children.find((c): c is XmlElement => typeof c !== "string" && c.name === name);

// ---------------------------------------------------------------------------------------------
// A minimal PNG decoder (8-bit RGB/RGBA, non-interlaced: what resvg writes).

interface Png {
  width: number;
  height: number;
  channels: number;
  pixels: Uint8Array;
}

function decodePng(png: Uint8Array): Png {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  assert.deepEqual([...png.subarray(0, 8)], sig, "PNG signature");
  const v = new DataView(png.buffer, png.byteOffset, png.byteLength);
  let at = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Uint8Array[] = [];
  let first = true;
  while (at < png.length) {
    const len = v.getUint32(at);
    const type = String.fromCharCode(...png.subarray(at + 4, at + 8));
    const data = png.subarray(at + 8, at + 8 + len);
    if (first) assert.equal(type, "IHDR", "IHDR comes first");
    first = false;
    if (type === "IHDR") {
      width = v.getUint32(at + 8);
      height = v.getUint32(at + 12);
      const depth = data[8]!;
      const colorType = data[9]!;
      assert.equal(depth, 8, "8-bit samples");
      assert.equal(data[12], 0, "not interlaced");
      channels = ({ 2: 3, 6: 4 } as Record<number, number>)[colorType] ?? 0;
      assert.ok(channels, `colour type ${colorType} (RGB or RGBA expected)`);
    } else if (type === "IDAT") idat.push(data);
    else if (type === "IEND") break;
    at += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  assert.equal(raw.length, height * (stride + 1), "IDAT holds exactly the image");
  const pixels = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const out = pixels.subarray(y * stride, (y + 1) * stride);
    const prev = y > 0 ? pixels.subarray((y - 1) * stride, y * stride) : new Uint8Array(stride);
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? out[x - channels]! : 0;
      const b = prev[x]!;
      const c = x >= channels ? prev[x - channels]! : 0;
      let p: number;
      switch (filter) {
        case 0: p = 0; break;
        case 1: p = a; break;
        case 2: p = b; break;
        case 3: p = (a + b) >> 1; break;
        case 4: {
          const pa = Math.abs(b - c), pb = Math.abs(a - c), pc = Math.abs(a + b - 2 * c);
          p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default: throw new Error(`bad PNG filter ${filter}`);
      }
      out[x] = (line[x]! + p) & 0xff;
    }
  }
  return { width, height, channels, pixels };
}

const rgbOf = (png: Png, x: number, y: number) => {
  const o = (Math.round(y) * png.width + Math.round(x)) * png.channels;
  return [png.pixels[o]!, png.pixels[o + 1]!, png.pixels[o + 2]!];
};
const parseHex = (c: string) => [1, 3, 5].map((k) => parseInt(c.slice(k, k + 2), 16));

// ---------------------------------------------------------------------------------------------

const quiet = createProgress({ quiet: true });
let lensReport: LensReport;
let genReport: LensReport;

before(async () => {
  const { model } = await loadReal("smollm2-135m-instruct");
  const tok = model.tokenizer;
  {
    const prompt = "Fish emoji: 🐠, horse emoji:";
    const { hooks, points } = readoutHooks("embed,resid_post", model.config);
    const targets = [parseTextTarget(tok, " 🐴")];
    const job = await executeLensJob(model, { promptIds: tok.encode(prompt), readouts: hooks, topK: 5, variant: "logit", targets, families: [] }, quiet);
    lensReport = buildReport(model, { prompt, chat: false, job, targets, families: [], topK: 5, points });
  }
  {
    const prompt = "Is there a seahorse emoji?";
    const { hooks, points } = readoutHooks("resid_post", model.config);
    const generate = { maxNewTokens: 4, sampling: { temperature: 0, topP: 1, seed: 0 }, stopIds: tok.eosIds };
    const ids = tok.encodeChat([{ role: "user", content: prompt }], { addGenerationPrompt: true });
    const positions = [ids.length - 3, ids.length - 2, ids.length - 1];
    const job = await executeLensJob(model, { promptIds: ids, readouts: hooks, topK: 3, variant: "logit", positions, targets: [], families: [], generate }, quiet);
    genReport = buildReport(model, {
      prompt,
      chat: true,
      job,
      targets: [],
      families: [],
      topK: 3,
      points,
      generation: { maxNewTokens: 4, temperature: 0, topP: 1, seed: 0 },
    });
  }
});

interface FigureCell {
  row: string;
  layer: string;
  position: number;
  prob: number;
  text: string;
  bold: boolean;
  fill: string;
  textFill: string;
  rect: { x: number; y: number; w: number; h: number };
}

function cellsOf(svg: XmlElement): FigureCell[] {
  return [...walk(svg)]
    .filter((e) => e.name === "g" && e.attrs.class === "cell")
    .map((g) => {
      const rect = child(g, "rect")!;
      const text = child(g, "text")!;
      assert.ok(rect && text, "a cell has a rect and a text");
      return {
        row: g.attrs["data-row"]!,
        layer: g.attrs["data-layer"]!,
        position: Number(g.attrs["data-position"]),
        prob: Number(g.attrs["data-prob"]),
        text: textOf(text),
        bold: text.attrs["font-weight"] === "bold",
        fill: rect.attrs.fill!,
        textFill: text.attrs.fill!,
        rect: { x: Number(rect.attrs.x), y: Number(rect.attrs.y), w: Number(rect.attrs.width), h: Number(rect.attrs.height) },
      };
    });
}

/** The cell text is the top-1 text, or a prefix of it ending in … */
function assertShows(shown: string, full: string, where: string): void {
  if (shown === full) return;
  assert.ok(shown.endsWith("…") && full.startsWith(shown.slice(0, -1)) && shown.length > 1, `${where}: '${shown}' is not '${full}' nor a truncation of it`);
}

function checkFigure(report: LensReport, svgText: string, mapText: (s: string) => string = (s) => s): FigureCell[] {
  const svg = parseXml(svgText);
  assert.equal(svg.name, "svg");
  assert.equal(svg.attrs.xmlns, "http://www.w3.org/2000/svg");
  assert.ok(Number(svg.attrs.width) > 0 && Number(svg.attrs.height) > 0);
  // Self-contained: no external references of any kind.
  for (const e of walk(svg)) {
    for (const [k, val] of Object.entries(e.attrs)) {
      if (/href$/.test(k)) assert.ok(val.startsWith("#"), `external reference ${k}=${val}`);
      assert.ok(!/url\((?!#)/.test(val), `external url() in ${k}`);
    }
    assert.notEqual(e.name, "script");
    assert.notEqual(e.name, "image");
  }
  const cells = cellsOf(svg);
  const nPos = report.positions.length;
  assert.equal(cells.length, (report.layers.length + 1) * nPos, "one cell per readout x position, plus the output row");
  const byKey = new Map(cells.map((c) => [`${c.row}@${c.position}`, c]));
  assert.equal(byKey.size, cells.length, "no duplicate cells");
  const rows: [string, LensReport["final"]["positions"]][] = [["final", report.final.positions], ...report.layers.map((l) => [l.hook, l.positions] as [string, LensReport["final"]["positions"]])];
  for (const [row, rowCells] of rows) {
    for (const rc of rowCells) {
      const c = byKey.get(`${row}@${rc.position}`);
      assert.ok(c, `cell ${row} @ ${rc.position}`);
      const top = rc.top[0]!;
      // A byte that finishes the context's unfinished character is drawn as that character.
      assertShows(c.text, mapText(top.in_context ?? top.text), `${row} @ ${rc.position}`);
      assert.equal(c.prob, top.prob);
      assert.equal(c.fill, probColor(top.prob));
      assert.equal(c.textFill, textColorFor(top.prob));
      const next = report.tokens[rc.position + 1];
      assert.equal(c.bold, next !== undefined && next.id === top.id, `bold marks top-1 = next token (${row} @ ${rc.position})`);
    }
  }
  // Layout: the output row on top, then the last layer down to the first; columns in position order.
  const yOf = (row: string) => byKey.get(`${row}@${report.positions[0]}`)!.rect.y;
  const rowYs = [yOf("final"), ...report.layers.map((l) => yOf(l.hook)).reverse()];
  for (let k = 1; k < rowYs.length; k++) assert.ok(rowYs[k]! > rowYs[k - 1]!, "rows go from the output down to the first readout");
  const xs = report.positions.map((p) => byKey.get(`final@${p}`)!.rect.x);
  for (let k = 1; k < xs.length; k++) assert.ok(xs[k]! > xs[k - 1]!, "columns in position order");
  // Labels: axis titles, the title with the model name and variant, input tokens under the columns.
  const texts = [...walk(svg)].filter((e) => e.name === "text").map(textOf);
  for (const t of ["layer", "input token", "next token", "output", "top-1 probability"]) assert.ok(texts.includes(t), `label '${t}'`);
  assert.ok(texts.some((t) => t.includes(report.model.name) && t.startsWith(report.lens.variant === "logit" ? "Logit lens" : "Raw")), "title names model and lens");
  const inputLabels = [...walk(svg)].find((e) => e.attrs.class === "input-labels")!;
  const shownInputs = inputLabels.children.filter((c): c is XmlElement => typeof c !== "string").map(textOf);
  assert.equal(shownInputs.length, nPos);
  report.positions.forEach((p, j) => assertShows(shownInputs[j]!, mapText(report.tokens[p]!.text), `input label ${p}`));
  return cells;
}

test("SVG: well-formed, one cell per readout x position + output, top-1 text, colour by probability", () => {
  const svg = toSvg(lensReport);
  const cells = checkFigure(lensReport, svg);
  assert.ok(lensReport.layers.some((l) => l.point === "embed"), "the embedding row is there");
  // A confident cell and an unsure one get different, ordered colours.
  const probs = cells.map((c) => ({ c, p: c.prob }));
  const hi = probs.reduce((a, b) => (b.p > a.p ? b : a));
  const lo = probs.reduce((a, b) => (b.p < a.p ? b : a));
  assert.ok(hi.p > 0.5 && lo.p < 0.2, `a spread of probabilities (${lo.p} .. ${hi.p})`);
  assert.notEqual(hi.c.fill, lo.c.fill);
  const lum = (hex: string) => parseHex(hex).reduce((s, x) => s + x, 0);
  assert.ok(lum(hi.c.fill) < lum(lo.c.fill), "more probable is darker");
  assert.notEqual(hi.c.textFill, lo.c.textFill, "text colour follows the background");
  // The seed's fish: the three byte tokens of " 🐠" are input labels, shown as bytes.
  assert.ok(svg.includes("␣⟨F0 9F⟩") && svg.includes("⟨90⟩") && svg.includes("⟨A0⟩"));
  // The prompt, emoji and all, is in the header.
  assert.ok(svg.includes("Fish emoji: 🐠, horse emoji:"));
});

test("SVG: a generation gets its generated columns marked and a header line", () => {
  const svg = toSvg(genReport);
  checkFigure(genReport, svg);
  assert.ok(genReport.generated_text);
  assert.ok(svg.includes("stroke-dasharray"), "dashed line where generation starts");
  assert.ok(svg.includes(`generated: ${escapeXml(JSON.stringify(genReport.generated_text).slice(1, -1)).slice(0, 20)}`));
  // In a greedy generation every generated token is the output row's top-1: all bold there.
  const cells = cellsOf(parseXml(svg)).filter((c) => c.row === "final" && genReport.tokens[c.position + 1]?.generated);
  assert.ok(cells.length >= 1 && cells.every((c) => c.bold));
});

test("SVG: hostile token text is escaped, long text truncated with …", () => {
  const r: LensReport = structuredClone(lensReport);
  const evil = `<script>&amp;"'\u0001\uFFFF]]>`;
  const long = "␣" + "supercalifragilistic".repeat(4);
  r.layers[3]!.positions[2]!.top[0]!.text = evil;
  r.layers[4]!.positions[2]!.top[0]!.text = long;
  r.tokens[1]!.text = evil;
  r.prompt = evil;
  r.model.name = `m<&>"`;
  const svg = toSvg(r);
  const doc = parseXml(svg);
  assert.ok(![...walk(doc)].some((e) => e.name === "script"));
  const cells = cellsOf(doc);
  const evilCell = cells.find((c) => c.row === r.layers[3]!.hook && c.position === r.layers[3]!.positions[2]!.position)!;
  // Characters XML cannot hold are shown as code points; everything else round-trips.
  assert.ok(evilCell.text.startsWith("<script>&amp;\"'⟨U+0001⟩") || evilCell.text.endsWith("…"), evilCell.text);
  const longCell = cells.find((c) => c.row === r.layers[4]!.hook && c.position === r.layers[4]!.positions[2]!.position)!;
  assert.ok(longCell.text.endsWith("…") && longCell.text.length < 16 && long.startsWith(longCell.text.slice(0, -1)));
  assert.ok(truncate("abc", 100, 11) === "abc" && truncate("x".repeat(50), 40, 11).endsWith("…"));
});

test("SVG: sizes grow with the number of readouts and positions", () => {
  const size = (svg: string) => {
    const m = /<svg[^>]* width="(\d+)" height="(\d+)"/.exec(svg)!;
    return [Number(m[1]), Number(m[2])];
  };
  const r: LensReport = structuredClone(lensReport);
  const [w, h] = size(toSvg(r));
  r.layers = r.layers.slice(0, 8);
  const keep = new Set(r.positions.slice(0, 4));
  r.positions = r.positions.slice(0, 4);
  for (const l of r.layers) l.positions = l.positions.filter((c) => keep.has(c.position));
  r.final.positions = r.final.positions.filter((c) => keep.has(c.position));
  const [w2, h2] = size(toSvg(r));
  assert.ok(w2 < w && h2 < h, `${w2}x${h2} < ${w}x${h}`);
  checkFigure(r, toSvg(r));
});

test("PNG: signature, plausible size, not blank, cells drawn in their colours, deterministic", async () => {
  const png = await toPng(lensReport);
  const img = decodePng(png);
  const svgText = await toPngSvg(lensReport);
  const svg = parseXml(svgText);
  const svgW = Number(svg.attrs.width);
  const svgH = Number(svg.attrs.height);
  const zoom = img.width / svgW;
  assert.ok(zoom > 0 && zoom <= 2, `zoom ${zoom}`);
  assert.ok(Math.abs(img.height - svgH * zoom) <= 1, `height ${img.height} vs ${svgH} x ${zoom}`);
  assert.ok(img.width >= 400 && img.width <= 16000 && img.height >= 300 && img.height <= 16000, `${img.width}x${img.height}`);
  // Not blank: many colours, a good share of non-white pixels.
  const colours = new Set<number>();
  let nonWhite = 0;
  for (let o = 0; o < img.pixels.length; o += img.channels) {
    const [r, g, b] = [img.pixels[o]!, img.pixels[o + 1]!, img.pixels[o + 2]!];
    colours.add((r << 16) | (g << 8) | b);
    if (r < 250 || g < 250 || b < 250) nonWhite++;
  }
  assert.ok(colours.size > 50, `${colours.size} distinct colours`);
  assert.ok(nonWhite / (img.width * img.height) > 0.2, "mostly drawn");
  // Every cell's corner pixel has the cell's fill colour (text sits in the middle).
  const cells = checkFigure(lensReport, svgText, coveredText(await pngFontCoverage()));
  for (const c of cells) {
    const px = rgbOf(img, (c.rect.x + 2) * zoom, (c.rect.y + 2) * zoom);
    const want = parseHex(c.fill);
    assert.ok(px.every((v, k) => Math.abs(v - want[k]!) <= 3), `cell ${c.row}@${c.position}: pixel ${px} vs fill ${want}`);
  }
  // Text is drawn: inside some cell there are pixels of its text colour.
  const hi = cells.find((c) => c.textFill === "#ffffff" && c.text.length > 0)!;
  let textPixels = 0;
  for (let y = hi.rect.y * zoom; y < (hi.rect.y + hi.rect.h) * zoom; y++)
    for (let x = hi.rect.x * zoom; x < (hi.rect.x + hi.rect.w) * zoom; x++) if (rgbOf(img, x, y).every((v) => v > 200)) textPixels++;
  assert.ok(textPixels > 5, "white text drawn on a dark cell");
  assert.deepEqual(await toPng(lensReport), png, "same bytes twice");
});

test("PNG: fonts cover the display alphabet and emoji; other characters become their bytes", async () => {
  const cover = await pngFontCoverage();
  for (const ch of "Aaé␣↵⟨⟩…жλ🐠🐴") assert.ok(cover.has(ch.codePointAt(0)!), `font covers ${ch}`);
  assert.ok(!cover.has(0x4e2d), "no CJK font is bundled");
  const r: LensReport = structuredClone(genReport);
  r.prompt = "中文?";
  r.final.positions[0]!.top[0]!.text = "中";
  r.tokens[r.positions[0]!]!.text = "␣🐠中";
  const svg = await toPngSvg(r);
  assert.ok(svg.includes("⟨E4 B8 AD E6 96 87⟩?"), "中文 as its UTF-8 bytes, one ⟨…⟩ per run");
  assert.ok(svg.includes(">⟨E4 B8 AD⟩</text>"), "in a cell too");
  assert.ok(svg.includes("␣🐠⟨E4 B8 AD⟩"), "covered characters kept");
  // Drawn text never holds it (tooltips, which resvg does not draw, keep the real characters).
  assert.ok(![...walk(parseXml(svg))].some((e) => e.name === "text" && textOf(e).includes("中")));
  const img = decodePng(await toPng(r));
  assert.ok(img.width > 0);
});
