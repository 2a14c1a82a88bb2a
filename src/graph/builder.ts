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

export type ElemType = "float32" | "int64" | "int32" | "bool";

export const ONNX_ELEM_TYPE: Record<ElemType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
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
}

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

  constructor(readonly name: string) {}

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

  /** An fp32 weight stored in an external file (zero copy: onnxruntime maps or reads it). */
  weight(name: string, ext: ExternalWeight): Value {
    this.initializers.push({
      name,
      dataType: onnx.TensorProto.DataType.FLOAT,
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
  constant(values: number[] | Float32Array, type: "float32" | "int64" = "float32", shape?: number[]): Value {
    const dims = shape ?? [values.length];
    const key = `${type}:${dims.join("x")}:${Array.from(values).join(",")}`;
    const existing = this.constants.get(key);
    if (existing) return existing;
    const name = this.fresh(type === "int64" ? "const_i" : "const_f");
    const tensor: onnxProto.onnx.ITensorProto = { name, dims, dataType: ONNX_ELEM_TYPE[type] };
    if (type === "int64") tensor.int64Data = Array.from(values);
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
    const node: onnxProto.onnx.INodeProto = {
      opType,
      name: base,
      input: inputs.map((v) => (v ? v.name : "")),
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
  /** x @ w^T for a weight stored [out, in] (PyTorch Linear layout), plus optional bias. */
  linear(x: Value, w: Value, bias?: Value): Value {
    return this.op1("Gemm", [x, w, bias], { transB: 1 });
  }
  reshape(x: Value, shape: number[]): Value { return this.op1("Reshape", [x, this.ints(shape)]); }
  transpose(x: Value, perm: number[]): Value { return this.op1("Transpose", [x], { perm }); }
  concat(values: Value[], axis: number): Value { return this.op1("Concat", values, { axis }); }
  unsqueeze(x: Value, axes: number[]): Value { return this.op1("Unsqueeze", [x, this.ints(axes)]); }
  gather(data: Value, indices: Value, axis = 0): Value { return this.op1("Gather", [data, indices], { axis }); }
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
