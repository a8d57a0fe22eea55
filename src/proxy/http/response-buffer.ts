/**
 * Response bytes the client has not taken yet (nginx proxy_buffering on): the upstream is read
 * as fast as it sends, so a slow download does not hold a backend worker. Bytes wait in memory up
 * to `proxy_buffers` + `proxy_buffer_size`, then in a temp file up to `proxy_max_temp_file_size`;
 * past both the owner pauses the upstream (as with buffering off). First in, first out: once a
 * byte went to the file, later ones follow it there until the file is drained, then the file is
 * reused from its start.
 */
import { TempFile, type TempFileOwner } from './temp-file.js';

export interface ResponseBufferOwner {
  /** Data became available after `next` answered 'pending'. */
  onBufferReadable(): void;
  /** A temp file write finished: `full` may have turned false. */
  onBufferRoom(): void;
  /** The temp file failed: the response cannot be completed. */
  onBufferError(err: Error): void;
  /** A temp file was started (metrics). */
  onTempFile(): void;
}

const READ_SIZE = 64 * 1024;
/** Bytes waiting for the disk before the upstream is paused: a few reads' worth, whatever the response's size. */
const MAX_WRITE_BACKLOG = 256 * 1024;

export class ResponseBuffer implements TempFileOwner {
  private readonly memory: Buffer[] = [];
  private memoryBytes = 0;
  private file: TempFile | null = null;
  /** Bytes go to the file (it holds unread data, or data waiting to be written). */
  private toFile = false;
  /** Next file offset to read. */
  private readAt = 0;
  private reading = false;
  /** A file read finished before `next` asked for it. */
  private ready: Buffer | null = null;
  /** `next` answered 'pending': call onBufferReadable when data comes. */
  private waiting = false;

  constructor(
    private readonly memoryLimit: number,
    private readonly fileLimit: number,
    private readonly dir: string,
    private readonly owner: ResponseBufferOwner,
  ) {}

  /** Keeps `chunk` after everything before it. */
  push(chunk: Buffer): void {
    if (!this.toFile && (this.memoryBytes < this.memoryLimit || this.fileLimit === 0)) {
      this.memory.push(chunk);
      this.memoryBytes += chunk.length;
      if (this.waiting) this.wake();
      return;
    }
    this.toFile = true;
    if (this.file === null) {
      this.file = new TempFile(this.dir, this);
      this.owner.onTempFile();
    }
    this.file.append(chunk);
  }

  /**
   * Past its limits, or the disk is behind by MAX_WRITE_BACKLOG: the upstream should
   * wait (at most one more read arrives after that), so memory stays bounded whatever the sizes.
   */
  get full(): boolean {
    if (this.fileLimit === 0) return this.memoryBytes >= this.memoryLimit;
    if (!this.toFile) return false;
    const file = this.file!;
    return file.size - this.readAt >= this.fileLimit || file.size - file.written >= MAX_WRITE_BACKLOG;
  }

  get empty(): boolean {
    return this.memoryBytes === 0 && !this.toFile && this.ready === null;
  }

  /** The next bytes in order; 'pending' when they are on their way from the file (onBufferReadable follows); null when empty. */
  next(): Buffer | 'pending' | null {
    const first = this.memory.shift();
    if (first !== undefined) {
      this.memoryBytes -= first.length;
      return first;
    }
    const ready = this.ready;
    if (ready !== null) {
      this.ready = null;
      this.afterFileRead();
      return ready;
    }
    if (!this.toFile) return null;
    this.waiting = true;
    this.readFile();
    return 'pending';
  }

  /** Frees the temp file. */
  close(): void {
    this.file?.close();
    this.memory.length = 0;
    this.memoryBytes = 0;
  }

  private readFile(): void {
    const file = this.file!;
    if (this.reading || this.ready !== null || this.readAt >= file.written) return; // a write completion calls again
    this.reading = true;
    file.read(this.readAt, Math.min(READ_SIZE, file.written - this.readAt), (err, data) => {
      this.reading = false;
      if (err !== null || data.length === 0) {
        this.owner.onBufferError(err ?? new Error('response temp file ended early'));
        return;
      }
      this.readAt += data.length;
      this.ready = data;
      if (this.waiting) this.wake();
    });
  }

  /** After a file read was taken: a drained file is reused from its start, and bytes go to memory again. */
  private afterFileRead(): void {
    const file = this.file!;
    if (this.readAt === file.size && file.idle) {
      file.rewind();
      this.readAt = 0;
      this.toFile = false;
    }
  }

  private wake(): void {
    this.waiting = false;
    this.owner.onBufferReadable();
  }

  /** @internal TempFileOwner: more of what was appended is on disk. */
  onTempFileWritten(): void {
    if (this.waiting) this.readFile();
    this.owner.onBufferRoom();
  }

  /** @internal TempFileOwner */
  onTempFileError(err: Error): void {
    this.owner.onBufferError(err);
  }
}
