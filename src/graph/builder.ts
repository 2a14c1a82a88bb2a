/**
 * A small graph-building API: model code calls `g.matmul(x, w)`, `g.add(a, b)` ... as if it were
 * running a forward pass, and the builder records ONNX nodes. Shapes are not tracked here;
 * onnxruntime infers them when the session is created. See `onnx.ts` for serialisation.
 */
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;

/** A value flowing through the graph: only its name matters to ONNX. */
export interface Value {
  readonly name: string;
}

export type ElemType = "float32" | "float16" | "bfloat16" | "int64" | "int32" | "bool" | "uint8" | "int8";

export const ONNX_ELEM_TYPE: Record<ElemType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float16: onnx.TensorProto.DataType.FLOAT16,
  bfloat16: onnx.TensorProto.DataType.BFLOAT16,
  uint8: onnx.TensorProto.DataType.UINT8,
  int8: onnx.TensorProto.DataType.INT8,
  int64: onnx.TensorProto.DataType.INT64,
  int32: onnx.TensorProto.DataType.INT32,
  bool: onnx.TensorProto.DataType.BOOL,
};

/** A weight whose bytes live in a file next to the model (external data, never copied into the proto). */
export interface ExternalWeight {
  /** Path relative to the directory the .onnx file is written to. */
  location: string;
  offset: number;
  length: number;
  shape: number[];
  /** A 16-bit matrix kept 16-bit (see `halfWeight`); fp32 when absent. */
  half?: "float16" | "bfloat16";
}

/**
 * A matrix [N, K] kept block-quantized (see formats/block-quant.ts, CompactQuantized) as 4-bit
 * blocks of `blockSize` along K: W = scale * (q - z) + min. With `twoPlanes` (the 8-bit formats)
 * each row holds a high and a low plane, W = scale * (16 * (high - zh) + (low - zl)) + min. The
 * scales and mins are stored as the file's codes and computed by the graph at load.
 */
export interface QuantizedExternal {
  blockSize: number;
  shape: number[];
  twoPlanes: boolean;
  /** One byte per weight, zero point 128 (MatMulNBits `bits` 8): always multiplied on the int8 path. */
  bytes8?: boolean;
  /** [N, planes * K / blockSize, blockSize / 2]; bytes8: [N, K / blockSize, blockSize] */
  data: ExternalWeight;
  /** fp16 [N, K / blockSize / group] */
  d: ExternalWeight;
  group: number;
  sc?: ExternalWeight & { signed: boolean };
  /** fp16 [N, blocks] */
  m?: ExternalWeight;
  /** fp16 [N, groups] (negated d_min) and uint8 [N, blocks]: mins negDmin * mc. */
  negDmin?: ExternalWeight;
  mc?: ExternalWeight;
  /** Each plane's zero point (high first); [8] is MatMulNBits' default. */
  zeroPoints: number[];
  /** Bytes onnxruntime holds for it once loaded with its fp32 scales and mins held, for memory planning. */
  residentBytes: number;
  /**
   * Make the fp32 scales and mins from the codes at each run, next to their use, instead of once at
   * load (the store decides per model: weight-store.ts scalesPerRun). Ignored with int8 activations.
   */
  scalesPerRun?: boolean;
}

export function isQuantizedExternal(ext: ExternalWeight | QuantizedExternal): ext is QuantizedExternal {
  return "blockSize" in ext;
}

/** A graph value standing for a quantized matrix: `linear` and `gather` use it as it is. */
export interface QuantizedValue extends Value {
  readonly quant: {
    blockSize: number;
    n: number;
    k: number;
    twoPlanes: boolean;
    bytes8: boolean;
    /** Where the planes and the scale codes lie (the scales and mins are made from the codes by the graph). */
    ext: QuantizedExternal;
    /** uint8 packed 4-bit zero points [N, planes * blocks / 2], absent for the default 8. */
    zeroPoints?: Value;
    /** Each plane's zero point as a number (what `zeroPoints` holds in every row). */
    planeZeroPoints: number[];
  };
}

/**
 * A 16-bit matrix (F16/BF16 file) kept 16-bit in memory: ops see it widened to fp32 by a Cast that
 * runs when the op runs, so only one matrix at a time exists as fp32. The Gather of embedding rows
 * widens only the rows it takes.
 */
export interface HalfValue extends Value {
  readonly half: { raw: Value };
}

