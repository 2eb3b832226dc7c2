/**
 * A GGUF vocabulary as llama.cpp's llama_vocab::impl::load sees it (src/llama-vocab.cpp): token texts,
 * scores, attributes, merges, special ids and the flags that steer tokenization.
 *
 * Metadata keys read (all under tokenizer.ggml.): model, pre, tokens, scores, token_type, merges,
 * bos/eos/eot/eom/unknown_token_id, add_bos_token, add_space_prefix; and tokenizer.chat_template.
 */
import type { GgufValue } from "../io/gguf.js";
import { FormatError, UnsupportedError } from "../errors.js";
import { PRE_TOKENIZERS, type PreTokenizer } from "./pre-tokenize.js";

/** llama.cpp's token attributes (llama.h LLAMA_TOKEN_ATTR_*). */
export const ATTR = {
  unknown: 1 << 0,
  unused: 1 << 1,
  normal: 1 << 2,
  control: 1 << 3,
  userDefined: 1 << 4,
  byte: 1 << 5,
} as const;

/** tokenizer.ggml.token_type values (llama.h LLAMA_TOKEN_TYPE_*) -> attributes; anything else is "undefined" (0). */
const TYPE_TO_ATTR: Record<number, number> = {
  1: ATTR.normal,
  2: ATTR.unknown,
  3: ATTR.control,
  4: ATTR.userDefined,
  5: ATTR.unused,
  6: ATTR.byte,
};

/** Token texts llama.cpp treats as end of generation (and forces to control type), from llama-vocab.cpp. */
export const EOG_TEXTS: ReadonlySet<string> = new Set([
  "<|eot_id|>",
  "<|im_end|>",
  "<|end|>",
  "<|return|>",
  "<|call|>",
  "<|flush|>",
  "<|calls|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "</s>",
  "<|eom_id|>",
  "<EOT>",
  "_<EOT>",
  "[EOT]",
  "[EOS]",
  "<|end_of_text|>",
  "<end_of_utterance>",
  "<eos>",
  "<turn|>",
  "<|tool_response>",
  "<｜end▁of▁sentence｜>",
  "[e~[",
]);
/** Texts of fill-in-the-middle tokens; llama.cpp forces these to control type too. */
const FIM_TEXTS = new Set([
  "<|fim_prefix|>",
  "<fim-prefix>",
  "<fim_prefix>",
  "<｜fim▁begin｜>",
  "<PRE>",
  "▁<PRE>",
  "<|code_prefix|>",
  "<|prefix|>",
  "<|fim_suffix|>",
  "<fim-suffix>",
  "<fim_suffix>",
  "<｜fim▁hole｜>",
  "<SUF>",
  "▁<SUF>",
  "<|code_suffix|>",
  "<|suffix|>",
  "<|fim_middle|>",
  "<fim-middle>",
  "<fim_middle>",
  "<｜fim▁end｜>",
  "<MID>",
  "▁<MID>",
  "<|code_middle|>",
  "<|middle|>",
  "<|fim_pad|>",
  "<fim-pad>",
  "<fim_pad>",
  "<PAD>",
  "[PAD]",
  "<|fim_repo|>",
  "<|repo_name|>",
  "<fim-repo>",
  "<REPO>",
  "<reponame>",
  "<|file_sep|>",
]);

const utf8 = new TextEncoder();

export interface Vocab {
  /** "spm": tokenizer.ggml.model "llama"; "bpe": "gpt2". */
  kind: "spm" | "bpe";
  /** BPE only: the pre-tokenizer named by tokenizer.ggml.pre. */
  pre: PreTokenizer | null;
  /** id -> text (empty texts replaced by "[EMPTY_<id>]" as llama.cpp does). */
  texts: string[];
  scores: Float32Array; // (V)
  attrs: Uint16Array; // (V), ATTR bits
  /** text -> id; the last id wins for duplicate texts, as in llama.cpp's token_to_id. */
  idOf: Map<string, number>;
  /** BPE merges: "left right" -> rank (the first occurrence wins). */
  mergeRank: Map<string, number>;
  bos: number | null;
  eos: number | null;
  unk: number | null;
  stopIds: Set<number>;
  addBos: boolean;
  /** tokenizer.ggml.add_space_prefix: SPM prepends a space to text at the start and after special tokens; detokenizing drops it. */
  addSpacePrefix: boolean;
  /** Tokens matched in the raw text before tokenization: control, user-defined and unknown, longest first. */
  specialIds: number[];
  chatTemplate: string | null;
}

export interface GgufVocabOptions {
  /** The file, for error messages. */
  source?: string;
  /** Collects what is accepted but worth saying (a special token id outside the vocabulary, ignored as llama.cpp does). */
  notes?: string[];
  /** The stored type of each value (GgufFile.types): scores must be floats, ids and token types integers. */
  types?: ReadonlyMap<string, string>;
}

