/**
 * An anonymous temp file for a body that outgrew its memory buffer (nginx client_body_temp_path,
 * proxy_temp_path): created private (0600, O_EXCL, a random name) and unlinked as soon as it is
 * open, so nothing of it is left on disk when the descriptor closes, whatever happens to the
 * process. Appends are written in order, one at a time; reads are positional.
 */
import { close, open, read, unlink, write } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { release } from '../upstream/body-chunks.js';

export interface TempFileOwner {
  /** A write finished (`written` grew); `idle` tells whether anything is still to be written. */
  onTempFileWritten(): void;
  /** Opening or writing failed (disk full, no descriptor): the file is unusable. */
  onTempFileError(err: Error): void;
}

export class TempFile {
  private fd = -1;
  private opening = false;
  private closed = false;
  private writing = false;
  private readonly queue: Buffer[] = [];
  /** Bytes appended (on disk or queued). */
  size = 0;
  /** Bytes on disk. */
  written = 0;

  constructor(private readonly dir: string, private readonly owner: TempFileOwner) {}

  /** Queues `chunk` after everything appended before it. A pooled chunk is released once written. */
  append(chunk: Buffer): void {
    this.size += chunk.length;
    this.queue.push(chunk);
    if (this.fd !== -1) {
      if (!this.writing) this.writeNext();
    } else if (!this.opening) {
      this.open();
    }
  }

  /** Nothing waits to be written. */
  get idle(): boolean {
    return this.queue.length === 0 && !this.writing && !this.opening;
  }

  /** Starts over at offset 0 (only when idle and everything written was read): the file is reused. */
  rewind(): void {
    this.size = 0;
    this.written = 0;
  }

  /** Reads `length` bytes at `position` (within `written`). */
  read(position: number, length: number, done: (err: Error | null, data: Buffer) => void): void {
    const buf = Buffer.allocUnsafe(length);
    read(this.fd, buf, 0, length, position, (err, n) => done(err, buf.subarray(0, n)));
  }

  /** Closes the descriptor (now, or once the open in progress finishes); later callbacks are ignored. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    if (this.fd !== -1 && !this.writing) {
      close(this.fd, ignore);
      this.fd = -1;
    }
  }

  private open(): void {
    this.opening = true;
    const path = join(this.dir, `sessionlb-${process.pid}-${randomBytes(12).toString('hex')}`);
    open(path, 'wx+', 0o600, (err, fd) => {
      this.opening = false;
      if (err !== null) {
        if (!this.closed) this.owner.onTempFileError(err);
        return;
      }
      unlink(path, ignore);
      if (this.closed) {
        close(fd, ignore);
        return;
      }
      this.fd = fd;
      this.writeNext();
    });
  }

  private writeNext(): void {
    const chunk = this.queue.shift();
    if (chunk === undefined) return;
    this.writing = true;
    write(this.fd, chunk, 0, chunk.length, this.written, (err, n) => {
      this.writing = false;
      if (this.closed) {
        close(this.fd, ignore);
        this.fd = -1;
        return;
      }
      if (err !== null || n !== chunk.length) {
        this.closed = true;
        close(this.fd, ignore);
        this.fd = -1;
        this.owner.onTempFileError(err ?? new Error(`short write to a temp file (${n} of ${chunk.length} bytes)`));
        return;
      }
      this.written += n;
      release(chunk);
      this.writeNext();
      this.owner.onTempFileWritten();
    });
  }
}

function ignore(): void { /* unlink or close of a temp file that is going anyway */ }
