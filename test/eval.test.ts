/**
 * kvslim eval: every metric on hand-made cases, the task generators (deterministic per seed, sized to fit),
 * --data checked line by line, bits per character against a hand computation from one prefill's logits,
 * and a tiny grid end to end on a random model: resume, a cut-short results line, shards + merge = one run.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { cellSpec, gridCells } from "../src/eval/grid.js";
import {
  bitsPerCharacter,
  containsAll,
  containsAny,
  interval,
  negativeLogLikelihood,
  normaliseAnswer,
  prefixMatch,
  repetitionScore,
} from "../src/eval/metrics.js";
import { readResults } from "../src/eval/results.js";
import { runCell } from "../src/eval/run.js";
import { promptLength, type TaskContext } from "../src/eval/task.js";
import { bpcSamples } from "../src/eval/tasks/bpc.js";
import { dataSamples } from "../src/eval/tasks/data.js";
import { needleSamples } from "../src/eval/tasks/needle.js";
import { qaSamples } from "../src/eval/tasks/qa.js";
import { RULER_TASKS, rulerSamples } from "../src/eval/tasks/ruler.js";
import { repetitionSamples, wordEnd, wordStart } from "../src/eval/tasks/repetition.js";
import { brownParagraphs, tokenCount, untag } from "../src/eval/text.js";
import { FormatError } from "../src/errors.js";
import { loadModel } from "../src/model/model.js";
import { llamaConfig } from "../src/model/synthetic.js";
import { hfTokenizer } from "../src/tokenizer/hf-tokenizer.js";
import { runCli } from "./helpers/cli.js";
import { tempDir, writeTestGguf } from "./helpers/models.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const SHIPPED = path.join(ROOT, "models", "kvslim-tiny");

describe("metrics", () => {
  test("normalised prefix match: case, punctuation, quotes and a leading article do not count; a longer word does", () => {
    expect(normaliseAnswer(`  "The Eiffel-Tower!" `)).toBe("eiffel tower");
    expect(normaliseAnswer("An apple a day")).toBe("apple a day");
    expect(prefixMatch("the Eiffel Tower, in Paris.", ["Eiffel Tower"])).toBe(1);
    expect(prefixMatch(" 4821\nQ: next", ["4821"])).toBe(1);
    expect(prefixMatch("48210", ["4821"])).toBe(0); // a prefix of a word is not a match
    expect(prefixMatch("Paris, the Eiffel Tower", ["Eiffel Tower"])).toBe(0);
    expect(prefixMatch("Eiffel", ["Eiffel Tower", "eiffel"])).toBe(1);
    expect(prefixMatch("anything", [""])).toBe(0);
  });

  test("contains-all is the fraction of answers found, contains-any 0 or 1, both case-insensitive", () => {
    expect(containsAll("The codes are 12, 34 and 56", ["12", "56", "78"])).toBeCloseTo(2 / 3, 12);
    expect(containsAll("abc", [])).toBe(0);
    expect(containsAny("The codes are 12", ["99", "12"])).toBe(1);
    expect(containsAny("ALPHA", ["alpha"])).toBe(1);
    expect(containsAny("beta", ["alpha", ""])).toBe(0);
  });

  test("repetition: characters before the first mismatch, leading whitespace stripped from both", () => {
    expect(repetitionScore("  hello world", "hello there")).toBe(6);
    expect(repetitionScore("hello", "\n hello world")).toBe(5);
    expect(repetitionScore("xyz", "abc")).toBe(0);
    expect(repetitionScore("日本語です", "日本語だ")).toBe(3); // characters, not UTF-16 units
  });

  test("bits per character: Σ nats × log2(e) / characters; −log p from logits equals a hand softmax", () => {
    expect(bitsPerCharacter(4 * Math.LN2, 4)).toBeCloseTo(1, 12);
    expect(bitsPerCharacter(Math.log(8) * 3, 6)).toBeCloseTo(1.5, 12);
    const logits = Float32Array.of(1, 2, 3);
    const p2 = Math.exp(3) / (Math.exp(1) + Math.exp(2) + Math.exp(3));
    expect(negativeLogLikelihood(logits, 2)).toBeCloseTo(-Math.log(p2), 12);
  });

  test("95% intervals: Wilson's for 0/1 scores (5 of 10: 0.2366–0.7634), a seeded bootstrap inside the range otherwise", () => {
    const w = interval([1, 1, 1, 1, 1, 0, 0, 0, 0, 0]);
    expect(w.mean).toBe(0.5);
    expect(w.low).toBeCloseTo(0.2366, 4);
    expect(w.high).toBeCloseTo(0.7634, 4);
    const all = interval([1, 1, 1]);
    expect([all.low, all.high]).toEqual([expect.closeTo(0.4385, 4), 1]);
    const chars = [0, 0, 3, 250, 12, 0, 7];
    const b = interval(chars);
    expect(b.low).toBeGreaterThanOrEqual(0);
    expect(b.high).toBeLessThanOrEqual(250);
    expect(b.low).toBeLessThan(b.mean);
    expect(b.high).toBeGreaterThan(b.mean);
    expect(interval(chars)).toEqual(b);
  });
});

describe("text", () => {
  test("Brown corpus paragraphs lose their tags, quotes and punctuation attach to their words", () => {
    expect(untag("The/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, it/pps did/dod n't/* ./.")).toBe(
      'The jury said "no evidence", it didn\'t.',
    );
    expect(untag("(/( see/vb page/nn 4/cd )/) ;/. he's/pps+bez")).toBe("(see page 4); he's");
    const paragraphs = brownParagraphs();
    expect(paragraphs.length).toBeGreaterThan(10_000);
    expect(paragraphs.some((p) => /\/[a-z]/.test(p.split(" ")[0]))).toBe(false);
  });
});

describe("tasks", () => {
  const tokenizer = hfTokenizer(SHIPPED);
  const ctx = (over: Partial<TaskContext> = {}): TaskContext => ({
    tokenizer,
    contextSize: 512,
    seed: 7,
    samples: 6,
    ...over,
  });

  test("needle: deterministic per seed; the number appears once in the context, at the depth asked; prompt + answer fit the length", () => {
    const a = needleSamples(ctx(), { lengths: [200, 400], depths: 3 });
    expect(needleSamples(ctx(), { lengths: [200, 400], depths: 3 })).toEqual(a);
    expect(needleSamples(ctx({ seed: 8 }), { lengths: [200, 400], depths: 3 })).not.toEqual(a);
    expect(a.samples).toHaveLength(6);
    for (const s of a.samples) {
      if (s.kind !== "generate") throw new Error("needle samples generate");
      const code = s.questions[0].answers[0];
      expect(s.context.split(code)).toHaveLength(2);
      const lines = s.context.split("\n");
      const at = lines.findIndex((l) => l.includes(code));
      if (s.meta.depth === 0) expect(at).toBe(0);
      if (s.meta.depth === 1) expect(at).toBe(lines.length - 1);
      const tokens = tokenCount(tokenizer, s.context) + tokenCount(tokenizer, s.questions[0].prompt);
      expect(tokens).toBeLessThanOrEqual(Number(s.meta.length));
      expect(tokens).toBeGreaterThan(Number(s.meta.length) * 0.8);
    }
  });

  test("needle: a length the context cannot hold with the answer is shortened to what it can, and said so", () => {
    const r = needleSamples(ctx({ contextSize: 300 }), { lengths: [200, 400, 300], depths: 2 });
    expect(new Set(r.samples.map((s) => s.meta.length))).toEqual(new Set([200, 293]));
    expect(r.skipped).toEqual([
      expect.stringMatching(/needle at 400 tokens: shortened to 293 to fit the model's context/),
      expect.stringMatching(/needle at 300 tokens: shortened to 293/),
    ]);
  });

  test("every task at the model's whole context: BOS + context + question ≤ the length, and + the answer ≤ the context (exact token counts)", () => {
    for (const contextSize of [300, 512, 1024]) {
      const c = ctx({ contextSize, samples: 8 });
      const all = [
        needleSamples(c, { lengths: [contextSize], depths: 4 }),
        qaSamples(c, { length: contextSize }),
        ...(contextSize >= 512 ? [repetitionSamples(c, { length: contextSize })] : []), // 300 cannot hold 384 characters after a context
        ...RULER_TASKS.filter((t) => t !== "cwe" || contextSize >= 1024).map((t) =>
          rulerSamples(t, c, { length: contextSize }),
        ),
      ];
      for (const { samples, skipped } of all) {
        expect(samples.length, `${contextSize}: ${skipped.join("; ")}`).toBeGreaterThan(0);
        for (const s of samples) {
          if (s.kind !== "generate") throw new Error("generation samples");
          const q = s.questions[0];
          const prompt = promptLength(tokenizer, s.context, q.prompt);
          expect(prompt, s.id).toBeLessThanOrEqual(
            Number(s.meta.length) + (s.id.startsWith("repetition") ? q.maxNewTokens + 8 : 0),
          );
          expect(prompt + q.maxNewTokens, s.id).toBeLessThanOrEqual(contextSize);
        }
      }
      for (const s of bpcSamples(c, { length: contextSize }).samples) {
        if (s.kind !== "bpc") throw new Error("bpc samples");
        expect(1 + tokenCount(tokenizer, s.context) + tokenCount(tokenizer, s.reference)).toBeLessThanOrEqual(
          contextSize,
        );
      }
    }
  });

  test("repetition: the prompt is ≥ 128 characters of the context, whole words, and the expected continuation follows it there; bpc: deterministic, sized to fit", () => {
    const r = repetitionSamples(ctx(), { length: 300 });
    expect(r.samples.length).toBeGreaterThan(0);
    for (const s of r.samples) {
      if (s.kind !== "generate") throw new Error("repetition samples generate");
      const prompt = s.questions[0].prompt.slice(1);
      const continuation = s.questions[0].answers[0];
      expect(prompt.length).toBeGreaterThanOrEqual(128);
      expect(continuation).toHaveLength(256);
      const at = s.context.indexOf(prompt + continuation);
      expect(at).toBeGreaterThanOrEqual(0);
      expect(prompt).toMatch(/^\S.*\S$/s); // no whitespace at either end
      if (at > 0) expect(s.context[at - 1]).toMatch(/\s/); // starts a word
      expect(continuation).toMatch(/^\s/); // the prompt's last word is whole
    }
    expect(wordStart("ab cd", 0)).toBe(0);
    expect(wordStart("ab cd", 1)).toBe(3);
    expect(wordStart("ab  cd", 2)).toBe(4);
    expect(wordStart("ab", 1)).toBe(2);
    expect(wordEnd("ab cd", 0)).toBe(2);
    expect(wordEnd("ab cd", 2)).toBe(2);
    expect(wordEnd("ab cd", 4)).toBe(5);
    const b = bpcSamples(ctx(), { length: 2000 });
    expect(bpcSamples(ctx(), { length: 2000 })).toEqual(b);
    expect(b.skipped).toEqual([expect.stringMatching(/bpc at 2000 tokens: shortened to \d+/)]);
    for (const s of b.samples)
      if (s.kind === "bpc")
        expect(tokenCount(tokenizer, s.context) + tokenCount(tokenizer, s.reference)).toBeLessThanOrEqual(512);
  });

  test("qa: 8 passages, each with one person's birthplace; a worked example about another; deterministic; fits the length", () => {
    const r = qaSamples(ctx(), { length: 480 });
    expect(qaSamples(ctx(), { length: 480 })).toEqual(r);
    for (const s of r.samples) {
      if (s.kind !== "generate") throw new Error("qa samples generate");
      const q = s.questions[0];
      const person = /Where was (.+) born\?/.exec(q.prompt)![1];
      expect(s.context.match(/^Passage \d+:$/gm)).toHaveLength(8);
      expect(s.context).toContain(`${person} was born in ${q.answers[0]} in `);
      expect(s.context.split(`${person} was born`)).toHaveLength(2);
      const worked = /Question: Where was (.+) born\?\nAnswer: (.+)\n$/.exec(s.context)!;
      expect(worked[1]).not.toBe(person);
      expect(s.context).toContain(`${worked[1]} was born in ${worked[2]} in `);
      expect(promptLength(tokenizer, s.context, q.prompt)).toBeLessThanOrEqual(480);
    }
  });

  test("RULER: needles, values, variable chains and common words are where the answers say; deterministic per seed", () => {
    for (const task of RULER_TASKS) {
      const r = rulerSamples(task, ctx({ samples: 3, contextSize: 2048 }), { length: 1500 });
      expect(rulerSamples(task, ctx({ samples: 3, contextSize: 2048 }), { length: 1500 })).toEqual(r);
      expect(r.samples, task).toHaveLength(3);
      for (const s of r.samples) {
        if (s.kind !== "generate") throw new Error("RULER samples generate");
        const { answers, prompt } = s.questions[0];
        for (const a of answers) expect(s.context).toContain(a);
        if (task.startsWith("niah")) expect(s.context).toContain(`One of the special magic numbers for `);
        if (task === "niah-multivalue") expect(answers).toHaveLength(4);
        if (task === "vt") {
          const value = /assigned the value (\d+) in the text/.exec(prompt)![1];
          expect(s.context).toContain(`VAR ${answers[0]} = ${value}`);
          for (let i = 1; i < answers.length; i++)
            expect(s.context.indexOf(`VAR ${answers[i]} = VAR ${answers[i - 1]}`)).toBeGreaterThan(
              s.context.indexOf(`VAR ${answers[i - 1]} =`),
            );
        }
        if (task === "cwe") {
          const count = (w: string) => s.context.split(/\s+/).filter((x) => x === w).length;
          const rare = Math.max(
            ...s.context
              .split(/\s+/)
              .filter((x) => /^[a-z]+$/.test(x) && !answers.includes(x))
              .map(count),
          );
          for (const w of answers) expect(count(w)).toBeGreaterThan(rare);
        }
      }
    }
  });

  test("--data: lines grouped by context in file order; a bad line is a FormatError naming the file, the line and the column", () => {
    const dir = tempDir();
    const file = path.join(dir, "tasks.jsonl");
    const row = (over: Record<string, unknown>) =>
      JSON.stringify({ context: "The sky is blue.", question: "What colour is the sky?", answer: "blue", ...over });
    fs.writeFileSync(
      file,
      [
        row({}),
        "",
        row({ question: "Is it?", answer: ["yes", "blue"], metric: "contains-any", answer_prefix: "Answer:" }),
        row({ context: "Other." }),
      ].join("\n"),
    );
    const r = dataSamples(ctx(), file);
    expect(r.samples).toHaveLength(2);
    const first = r.samples[0];
    if (first.kind !== "generate") throw new Error("data samples generate");
    expect(first.questions.map((q) => q.prompt)).toEqual(["\nWhat colour is the sky?", "\nIs it?\nAnswer:"]);
    expect(first.questions[1]).toMatchObject({ answers: ["yes", "blue"], metric: "contains-any", maxNewTokens: 32 });
    const cases: [string, RegExp][] = [
      ["{not json", /tasks\.jsonl:2: not valid JSON/],
      ["[1]", /tasks\.jsonl:2: expected a JSON object/],
      [
        JSON.stringify({ question: "q", answer: "a" }),
        /tasks\.jsonl:2: "context" must be a string, found nothing \(the key is missing\)/,
      ],
      [row({ answer: 7 }), /tasks\.jsonl:2: "answer" must be a non-empty string or a list of strings, found 7/],
      [row({ answer: [] }), /"answer" must be a non-empty string or a list of strings, found \[\]/],
      [row({ max_new_tokens: 0 }), /tasks\.jsonl:2: "max_new_tokens" must be an integer from 1 to 4096, found 0/],
      [
        row({ metric: "rouge" }),
        /tasks\.jsonl:2: "metric" must be one of contains-all, contains-any, prefix, found "rouge"/,
      ],
      [
        row({ context: "word ".repeat(2000) }),
        /tasks\.jsonl:2: the context, question and max_new_tokens need \d+ tokens but the model's context is 512/,
      ],
    ];
    for (const [line, message] of cases) {
      fs.writeFileSync(file, row({}) + "\n" + line + "\n");
      expect(() => dataSamples(ctx(), file)).toThrow(FormatError);
      expect(() => dataSamples(ctx(), file)).toThrow(message);
    }
    fs.rmSync(dir, { recursive: true });
  });

  test("the grid: dense once per task, then every method at every ratio above 1; matched bytes per method", () => {
    const cells = gridCells({ tasks: ["needle", "bpc"], methods: ["dense", "sparq", "h2o"], compressions: [1, 2, 8] });
    expect(cells.map((c) => `${c.task} ${c.method} ${c.compression}`)).toEqual([
      "needle dense 1",
      "needle sparq 2",
      "needle h2o 2",
      "needle sparq 8",
      "needle h2o 8",
      "bpc dense 1",
      "bpc sparq 2",
      "bpc h2o 2",
      "bpc sparq 8",
      "bpc h2o 8",
    ]);
    expect(cellSpec({ task: "needle", method: "h2o", compression: 8 }, 2000)).toEqual({ method: "h2o", budget: 250 });
    expect(cellSpec({ task: "needle", method: "streaming", compression: 8 }, 80)).toEqual({
      method: "streaming",
      budget: 10,
      sinks: 2,
    });
    expect(cellSpec({ task: "needle", method: "sparq", compression: 8 }, 80)).toEqual({
      method: "sparq",
      compression: 8,
      minK: 1,
      minR: 1,
    });
    expect(cellSpec({ task: "needle", method: "sparq", compression: 8 }, 80, "probabilities")).toEqual({
      method: "sparq",
      compression: 8,
      minK: 1,
      minR: 1,
      groupRanking: "probabilities",
    });
    expect(cellSpec({ task: "needle", method: "h2o", compression: 8 }, 2000, "probabilities")).toEqual({
      method: "h2o",
      budget: 250,
    });
  });
});

describe("bits per character against a hand computation", () => {
  test("dense bpc from one-token decode steps == Σ −log p over the reference from one prefill's logits (≤ 1e-5 relative)", async () => {
    const model = await loadModel(SHIPPED, { contextSize: 512, threads: 1 });
    try {
      const tok = model.tokenizer;
      const { samples } = bpcSamples({ tokenizer: tok, contextSize: 512, seed: 3, samples: 2 }, { length: 64 });
      const cell = await runCell(model, () => ({ method: "dense" }), samples);
      for (const [i, s] of samples.entries()) {
        if (s.kind !== "bpc") throw new Error("bpc samples");
        const context = tok.encode(s.context, { addBos: tok.addBos });
        const reference = tok.encode(s.reference, { addBos: false });
        const session = model.createSession();
        const all = session.evaluate([...context, ...reference], true);
        session.dispose();
        const V = model.config.vocabSize;
        let nats = 0;
        for (let j = 1; j < reference.length; j++) {
          const row = all.subarray((context.length + j - 1) * V, (context.length + j) * V);
          nats += negativeLogLikelihood(row, reference[j]);
        }
        const expected = (nats * Math.LOG2E) / tok.decode(reference.slice(1)).length;
        expect(Math.abs(cell.results[i].score - expected) / expected).toBeLessThanOrEqual(1e-5);
      }
    } finally {
      model.dispose();
    }
  });
});

describe("several questions on one context", () => {
  test("dense and SparQ: answers after one shared prefill (the session rewound between questions) == each question asked alone", async () => {
    const model = await loadModel(SHIPPED, {
      contextSize: 512,
      threads: 1,
      attention: { method: "sparq", compression: 4, reallocation: true },
    });
    try {
      const { samples } = needleSamples(
        { tokenizer: model.tokenizer, contextSize: 512, seed: 5, samples: 3 },
        { lengths: [300], depths: 3 },
      );
      const [first, ...rest] = samples;
      if (first.kind !== "generate") throw new Error("needle samples generate");
      // One context, three questions: its own and the other samples' (whose answers it does not hold).
      const questions = [first.questions[0], ...rest.flatMap((s) => (s.kind === "generate" ? s.questions : []))];
      const together = { ...first, questions };
      const alone = questions.map((q, i) => ({ ...first, id: `q${i}`, questions: [q] }));
      for (const spec of [
        { method: "dense" as const },
        { method: "sparq" as const, compression: 4, minK: 1, minR: 1 },
      ]) {
        const shared = await runCell(model, () => spec, [together]);
        const separate = await runCell(model, () => spec, alone);
        expect(shared.results[0].outputs).toEqual(separate.results.map((r) => r.outputs![0]));
      }
    } finally {
      model.dispose();
    }
  });
});

describe("eval end to end on a random model", () => {
  let dir: string;
  let model: string;
  const args = (out: string, ...more: string[]) => [
    "eval",
    "-m",
    model,
    "--tasks",
    "needle,repetition,bpc",
    "--methods",
    "dense,sparq,h2o,streaming",
    "--compression",
    "1,4",
    "--samples",
    "2",
    "--lengths",
    "96,700",
    "--depths",
    "2",
    "--text",
    "brown",
    "--threads",
    "1",
    "--out",
    out,
    ...more,
  ];
  const keysAndScores = (out: string) =>
    readResults(path.join(out, "results.jsonl"))
      .map((r) => `${r.key} ${JSON.stringify(r.samples.map((s) => s.score))}`)
      .sort();
  beforeAll(() => {
    dir = tempDir("kvslim-eval-");
    model = writeTestGguf(
      dir,
      "m",
      llamaConfig({ dModel: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, ffnDim: 128, vocabSize: 512, contextLength: 2048 }),
    ).path;
  });
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("12 cells (3 tasks × dense and 3 methods at 1/4) appended to results.jsonl, each with score, interval, KV bytes per step (≈ 1/4 of dense's for the methods), stored bytes and flags; a re-run skips them all; report.md has a table per task", async () => {
    const out = path.join(dir, "one");
    const r = await runCli(...args(out));
    expect(r.code, r.err).toBe(0);
    const records = readResults(path.join(out, "results.jsonl"));
    expect(records).toHaveLength(12);
    for (const rec of records) {
      expect(rec.score.n).toBeGreaterThan(0);
      expect(rec.score.low).toBeLessThanOrEqual(rec.score.mean);
      expect(rec.model.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(rec.flags).toMatchObject({ samples: 2, depths: 2 });
      if (rec.method === "dense") expect(rec.transfer).toBeCloseTo(1, 6);
      else expect(rec.transfer).toBeLessThan(0.5);
    }
    const again = await runCli(...args(out));
    expect(again.code, again.err).toBe(0);
    expect(again.err).toMatch(/0 cells run, 12 already done/);
    expect(readResults(path.join(out, "results.jsonl"))).toHaveLength(12);
    const report = await runCli("eval", "report", out);
    expect(report.code, report.err).toBe(0);
    const md = fs.readFileSync(path.join(out, "report.md"), "utf8");
    for (const task of ["needle", "repetition", "bpc"]) {
      expect(md).toContain(`### ${task}`);
      const svg = fs.readFileSync(path.join(out, "plots", `${task}.svg`), "utf8");
      expect(svg.startsWith("<svg")).toBe(true);
      for (const label of ["sparq", "h2o", "streaming", "fraction of dense"]) expect(svg).toContain(label);
      expect(md).toContain(`](plots/${task}.svg)`);
    }
    expect(md).toMatch(/\| sparq \| 1\/4 \|/);
    // The heatmap: one panel per method and ratio, each with its length × depth cells.
    const heatmap = fs.readFileSync(path.join(out, "plots", "needle-heatmap.svg"), "utf8");
    for (const label of ["1 (dense)", "1/4", "depth of the fact"]) expect(heatmap).toContain(label);
  });

  test("--sparq-group-ranking probabilities: the sparq cells record it in their spec and key, beside the default's cells in one results.jsonl; other cells' keys are unchanged", async () => {
    const out = path.join(dir, "ranking");
    const run = (...more: string[]) =>
      runCli(
        ...["eval", "-m", model, "--tasks", "needle", "--methods", "dense,sparq", "--compression", "1,4"],
        ...["--samples", "2", "--lengths", "96,700", "--depths", "2", "--text", "brown", "--threads", "1"],
        ...["--out", out, ...more],
      );
    expect((await run()).code).toBe(0);
    const r = await run("--sparq-group-ranking", "probabilities");
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/1 cells run, 1 already done/);
    const records = readResults(path.join(out, "results.jsonl"));
    const sparq = records.filter((x) => x.method === "sparq");
    expect(sparq).toHaveLength(2);
    const byRanking = sparq.find((x) => (x.spec as { groupRanking?: string }).groupRanking === "probabilities")!;
    expect(JSON.parse(byRanking.key)).toMatchObject({ sparqGroupRanking: "probabilities" });
    const byDefault = sparq.find((x) => x !== byRanking)!;
    expect(JSON.parse(byDefault.key)).not.toHaveProperty("sparqGroupRanking");
    expect(byDefault.spec).not.toHaveProperty("groupRanking");
  });

  test("shards 1/3, 2/3, 3/3 merged == one run (every cell's key and per-sample scores)", async () => {
    const shards = [1, 2, 3].map((i) => path.join(dir, "shards", `s${i}`));
    for (const [i, out] of shards.entries()) expect((await runCli(...args(out, "--shard", `${i + 1}/3`))).code).toBe(0);
    const merged = await runCli("eval", "merge", ...shards);
    expect(merged.code, merged.err).toBe(0);
    expect(keysAndScores(path.join(dir, "shards"))).toEqual(keysAndScores(path.join(dir, "one")));
  });

  test("a results line cut short by a crash is set aside, the cells before it kept, and the run completes", async () => {
    const out = path.join(dir, "cut");
    fs.mkdirSync(out);
    const full = fs.readFileSync(path.join(dir, "one", "results.jsonl"), "utf8").split("\n");
    fs.writeFileSync(path.join(out, "results.jsonl"), full.slice(0, 3).join("\n") + "\n" + full[3].slice(0, 50));
    const r = await runCli(...args(out));
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/9 cells run, 3 already done/);
    expect(fs.readFileSync(path.join(out, "results.jsonl.partial"), "utf8")).toBe(full[3].slice(0, 50));
    expect(keysAndScores(out)).toEqual(keysAndScores(path.join(dir, "one")));
  });

  test("killed (SIGKILL) while running: the cells written stay whole, and a re-run finishes the grid as one run would", async () => {
    const out = path.join(dir, "killed");
    const child = spawn(process.execPath, [path.join(ROOT, "bin", "kvslim.js"), ...args(out)], { stdio: "ignore" });
    const file = path.join(out, "results.jsonl");
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (fs.existsSync(file) && fs.readFileSync(file, "utf8").split("\n").length >= 3) {
          clearInterval(poll);
          child.kill("SIGKILL");
          resolve();
        }
      }, 5);
    });
    await new Promise((resolve) => child.on("exit", resolve));
    const before = readResults(file).length;
    expect(before).toBeGreaterThanOrEqual(2);
    expect(before).toBeLessThan(12);
    const r = await runCli(...args(out));
    expect(r.code, r.err).toBe(0);
    expect(keysAndScores(out)).toEqual(keysAndScores(path.join(dir, "one")));
  }, 60_000);

  test("--data with a bad line: one FormatError naming the file and line before any cell runs; no results file", async () => {
    const data = path.join(dir, "bad.jsonl");
    fs.writeFileSync(
      data,
      JSON.stringify({ context: "x", question: "y", answer: "z" }) +
        "\n" +
        JSON.stringify({ context: "x", question: 5, answer: "z" }) +
        "\n",
    );
    const out = path.join(dir, "bad");
    const r = await runCli(
      "eval",
      "-m",
      model,
      "--data",
      data,
      "--methods",
      "dense",
      "--compression",
      "1",
      "--threads",
      "1",
      "--out",
      out,
    );
    expect(r.code).toBe(1);
    expect(r.err.trim().split("\n")).toHaveLength(1);
    expect(r.err).toMatch(/FormatError: .*bad\.jsonl:2: "question" must be a string, found 5/);
    expect(fs.existsSync(path.join(out, "results.jsonl"))).toBe(false);
  });
});
