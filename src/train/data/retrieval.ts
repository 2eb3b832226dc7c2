/**
 * Generated long documents that can only be continued correctly by looking far back, so that a model
 * trained on them uses long-range attention (and what SparQ, H2O or StreamingLLM drop is measurable):
 *   (a) key-value: facts listed first ("The code of the blue door is 4821."), WordNet filler, then one to
 *       three questions, one per line, about some of them, each answered by restating its fact:
 *       "Q: What is the code of the blue door? A: the code of the blue door is 4821"; the other facts are
 *       distractors of the same form.
 *   (b) repeat: a passage of WordNet documents (40% of the length), filler, then the same passage again;
 *       or (on request, a share of them) filler, then a stretch of it again from a random word.
 *   (c) needle: one fact hidden at a random depth of the filler (10%–90% by default, any range on request),
 *       and a question about it at the end: "Q: What is the secret number of Maria? A: the secret number
 *       of Maria is 7312".
 * The answers restate the fact up to the number, as passkey retrieval does (LM-Infinite, Landmark
 * Attention: "What is the pass key? The pass key is"), so that finding the number is a copy of what
 * followed the same words earlier: the induction-head pattern a small model learns first. A bare
 * "A: 4821" asks for a two-step lookup (question words → fact → the number after it): harder than a copy.
 * Filler is whole WordNet documents (one per line), so nothing but the planted text repeats on purpose.
 * Each generator takes the target length in characters and returns a text at least that long (it
 * overshoots by less than one filler document); the answer is always the text's last line's end (key-value,
 * needle) or its last `answer.length` characters (repeat). Everything is deterministic from the Rng.
 *
 * trainingStream mixes WordNet documents with these at a stated share of characters (RETRIEVAL_SHARE).
 */
import { UsageError } from "../../errors.js";
import { Rng } from "../../model/sampler.js";

export type RetrievalKind = "key-value" | "repeat" | "needle";

export interface RetrievalDocument {
  kind: RetrievalKind;
  text: string;
  /** What a model must retrieve: the code or number (key-value, needle) or the passage (repeat). */
  answer: string;
}

const COLORS = [
  "red",
  "blue",
  "green",
  "yellow",
  "black",
  "white",
  "orange",
  "purple",
  "brown",
  "grey",
  "silver",
  "golden",
];
const THINGS = ["door", "box", "gate", "safe", "locker", "drawer", "car", "bike", "chest", "room", "case", "cabinet"];
const NAMES = [
  "Maria",
  "Ahmed",
  "Chen",
  "Olga",
  "Kwame",
  "Lucia",
  "Ravi",
  "Ingrid",
  "Tomas",
  "Yuki",
  "Amara",
  "Pierre",
];

/** Picks whole filler documents at random. */
class Filler {
  constructor(
    private readonly documents: readonly string[],
    private readonly rng: Rng,
  ) {
    if (documents.length === 0)
      throw new UsageError("retrieval documents need filler: expected at least one WordNet document, got none");
  }

  /** Random documents, one per line, together at least `chars` long ("" for chars ≤ 0). */
  take(chars: number): string {
    if (chars <= 0) return "";
    const lines: string[] = [];
    let length = -1; // no newline before the first line
    while (length < chars) {
      const line = this.documents[randomInt(this.rng, this.documents.length)];
      lines.push(line);
      length += line.length + 1;
    }
    return lines.join("\n");
  }
}

/** Uniform integer in [0, n). */
function randomInt(rng: Rng, n: number): number {
  return Math.floor(rng.next() * n);
}

/** A four-digit code, 1000–9999. */
function randomCode(rng: Rng): string {
  return String(1000 + randomInt(rng, 9000));
}

/**
 * The non-empty parts, one per line. Generators ask the filler for (target - fixed parts - 1) characters:
 * with no filler the text is already long enough, and each filler part brings its own newline.
 */
function joinLines(...parts: string[]): string {
  return parts.filter((p) => p !== "").join("\n");
}

/** (a) Facts first, filler, then questions about one to three of them (the last one's answer is the document's). */
export function keyValueDocument(rng: Rng, filler: readonly string[], targetChars: number): RetrievalDocument {
  // Step 1: 4–8 facts about distinct (color, thing) pairs, each with its own code.
  const count = 4 + randomInt(rng, 5);
  const pairs = new Set<number>();
  while (pairs.size < count) pairs.add(randomInt(rng, COLORS.length * THINGS.length));
  const facts = [...pairs].map((p) => ({
    key: `the ${COLORS[p % COLORS.length]} ${THINGS[Math.floor(p / COLORS.length)]}`,
    code: randomCode(rng),
  }));
  const listed = facts.map((f) => `The code of ${f.key} is ${f.code}.`).join(" ");

  // Step 2: 1–3 distinct facts are asked about at the end, after filler that brings the text to the target
  // length. Several questions give several answers to learn from per document, and the earlier ones show
  // the format in context.
  const asked = shuffled(facts, rng).slice(0, 1 + randomInt(rng, 3));
  const questions = asked
    .map((f) => `Q: What is the code of ${f.key}? A: the code of ${f.key} is ${f.code}`)
    .join("\n");
  const fill = new Filler(filler, rng).take(targetChars - listed.length - questions.length - 1);
  return { kind: "key-value", text: joinLines(listed, fill, questions), answer: asked[asked.length - 1].code };
}