export function isHalf(v: Value | undefined): v is HalfValue {
  return !!v && "half" in v;
}

export function isQuantized(v: Value | undefined): v is QuantizedValue {
  return !!v && "quant" in v;
}

/**
 * How quantized matrices are multiplied (MatMulNBits' accuracy level). "fp32" (level 0) computes in
 * fp32 from the dequantized blocks: exact weights, fp32 arithmetic, what the reference comparisons
 * need. "int8" (level 4) rounds the activations to int8 per block of 32, as llama.cpp does: about 2x
 * faster decoding on big models, not exact. Chosen per model (LoadOptions.int8, `--int8`);
 * LOGIT_LENS_INT8=1 makes "int8" the default.
 */
export type QuantizedArithmetic = "fp32" | "int8";

export function defaultQuantizedArithmetic(): QuantizedArithmetic {
  return process.env["LOGIT_LENS_INT8"] === "1" ? "int8" : "fp32";
}

/**
 * How many exact slices an fp32 activation is cut into for MatMulNBits' int8 path (`linear` with
 * `fewRows`): three leave a residual below fp32 rounding (four change nothing measurable), two
 * would leave 2e-5 of each block's largest element.
 */
const EXACT_SLICES = 3;

export interface LinearOptions {
  /**
   * The product runs on one row or a few (the head at the last position, a decoding step). A
   * quantized matrix in 4-bit planes then multiplies with int8 dot products over exact slices of x
   * instead of fp32 arithmetic: the same numbers within fp32 rounding, 1.6x faster for one row of
   * [14336 x 4096] Q4 (3.4 -> 2.1 ms), 1.9x for Gemma 3's head as two planes (27.3 -> 14.3 ms).
   * Three times the rows makes it about 2x slower at 64 rows, so many rows keep fp32 arithmetic.
   * (A matrix stored as one byte plane, `bytes8`, always takes the int8 path.)
   */
  fewRows?: boolean;
}

/** Rows of a matrix: gathered by index, or the contiguous range [start, end) (int64 scalars). */
type RowPick = { indices: Value } | { start: Value; end: Value };

type AttrValue = number | number[] | string | { float: number } | { floats: number[] };

export class GraphBuilder {
  readonly nodes: onnxProto.onnx.INodeProto[] = [];
  readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  /** Opset imports this graph needs: default domain plus any contrib domains used. */
  readonly domains = new Map<string, number>([["", 23]]);
  private counter = 0;
  private readonly constants = new Map<string, Value>();

  /** How this graph's quantized products compute; set it before adding quantized weights. */
  quantizedArithmetic: QuantizedArithmetic = defaultQuantizedArithmetic();

  constructor(readonly name: string) {}

  /**
   * Whether a quantized matrix's fp32 scales and mins are made from its codes at each run (the
   * codes are 0.5 bits per weight, the fp32 arrays 2 bits for the 4-bit K-quants). MatMulNBits'
   * int8 path packs the scales at load, so it needs them constant.
   */
  private scalesPerRun(ext: QuantizedExternal): boolean {
    return ext.scalesPerRun === true && this.quantizedArithmetic === "fp32";
  }

  private fresh(hint: string): string {
    return `${hint}_${this.counter++}`;
  }

  input(name: string, type: ElemType, shape: (number | string)[]): Value {
    this.inputs.push(valueInfo(name, type, shape));
    return { name };
  }

  /** Marks `value` as a graph output under `name` (an Identity node renames it when needed). */
  output(value: Value, name: string, type: ElemType = "float32"): void {
    if (value.name !== name) this.nodes.push({ opType: "Identity", input: [value.name], output: [name], name });
    this.outputs.push(valueInfo(name, type, undefined));
  }

