/**
 * Training runs end to end (src/train/trainer.ts, checkpoint.ts, cli/train.ts) on the micro preset: the
 * loss falls, the run directory loads as a model, a resumed run is bit-identical to an uninterrupted one,
 * a kill at any moment leaves a loadable checkpoint, and bad flags are named errors. Also the shipped
 * presets' sizes, which the CLA comparisons depend on.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, test } from "vitest";
import { attentionName, kvBytesPerToken } from "../src/model/config.js";
import { loadModel } from "../src/model/model.js";
import { currentCheckpoint, loadCheckpoint } from "../src/train/checkpoint.js";
import { paramLayout } from "../src/train/params.js";
import { TRAIN_PRESETS, type TrainPresetName } from "../src/train/presets.js";
import { resumeRun, startRun, type TrainOptions } from "../src/train/trainer.js";
import { spawnAsync } from "./helpers/cli.js";
import { tempDir } from "./helpers/models.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const CLI = path.join(ROOT, "bin/kvslim.js");

const options = (over: Partial<TrainOptions> = {}): TrainOptions => ({
  preset: "micro-cla2",
  tokens: 40 * 64,
  seed: 3,
  threads: 1,
  warmup: 0.1,
  evalEvery: 20,
  evalBatches: 2,
  checkpointEvery: 10,
  corpusDocuments: 1500,
  ...over,
});

const losses = (dir: string) =>
  fs
    .readFileSync(path.join(dir, "log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((line) => (JSON.parse(line) as { loss: number }).loss);

describe("a run", () => {
  test("trains: loss falls over 40 steps; the run directory loads in the engine and generates", async () => {
    const dir = path.join(tempDir(), "run");
    const result = await startRun(dir, options());
    expect(result).toMatchObject({ step: 40, finished: true });
    const l = losses(dir);
    expect(l).toHaveLength(40);
    expect(l[39]).toBeLessThan(l[0] - 0.3);
    const model = await loadModel(dir, { threads: 1 });
    expect(model.config.kvSource).toEqual([0, 0]);
    const session = model.createSession();
    let text = "";
    for await (const chunk of session.generate("a domesticated", { maxTokens: 8, temperature: 0 })) text += chunk.text;
    expect(session.tokens.length).toBeGreaterThan(8);
    model.dispose();
  });

  test("evaluates retrieval with the validation loss: 64-token windows hold needle, repeat and mid-repeat documents, scored in the log", async () => {
    const dir = path.join(tempDir(), "run");
    const tokenizer = path.join(ROOT, "models/kvslim-tiny"); // 4,096 tokens: a needle document fits in 64
    await startRun(dir, options({ tokens: 4 * 2 * 64, seqLen: 64, evalEvery: 2, tokenizer }));
    const log = fs
      .readFileSync(path.join(dir, "log.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const evals = log.filter((e) => "valLoss" in e);
    expect(evals.map((e) => e.step)).toEqual([2, 4]);
    for (const e of evals) {
      // batch 2 × 2 validation batches = 4 windows: no key-value list fits, so needle, repeat, mid-repeat, needle.
      expect(e.asked).toBe(2);
      expect(e.recalled as number).toBeLessThanOrEqual(2);
      const [first, second] = e.copyLoss as number[];
      expect(first).toBeGreaterThan(1);
      expect(second).toBeGreaterThan(1); // 4 steps learn no copying
      const [midFirst, midSecond] = e.midCopyLoss as number[];
      expect(midFirst).toBeGreaterThan(1);
      expect(midSecond).toBeGreaterThan(1);
    }
    // kvslim info on the run (and on its current checkpoint): where it stands, and the log's evaluations.
    const info = await spawnAsync(process.execPath, [CLI, "info", dir, "--json"]);
    expect(info.status).toBe(0);
    const training = (JSON.parse(info.stdout) as { training: Record<string, unknown> }).training;
    expect(training).toMatchObject({
      preset: "micro-cla2",
      seed: 3,
      step: 4,
      steps: 4,
      tokensSeen: 4 * 2 * 64,
      batch: 2,
      seqLen: 64,
      checkpoint: "ckpt-000004",
    });
    expect(training.evals).toEqual(
      evals.map(({ step, tokensSeen, valLoss, recalled, asked, copyLoss, midCopyLoss }) => ({
        step,
        tokensSeen,
        valLoss,
        recalled,
        asked,
        copyLoss,
        midCopyLoss,
      })),
    );
    const text = (await spawnAsync(process.execPath, [CLI, "info", path.join(dir, "current")])).stdout;
    expect(text).toMatch(
      /^training +micro-cla2 seed 3: step 4 of 4, 512 of 512 tokens, 2 × 64 tokens a step, .* \(checkpoint ckpt-000004\)$/m,
    );
    expect(text).toMatch(
      /^last eval +step 4: validation loss \d+\.\d{3} · recall [0-2]\/2 · copy ×\d\.\d\d · mid-copy ×\d\.\d\d · 2 evaluations in log\.jsonl/m,
    );
  });

  test("stopped at step 17 and resumed == the uninterrupted 40-step run, bit for bit (weights, AdamW moments, losses)", async () => {
    const straight = path.join(tempDir(), "straight");
    await startRun(straight, options());
    const split = path.join(tempDir(), "split");
    let steps = 0;
    const first = await startRun(split, options(), { onStep: () => steps++, stop: () => steps === 17 });
    expect(first).toMatchObject({ step: 17, finished: false });
    expect(currentCheckpoint(split)).toBe("ckpt-000017");
    fs.appendFileSync(path.join(split, "log.jsonl"), '{"step":18,"loss":4.1'); // a line cut short by a kill: dropped on resume
    const second = await resumeRun(split, {});
    expect(second).toMatchObject({ step: 40, finished: true });
    const a = loadCheckpoint(straight, paramLayout).ckpt;
    const b = loadCheckpoint(split, paramLayout).ckpt;
    expect(b.params).toEqual(a.params);
    expect(b.m).toEqual(a.m);
    expect(b.v).toEqual(a.v);
    expect(b.state.samplerState).toEqual(a.state.samplerState);
    expect(losses(split)).toEqual(losses(straight));
  });

  test("--seq-len longer than the preset's context (64 → 96): the run's config.json says 96", async () => {
    const dir = path.join(tempDir(), "run");
    await startRun(dir, options({ tokens: 2 * 96, seqLen: 96, batch: 2 }));
    const config = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8")) as {
      max_position_embeddings: number;
    };
    expect(TRAIN_PRESETS["micro-cla2"]().model.contextLength).toBe(64);
    expect(config.max_position_embeddings).toBe(96);
  });

  test("2 threads train the same weights as 1 thread, bit for bit (20 steps)", async () => {
    const one = path.join(tempDir(), "one");
    const two = path.join(tempDir(), "two");
    await startRun(one, options({ tokens: 20 * 64 }));
    await startRun(two, options({ tokens: 20 * 64, threads: 2 }));
    expect(loadCheckpoint(two, paramLayout).ckpt.params).toEqual(loadCheckpoint(one, paramLayout).ckpt.params);
  });
});

describe("resume", async () => {
  test("--max-time stops with a checkpoint; the resume reads the tokenizer from the checkpoint (the --tokenizer directory is gone), takes --eval-every (an evaluation every 3 steps, not 100) and on Ctrl-C stops with a checkpoint and exit code 130", async () => {
    const dir = path.join(tempDir(), "run");
    const tokenizer = path.join(tempDir(), "tok");
    fs.mkdirSync(tokenizer);
    for (const file of ["tokenizer.json", "tokenizer_config.json"])
      fs.copyFileSync(path.join(ROOT, "models/kvslim-tiny", file), path.join(tokenizer, file));
    const cli = (args: string[]) => spawnAsync(process.execPath, [CLI, "train", ...args]);
    const first = await cli([
      "--preset",
      "micro-cla2",
      "--tokens",
      String(100_000 * 64),
      "--out",
      dir,
      "--tokenizer",
      tokenizer,
      "--corpus-documents",
      "1500",
      "--threads",
      "1",
      "--max-time",
      "1s",
    ]);
    expect(first.status, first.stderr).toBe(0);
    const stopped = /stopped at step (\d+) of 100000 with a checkpoint; continue with: kvslim train --resume /.exec(
      first.stderr,
    );
    expect(stopped, first.stderr).not.toBeNull();
    const step = Number(stopped![1]);
    expect(currentCheckpoint(dir)).toBe(`ckpt-${String(step).padStart(6, "0")}`);
    fs.rmSync(tokenizer, { recursive: true });
    // Stopped by Ctrl-C after its second evaluation, not by a time budget: on a loaded machine a few seconds
    // may not reach three steps. --max-time 120s only keeps a hung run from hanging the suite.
    const second = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [
        CLI,
        "train",
        "--resume",
        dir,
        "--threads",
        "1",
        "--eval-every",
        "3",
        "--max-time",
        "120s",
      ]);
      let stderr = "";
      let interrupted = false;
      child.stderr.setEncoding("utf8");
      child.stderr.on("data", (chunk: string) => {
        stderr += chunk;
        if (!interrupted && (stderr.match(/^step \d+\/100000 .* val /gm) ?? []).length >= 2) {
          interrupted = true;
          child.kill("SIGINT");
        }
      });
      child.on("close", (status) => resolve({ status, stderr }));
    });
    expect(second.status, second.stderr).toBe(130);
    expect(second.stderr).toContain("stopping after this step");
    const resumed =
      /\nkvslim: InterruptedError: Ctrl-C: stopped at step (\d+) of 100000 with a checkpoint; continue with: kvslim train --resume /.exec(
        second.stderr,
      );
    expect(resumed, second.stderr).not.toBeNull();
    const last = Number(resumed![1]);
    expect(last).toBeGreaterThan(step + 3);
    // Non-terminal progress: a line per evaluation, with the ETA.
    expect(second.stderr).toMatch(
      /^step \d+\/100000 loss \d+\.\d{4} val \d+\.\d{3}.* tok\/s ETA (\d+h \d\dm|\d+m \d\ds|\d+s)$/m,
    );
    const log = fs
      .readFileSync(path.join(dir, "log.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { step: number; valLoss?: number });
    const evalSteps = log.filter((e) => e.step > step && e.valLoss !== undefined).map((e) => e.step);
    expect(evalSteps).toEqual(Array.from({ length: last - step }, (_, i) => step + 1 + i).filter((s) => s % 3 === 0));
    expect(fs.readFileSync(path.join(dir, "current", "tokenizer.json"))).toEqual(
      fs.readFileSync(path.join(ROOT, "models/kvslim-tiny/tokenizer.json")),
    );
  });
});

describe("presets", () => {
  test("the CLA paper's comparisons: tiny-mqa-cla2 stores half of tiny-mqa's KV and the same as tiny-h32-mqa (768 B), with parameters within 3%, all under 20 MB of f32", () => {
    // 768 B/token, counted by hand: K and V × 3 K/V layers × 64 × 2 bytes (CLA2), and × 6 layers × 32 (H32).
    const model = (name: TrainPresetName) => TRAIN_PRESETS[name]().model;
    const cla = model("tiny-mqa-cla2"),
      twin = model("tiny-mqa"),
      small = model("tiny-h32-mqa");
    expect([attentionName(cla), attentionName(twin), attentionName(small)]).toEqual([
      "H64-MQA-CLA2",
      "H64-MQA",
      "H32-MQA",
    ]);
    expect(kvBytesPerToken(cla, 2)).toBe(768);
    expect(kvBytesPerToken(twin, 2)).toBe(2 * 768);
    expect(kvBytesPerToken(small, 2)).toBe(768);
    const params = (c: typeof cla) => paramLayout(c).tensors.reduce((n, t) => n + t.size, 0);
    for (const c of [twin, small]) expect(Math.abs(params(c) / params(cla) - 1)).toBeLessThan(0.03);
    for (const name of Object.keys(TRAIN_PRESETS) as TrainPresetName[])
      expect(params(model(name)) * 4).toBeLessThan(20e6);
  });
});

describe("kill safety", () => {
  test("SIGKILL at random moments (checkpoint every step) always leaves a current checkpoint that loads and resumes; the finished run == an uninterrupted one, bit for bit", async () => {
    const dir = path.join(tempDir(), "killed");
    const args = [
      "train",
      "--preset",
      "micro-cla2",
      "--tokens",
      String(400 * 64),
      "--out",
      dir,
      "--corpus-documents",
      "1500",
      "--checkpoint-every",
      "1",
      "--eval-every",
      "1000",
      "--threads",
      "1",
    ];
    for (let round = 0; round < 4; round++) {
      const child = spawn(
        process.execPath,
        [CLI, ...(round === 0 ? args : ["train", "--resume", dir, "--threads", "1"])],
        { stdio: "ignore" },
      );
      // Let it get going (a checkpoint per step, a few ms each), then kill it mid-whatever.
      const until = Date.now() + 60_000;
      while (Date.now() < until && currentCheckpoint(dir) === null) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 300 + 400 * Math.random()));
      child.kill("SIGKILL");
      await new Promise((r) => child.on("exit", r));
      const name = currentCheckpoint(dir);
      expect(name).not.toBeNull();
      const { ckpt } = loadCheckpoint(dir, paramLayout);
      expect(name).toBe(`ckpt-${String(ckpt.state.step).padStart(6, "0")}`);
      const model = await loadModel(dir, { threads: 1 });
      model.dispose();
    }
    if (loadCheckpoint(dir, paramLayout).ckpt.state.step < 400) {
      const done = await spawnAsync(process.execPath, [CLI, "train", "--resume", dir, "--threads", "1"]);
      expect(done.status).toBe(0);
      expect(done.stderr).toMatch(/done: 400 steps/);
    }
    // Four kills and resumes later, the same weights as a run that was never interrupted (the CLI's defaults).
    const straight = path.join(tempDir(), "straight");
    await startRun(
      straight,
      options({ tokens: 400 * 64, seed: 1, warmup: 0.05, evalEvery: 1000, evalBatches: 8, checkpointEvery: 1000 }),
    );
    expect(loadCheckpoint(dir, paramLayout).ckpt.params).toEqual(loadCheckpoint(straight, paramLayout).ckpt.params);
    expect(fs.readdirSync(dir).filter((entry) => entry.endsWith(".tmp"))).toEqual([]); // what the kills left behind is gone
  });
});

describe("bad input", async () => {
  const run = (args: string[]) => spawnAsync(process.execPath, [CLI, "train", ...args]);
  const expectNamedError = (r: Awaited<ReturnType<typeof run>>, pattern: RegExp) => {
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(pattern);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  };

  test("--resume of a directory without a run: named error", async () => {
    expectNamedError(await run(["--resume", tempDir()]), /is not a kvslim training run/);
  });
  test("--out into a non-empty directory: named error, nothing overwritten", async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, "keep.txt"), "mine");
    expectNamedError(
      await run(["--preset", "micro-cla2", "--tokens", "1k", "--out", dir]),
      /already exists and is not empty/,
    );
    expect(fs.readdirSync(dir)).toEqual(["keep.txt"]);
  });
  test("--batch or --seq-len too large for one WebAssembly memory: OutOfMemoryError (exit 1) naming both flags, at once, before any directory or data", async () => {
    const parent = tempDir();
    for (const flags of [
      ["--batch", "3000"],
      ["--seq-len", "100000"],
    ]) {
      const start = performance.now();
      const r = await run(["--preset", "tiny-mqa", "--tokens", "1M", "--out", path.join(parent, "run"), ...flags]);
      expect(r.status).toBe(1);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(
        /OutOfMemoryError: training tiny-mqa at --batch \d+ × --seq-len \d+ needs [\d.]+ (GiB|TiB) .* at most 4\.00 GiB; use a smaller --batch or --seq-len/,
      );
      expect(performance.now() - start).toBeLessThan(20_000); // not after tokenizing the corpus (a minute)
      expect(fs.readdirSync(parent)).toEqual([]);
    }
  });
  test("a run that fails before its first checkpoint (a corpus shorter than one window) leaves no directory behind, or an --out that was empty empty again: a retry is not refused", async () => {
    const parent = tempDir();
    const fresh = path.join(parent, "new");
    const empty = path.join(parent, "empty");
    fs.mkdirSync(empty);
    // Without --tokenizer the run first writes a tokenizer into its directory, then finds the data too short.
    for (const out of [fresh, empty]) {
      const r = await run([
        "--preset",
        "micro-cla2",
        "--tokens",
        "1k",
        "--out",
        out,
        "--corpus-documents",
        "1",
        "--seq-len",
        "2000",
      ]);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(
        /UsageError: the training data from --corpus-documents 1 is \d+ tokens, fewer than one window of --seq-len 2000 \+ 1/,
      );
    }
    expect(fs.readdirSync(parent)).toEqual(["empty"]);
    expect(fs.readdirSync(empty)).toEqual([]);
  });
  test("--retrieval-share is recorded; --resume with it, or after the training data changed (stream digest differs): named errors, the run untouched", async () => {
    const dir = path.join(tempDir(), "run");
    const first = await run([
      "--preset",
      "micro-cla2",
      "--tokens",
      "640",
      "--out",
      dir,
      "--corpus-documents",
      "1500",
      "--threads",
      "1",
      "--checkpoint-every",
      "5",
      "--retrieval-share",
      "0.6",
    ]);
    expect(first.status, first.stderr).toBe(0);
    const stateFile = path.join(dir, "current", "state.json");
    const state = JSON.parse(fs.readFileSync(stateFile, "utf8")) as {
      streamDigest: string;
      options: { data: { retrievalShare: number; minChars: number } };
    };
    expect(state.streamDigest).toMatch(/^[0-9a-f]{8}$/);
    // Lengths: retrievalLengths(32); needle depths, mid-repeats and answer windows: the defaults.
    expect(state.options.data).toEqual({
      retrievalShare: 0.6,
      minChars: 19,
      maxChars: 75,
      needleDepths: [0.1, 0.9],
      repeatMid: 0,
      answerWindows: 0,
    });
    expectNamedError(
      await run(["--resume", dir, "--retrieval-share", "0.5"]),
      /--resume continues a run as it was set up, so it cannot take --retrieval-share/,
    );
    fs.writeFileSync(stateFile, JSON.stringify({ ...state, streamDigest: "00000000" }));
    const before = fs.readFileSync(path.join(dir, "log.jsonl"), "utf8");
    expectNamedError(
      await run(["--resume", dir, "--tokens", "1280"]),
      /training data changed since the run started \(token stream digest 00000000 in the checkpoint, [0-9a-f]{8} now/,
    );
    expect(fs.readFileSync(path.join(dir, "log.jsonl"), "utf8")).toBe(before);
  });
  test("--needle-depths and --answer-windows are recorded, and a resume trains on with them", async () => {
    const dir = path.join(tempDir(), "run");
    const args = ["--preset", "micro-cla2", "--out", dir, "--corpus-documents", "1500", "--threads", "1"];
    const first = await run([...args, "--tokens", "640", "--needle-depths", "0-1", "--answer-windows", "0.5"]);
    expect(first.status, first.stderr).toBe(0);
    const state = () =>
      JSON.parse(fs.readFileSync(path.join(dir, "current", "state.json"), "utf8")) as {
        step: number;
        options: { data: { needleDepths: number[]; answerWindows: number } };
      };
    expect(state().options.data).toMatchObject({ needleDepths: [0, 1], answerWindows: 0.5 });
    const steps = state().step;
    const more = await run(["--resume", dir, "--tokens", "1280"]);
    expect(more.status, more.stderr).toBe(0);
    expect(state().step).toBeGreaterThan(steps);
    expect(state().options.data).toMatchObject({ needleDepths: [0, 1], answerWindows: 0.5 });
  });
  test("--resume with the flags that set a run up, with --tokens below the run's total, or of a finished run without a larger --tokens: named errors, the run untouched; a larger --tokens extends it", async () => {
    const dir = path.join(tempDir(), "run");
    const first = await run([
      "--preset",
      "micro-cla2",
      "--tokens",
      "640",
      "--out",
      dir,
      "--corpus-documents",
      "1500",
      "--threads",
      "1",
    ]);
    expect(first.status, first.stderr).toBe(0);
    const before = fs.readFileSync(path.join(dir, "log.jsonl"), "utf8");
    expectNamedError(
      await run(["--resume", dir, "--seed", "2", "--batch", "4", "--lr", "1e-3", "--tokenizer", dir, "--tokens", "2k"]),
      /cannot take --seed, --batch, --lr, --tokenizer; it may change --tokens \(a larger total\), --threads, --max-time, --eval-every and --checkpoint-every/,
    );
    expectNamedError(
      await run(["--resume", dir, "--warmup", "0.1", "--seq-len", "16", "--eval-batches", "1"]),
      /cannot take --seq-len, --warmup, --eval-batches;/,
    );
    expectNamedError(
      await run(["--resume", dir]),
      /is finished: 640 tokens \(step 10\) of 640; to train it further, give a larger total with --tokens/,
    );
    expectNamedError(await run(["--resume", dir, "--tokens", "640"]), /is finished: 640 tokens \(step 10\) of 640;/);
    expectNamedError(
      await run(["--resume", dir, "--tokens", "320"]),
      /--tokens 320 is less than the 640 tokens .* was set up for \(it has trained 640 tokens \(step 10\)\); a resume can only make a run longer/,
    );
    expect(fs.readFileSync(path.join(dir, "log.jsonl"), "utf8")).toBe(before);
    expect(currentCheckpoint(dir)).toBe("ckpt-000010");
    const longer = await run(["--resume", dir, "--tokens", "1280", "--threads", "1"]);
    expect(longer.status, longer.stderr).toBe(0);
    expect(longer.stderr).toMatch(/done: 20 steps/);
  });

  test("a damaged checkpoint (no training.safetensors, a truncated one, unreadable state.json, `current` pointing nowhere): named errors from resume", async () => {
    const dir = path.join(tempDir(), "run");
    const first = await run([
      "--preset",
      "micro-cla2",
      "--tokens",
      "320",
      "--out",
      dir,
      "--corpus-documents",
      "1500",
      "--threads",
      "1",
    ]);
    expect(first.status, first.stderr).toBe(0);
    const ckpt = path.join(dir, "current");
    const training = path.join(ckpt, "training.safetensors");
    const bytes = fs.readFileSync(training);
    const resume = () => run(["--resume", dir, "--tokens", "640", "--threads", "1"]);
    fs.rmSync(training);
    expectNamedError(
      await resume(),
      /FormatError: .*ckpt-000005: the checkpoint has no training\.safetensors \(it was changed by hand\)/,
    );
    fs.writeFileSync(training, bytes.subarray(0, bytes.length - 100));
    expectNamedError(await resume(), /FormatError: .*training\.safetensors: .*truncated/);
    fs.writeFileSync(training, bytes);
    const state = fs.readFileSync(path.join(ckpt, "state.json"), "utf8");
    fs.writeFileSync(path.join(ckpt, "state.json"), state.slice(0, 40));
    expectNamedError(await resume(), /FormatError: .*state\.json: not a readable training state/);
    fs.writeFileSync(path.join(ckpt, "state.json"), state);
    fs.renameSync(path.join(dir, "ckpt-000005"), path.join(dir, "elsewhere"));
    expectNamedError(await resume(), /FormatError: .*"current" points at ckpt-000005, which does not exist/);
    fs.renameSync(path.join(dir, "elsewhere"), path.join(dir, "ckpt-000005"));
    const fixed = await resume();
    expect(fixed.status, fixed.stderr).toBe(0); // restored, it continues
    expect(fixed.stderr).toMatch(/done: 10 steps/);
  });

  test('state.json with values of the wrong type or range (null, no config, step "one", config.kvSource "x", config.nLayers 1e9, empty samplerState, options null): one FormatError line naming the key, from info and from resume', async () => {
    const dir = path.join(tempDir(), "run");
    const first = await run([
      "--preset",
      "micro-cla2",
      "--tokens",
      "320",
      "--out",
      dir,
      "--corpus-documents",
      "1500",
      "--threads",
      "1",
    ]);
    expect(first.status, first.stderr).toBe(0);
    const file = path.join(dir, "current", "state.json");
    const good = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
    const config = good.config as Record<string, unknown>;
    const cases: [unknown, RegExp][] = [
      [null, /the file must be a JSON object, found null/],
      [{ ...good, config: undefined }, /"config" must be an object/],
      [{ ...good, step: "one" }, /"step" must be an integer ≥ 0, found "one"/],
      [
        { ...good, config: { ...config, kvSource: "x" } },
        /config: kv_source must be a list of layer indices, found "x"/,
      ],
      [
        { ...good, config: { ...config, nLayers: 1e9 } },
        /config: kv_source has \d+ entries, expected one per layer \(1000000000\)/,
      ],
      [{ ...good, samplerState: [] }, /"samplerState" must be a list of unsigned 32-bit integers/],
      [{ ...good, options: null }, /"options" must be an object/],
    ];
    for (const [state, message] of cases) {
      fs.writeFileSync(file, JSON.stringify(state));
      for (const r of [
        await spawnAsync(process.execPath, [CLI, "info", dir]),
        await run(["--resume", dir, "--tokens", "640", "--threads", "1"]),
      ]) {
        expectNamedError(r, message);
        expect(r.stderr.trim().split("\n"), r.stderr).toHaveLength(1);
        expect(r.stderr).toMatch(/FormatError: .*state\.json: /);
      }
    }
  });

  test("unknown preset, bad --tokens, missing --out, bad --retrieval-share: named errors", async () => {
    expectNamedError(
      await run(["--preset", "huge", "--tokens", "1k", "--out", path.join(tempDir(), "x")]),
      /unknown preset "huge"/,
    );
    expectNamedError(
      await run(["--preset", "micro-cla2", "--tokens", "lots", "--out", path.join(tempDir(), "x")]),
      /--tokens expects a count/,
    );
    expectNamedError(await run(["--preset", "micro-cla2", "--tokens", "1k"]), /needs --preset, --tokens and --out/);
    expectNamedError(
      await run([
        "--preset",
        "micro-cla2",
        "--tokens",
        "1k",
        "--out",
        path.join(tempDir(), "x"),
        "--retrieval-share",
        "1",
      ]),
      /--retrieval-share expects a number in \[0, 1\), got "1"/,
    );
  });
});

describe("continued training (--from)", () => {
  test("a run --from the shipped CLA model (its RoPE base 160,000 given as --rope-theta) at --seq-len 1024 starts from its weights (after one step at lr 1e-9, logits within 1e-4; random weights differ by ~1) and records the run's context (1,024, where the model's is 2,048); a preset of another architecture is refused, naming what differs", async () => {
    const shipped = path.join(ROOT, "models", "kvslim-tiny");
    const dir = path.join(tempDir(), "run");
    await startRun(dir, {
      ...options({
        preset: "tiny-mqa-cla2",
        tokens: 1024,
        seqLen: 1024,
        batch: 1,
        lr: 1e-9,
        evalBatches: 1,
        evalEvery: 100,
      }),
      tokenizer: shipped,
      from: shipped,
      ropeTheta: 160_000,
    });
    const config = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8")) as {
      max_position_embeddings: number;
    };
    expect(config.max_position_embeddings).toBe(1024);
    const a = await loadModel(shipped, { contextSize: 64 });
    const b = await loadModel(dir, { contextSize: 64 });
    try {
      for (const [name, t] of a.source.tensors) expect(b.source.tensors.get(name)?.shape).toEqual(t.shape);
      // One AdamW step at lr 1e-9 moves each weight by about 1e-9: the logits agree to f32 rounding.
      const tokens = Array.from({ length: 32 }, (_, i) => (i * 37) % 4000);
      const la = a.createSession().evaluate(tokens, true);
      const lb = b.createSession().evaluate(tokens, true);
      let worst = 0;
      for (let i = 0; i < la.length; i++) worst = Math.max(worst, Math.abs(la[i] - lb[i]));
      expect(worst).toBeLessThanOrEqual(1e-4);
    } finally {
      a.dispose();
      b.dispose();
    }
    await expect(
      startRun(path.join(tempDir(), "run"), {
        ...options({ preset: "tiny-mqa" }),
        tokenizer: shipped,
        from: shipped,
        ropeTheta: 160_000,
      }),
    ).rejects.toThrow(
      /--from .*kvslim-tiny: its architecture is not preset tiny-mqa's \(kvSource \[0,0,2,2,4,4\], the preset's \[0,1,2,3,4,5\]; kvNorm true, the preset's false\)/,
    );
  }, 60_000);

  test("--rope-theta sets the run's RoPE base (recorded in its config, 40,000 where the model's is 160,000) and lets --from start from a model with another base; without it a run --from a model takes the model's base", async () => {
    const shipped = path.join(ROOT, "models", "kvslim-tiny");
    const dir = path.join(tempDir(), "run");
    const run = (out: string, from: string, ropeTheta?: number) =>
      startRun(out, {
        ...options({ preset: "tiny-mqa-cla2", tokens: 512, seqLen: 512, batch: 1, evalBatches: 1, evalEvery: 100 }),
        tokenizer: shipped,
        from,
        ropeTheta,
      });
    await run(dir, shipped, 40_000);
    const config = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8")) as { rope_theta: number };
    expect(config.rope_theta).toBe(40_000);
    expect(JSON.parse(fs.readFileSync(path.join(shipped, "config.json"), "utf8")).rope_theta).toBe(160_000);
    const again = path.join(tempDir(), "run");
    await run(again, dir);
    expect(JSON.parse(fs.readFileSync(path.join(again, "config.json"), "utf8")).rope_theta).toBe(40_000);
  }, 60_000);
});
