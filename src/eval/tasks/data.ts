/**
 * --data FILE.jsonl: the user's own tasks, one JSON object per line with kvpress's columns:
 *   context         the long text (prefilled once; every line with the same context is asked against it)
 *   question        appended to the context
 *   answer_prefix   optional, appended after the question (e.g. "Answer:")
 *   answer          the accepted answer, a string or a list of strings
 *   max_new_tokens  optional, tokens to generate (default 32)
 *   metric          optional: contains-all (default), contains-any or prefix
 * Every line is checked before anything runs: one FormatError naming the file, the line and the column.
 */
import fs from "node:fs";
import { FormatError, UsageError, shownValue } from "../../errors.js";
import type { Metric } from "../metrics.js";
import type { GenerationSample, Question, TaskContext, TaskSamples } from "../task.js";
import { tokenCount } from "../text.js";

const DATA_METRICS = ["contains-all", "contains-any", "prefix"] as const;
const DEFAULT_NEW_TOKENS = 32;
/** Far above any answer a task asks for; keeps a typo from generating for hours. */
const MAX_NEW_TOKENS = 4096;

interface Line {
  context: string;
  question: Question;
  line: number;
}

export function readDataFile(file: string): Line[] {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new UsageError(
      `--data ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  const lines: Line[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = i + 1;
    if (raw.trim() === "") return;
    const bad = (what: string) => new FormatError(`${file}:${line}: ${what}`);
    let row: unknown;
    try {
      row = JSON.parse(raw);
    } catch (e) {
      throw bad(`not valid JSON (${(e as Error).message})`);
    }
    if (typeof row !== "object" || row === null || Array.isArray(row))
      throw bad(`expected a JSON object with "context", "question" and "answer", found ${shownValue(row)}`);
    const r = row as Record<string, unknown>;
    const text = (key: string, required: boolean) => {
      const v = r[key];
      if (v === undefined && !required) return "";
      if (typeof v !== "string") throw bad(`"${key}" must be a string, found ${shownValue(v)}`);
      return v;
    };
    const context = text("context", true);
    const question = text("question", true);
    const prefix = text("answer_prefix", false);
    const answer = r.answer;
    const answers =
      typeof answer === "string"
        ? [answer]
        : Array.isArray(answer) && answer.length > 0 && answer.every((a) => typeof a === "string")
          ? (answer as string[])
          : null;
    if (answers === null || answers.every((a) => a === ""))
      throw bad(`"answer" must be a non-empty string or a list of strings, found ${shownValue(answer)}`);
    const n = r.max_new_tokens ?? DEFAULT_NEW_TOKENS;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > MAX_NEW_TOKENS)
      throw bad(`"max_new_tokens" must be an integer from 1 to ${MAX_NEW_TOKENS}, found ${shownValue(n)}`);
    const metric = r.metric ?? "contains-all";
    if (typeof metric !== "string" || !(DATA_METRICS as readonly string[]).includes(metric))
      throw bad(`"metric" must be one of ${DATA_METRICS.join(", ")}, found ${shownValue(metric)}`);
    const joined = prefix === "" ? question : `${question}${/\s$/.test(question) ? "" : "\n"}${prefix}`;
    lines.push({
      context,
      line,
      question: { prompt: joined, answers, maxNewTokens: n, metric: metric as Exclude<Metric, "bpc"> },
    });
  });
  if (lines.length === 0) throw new FormatError(`${file}: no tasks (expected one JSON object per line)`);
  return lines;
}

/** The file's lines grouped by context, in file order; a line whose prompt and answer exceed the context is an error. */
export function dataSamples(ctx: TaskContext, file: string): TaskSamples {
  const byContext = new Map<string, GenerationSample>();
  for (const { context, question, line } of readDataFile(file)) {
    const need =
      tokenCount(ctx.tokenizer, context) + tokenCount(ctx.tokenizer, question.prompt) + question.maxNewTokens + 1;
    if (need > ctx.contextSize) {
      throw new FormatError(
        `${file}:${line}: the context, question and max_new_tokens need ${need} tokens but the model's context is ${ctx.contextSize}`,
      );
    }
    let sample = byContext.get(context);
    if (sample === undefined) {
      sample = { kind: "generate", id: `data-${byContext.size}`, context, questions: [], meta: { line } };
      byContext.set(context, sample);
    }
    sample.questions.push({ ...question, prompt: `\n${question.prompt}` });
  }
  return { samples: [...byContext.values()], skipped: [] };
}