  /**
   * A quantized matrix: its planes as an external initializer (MatMulNBits packs them at load), and
   * its scale codes, from which the graph makes the fp32 scales and mins (`scalesAndMins`).
   */
  quantizedWeight(name: string, ext: QuantizedExternal): QuantizedValue {
    const [n, k] = ext.shape as [number, number];
    const blocks = k / ext.blockSize;
    const planes = ext.twoPlanes ? 2 : 1;
    const codes = [ext.d, ext.sc, ext.m, ext.negDmin, ext.mc].reduce((sum, c) => sum + (c?.length ?? 0), 0);
    // What a session holds for it (read by graph/slice.ts externalBytes for memory planning): the
    // planes and, when the scales are expanded at each run, only the codes.
    this.weight(name, ext.data, "uint8", `resident=${this.scalesPerRun(ext) ? ext.data.length + codes : ext.residentBytes}`);
    let zeroPoints: Value | undefined;
    if (!ext.bytes8 && ext.zeroPoints.some((z) => z !== 8)) {
      // Every row has the same pattern: each plane's blocks, two 4-bit zero points per byte.
      // MatMulNBits only takes zero points that are constant at load (folded from this Expand).
      const perRow = Array.from({ length: planes * blocks }, (_, b) => ext.zeroPoints[Math.floor(b / blocks)]!);
      const packed = Array.from({ length: Math.ceil(perRow.length / 2) }, (_, j) => perRow[2 * j]! | ((perRow[2 * j + 1] ?? 0) << 4));
      zeroPoints = this.op1("Expand", [this.constant(packed, "uint8", [1, packed.length]), this.ints([n, packed.length])]);
    }
    return { name, quant: { blockSize: ext.blockSize, n, k, twoPlanes: ext.twoPlanes, bytes8: ext.bytes8 === true, ext, zeroPoints, planeZeroPoints: ext.zeroPoints } };
  }

  /** Updates the bytes a session holds for initializer `name` (graph/slice.ts externalBytes reads it). */
  private noteResident(name: string, bytes: number): void {
    const t = this.initializers.find((i) => i.name === name);
    if (t) t.docString = `resident=${bytes}`;
  }

  private readonly codeValues = new Map<string, Value>();
  /**
   * One scale-code array of a quantized matrix. `perRun`: also declared a graph input (an
   * overridable default nobody feeds), which keeps onnxruntime from folding what is computed from
   * it, so the fp32 scales are made next to their use at each run and never all held at once.
   * Otherwise a plain initializer: what is computed from it is folded once, at load.
   */
  private code(matrix: string, suffix: string, ext: ExternalWeight, type: ElemType, perRun: boolean): Value {
    const name = perRun ? `${matrix}.${suffix}` : `${matrix}.${suffix}.at_load`;
    let v = this.codeValues.get(name);
    if (!v) {
      v = this.weight(name, ext, type, "resident=0");
      if (perRun) this.inputs.push(valueInfo(name, type, ext.shape));
      this.codeValues.set(name, v);
    }
    return v;
  }

  private readonly expandedScales = new Map<string, { scales: Value; mins?: Value }>();
  /**
   * fp32 scales [rows, planes * blocks] (`onePlane`: [rows, blocks], the scale both planes share)
   * and mins [rows, blocks] of a quantized matrix, from its codes: every row (`rows` absent) or
   * the picked `rows`. Each array is made by one op (a Cast,
   * or a DequantizeLinear that multiplies codes by block scales and casts in one step): when they
   * are folded at load, onnxruntime keeps every folded intermediate until the whole graph is
   * optimised (a chain of ops per array peaked at 13.5 GB instead of 7.8 on the 8B shape).
   */
  private scalesAndMins(w: QuantizedValue, perRun: boolean, rows?: RowPick, onePlane = false): { scales: Value; mins?: Value } {
    const key = `${w.name}/${perRun}/${onePlane}`;
    const known = rows ? undefined : this.expandedScales.get(key);
    if (known) return known;
    const ext = w.quant.ext;
    const f32 = (v: Value) => this.op1("Cast", [v], { to: onnx.TensorProto.DataType.FLOAT });
    const pick = (v: Value) => (rows ? this.pickRows(v, rows) : v);
    const code = (suffix: string, e: ExternalWeight, type: ElemType) => pick(this.code(w.name, suffix, e, type, perRun));
    // Two planes share each block's scale: the (small) codes are repeated before they are widened,
    // so the only fp32 array made is the final [N, 2 * blocks] (measured: 0.2 GB less at load on
    // the 8B shape, whose Q6_K tensors are two-plane with blocks of 16).
    const twice = (v: Value) => (ext.twoPlanes && !onePlane ? this.concat([v, v], 1) : v);
    // codes x their group's scale. Folded at load: one DequantizeLinear (one array, no
    // intermediates). Per run: a Cast and a broadcast Mul, twice as fast as onnxruntime's blocked
    // DequantizeLinear (measured: 1.0 vs 0.5 G elements/s on 2 threads), which matters when one
    // token's run reads every matrix once.
    const blockScaled = (codes: Value, groupScale: Value): Value =>
      perRun
        ? this.reshape(this.mul(this.reshape(f32(codes), [0, -1, ext.group]), this.unsqueeze(groupScale, [2])), [0, -1])
        : this.op1("DequantizeLinear", [codes, groupScale], { axis: 1, block_size: ext.group });
    const d = f32(twice(code("d", ext.d, "float16"))); // [rows, planes * groups]
    const scales = ext.sc ? blockScaled(twice(code("sc", ext.sc, ext.sc.signed ? "int8" : "uint8")), d) : d;
    let mins: Value | undefined;
    if (ext.m) mins = f32(code("m", ext.m, "float16"));
    if (ext.negDmin && ext.mc) mins = blockScaled(code("mc", ext.mc, "uint8"), f32(code("neg_dmin", ext.negDmin, "float16")));
    const made = { scales, mins };
    if (!rows) this.expandedScales.set(key, made);
    return made;
  }

