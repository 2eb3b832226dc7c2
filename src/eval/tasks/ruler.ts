/**
 * RULER's synthetic tasks that need no dataset (Hsieh et al., 2024), in its phrasing and with its scoring
 * (string_match_all: the fraction of the expected answers that appear in the output):
 *   niah-single      one "special magic number" for a key, hidden in filler; asked for it
 *   niah-multikey    the same with 3 more needles of other keys (distractors)
 *   niah-multivalue  4 numbers for the same key; asked for all of them
 *   niah-multiquery  4 keys, each with its number; asked for all four
 *   vt               variable tracking: a chain of 5 assignments (VAR A = 12345, VAR B = VAR A, …) spread
 *                    through filler; asked which variables hold the value
 *   cwe              common words extraction: a numbered list of words where 10 appear as often as the
 *                    length allows (at least 5 times each) and 40 others 3 times; asked for the 10 most common
 */
import { Rng } from "../../model/sampler.js";
import {
  dropLinesToFit,
  fitLength,
  promptLength,
  type GenerationSample,
  type TaskContext,
  type TaskSamples,
} from "../task.js";
import { fillerTokens, heldOutDocuments, randomInt, tokenCount } from "../text.js";

export const RULER_TASKS = ["niah-single", "niah-multikey", "niah-multivalue", "niah-multiquery", "vt", "cwe"] as const;
export type RulerTask = (typeof RULER_TASKS)[number];

const KEYS = [
  "frozen-lantern",
  "quiet-harbor",
  "amber-falcon",
  "silver-orchard",
  "hollow-comet",
  "crimson-meadow",
  "velvet-anchor",
  "distant-glacier",
  "copper-willow",
  "scarlet-tide",
  "brave-sparrow",
  "iron-lagoon",
];
/** Tokens generated: enough for four seven-digit numbers or ten words with the answer's phrasing. */
const ANSWER_TOKENS: Record<RulerTask, number> = {
  "niah-single": 16,
  "niah-multikey": 16,
  "niah-multivalue": 48,
  "niah-multiquery": 48,
  vt: 32,
  cwe: 64,
};

export interface RulerOptions {
  length: number;
}

export function rulerSamples(task: RulerTask, ctx: TaskContext, options: RulerOptions): TaskSamples {
  const rng = new Rng(ctx.seed);
  const { length, skipped } = fitLength(
    task,
    options.length,
    ctx.contextSize,
    ANSWER_TOKENS[task] + 1,
    "fit the model's context with the answer",
  );
  const samples: GenerationSample[] = [];
  for (let i = 0; i < ctx.samples; i++) {
    const { inserts, question, answers, words } = makeTask(task, rng, ctx, length);
    let context: string;
    if (words !== undefined) {
      if (words === null) {
        skipped.push(`cwe at ${length} tokens: too short for a list in which 10 words appear at least 5 times`);
        break;
      }
      context = words;
    } else {
      const room =
        length -
        tokenCount(ctx.tokenizer, question) -
        inserts.reduce((n, s) => n + tokenCount(ctx.tokenizer, s) + 1, 0);
      const lines = fillerTokens(rng, ctx.tokenizer, room).split("\n");
      // The inserted sentences go in order at random lines (variable tracking's chain must read forwards).
      const at = inserts.map(() => randomInt(rng, lines.length + 1)).sort((a, b) => a - b);
      for (let k = inserts.length - 1; k >= 0; k--) lines.splice(at[k], 0, inserts[k]);
      dropLinesToFit(
        lines,
        (line) => inserts.includes(line),
        (l) => promptLength(ctx.tokenizer, l.join("\n"), question),
        length,
      );
      context = lines.join("\n");
    }
    samples.push({
      kind: "generate",
      id: `${task}-${length}-${i}`,
      context,
      questions: [{ prompt: question, answers, maxNewTokens: ANSWER_TOKENS[task], metric: "contains-all" }],
      meta: { length, task },
    });
  }
  return { samples, skipped };
}

function number(rng: Rng): string {
  return String(1_000_000 + randomInt(rng, 9_000_000));
}

