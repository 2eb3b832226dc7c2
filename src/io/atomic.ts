/**
 * Atomic file writing: a reader of `path` sees either the old file (or none) or the complete new one,
 * never a half-written file, even if kvslim is killed mid-write.
 *
 * Steps: 1. write into a temp file in the same directory (so the rename stays on one filesystem),
 * 2. fsync it, 3. move it into place (link when not overwriting, so an existing file is never
 * replaced even by a racing writer), 4. fsync the directory so the rename itself is durable.
 * On any error the temp file is removed and the target is left as it was.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { FileExistsError, UsageError, formatBytes } from "../errors.js";

export function writeFileAtomic(
  target: string,
  write: (fd: number) => void,
  options: { overwrite?: boolean } = {},
): void {
  const overwrite = options.overwrite ?? false;
  const full = path.resolve(target);
  if (!overwrite) assertAbsent(full);

  const random = Math.random().toString(36).slice(2, 10);
  const temp = path.join(path.dirname(full), `.${path.basename(full)}.${process.pid}.${random}.tmp`);
  let fd: number | null;
  try {
    fd = fs.openSync(temp, "wx");
  } catch (error) {
    throw outputError(target, error as NodeJS.ErrnoException);
  }
  try {
    // Step 1 and 2: write and flush the temp file.
    write(fd);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    // Step 3: move it into place.
    if (overwrite) fs.renameSync(temp, full);
    else moveNoClobber(temp, full);
  } catch (error) {
    if (fd !== null) closeQuietly(fd);
    removeQuietly(temp);
    const system = error instanceof Error && typeof (error as NodeJS.ErrnoException).syscall === "string";
    throw system ? outputError(target, error as NodeJS.ErrnoException) : error;
  }
  // Step 4: make the directory entry durable (not possible on every platform; best effort).
  syncDirectory(path.dirname(full));
}

/** Why `target` cannot be written, in the user's terms (its directory), not the temp file's. */
function outputError(target: string, error: NodeJS.ErrnoException): Error {
  const dir = path.dirname(target);
  switch (error.code) {
    case "ENOENT":
      return new UsageError(`cannot write ${target}: directory ${dir} does not exist; create it first`);
    case "ENOTDIR":
      return new UsageError(`cannot write ${target}: ${dir} is not a directory`);
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return new UsageError(`cannot write ${target}: no permission to create files in ${dir} (${error.code})`);
    case "ENOSPC":
      return new UsageError(`cannot write ${target}: the disk is full`);
    default:
      return new UsageError(`cannot write ${target}: ${error.code ?? error.message}`);
  }
}

/** fs.writeSync is limited to 2 GiB per call and may write less than asked. */
const WRITE_CHUNK_BYTES = 64 * 1024 * 1024;

/** Writes all of `bytes` at the current position of fd. */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) {
    done += fs.writeSync(fd, bytes, done, Math.min(WRITE_CHUNK_BYTES, bytes.length - done));
  }
}

function assertAbsent(full: string): void {
  let size: number;
  try {
    size = fs.statSync(full).size;
  } catch {
    return;
  }
  throw new FileExistsError(
    `expected no file at ${full}, found one (${formatBytes(size)}); ` +
      `kvslim does not overwrite files silently: choose another output path or ask for overwriting explicitly`,
  );
}

/** Moves temp to full unless full exists. link() fails with EEXIST atomically; rename() would replace. */
function moveNoClobber(temp: string, full: string): void {
  try {
    fs.linkSync(temp, full);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EEXIST") assertAbsent(full);
    // Filesystems without hard links (FAT, some network mounts): check, then rename.
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "EXDEV") throw error;
    assertAbsent(full);
    fs.renameSync(temp, full);
    return;
  }
  fs.unlinkSync(temp);
}

function syncDirectory(dir: string): void {
  let fd: number | null = null;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch {
    // Windows cannot open or fsync a directory; the rename is still atomic there.
  } finally {
    if (fd !== null) closeQuietly(fd);
  }
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // already closed
  }
}

function removeQuietly(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    // never created, or already gone
  }
}
