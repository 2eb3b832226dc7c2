/**
 * A Hugging Face model directory's tokenizer: tokenizer.json through @huggingface/tokenizers, and
 * tokenizer_config.json / chat_template.jinja / generation_config.json for the special tokens, the BOS
 * default and the chat template.
 *
 * Special added tokens are matched by special-split.ts (so `parseSpecial: false` can leave them as text,
 * which the library cannot); the library sees only the non-special added tokens, which it always matches,
 * as llama.cpp does user-defined tokens. Decoding uses detokenize.ts with the pieces the tokenizer.json
 * decoder would produce (ByteLevel, or Metaspace / Replace("▁") with ByteFallback), so streaming works
 * the same as for GGUF vocabularies.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { FormatError, UnsupportedError, isInternalSlip, shownValue } from "../errors.js";
import { CHAR_TO_BYTE } from "./bpe.js";
import { detokenize, Detokenizer, hfCleanup, utf8Bytes, type PieceSource } from "./detokenize.js";
import { splitOnSpecialTokens, type SpecialToken } from "./special-split.js";
import type { DecodeOptions, EncodeOptions, StreamDecoder, TextTokenizer } from "./tokenizer.js";
import { EOG_TEXTS } from "./vocab.js";

type Json = Record<string, unknown>;
interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
}

/** The files of a tokenizer directory that hfTokenizer reads: tokenizer.json (required), then the optional ones. */
export const HF_TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "generation_config.json",
  "chat_template.jinja",
] as const;

export function hfTokenizer(dir: string): TextTokenizer {
  const file = path.join(dir, "tokenizer.json");
  const json = readJson(file, true);
  const config = readJson(path.join(dir, "tokenizer_config.json"), false) ?? {};
  const generation = readJson(path.join(dir, "generation_config.json"), false) ?? {};
  const templateFile = path.join(dir, "chat_template.jinja");
  const template = fs.existsSync(templateFile)
    ? fs.readFileSync(templateFile, "utf8")
    : chatTemplateOf(config, path.join(dir, "tokenizer_config.json"));
  return new HfTokenizer(file, json, config, generation, template);
}

class HfTokenizer implements TextTokenizer, PieceSource {
  readonly vocabSize: number;
  readonly bos: number | null;
  readonly eos: number | null;
  readonly stopIds: ReadonlySet<number>;
  readonly addBos: boolean;
  readonly stripFirstSpace: boolean;
  readonly cleanup: PieceSource["cleanup"];
  private readonly library: Tokenizer; // knows the non-special added tokens only
  private readonly file: string;
  private readonly added = new Map<number, AddedToken>();
  private readonly specials: SpecialToken[];
  private readonly decoder: "byte-level" | "metaspace";
  private readonly byteFallback: boolean;

  constructor(
    file: string,
    json: Json,
    config: Json,
    generation: Json,
    readonly chatTemplate: string | null,
  ) {
    // Step 1: added tokens; the special ones stay out of the library.
    const addedTokens = checkAddedTokens(json.added_tokens ?? [], file);
    checkModel(json.model, addedTokens, file);
    for (const [key, list] of COMPONENTS) checkComponent(json[key], key, list, file);
    for (const t of addedTokens) this.added.set(t.id, t);
    this.specials = addedTokens
      .filter((t) => t.special)
      .map((t) => ({ id: t.id, text: t.content, lstrip: t.lstrip, rstrip: t.rstrip }))
      .sort((a, b) => b.text.length - a.text.length || a.id - b.id);
    try {
      const plain = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...json };
      this.library = new Tokenizer({ ...plain, added_tokens: addedTokens.filter((t) => !t.special) }, config);
    } catch (e) {
      // The library's own messages name what it refused; its internal slips (a TypeError on a missing field) do not.
      const model = json.model as Json;
      const kind = typeof model.type === "string" ? `a ${model.type} model` : 'a model without a "type"';
      throw new UnsupportedError(
        `${file}: @huggingface/tokenizers cannot load it (${isInternalSlip(e) ? `${kind} whose fields are missing or of the wrong type` : (e as Error).message})`,
      );
    }
    this.vocabSize = addedTokens.reduce((n, t) => Math.max(n, t.id + 1), this.library.model!.vocab.length);
    this.file = file;