/** The vocabulary in GGUF metadata. */
export function vocabFromGguf(metadata: Map<string, GgufValue>, options: GgufVocabOptions = {}): Vocab {
  const { source = "GGUF metadata", notes = [], types } = options;
  const formatError = (message: string) => new FormatError(`${source}: ${message}`);
  const expectType = (key: string, ok: (type: string) => boolean, wanted: string) => {
    const type = types?.get(key);
    if (type !== undefined && !ok(type)) throw formatError(`${key} must be stored as ${wanted}, found ${type}`);
  };
  const isInteger = (type: string) => /^(array of )?u?int(8|16|32|64)$/.test(type);
  expectType(
    "tokenizer.ggml.scores",
    (t) => t === "array of float32" || t === "array of float64",
    "an array of float32",
  );
  expectType("tokenizer.ggml.token_type", isInteger, "an array of int32");
  for (const key of ["bos", "eos", "unknown", "eot", "eom"])
    expectType(`tokenizer.ggml.${key}_token_id`, isInteger, "an integer (uint32)");
  const optional = <T extends "string" | "number" | "boolean">(key: string, type: T) =>
    optionalValue(metadata, key, type, source);
  // Step 1: the tokenizer type and its defaults.
  const model = metadata.get("tokenizer.ggml.model");
  if (model === undefined) throw formatError(`metadata has no tokenizer.ggml.model; expected "llama" or "gpt2"`);
  if (typeof model !== "string")
    throw formatError(`tokenizer.ggml.model must be a string such as "llama" or "gpt2", found ${describe(model)}`);
  if (model !== "llama" && model !== "gpt2") {
    throw new UnsupportedError(
      `${source}: tokenizer.ggml.model ${describe(model)} is not supported; kvslim supports "llama" (SentencePiece) and "gpt2" (byte-level BPE)`,
    );
  }
  const kind = model === "llama" ? "spm" : "bpe";
  let pre: PreTokenizer | null = null;
  let addBos = kind === "spm";
  if (kind === "bpe") {
    const preName = (optional("tokenizer.ggml.pre", "string") as string | undefined) ?? "default"; // llama.cpp: missing means default
    pre = PRE_TOKENIZERS[preName] ?? null;
    if (pre === null) {
      throw new UnsupportedError(
        `${source}: tokenizer.ggml.pre "${preName}" is not supported; kvslim supports ${Object.keys(PRE_TOKENIZERS)
          .map((k) => `"${k}"`)
          .join(", ")}`,
      );
    }
    addBos = pre.addBos;
  }

  // Step 2: tokens, scores, types.
  const texts = stringArray(metadata, "tokenizer.ggml.tokens", source, true);
  const n = texts.length;
  if (n === 0) throw formatError(`tokenizer.ggml.tokens is empty; a vocabulary needs at least one token`);
  const scoreValues = numberArray(metadata, "tokenizer.ggml.scores", source);
  const typeValues = numberArray(metadata, "tokenizer.ggml.token_type", source);
  for (const [key, values] of [
    ["tokenizer.ggml.scores", scoreValues],
    ["tokenizer.ggml.token_type", typeValues],
  ] as const) {
    if (values !== null && values.length !== n) {
      throw formatError(`${key} has ${values.length} entries but tokenizer.ggml.tokens has ${n}; they must match`);
    }
  }
  const badType = typeValues?.findIndex((t) => !Number.isInteger(t) || t < 0 || t > 6) ?? -1;
  if (badType >= 0) {
    throw formatError(
      `tokenizer.ggml.token_type[${badType}] is ${typeValues![badType]}; expected a token type from 0 to 6 (llama.h's LLAMA_TOKEN_TYPE_*)`,
    );
  }
  const scores = new Float32Array(n);
  const attrs = new Uint16Array(n).fill(ATTR.normal);
  const idOf = new Map<string, number>();
  for (let id = 0; id < n; id++) {
    if (texts[id] === "") texts[id] = `[EMPTY_${id}]`;
    idOf.set(texts[id], id);
    if (scoreValues !== null) scores[id] = scoreValues[id];
    if (typeValues !== null) attrs[id] = TYPE_TO_ATTR[typeValues[id]] ?? 0;
  }

  // Step 3: merges (BPE), "left right" split at the first space after the first character.
  const mergeRank = new Map<string, number>();
  if (kind === "bpe") {
    const merges = stringArray(metadata, "tokenizer.ggml.merges", source, false);
    if (merges === null) throw formatError(`a "gpt2" vocabulary needs tokenizer.ggml.merges; the metadata has none`);
    merges.forEach((merge, rank) => {
      // llama.cpp keys a merge without a space as ("", ""), which no pair of symbols can look up.
      if (merge.indexOf(" ", 1) > 0 && !mergeRank.has(merge)) mergeRank.set(merge, rank);
    });
  }

  // Step 4: special ids: defaults, overridden by the file when in range (llama.cpp ignores out-of-range ids).
  const inRange = (id: number | null) => (id !== null && Number.isInteger(id) && id >= 0 && id < n ? id : null);
  const special = (key: string, fallback: number | null) => {
    const id = optional(`tokenizer.ggml.${key}`, "number") as number | undefined;
    if (id !== undefined && inRange(id) === null) {
      const used = inRange(fallback);
      notes.push(
        `${source}: tokenizer.ggml.${key} ${id} is outside the vocabulary (0 to ${n - 1}); ${used === null ? "there is none" : `using ${used}`}, as llama.cpp does`,
      );
    }
    return id !== undefined && inRange(id) !== null ? id : inRange(fallback);
  };
  const bos = special("bos_token_id", kind === "spm" ? 1 : 11);
  const eos = special("eos_token_id", kind === "spm" ? 2 : 11);
  const unk = special("unknown_token_id", kind === "spm" ? 0 : null);
  const eot = special("eot_token_id", null);
  const eom = special("eom_token_id", null);
  addBos = (optional("tokenizer.ggml.add_bos_token", "boolean") as boolean | undefined) ?? addBos;
  const addSpacePrefix =
    (optional("tokenizer.ggml.add_space_prefix", "boolean") as boolean | undefined) ?? kind === "spm";

  // Step 5: end-of-generation tokens, found by text as llama.cpp does; they (and FIM tokens) become control tokens.
  const stopIds = new Set<number>();
  for (const [text, id] of idOf) {
    if (EOG_TEXTS.has(text)) stopIds.add(id);
    if (EOG_TEXTS.has(text) || FIM_TEXTS.has(text)) attrs[id] |= ATTR.control;
  }
  for (const id of [eos, eot, eom]) if (id !== null) stopIds.add(id);

  // Step 6: the special-token cache, longest UTF-8 text first (ties by id: llama.cpp's std::sort leaves them unspecified).
  const specialIds: number[] = [];
  for (let id = 0; id < n; id++) {
    if (attrs[id] & (ATTR.control | ATTR.userDefined | ATTR.unknown)) specialIds.push(id);
  }
  const bytes = new Map(specialIds.map((id) => [id, utf8.encode(texts[id]).length]));
  specialIds.sort((a, b) => bytes.get(b)! - bytes.get(a)! || a - b);

  const chatTemplate = (optional("tokenizer.chat_template", "string") as string | undefined) ?? null;
  return {
    kind,
    pre,
    texts,
    scores,
    attrs,
    idOf,
    mergeRank,
    bos,
    eos,
    unk,
    stopIds,
    addBos,
    addSpacePrefix,
    specialIds,
    chatTemplate,
  };
}