function keys(rng: Rng, k: number): string[] {
  const out = new Set<string>();
  while (out.size < k) out.add(KEYS[randomInt(rng, KEYS.length)]);
  return [...out];
}

const needle = (key: string, value: string) => `One of the special magic numbers for ${key} is: ${value}.`;

function makeTask(
  task: RulerTask,
  rng: Rng,
  ctx: TaskContext,
  length: number,
): { inserts: string[]; question: string; answers: string[]; words?: string | null } {
  switch (task) {
    case "niah-single":
    case "niah-multikey": {
      const ks = keys(rng, task === "niah-single" ? 1 : 4);
      const values = ks.map(() => number(rng));
      return {
        inserts: shuffle(
          rng,
          ks.map((k, i) => needle(k, values[i])),
        ),
        question: `\nWhat is the special magic number for ${ks[0]} mentioned in the provided text? The special magic number for ${ks[0]} mentioned in the provided text is`,
        answers: [values[0]],
      };
    }
    case "niah-multivalue": {
      const [k] = keys(rng, 1);
      const values = [number(rng), number(rng), number(rng), number(rng)];
      return {
        inserts: values.map((v) => needle(k, v)),
        question: `\nWhat are all the special magic numbers for ${k} mentioned in the provided text? The special magic numbers for ${k} mentioned in the provided text are`,
        answers: values,
      };
    }
    case "niah-multiquery": {
      const ks = keys(rng, 4);
      const values = ks.map(() => number(rng));
      return {
        inserts: shuffle(
          rng,
          ks.map((k, i) => needle(k, values[i])),
        ),
        question: `\nWhat are all the special magic numbers for ${ks.join(", ")} mentioned in the provided text? The special magic numbers for ${ks.join(", ")} mentioned in the provided text are`,
        answers: values,
      };
    }
    case "vt": {
      const value = String(10000 + randomInt(rng, 90000));
      const names = new Set<string>();
      while (names.size < 5)
        names.add(Array.from({ length: 5 }, () => String.fromCharCode(65 + randomInt(rng, 26))).join(""));
      const vars = [...names];
      const inserts = vars.map((v, i) => (i === 0 ? `VAR ${v} = ${value}` : `VAR ${v} = VAR ${vars[i - 1]}`));
      return {
        inserts,
        question: `\nQuestion: Find all variables that are assigned the value ${value} in the text above. Answer: According to the chain(s) of variable assignment in the text above, 5 variables are assigned the value ${value}, they are:`,
        answers: vars,
      };
    }
    case "cwe": {
      // Words from the held-out text: 10 common, 40 rare (3 times each), in random order, as many repeats of the
      // common ones as fit the length.
      const vocabulary = [
        ...new Set(
          heldOutDocuments()
            .slice(0, 2000)
            .join(" ")
            .toLowerCase()
            .match(/\b[a-z]{4,9}\b/g) ?? [],
        ),
      ];
      const chosen = new Set<string>();
      while (chosen.size < 50) chosen.add(vocabulary[randomInt(rng, vocabulary.length)]);
      const [common, rare] = [[...chosen].slice(0, 10), [...chosen].slice(10)];
      const question = `\nQuestion: What are the 10 most common words in the above list? Answer: The top 10 words that appear most often in the list are:`;
      const build = (times: number) => {
        const list = shuffle(rng, [
          ...common.flatMap((w) => Array<string>(times).fill(w)),
          ...rare.flatMap((w) => Array<string>(3).fill(w)),
        ]);
        return `Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n${list.map((w, i) => `${i + 1}. ${w}`).join(" ")}`;
      };
      const room = length - tokenCount(ctx.tokenizer, question);
      let times = 30;
      let words = build(times);
      while (times >= 5 && tokenCount(ctx.tokenizer, words) > room) words = build(--times);
      return { inserts: [], words: times >= 5 ? words : null, question, answers: common };
    }
    default:
      return task satisfies never;
  }
}

function shuffle<T>(rng: Rng, items: T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = randomInt(rng, i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}