    // Step 2: how pieces decode, from the tokenizer.json decoder.
    const decoders = flatten(json.decoder as Json | null, "decoders");
    const types = decoders.map((d) => d.type);
    const metaspace = decoders.find((d) => d.type === "Metaspace");
    const replacesMetaspace = decoders.some((d) => d.type === "Replace" && (d.pattern as Json)?.String === "\u2581");
    if (types.includes("ByteLevel")) this.decoder = "byte-level";
    else if (metaspace || replacesMetaspace) this.decoder = "metaspace";
    else {
      throw new UnsupportedError(
        `${file}: decoder [${types.join(", ")}] is not supported; kvslim decodes ByteLevel and Metaspace/ByteFallback tokenizers`,
      );
    }
    this.byteFallback = types.includes("ByteFallback") || (json.model as Json).byte_fallback === true;
    const prependScheme = metaspace?.prepend_scheme ?? (metaspace?.add_prefix_space === false ? "never" : "always");
    const stripped = decoders.some((d) => d.type === "Strip" && Number(d.start) > 0);
    this.stripFirstSpace = stripped || (metaspace !== undefined && prependScheme !== "never");
    this.cleanup = config.clean_up_tokenization_spaces === false ? null : hfCleanup; // tokenizers.js defaults to true

    // Step 3: special ids and the BOS default (the first token of the post-processor's template).
    const processors = flatten(json.post_processor as Json | null, "processors");
    const template = processors.find((p) => p.type === "TemplateProcessing");
    const leading = (template?.single as Json[] | undefined)?.[0]?.SpecialToken as Json | undefined;
    const generationEos = [generation.eos_token_id].flat().map(numberOrNull);
    this.bos = this.idOfToken(config.bos_token) ?? this.idOfToken(leading?.id) ?? numberOrNull(generation.bos_token_id);
    this.eos = this.idOfToken(config.eos_token) ?? generationEos[0] ?? null;
    this.addBos =
      typeof config.add_bos_token === "boolean"
        ? config.add_bos_token
        : leading !== undefined && this.idOfToken(leading.id) === this.bos;
    const stops = [this.eos, ...generationEos];
    for (const t of addedTokens) if (EOG_TEXTS.has(t.content)) stops.push(t.id); // as llama.cpp finds them
    this.stopIds = new Set(stops.filter((id): id is number => id !== null));
    // The library builds most components lazily: run them once so a broken one fails here, named.
    this.decode(this.encode("Hello, world! 123", { addBos: false }));
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const out: number[] = [];
    if (options.addBos ?? this.addBos) {
      if (this.bos === null) throw new UnsupportedError(`cannot add BOS: this tokenizer names no BOS token`);
      out.push(this.bos);
    }
    for (const fragment of splitOnSpecialTokens(text, options.parseSpecial ? this.specials : [])) {
      if ("id" in fragment) out.push(fragment.id);
      else for (const id of this.libraryEncode(fragment.text)) out.push(id); // no spread: a long text has 10^5+ ids
    }
    return out;
  }

  /** The library's ids for text without special tokens; its internal slips become kvslim's named error. */
  private libraryEncode(text: string): number[] {
    let ids: number[];
    try {
      ids = this.library.encode(text, { add_special_tokens: false }).ids;
    } catch (e) {
      if (!isInternalSlip(e)) throw e;
      throw new UnsupportedError(
        `${this.file}: @huggingface/tokenizers cannot encode text with it (a component whose fields are missing or of the wrong type)`,
      );
    }
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new FormatError(
          `${this.file}: the tokenizer produced token id ${id}, outside its vocabulary of ${this.vocabSize}; the file is inconsistent`,
        );
      }
    }
    return ids;
  }

  decode(ids: readonly number[], options?: DecodeOptions): string {
    return detokenize(this, ids, options);
  }

  createStreamDecoder(options?: DecodeOptions): StreamDecoder {
    return new Detokenizer(this, options);
  }

  piece(id: number, skipSpecial: boolean): Uint8Array | null {
    const added = this.added.get(id);
    if (added !== undefined) return added.special && skipSpecial ? null : utf8Bytes(added.content);
    const text = this.library.id_to_token(id);
    if (text === undefined)
      throw new RangeError(`token id ${id} is outside the vocabulary (0 to ${this.vocabSize - 1})`);
    if (this.decoder === "byte-level") {
      const bytes: number[] = [];
      for (const ch of text) {
        const byte = CHAR_TO_BYTE.get(ch);
        if (byte !== undefined) bytes.push(byte);
        else bytes.push(...utf8Bytes(ch)); // not in GPT-2's alphabet: keep the character
      }
      return Uint8Array.from(bytes);
    }
    const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(text);
    if (this.byteFallback && byte !== null) return Uint8Array.of(parseInt(byte[1], 16));
    return utf8Bytes(text.replaceAll("\u2581", " "));
  }

  /** The id of a token given as text or as {content}, or null. */
  private idOfToken(token: unknown): number | null {
    const text = typeof token === "string" ? token : (token as Json | null | undefined)?.content;
    if (typeof text !== "string") return null;
    for (const t of this.added.values()) if (t.content === text) return t.id;
    return this.library.token_to_id(text) ?? null;
  }
}