/**
 * (b) A passage, filler, the same passage again. The passage is 40% of the target (at least 80 characters),
 * so that most of a repeat document's second half can be predicted by copying: the plainest signal there is
 * for learning to look back.
 */
export function repeatDocument(rng: Rng, filler: readonly string[], targetChars: number): RetrievalDocument {
  const source = new Filler(filler, rng);
  const length = Math.max(80, Math.floor(targetChars * 0.4));
  const passage = source.take(length).slice(0, length); // cut to length, so the document overshoots by less than one filler document
  const fill = source.take(targetChars - 2 * passage.length - 1);
  return { kind: "repeat", text: joinLines(passage, fill, passage), answer: passage };
}

/**
 * (b′) Filler, then a stretch of it again from a word chosen at random: the copy starts anywhere, after
 * nothing that marks it (the shape of the SparQ paper's repetition task). A model can continue it only by
 * matching what it has just read against the filler (an induction head); the whole-passage repeat above
 * can also be learnt as "after the filler, say the document's beginning again", which copies nothing else.
 * The copy is 40% of the target (at least 80 characters), cut at a word's end.
 */
export function midRepeatDocument(rng: Rng, filler: readonly string[], targetChars: number): RetrievalDocument {
  const copyChars = Math.max(80, Math.floor(targetChars * 0.4));
  const fill = new Filler(filler, rng).take(Math.max(copyChars + 1, targetChars - copyChars - 1));
  let start = randomInt(rng, fill.length - copyChars + 1);
  while (start > 0 && !/\s/.test(fill[start - 1])) start--; // back to the word's first character
  let end = start + copyChars;
  while (end < fill.length && !/\s/.test(fill[end])) end++;
  const copy = fill.slice(start, end);
  return { kind: "repeat", text: joinLines(fill, copy), answer: copy };
}

/** Where a training needle may sit in its filler, as fractions of it: [min, max], 0 the start, 1 the end. */
export type DepthRange = readonly [number, number];
export const NEEDLE_DEPTHS: DepthRange = [0.1, 0.9];

/** (c) One fact inside filler at a depth uniform in `depths`, a question about it at the end. */
export function needleDocument(
  rng: Rng,
  filler: readonly string[],
  targetChars: number,
  depths: DepthRange = NEEDLE_DEPTHS,
): RetrievalDocument {
  const name = NAMES[randomInt(rng, NAMES.length)];
  const code = randomCode(rng);
  const needle = `The secret number of ${name} is ${code}.`;
  const question = `Q: What is the secret number of ${name}? A: the secret number of ${name} is ${code}`;
  const source = new Filler(filler, rng);
  const fillChars = targetChars - needle.length - question.length - 1;
  const before = source.take(Math.floor(fillChars * (depths[0] + (depths[1] - depths[0]) * rng.next())));
  const after = source.take(fillChars - before.length);
  return { kind: "needle", text: joinLines(before, needle, after, question), answer: code };
}

/** Where the answer starts in doc.text: the space before the number (key-value, needle), or the repeated passage. */
export function answerStart(doc: RetrievalDocument): number {
  return doc.text.length - doc.answer.length - (doc.kind === "repeat" ? 0 : 1);
}

/** A generator: target length in characters, and the needle depths (which only the needle kind uses). */
export type RetrievalGenerator = (
  rng: Rng,
  filler: readonly string[],
  targetChars: number,
  depths?: DepthRange,
) => RetrievalDocument;

export const RETRIEVAL_GENERATORS: Record<RetrievalKind, RetrievalGenerator> = {
  "key-value": keyValueDocument,
  repeat: repeatDocument,
  needle: needleDocument,
};

/** Share of the training stream's characters that are retrieval documents (the rest is WordNet). */
export const RETRIEVAL_SHARE = 0.4;

export interface StreamOptions {
  seed: number;
  /** Fraction of characters from retrieval documents, in [0, 1). Default RETRIEVAL_SHARE. */
  retrievalShare?: number;
  /** Length range of retrieval documents in characters. Default DEFAULT_MIN_CHARS to DEFAULT_MAX_CHARS. */
  minChars?: number;
  maxChars?: number;
  /** Depth range of the needle documents' facts. Default NEEDLE_DEPTHS. */
  needleDepths?: DepthRange;
  /** Share of the repeat documents made by midRepeatDocument instead of repeatDocument, in [0, 1]. Default 0. */
  repeatMid?: number;
}

