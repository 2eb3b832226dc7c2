/**
 * results.jsonl: one JSON object per finished cell, appended as one write and flushed to disk before the next
 * cell starts, so an interrupted run loses at most the cell it was in. A last line without its newline (a
 * write cut short) is set aside into results.jsonl.partial when the file is read again, never parsed or
 * appended to.
 */
import fs from "node:fs";
import path from "node:path";
import { FormatError } from "../errors.js";
import type { Interval } from "./metrics.js";
import type { SampleResult } from "./run.js";

export interface CellRecord {
  /** What identifies the cell: a resumed or merged run skips a cell whose key is already there. */
  key: string;
  task: string;
  params: Record<string, unknown>;
  method: string;
  compression: number;
  spec: Record<string, unknown>;
  /** The KV cache's dtype, with "+hadamard" when a quantised cache is rotated. */
  kvDtype: string;
  seed: number;
  model: { path: string; name: string; digest: string; architecture: string };
  score: Interval;
  /** Per sample: id, meta, score, outputs. */
  samples: SampleResult[];
  skipped: string[];
  kvBytesPerStep: number;
  denseBytesPerStep: number;
  transfer: number;
  kvStoredPerToken: number;
  decodeTokensPerSecond: number;
  seconds: number;
  /** The eval command's flags. */
  flags: Record<string, unknown>;
  kvslim: string;
  date: string;
}

export const RESULTS_FILE = "results.jsonl";

/** The cells recorded in `file` (none if it does not exist); a cut-short last line is moved aside first. */
export function readResults(file: string): CellRecord[] {
  if (!fs.existsSync(file)) return [];
  const text = fs.readFileSync(file, "utf8");
  const end = text.lastIndexOf("\n") + 1;
  if (end < text.length) {
    fs.writeFileSync(`${file}.partial`, text.slice(end));
    fs.truncateSync(file, Buffer.byteLength(text.slice(0, end)));
  }
  const records: CellRecord[] = [];
  text
    .slice(0, end)
    .split("\n")
    .forEach((line, i) => {
      if (line.trim() === "") return;
      let record: unknown;
      try {
        record = JSON.parse(line);
      } catch (e) {
        throw new FormatError(
          `${file}:${i + 1}: not a JSON results line (${(e as Error).message}); was it edited by hand?`,
        );
      }
      const r = record as Partial<CellRecord>;
      if (
        typeof r !== "object" ||
        r === null ||
        typeof r.key !== "string" ||
        typeof r.task !== "string" ||
        typeof r.score !== "object"
      ) {
        throw new FormatError(`${file}:${i + 1}: expected a kvslim eval cell (key, task, score …)`);
      }
      records.push(r as CellRecord);
    });
  return records;
}

/** Appends one cell as one line and flushes it to disk. */
export function appendResult(file: string, record: CellRecord): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fd = fs.openSync(file, "a");
  try {
    fs.writeSync(fd, JSON.stringify(record) + "\n");
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
