/**
 * Damaged training runs, generated from a valid 5-step run: every file of the checkpoint and of the run
 * directory missing, empty, cut in half, `null`, of the wrong JSON type, or random bytes, read by
 * `info`, `generate` and `train --resume` in process. Each must end in exit 0 or one named error line
 * (never a stack trace or "internal error"); a resume that fails leaves the run exactly as it was, and one
 * that needs a damaged checkpoint file fails.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { runCli } from "./helpers/cli.js";
import { tempDir } from "./helpers/models.js";

let dir: string;
let base: string;
beforeAll(async () => {
  dir = tempDir("kvslim-malformed-run-");
  base = path.join(dir, "run");
  const r = await runCli(
    "train",
    "--preset",
    "micro-cla2",
    "--tokens",
    "320",
    "--out",
    base,
    "--corpus-documents",
    "1500",
    "--threads",
    "1",
    "--eval-every",
    "100",
  );
  expect(r.code, r.err).toBe(0);
}, 120_000);
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Every file of the run, relative to it, following `current` into the checkpoint (links are not files). */
function runFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(path.join(root, rel))) {
      const p = path.join(rel, name);
      const stat = fs.lstatSync(path.join(root, p));
      if (stat.isDirectory()) walk(p);
      else if (stat.isFile()) out.push(p);
    }
  };
  walk("");
  return out.sort();
}

/** A snapshot of every file and link target in a run, to show a failed command changed nothing. */
function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(path.join(root, rel))) {
      const p = path.join(rel, name);
      const stat = fs.lstatSync(path.join(root, p));
      if (stat.isSymbolicLink()) out.set(p, `-> ${fs.readlinkSync(path.join(root, p))}`);
      else if (stat.isDirectory()) walk(p);
      else out.set(p, fs.readFileSync(path.join(root, p)).toString("base64"));
    }
  };
  walk("");
  return out;
}

const DAMAGES: [string, (bytes: Buffer) => Buffer | null][] = [
  ["missing", () => null],
  ["empty", () => Buffer.alloc(0)],
  ["cut in half", (b) => b.subarray(0, Math.floor(b.length / 2))],
  ["null", () => Buffer.from("null")],
  ["a list", () => Buffer.from("[]")],
  ["an empty object", () => Buffer.from("{}")],
  ["a number", () => Buffer.from("42")],
  ["random bytes", (b) => Buffer.from(Array.from({ length: Math.min(b.length, 256) }, (_, i) => (i * 151 + 7) & 0xff))],
];

type Outcome = { code: number; out: string; err: string };
function expectClean(r: Outcome, label: string): void {
  if (r.code === 0) return;
  expect.soft(r.code, `${label}: ${r.err}`).not.toBe(70);
  expect.soft(r.err.trim().split("\n"), `${label}: ${r.err}`).toHaveLength(1);
  expect.soft(r.err, label).toMatch(/^kvslim: [A-Z]\w+Error: /);
  expect.soft(r.err, label).not.toMatch(/\n\s+at |internal error|undefined|Cannot read properties|is not a function/);
}

describe("a damaged training run", () => {
  test("the layout the cases cover: a checkpoint with its six files, the log, the tokenizer directory", () => {
    expect
      .soft(runFiles(base))
      .toEqual([
        "ckpt-000005/config.json",
        "ckpt-000005/model.safetensors",
        "ckpt-000005/state.json",
        "ckpt-000005/tokenizer.json",
        "ckpt-000005/tokenizer_config.json",
        "ckpt-000005/training.safetensors",
        "log.jsonl",
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
      ]);
  });

  // The files a resume cannot do without: the checkpoint's optimizer state (weights and moments) and settings,
  // and its tokenizer (config.json and model.safetensors are written from them at every checkpoint).
  const NEEDED_BY_RESUME = new Set([
    "ckpt-000005/state.json",
    "ckpt-000005/training.safetensors",
    "ckpt-000005/tokenizer.json",
  ]);
  // The files loading the run as a model reads (through the links at the top of the run).
  const NEEDED_BY_MODEL = new Set([
    "ckpt-000005/config.json",
    "ckpt-000005/model.safetensors",
    "ckpt-000005/tokenizer.json",
  ]);

  test(`every file × ${DAMAGES.length} damages, read by info, generate and train --resume: exit 0 or one named error line; a failed resume changes nothing; the files a command needs make it fail`, async () => {
    let cases = 0;
    let serial = 0;
    for (const file of runFiles(base)) {
      const original = fs.readFileSync(path.join(base, file));
      for (const [damage, make] of DAMAGES) {
        const run = path.join(dir, `case${serial++}`);
        fs.cpSync(base, run, { recursive: true, verbatimSymlinks: true });
        const bytes = make(original);
        if (bytes === null) fs.rmSync(path.join(run, file));
        else fs.writeFileSync(path.join(run, file), bytes);
        const label = `${file} ${damage}`;
        // JSON values that happen to be what a file held ("{}" for an empty tokenizer_config.json) are no damage.
        const same = bytes !== null && bytes.equals(original);

        const info = await runCli("info", run);
        expectClean(info, `info: ${label}`);
        const generate = await runCli(
          "generate",
          "-m",
          run,
          "-p",
          "the",
          "-n",
          "2",
          "--temperature",
          "0",
          "--threads",
          "1",
        );
        expectClean(generate, `generate: ${label}`);
        if (NEEDED_BY_MODEL.has(file) && !same) expect.soft(generate.code, `generate: ${label} ran`).not.toBe(0);

        const before = snapshot(run);
        const resume = await runCli("train", "--resume", run, "--tokens", "384", "--threads", "1");
        expectClean(resume, `resume: ${label}`);
        if (resume.code !== 0) expect.soft(snapshot(run), `resume: ${label} changed the run`).toEqual(before);
        if (NEEDED_BY_RESUME.has(file) && !same) expect.soft(resume.code, `resume: ${label} ran`).not.toBe(0);
        fs.rmSync(run, { recursive: true });
        cases += 3;
      }
    }
    expect.soft(cases).toBe(9 * DAMAGES.length * 3);
  }, 300_000);
});