  /**
   * A 16-bit matrix kept 16-bit: the initializer is also declared a graph input (an overridable
   * default that callers never feed), which keeps onnxruntime from folding its Cast to fp32 at
   * load; the Cast then runs next to each use.
   */
  halfWeight(name: string, ext: ExternalWeight, type: "float16" | "bfloat16"): HalfValue {
    const raw = this.weight(`${name}.${type}`, ext, type);
    this.inputs.push(valueInfo(raw.name, type, ext.shape));
    return { name: raw.name, half: { raw } };
  }

  private widen(v: Value): Value {
    return this.op1("Cast", [v], { to: onnx.TensorProto.DataType.FLOAT });
  }

  /** A weight stored in an external file (zero copy: onnxruntime maps or reads it). */
  weight(name: string, ext: ExternalWeight, type: ElemType = "float32", docString?: string): Value {
    this.initializers.push({
      name,
      docString,
      dataType: ONNX_ELEM_TYPE[type],
      dims: ext.shape,
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: "location", value: ext.location },
        { key: "offset", value: String(ext.offset) },
        { key: "length", value: String(ext.length) },
      ],
    });
    return { name };
  }

  /** A small constant embedded in the graph (shapes, axes, scalars). Deduplicated by content. */
  constant(values: number[] | Float32Array, type: "float32" | "int64" | "uint8" = "float32", shape?: number[]): Value {
    const dims = shape ?? [values.length];
    const key = `${type}:${dims.join("x")}:${Array.from(values).join(",")}`;
    const existing = this.constants.get(key);
    if (existing) return existing;
    const name = this.fresh(type === "float32" ? "const_f" : "const_i");
    const tensor: onnxProto.onnx.ITensorProto = { name, dims, dataType: ONNX_ELEM_TYPE[type] };
    if (type === "int64") tensor.int64Data = Array.from(values);
    else if (type === "uint8") tensor.int32Data = Array.from(values); // ONNX stores uint8 in int32_data
    else tensor.floatData = Array.from(values);
    this.initializers.push(tensor);
    const value = { name };
    this.constants.set(key, value);
    return value;
  }

  scalar(value: number): Value {
    return this.constant([value], "float32", []);
  }

  ints(values: number[]): Value {
    return this.constant(values, "int64");
  }

  /** Records one node; returns its outputs. */
  op(opType: string, inputs: (Value | undefined)[], attrs: Record<string, AttrValue> = {}, options: { outputs?: number; domain?: string; name?: string } = {}): Value[] {
    const count = options.outputs ?? 1;
    const base = options.name ?? this.fresh(opType);
    const outputNames = Array.from({ length: count }, (_, i) => (count === 1 ? base : `${base}:${i}`));
    // A quantized matrix in any op other than linear/gather is expanded to fp32 inside the graph
    // (onnxruntime folds that once at load): correct everywhere, compact where it matters.
    const names = inputs.map((v) => (v ? (isQuantized(v) ? this.dequantized(v).name : isHalf(v) ? this.widen(v.half.raw).name : v.name) : ""));
    const node: onnxProto.onnx.INodeProto = {
      opType,
      name: base,
      input: names,
      output: outputNames,
      attribute: Object.entries(attrs).map(([key, value]) => attribute(key, value)),
    };
    if (options.domain) {
      node.domain = options.domain;
      if (!this.domains.has(options.domain)) this.domains.set(options.domain, 1);
    }
    this.nodes.push(node);
    return outputNames.map((name) => ({ name }));
  }

  op1(opType: string, inputs: (Value | undefined)[], attrs: Record<string, AttrValue> = {}, name?: string): Value {
    return this.op(opType, inputs, attrs, { name })[0]!;
  }

  // Elementwise and shape ops used by the architectures. Thin wrappers so model code reads like math.
  add(a: Value, b: Value): Value { return this.op1("Add", [a, b]); }
  sub(a: Value, b: Value): Value { return this.op1("Sub", [a, b]); }
  mul(a: Value, b: Value): Value { return this.op1("Mul", [a, b]); }
  div(a: Value, b: Value): Value { return this.op1("Div", [a, b]); }
  neg(a: Value): Value { return this.op1("Neg", [a]); }
  tanh(a: Value): Value { return this.op1("Tanh", [a]); }
  sigmoid(a: Value): Value { return this.op1("Sigmoid", [a]); }
  sqrt(a: Value): Value { return this.op1("Sqrt", [a]); }
  exp(a: Value): Value { return this.op1("Exp", [a]); }
  matmul(a: Value, b: Value): Value { return this.op1("MatMul", [a, b]); }
  /**
   * x @ w^T for a weight stored [out, in] (PyTorch Linear layout), plus optional bias. x is
   * [rows, in]. A quantized w runs as MatMulNBits, with its mins added as blockSums(x) @ mins^T.
   */
  linear(x: Value, w: Value, bias?: Value, options: LinearOptions = {}): Value {
    if (isHalf(w)) return this.op1("Gemm", [x, this.widen(w.half.raw), bias], { transB: 1 });
    if (!isQuantized(w)) return this.op1("Gemm", [x, w, bias], { transB: 1 });
    const { blockSize, n, k, twoPlanes, bytes8, zeroPoints } = w.quant;
    // Exact arithmetic on few rows runs on the int8 dot products, over exact slices of x; so does a
    // byte plane on any number of rows (MatMulNBits' 8-bit fp32 path expands the whole matrix on
    // every call: 617 ms for Gemma 3's head on one row).
    const sliced = (options.fewRows === true || bytes8) && this.quantizedArithmetic === "fp32";
    const { scales, mins } = this.scalesAndMins(w, !sliced && this.scalesPerRun(w.quant.ext));
    // The int8 path packs its scales at load: the matrix then holds them even where its codes were
    // noted as expanded at each run (quantizedWeight), so memory planning counts them.
    if (sliced && this.scalesPerRun(w.quant.ext)) this.noteResident(w.name, w.quant.ext.residentBytes);
    const rows = sliced ? this.exactInt8Slices(x, k, blockSize) : x; // sliced: [EXACT_SLICES * rows, k]
    // Two planes: one product over [16x, x] against [high, low] (16x is exact in floating point).
    const a = twoPlanes ? this.concat([this.mul(rows, this.scalar(16)), rows], -1) : rows;
    const kA = twoPlanes ? 2 * k : k;
    const int8Products = sliced || this.quantizedArithmetic === "int8";
    let y = this.op("MatMulNBits", [a, { name: w.name }, scales, zeroPoints], { K: kA, N: n, bits: bytes8 ? 8 : 4, block_size: blockSize, accuracy_level: int8Products ? 4 : 0 }, { domain: "com.microsoft" })[0]!;
    // The slices' products summed: [slices, rows, n] -> [rows, n].
    if (sliced) y = this.reduceSum(this.reshape(y, [EXACT_SLICES, -1, n]), [0], 0);
    if (mins) {
      // Gemm's C input adds y in the same pass as the product (no extra pass over [rows, N]).
      const blockSums = this.reduceSum(this.reshape(x, [0, k / blockSize, blockSize]), [2], 0); // [rows, blocks]
      y = this.op1("Gemm", [blockSums, mins, y], { transB: 1 });
    }
    return bias ? this.add(y, bias) : y;
  }

  /**
   * x ([rows, k]) as EXACT_SLICES slices stacked along the rows, x = x1 + x2 + x3 + r: per block of
   * `blockSize` along k (the blocks MatMulNBits' int8 path rounds its input in), slice c is s_c
   * times whole numbers of at most 127 in size, with s_c = max|residual| / 127, so that the int8
   * path's own rounding of it (scale max / 127, round) gives back the same whole numbers: its
   * integer dot products are then exact, and only the block sums are rounded, in fp32. Each
   * residual x - (x1 + ...) is exact in fp32 (the slice is the residual rounded to a multiple of
   * s_c), and after three slices it is at most max|x| / (127 * 254 * 254) per block, below fp32's
   * own rounding of the block's largest element. Measured on Gemma 3's 262k x 640 head with random
   * Q8_0 weights: max error against float64 1.26e-5 (logits up to 54), fp32 arithmetic 1.76e-5, two
   * slices 2.5e-3, int8 activations 0.6.
   */
  private exactInt8Slices(x: Value, k: number, blockSize: number): Value {
    const blocked = this.reshape(x, [0, -1, blockSize]); // [rows, blocks, blockSize]
    const slices: Value[] = [];
    let residual = blocked;
    for (let c = 0; c < EXACT_SLICES; c++) {
      const largest = this.op1("ReduceMax", [this.op1("Abs", [residual]), this.ints([2])], { keepdims: 1 });
      // A block of zeros gets a tiny scale instead of 0 (x / 0 is NaN); its slice is zeros.
      const scale = this.mul(this.op1("Max", [largest, this.scalar(1e-30)]), this.scalar(1 / 127));
      const slice = this.mul(this.op1("Round", [this.div(residual, scale)]), scale);
      slices.push(slice);
      if (c < EXACT_SLICES - 1) residual = this.sub(residual, slice);
    }
    return this.reshape(this.concat(slices, 0), [-1, k]);
  }

  /** Rows of a quantized matrix, dequantized: `rows` int64 indices, or every row when absent. */
  private dequantizeRows(w: QuantizedValue, rows?: RowPick): Value {
    const { blockSize, k, twoPlanes, planeZeroPoints } = w.quant;
    // Gathered rows are made at each run from their own codes; the whole matrix (an op other than
    // linear needs it) is folded to fp32 once, at load.
    const { scales, mins } = this.scalesAndMins(w, rows !== undefined && this.scalesPerRun(w.quant.ext), rows, true); // [r, blocks]
    const blocks = k / blockSize;
    const pick = (v: Value) => (rows ? this.pickRows(v, rows) : v);
    // [r, planes * blocks, blockSize / 2] bytes, two 4-bit values per byte, the low nibble first
    // (bytes8: [r, blocks, blockSize], one value per byte)
    const bytes = pick({ name: w.name });
    const u8 = (v: number) => this.constant([v], "uint8", []);
    const and = (x: Value, m: number) => this.op1("BitwiseAnd", [x, u8(m)]);
    const shift = (x: Value, n: number, direction: "LEFT" | "RIGHT") => this.op1("BitShift", [x, u8(n)], { direction });
    // The codes of each byte's two elements (even, odd), still one byte each: cheap passes. With two
    // planes the format's own code u = 16 high + low is put back together here, in bytes, so that
    // only three passes over fp32 follow (Cast, Sub, Mul), not ten. `codes`: [r, blocks, blockSize].
    let codes: Value;
    let zeroPoint: number;
    if (w.quant.bytes8) {
      codes = bytes; // one byte per weight already
      zeroPoint = planeZeroPoints[0]!;
    } else {
      let even: Value;
      let odd: Value;
      if (twoPlanes) {
        const [high, low] = this.split(bytes, [blocks, blocks], 1); // each [r, blocks, blockSize / 2]
        even = this.op1("BitwiseOr", [shift(and(high!, 15), 4, "LEFT"), and(low!, 15)]);
        odd = this.op1("BitwiseOr", [and(high!, 0xf0), shift(low!, 4, "RIGHT")]);
        zeroPoint = 16 * planeZeroPoints[0]! + planeZeroPoints[1]!;
      } else {
        even = and(bytes, 15);
        odd = shift(bytes, 4, "RIGHT");
        zeroPoint = planeZeroPoints[0]!;
      }
      codes = this.reshape(this.concat([this.unsqueeze(even, [3]), this.unsqueeze(odd, [3])], 3), [-1, blocks, blockSize]);
    }
    const q = this.op1("Cast", [codes], { to: onnx.TensorProto.DataType.FLOAT });
    let values = this.mul(this.sub(q, this.scalar(zeroPoint)), this.unsqueeze(scales, [2])); // [r, blocks, blockSize]
    if (mins) values = this.add(values, this.unsqueeze(mins, [2]));
    return this.reshape(values, [-1, k]);
  }

  private readonly dequantizedCache = new Map<string, Value>();
  private dequantized(w: QuantizedValue): Value {
    let v = this.dequantizedCache.get(w.name);
    if (!v) {
      v = this.dequantizeRows(w);
      this.dequantizedCache.set(w.name, v);
    }
    return v;
  }
  reshape(x: Value, shape: number[]): Value { return this.op1("Reshape", [x, this.ints(shape)]); }
  transpose(x: Value, perm: number[]): Value { return this.op1("Transpose", [x], { perm }); }
  concat(values: Value[], axis: number): Value { return this.op1("Concat", values, { axis }); }
  unsqueeze(x: Value, axes: number[]): Value { return this.op1("Unsqueeze", [x, this.ints(axes)]); }
  /** Rows (axis 0) of a matrix, quantized or not: the embedding lookup. */
  gather(data: Value, indices: Value, axis = 0): Value {
    if (isQuantized(data) && axis === 0) return this.dequantizeRows(data, { indices });
    if (isHalf(data)) return this.widen(this.op1("Gather", [data.half.raw, indices], { axis }));
    return this.op1("Gather", [data, indices], { axis });
  }
  /**
   * Rows [start, end) (int64 scalars) of a matrix as fp32, quantized or not: a contiguous Slice of
   * the stored arrays, cheaper than a Gather of the same rows (the lens reads its unembedding a
   * tile of rows at a time).
   */
  sliceRows(data: Value, start: Value, end: Value): Value {
    if (isQuantized(data)) return this.dequantizeRows(data, { start, end });
    if (isHalf(data)) return this.widen(this.pickRows(data.half.raw, { start, end }));
    return this.pickRows(data, { start, end });
  }

  private pickRows(v: Value, rows: RowPick): Value {
    if ("indices" in rows) return this.op1("Gather", [v, rows.indices], { axis: 0 });
    const one = (x: Value) => this.reshape(x, [1]);
    return this.op1("Slice", [v, one(rows.start), one(rows.end), this.ints([0])]);
  }

  softmax(x: Value, axis = -1): Value { return this.op1("Softmax", [x], { axis }); }
  logSoftmax(x: Value, axis = -1): Value { return this.op1("LogSoftmax", [x], { axis }); }
  reduceMean(x: Value, axes: number[], keepdims = 1): Value { return this.op1("ReduceMean", [x, this.ints(axes)], { keepdims }); }
  reduceSum(x: Value, axes: number[], keepdims = 1): Value { return this.op1("ReduceSum", [x, this.ints(axes)], { keepdims }); }
  slice(x: Value, starts: number[], ends: number[], axes: number[]): Value {
    return this.op1("Slice", [x, this.ints(starts), this.ints(ends), this.ints(axes)]);
  }
  split(x: Value, sizes: number[], axis: number): Value[] {
    return this.op("Split", [x, this.ints(sizes)], { axis }, { outputs: sizes.length });
  }

  /** Serialises to a ModelProto (weights stay external: the proto is small). */
  toModelProto(): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 10,
      producerName: "logit-lens",
      opsetImport: Array.from(this.domains, ([domain, version]) => ({ domain, version })),
      graph: {
        name: this.name,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

function valueInfo(name: string, type: ElemType, shape: (number | string)[] | undefined): onnxProto.onnx.IValueInfoProto {
  const tensorType: onnxProto.onnx.TypeProto.ITensor = { elemType: ONNX_ELEM_TYPE[type] };
  if (shape) tensorType.shape = { dim: shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) };
  return { name, type: { tensorType } };
}

function attribute(name: string, value: AttrValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === "string") return { name, type: T.STRING, s: new TextEncoder().encode(value) };
  if (typeof value === "number") {
    if (!Number.isInteger(value)) throw new Error(`attribute ${name}: use {float: x} for float attributes`);
    return { name, type: T.INT, i: value };
  }
  if (Array.isArray(value)) return { name, type: T.INTS, ints: value };
  if ("float" in value) return { name, type: T.FLOAT, f: value.float };
  return { name, type: T.FLOATS, floats: value.floats };
}