function optionalValue(
  metadata: Map<string, GgufValue>,
  key: string,
  type: "string" | "number" | "boolean",
  source: string,
): unknown {
  const value = metadata.get(key);
  if (value === undefined) return undefined;
  if (type === "number" && typeof value === "bigint") return Number(value);
  if (typeof value !== type) throw new FormatError(`${source}: ${key} must be a ${type}, found ${describe(value)}`);
  return value;
}

function stringArray(metadata: Map<string, GgufValue>, key: string, source: string, required: true): string[];
function stringArray(metadata: Map<string, GgufValue>, key: string, source: string, required: false): string[] | null;
function stringArray(
  metadata: Map<string, GgufValue>,
  key: string,
  source: string,
  required: boolean,
): string[] | null {
  const value = metadata.get(key);
  if (value === undefined) {
    if (required) throw new FormatError(`${source}: metadata has no ${key}; a tokenizer needs it`);
    return null;
  }
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
    throw new FormatError(`${source}: ${key} must be an array of strings, found ${describe(value)}`);
  }
  return [...(value as string[])];
}

function numberArray(metadata: Map<string, GgufValue>, key: string, source: string): number[] | null {
  const value = metadata.get(key);
  if (value === undefined) return null;
  if (!Array.isArray(value) || !value.every((v) => typeof v === "number")) {
    throw new FormatError(`${source}: ${key} must be an array of numbers, found ${describe(value)}`);
  }
  return value as number[];
}

function describe(value: GgufValue): string {
  if (Array.isArray(value)) return value.length === 0 ? "an empty array" : `an array of ${typeof value[0]}`;
  return typeof value === "string"
    ? `the string ${JSON.stringify(value.slice(0, 40))}`
    : `the ${typeof value} ${String(value).slice(0, 40)}`;
}
