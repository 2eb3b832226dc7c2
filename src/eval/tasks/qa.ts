/**
 * qa: SQuAD-shaped reading comprehension, the SparQ paper's setting (1-shot, the passage holding the answer
 * among 7 confusion passages), on generated facts so it needs no dataset: eight titled passages of
 * held-out prose, each with one sentence about a different person ("Ines Marlow was born in Tromsø in
 * 1894."); one worked question and answer about one passage; then the question about another. Score: the
 * paper's normalised prefix match of the generated text against the answer.
 */
import { Rng } from "../../model/sampler.js";
import { fitLength, promptLength, type GenerationSample, type TaskContext, type TaskSamples } from "../task.js";
import { fillerTokens, randomInt, tokenCount } from "../text.js";

const FIRST = [
  "Ines",
  "Tomas",
  "Aiko",
  "Bruno",
  "Leila",
  "Oskar",
  "Priya",
  "Mateo",
  "Sanna",
  "Kofi",
  "Elena",
  "Dmitri",
  "Nadia",
  "Hugo",
  "Mira",
  "Jonas",
];
const LAST = [
  "Marlow",
  "Okafor",
  "Lindqvist",
  "Haddad",
  "Moreau",
  "Castell",
  "Ivers",
  "Nakamura",
  "Brandt",
  "Quispe",
  "Sorensen",
  "Adeyemi",
  "Varga",
  "Whitlock",
  "Ferrante",
  "Koval",
];
const CITIES = [
  "Lyon",
  "Tromsø",
  "Porto",
  "Kraków",
  "Nairobi",
  "Osaka",
  "Quito",
  "Tbilisi",
  "Leipzig",
  "Valparaíso",
  "Dakar",
  "Bergen",
  "Trieste",
  "Cusco",
  "Hobart",
  "Tartu",
];
const PASSAGES = 8;
export const QA_ANSWER_TOKENS = 8;

export interface QaOptions {
  /** Context length in tokens (the eight passages, the worked example and the question). */
  length: number;
}

export function qaSamples(ctx: TaskContext, options: QaOptions): TaskSamples {
  const rng = new Rng(ctx.seed);
  const { length, skipped } = fitLength(
    "qa",
    options.length,
    ctx.contextSize,
    QA_ANSWER_TOKENS + 1,
    "fit the model's context with the answer",
  );
  const samples: GenerationSample[] = [];
  for (let i = 0; i < ctx.samples; i++) {
    const people = pick(rng, FIRST.length * LAST.length, PASSAGES).map(
      (p) => `${FIRST[p % FIRST.length]} ${LAST[Math.floor(p / FIRST.length)]}`,
    );
    const cities = pick(rng, CITIES.length, PASSAGES).map((c) => CITIES[c]);
    const years = people.map(() => String(1850 + randomInt(rng, 150)));
    const facts = people.map((p, k) => `${p} was born in ${cities[k]} in ${years[k]}.`);
    const [example, asked] = pick(rng, PASSAGES, 2);
    const worked = `Question: Where was ${people[example]} born?\nAnswer: ${cities[example]}\n`;
    const question = `\nQuestion: Where was ${people[asked]} born?\nAnswer:`;
    // Each passage gets an equal share of the tokens left, its fact at a random line.
    const fixed =
      tokenCount(ctx.tokenizer, worked) +
      tokenCount(ctx.tokenizer, question) +
      facts.reduce((n, f) => n + tokenCount(ctx.tokenizer, f) + 8, 0);
    const share = Math.max(8, Math.floor((length - fixed) / PASSAGES));
    const passages = facts.map((fact) => {
      const lines = fillerTokens(rng, ctx.tokenizer, share).split("\n");
      lines.splice(randomInt(rng, lines.length + 1), 0, fact);
      return lines;
    });
    const contextOf = () =>
      `${passages.map((lines, k) => `Passage ${k + 1}:\n${lines.join("\n")}`).join("\n\n")}\n\n${worked}`;
    // Pieces joined can take a few more tokens than counted apart: drop the last filler line of the longest
    // passage until the prompt fits.
    while (promptLength(ctx.tokenizer, contextOf(), question) > length) {
      const longest = passages.map((lines, k) => ({ k, n: lines.length })).sort((a, b) => b.n - a.n || a.k - b.k)[0];
      if (longest.n <= 1) break;
      const lines = passages[longest.k];
      lines.splice(lines[lines.length - 1] === facts[longest.k] ? lines.length - 2 : lines.length - 1, 1);
    }
    const context = contextOf();
    samples.push({
      kind: "generate",
      id: `qa-${length}-${i}`,
      context,
      questions: [{ prompt: question, answers: [cities[asked]], maxNewTokens: QA_ANSWER_TOKENS, metric: "prefix" }],
      meta: { length, passage: asked + 1 },
    });
  }
  return { samples, skipped };
}

/** k distinct integers from [0, n), in random order. */
function pick(rng: Rng, n: number, k: number): number[] {
  const out = new Set<number>();
  while (out.size < k) out.add(randomInt(rng, n));
  return [...out];
}