function readJson(file: string, required: true): Json;
function readJson(file: string, required: false): Json | null;
function readJson(file: string, required: boolean): Json | null {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if (!required && (e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new FormatError(`cannot read ${file}: ${(e as Error).message}; a Hugging Face tokenizer needs it`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new FormatError(`${file} is not valid JSON (${(e as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new FormatError(`${file} must hold a JSON object`);
  return value as Json;
}

/** tokenizer_config.json's chat_template: a string, or a list of {name, template} (we take "default"). */
function chatTemplateOf(config: Json, file: string): string | null {
  const t = config.chat_template;
  if (t === undefined || t === null || typeof t === "string") return t ?? null;
  const named = (x: unknown): x is { name: string; template: string } =>
    typeof x === "object" &&
    x !== null &&
    typeof (x as Json).name === "string" &&
    typeof (x as Json).template === "string";
  if (!Array.isArray(t) || !t.every(named)) {
    throw new FormatError(
      `${file}: "chat_template" must be a string or a list of {"name", "template"} strings, found ${shownValue(t)}`,
    );
  }
  return t.find((x) => x.name === "default")?.template ?? null;
}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The pipeline components of tokenizer.json and the list key of their Sequence form. */
const COMPONENTS = [
  ["normalizer", "normalizers"],
  ["pre_tokenizer", "pretokenizers"],
  ["post_processor", "processors"],
  ["decoder", "decoders"],
] as const;

/** A component is null (absent) or {type, ...}; a Sequence holds a list of components. */
function checkComponent(c: unknown, where: string, listKey: string, file: string): void {
  if (c === null || c === undefined) return;
  if (!isObject(c) || typeof c.type !== "string") {
    throw new FormatError(`${file}: "${where}" must be null or an object with a string "type", found ${shownValue(c)}`);
  }
  if (c.type !== "Sequence") return;
  const parts = c[listKey];
  if (!Array.isArray(parts))
    throw new FormatError(
      `${file}: "${where}" is a Sequence whose "${listKey}" must be a list, found ${shownValue(parts)}`,
    );
  parts.forEach((part, i) => checkComponent(part, `${where}.${listKey}[${i}]`, listKey, file));
}

/**
 * tokenizer.json's model: an object whose vocabulary maps tokens to ids (BPE, WordPiece, WordLevel: an
 * object of integer ids; Unigram: a list of [token, score]) and, for BPE, merges as "a b" or [a, b].
 * Every id from 0 to the largest must name a token (in the vocabulary or the added tokens).
 */
function checkModel(model: unknown, added: AddedToken[], file: string): void {
  const bad = (what: string, found: unknown) => new FormatError(`${file}: "model" ${what}, found ${shownValue(found)}`);
  if (!isObject(model)) throw bad("must be an object (the tokenizer's model)", model);
  if (model.type !== undefined && typeof model.type !== "string")
    throw bad(`"type" must be a string such as "BPE"`, model.type);
  const vocab = model.vocab;
  const ids: number[] = [];
  if (Array.isArray(vocab)) {
    vocab.forEach((entry: unknown, i) => {
      if (!Array.isArray(entry) || typeof entry[0] !== "string" || typeof entry[1] !== "number") {
        throw bad(`"vocab"[${i}] must be a [token, score] pair`, entry);
      }
      ids.push(i);
    });
  } else if (isObject(vocab)) {
    for (const [token, id] of Object.entries(vocab)) {
      if (!Number.isInteger(id) || (id as number) < 0)
        throw bad(`"vocab" must map each token to an integer id ≥ 0; ${JSON.stringify(token)} maps to`, id);
      ids.push(id as number);
    }
  } else {
    throw bad(`"vocab" must be an object of token ids (or a list of [token, score] for Unigram)`, vocab);
  }
  if (model.type === "Unigram" && !Array.isArray(vocab))
    throw bad(`"vocab" of a Unigram model must be a list of [token, score]`, vocab);
  if (model.type === "BPE" || (model.type === undefined && model.merges !== undefined)) {
    const merges = model.merges ?? [];
    const isMerge = (m: unknown) =>
      (typeof m === "string" && m.indexOf(" ", 1) > 0) ||
      (Array.isArray(m) && m.length === 2 && m.every((x) => typeof x === "string"));
    if (!Array.isArray(merges)) throw bad(`"merges" must be a list of "a b" strings or [a, b] pairs`, merges);
    const i = merges.findIndex((m) => !isMerge(m));
    if (i >= 0) throw bad(`"merges"[${i}] must be an "a b" string or an [a, b] pair`, merges[i]);
  }
  const covered = new Set([...ids, ...added.map((t) => t.id)]);
  let largest = -1;
  for (const id of covered) largest = Math.max(largest, id); // no spread: vocabularies reach 256k ids
  if (covered.size !== largest + 1) {
    let hole = 0;
    while (covered.has(hole)) hole++;
    throw new FormatError(
      `${file}: token ids run to ${largest}, but id ${hole} has no token (in "model"."vocab" or "added_tokens"); expected every id from 0 to ${largest} once`,
    );
  }
}

/** tokenizer.json's added_tokens: a list of {id, content, special} with distinct non-negative integer ids. */
function checkAddedTokens(list: unknown, file: string): AddedToken[] {
  if (!Array.isArray(list))
    throw new FormatError(
      `${file}: "added_tokens" must be a list of {id, content, special} objects, found ${shownValue(list)}`,
    );
  const ids = new Set<number>();
  list.forEach((t: unknown, i) => {
    const bad = (what: string) => new FormatError(`${file}: added_tokens[${i}] ${what}, found ${shownValue(t)}`);
    if (!isObject(t)) throw bad("must be an object {id, content, special}");
    if (!Number.isInteger(t.id) || (t.id as number) < 0) throw bad(`must have an "id" that is an integer ≥ 0`);
    if (typeof t.content !== "string" || t.content === "")
      throw bad(`must have a "content" that is a non-empty string`);
    for (const key of ["special", "lstrip", "rstrip", "normalized", "single_word"]) {
      if (t[key] !== undefined && typeof t[key] !== "boolean") throw bad(`must have "${key}" true or false`);
    }
    if (ids.has(t.id as number)) throw bad(`repeats id ${t.id as number}`);
    ids.add(t.id as number);
  });
  return list as AddedToken[];
}

/** A component and, for a Sequence, its parts. */
function flatten(component: Json | null | undefined, partsKey: string): Json[] {
  if (!component) return [];
  const parts = component[partsKey];
  return Array.isArray(parts) ? (parts as Json[]).flatMap((p) => flatten(p, partsKey)) : [component];
}

function numberOrNull(value: unknown): number | null {
  return typeof value === "number" && Number.isInteger(value) ? value : null;
}
