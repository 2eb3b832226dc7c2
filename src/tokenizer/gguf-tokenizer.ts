/**
 * The tokenizer of a GGUF vocabulary, token for token llama.cpp's (llama_vocab::impl::tokenize and
 * detokenize in src/llama-vocab.cpp, the version node-llama-cpp ships).
 *
 * Why a port of llama.cpp rather than a tokenizer.json built in memory for @huggingface/tokenizers:
 *   - SPM: llama.cpp merges by the score of the merged token and resegments unknown symbols into byte
 *     tokens; a BPE model with merges derived from scores (HF's converter) ranks pairs instead, which
 *     differs whenever two splits make the same token. The port is ~70 lines and agrees by construction.
 *   - BPE: llama.cpp pre-splits with its own Unicode tables and hand-written matchers (pre-tokenize.ts
 *     reproduces them), treats control vs user-defined tokens its own way, and cleans spaces on decode
 *     with its own rules; matching all of that through tokenizer.json options would take as much code.
 */
import type { GgufValue } from "../io/gguf.js";
import { UnsupportedError } from "../errors.js";
import { bpeTokenize, CHAR_TO_BYTE } from "./bpe.js";
import { detokenize, Detokenizer, llamaCppCleanup, utf8Bytes, type PieceSource } from "./detokenize.js";
import { splitOnSpecialTokens, type SpecialToken } from "./special-split.js";
import { spmTokenize } from "./spm.js";
import type { DecodeOptions, EncodeOptions, StreamDecoder, TextTokenizer } from "./tokenizer.js";
import { ATTR, vocabFromGguf, type GgufVocabOptions, type Vocab } from "./vocab.js";

export function ggufTokenizer(metadata: Map<string, GgufValue>, options?: GgufVocabOptions): TextTokenizer {
  return new GgufTokenizer(vocabFromGguf(metadata, options));
}

class GgufTokenizer implements TextTokenizer, PieceSource {
  readonly vocabSize: number;
  readonly bos: number | null;
  readonly eos: number | null;
  readonly stopIds: ReadonlySet<number>;
  readonly addBos: boolean;
  readonly chatTemplate: string | null;
  readonly stripFirstSpace: boolean;
  readonly cleanup: PieceSource["cleanup"];
  private readonly allSpecials: SpecialToken[];
  private readonly userDefined: SpecialToken[];
  private readonly pieces: (Uint8Array | undefined)[] = []; // (V) normal / byte / user-defined tokens, filled lazily

  constructor(private readonly vocab: Vocab) {
    this.vocabSize = vocab.texts.length;
    this.bos = vocab.bos;
    this.eos = vocab.eos;
    this.stopIds = vocab.stopIds;
    this.addBos = vocab.addBos;
    this.chatTemplate = vocab.chatTemplate;
    this.stripFirstSpace = vocab.addSpacePrefix; // llama.cpp strips it whatever the vocabulary type
    this.cleanup = vocab.kind === "bpe" && vocab.pre!.cleanSpaces ? llamaCppCleanup : null;
    this.allSpecials = vocab.specialIds.map((id) => ({ id, text: vocab.texts[id] }));
    // Without parseSpecial llama.cpp still matches user-defined tokens, but not control or unknown ones.
    this.userDefined = this.allSpecials.filter(({ id }) => !(vocab.attrs[id] & (ATTR.control | ATTR.unknown)));
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const vocab = this.vocab;
    const out: number[] = [];
    if (options.addBos ?? this.addBos) {
      if (vocab.bos === null) throw new UnsupportedError(`cannot add BOS: this vocabulary has no BOS token`);
      out.push(vocab.bos);
    }
    const wellFormed = text.replace(/\p{Cs}/gu, "\uFFFD"); // what llama.cpp receives for lone surrogates
    const fragments = splitOnSpecialTokens(wellFormed, options.parseSpecial ? this.allSpecials : this.userDefined);
    let afterSpecial = true; // SPM prefixes a space to text at the start and after a special token
    for (const fragment of fragments) {
      if ("id" in fragment) {
        out.push(fragment.id);
        afterSpecial = true;
      } else if (vocab.kind === "spm") {
        const prefixed = (vocab.addSpacePrefix && afterSpecial ? " " : "") + fragment.text;
        spmTokenize(vocab, prefixed.replaceAll(" ", "\u2581"), out);
        afterSpecial = false;
      } else {
        bpeTokenize(vocab, fragment.text, out);
      }
    }
    return out;
  }

  decode(ids: readonly number[], options?: DecodeOptions): string {
    return detokenize(this, ids, options);
  }

  createStreamDecoder(options?: DecodeOptions): StreamDecoder {
    return new Detokenizer(this, options);
  }

  /** llama_vocab::impl::token_to_piece. */
  piece(id: number, skipSpecial: boolean): Uint8Array {
    const vocab = this.vocab;
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new RangeError(`token id ${id} is outside the vocabulary (0 to ${this.vocabSize - 1})`);
    }
    const attr = vocab.attrs[id];
    if (attr & (ATTR.control | ATTR.unknown)) return skipSpecial ? EMPTY : utf8Bytes(vocab.texts[id]);
    return (this.pieces[id] ??= this.plainPiece(id, attr));
  }

  private plainPiece(id: number, attr: number): Uint8Array {
    const text = this.vocab.texts[id];
    if (attr & ATTR.userDefined) return utf8Bytes(text);
    if (attr & ATTR.byte) return Uint8Array.of(parseInt(text.slice(3, 5), 16));
    if (!(attr & ATTR.normal)) return EMPTY; // unused and undefined tokens print nothing
    if (this.vocab.kind === "spm") return utf8Bytes(text.replaceAll("\u2581", " "));
    // llama_decode_text: each character is one byte of GPT-2's alphabet; others print as [UNK_BYTE_...].
    const bytes: number[] = [];
    for (const ch of text) {
      const byte = CHAR_TO_BYTE.get(ch);
      if (byte !== undefined) bytes.push(byte);
      else {
        const hex = Array.from(utf8Bytes(ch), (b) => b.toString(16).padStart(2, "0")).join("");
        bytes.push(...utf8Bytes(`[UNK_BYTE_0x${hex}${text}]`));
      }
    }
    return Uint8Array.from(bytes);
  }
}

const EMPTY = new Uint8Array(0);
