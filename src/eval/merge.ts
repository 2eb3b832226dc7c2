/**
 * Joins the results.jsonl of several runs (the shards of one grid, or several grids) into OUT/results.jsonl,
 * each cell (key) once: the cells OUT already has stay, the others are appended in the order given.
 */
import fs from "node:fs";
import path from "node:path";
import { UsageError } from "../errors.js";
import { RESULTS_FILE, appendResult, readResults } from "./results.js";

export function mergeResults(dirs: readonly string[], out: string): { cells: number; duplicates: number } {
  const target = path.join(out, RESULTS_FILE);
  for (const dir of dirs) {
    if (!fs.existsSync(path.join(dir, RESULTS_FILE))) throw new UsageError(`eval merge: ${dir} has no ${RESULTS_FILE}`);
  }
  const seen = new Set(readResults(target).map((r) => r.key));
  let duplicates = 0;
  for (const dir of dirs.filter((d) => path.resolve(d) !== path.resolve(out))) {
    for (const record of readResults(path.join(dir, RESULTS_FILE))) {
      if (seen.has(record.key)) {
        duplicates++;
        continue;
      }
      seen.add(record.key);
      appendResult(target, record);
    }
  }
  return { cells: seen.size, duplicates };
}