/**
 * Retrieval document lengths for training windows of 512 tokens. A question teaches retrieval only when
 * the window holds its fact too, so a document must fit in a window: WordNet text is ≈ 3.2 characters per
 * token at a 4096 vocabulary, so 300–1200 characters is ≈ 95–375 tokens, and about a third of the windows
 * that touch such a document hold all of it (random offsets). (Documents longer than the window, as an
 * earlier version had, taught the answer's format but never the answer: the fact was always out of view.)
 */
export const DEFAULT_MIN_CHARS = 300;
export const DEFAULT_MAX_CHARS = 1200;

/** The retrieval document lengths for windows of seqLen tokens: the defaults scaled by seqLen / 512. */
export function retrievalLengths(seqLen: number): { minChars: number; maxChars: number } {
  const scale = seqLen / 512;
  return {
    minChars: Math.max(1, Math.round(DEFAULT_MIN_CHARS * scale)),
    maxChars: Math.max(1, Math.round(DEFAULT_MAX_CHARS * scale)),
  };
}

/** A document of the training stream, and whether it is a generated retrieval document. */
export interface StreamDocument {
  text: string;
  retrieval: boolean;
}

/**
 * The training text as a stream of documents: the WordNet documents in a seeded random order, with a
 * retrieval document (kind uniformly at random, length uniform in [minChars, maxChars]) inserted whenever
 * the retrieval share of the characters so far falls below retrievalShare. Filler comes from the same
 * WordNet documents, so train and validation text stay apart if the caller passes one half only.
 */
export function trainingStream(wordnet: readonly string[], options: StreamOptions): Generator<string> {
  return texts(trainingDocuments(wordnet, options));
}

/** trainingStream's documents, each marked retrieval or not (the sampler aligns windows to the former). */
export function trainingDocuments(wordnet: readonly string[], options: StreamOptions): Generator<StreamDocument> {
  const share = options.retrievalShare ?? RETRIEVAL_SHARE;
  const minChars = options.minChars ?? DEFAULT_MIN_CHARS;
  const maxChars = options.maxChars ?? DEFAULT_MAX_CHARS;
  const depths = options.needleDepths ?? NEEDLE_DEPTHS;
  const repeatMid = options.repeatMid ?? 0;
  // Checked here, not on the first next(), so bad options fail where they are passed.
  if (!(share >= 0 && share < 1)) throw new UsageError(`retrievalShare expects a number in [0, 1), got ${share}`);
  if (!(Number.isInteger(minChars) && minChars > 0 && Number.isInteger(maxChars) && maxChars >= minChars)) {
    throw new UsageError(
      `expected integers 0 < minChars ≤ maxChars, got minChars ${minChars} and maxChars ${maxChars}`,
    );
  }
  if (!(depths.length === 2 && depths[0] >= 0 && depths[0] <= depths[1] && depths[1] <= 1)) {
    throw new UsageError(`expected needle depths 0 ≤ min ≤ max ≤ 1, got ${JSON.stringify(depths)}`);
  }
  if (!(repeatMid >= 0 && repeatMid <= 1))
    throw new UsageError(`repeatMid expects a number in [0, 1], got ${repeatMid}`);
  if (share > 0 && wordnet.length === 0)
    throw new UsageError("retrieval documents need filler: expected at least one WordNet document, got none");
  return mix(wordnet, new Rng(options.seed), share, minChars, maxChars, depths, repeatMid);
}

function* texts(documents: Iterable<StreamDocument>): Generator<string> {
  for (const doc of documents) yield doc.text;
}

function* mix(
  wordnet: readonly string[],
  rng: Rng,
  share: number,
  minChars: number,
  maxChars: number,
  depths: DepthRange,
  repeatMid: number,
): Generator<StreamDocument> {
  const order = shuffledIndices(wordnet.length, rng);
  const kinds = Object.keys(RETRIEVAL_GENERATORS) as RetrievalKind[];
  let wordnetChars = 0;
  let retrievalChars = 0;
  for (const index of order) {
    yield { text: wordnet[index], retrieval: false };
    wordnetChars += wordnet[index].length;
    // retrieval / (retrieval + wordnet) < share  <=>  retrieval < share / (1 - share) * wordnet
    while (retrievalChars < (share / (1 - share)) * wordnetChars) {
      const kind = kinds[randomInt(rng, kinds.length)];
      const length = minChars + randomInt(rng, maxChars - minChars + 1);
      // No draw when repeatMid is 0, so that a stream without mid-copies is the one earlier runs trained on.
      const mid = kind === "repeat" && repeatMid > 0 && rng.next() < repeatMid;
      const doc = mid
        ? midRepeatDocument(rng, wordnet, length)
        : RETRIEVAL_GENERATORS[kind](rng, wordnet, length, depths);
      retrievalChars += doc.text.length;
      yield { text: doc.text, retrieval: true };
    }
  }
}

/** A shuffled copy (Fisher–Yates). */
function shuffled<T>(items: readonly T[], rng: Rng): T[] {
  return shuffledIndices(items.length, rng).map((i) => items[i]);
}

/** Fisher–Yates over 0..n-1. */
function shuffledIndices(n: number, rng: Rng): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = randomInt(rng, i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}
