/**
 * A request body read whole before any server is chosen (nginx proxy_request_buffering on):
 * the first `client_body_buffer_size` bytes in memory, the rest in a temp file. Once complete it
 * can be sent any number of times (each attempt reads it anew), so every request with a body can
 * be retried under the usual rules, and a slow upload never holds a backend.
 */
import { Readable } from 'node:stream';
import { TempFile, type TempFileOwner } from './temp-file.js';

/** What reads the body from the client: paused while the temp file catches up. */
export interface RequestBodySource {
  pause(): void;
  resume(): void;
}

export interface RequestBodyOwner {
  /** Every byte is stored (after `end`). */
  onRequestBodyStored(): void;
  /** The temp file failed: the request cannot go on (500). */
  onRequestBodyError(err: Error): void;
  /** A temp file was started (metrics). */
  onTempFile(): void;
}

/** Read size from the temp file when an attempt sends the body. */
const READ_SIZE = 64 * 1024;

export class RequestBody implements TempFileOwner {
  private readonly memory: Buffer[] = [];
  private memoryBytes = 0;
  private file: TempFile | null = null;
  private ended = false;
  private paused = false;
  /** Bytes received. */
  length = 0;

  constructor(
    private readonly memoryLimit: number,
    private readonly dir: string,
    private readonly source: RequestBodySource,
    private readonly owner: RequestBodyOwner,
  ) {}

  append(chunk: Buffer): void {
    this.length += chunk.length;
    if (this.file === null && this.memoryBytes + chunk.length <= this.memoryLimit) {
      this.memory.push(chunk);
      this.memoryBytes += chunk.length;
      return;
    }
    if (this.file === null) {
      this.file = new TempFile(this.dir, this);
      this.owner.onTempFile();
    }
    this.file.append(chunk);
    // One write at a time: the client waits while the disk catches up (memory stays bounded).
    if (!this.paused) {
      this.paused = true;
      this.source.pause();
    }
  }

  /** The client sent the last byte. */
  end(): void {
    this.ended = true;
    if (this.file === null || this.file.idle) this.owner.onRequestBodyStored();
  }

  /** The whole body as one Buffer when it stayed in memory, else null (use `stream`). */
  inMemory(): Buffer | null {
    if (this.file !== null) return null;
    return this.memory.length === 1 ? this.memory[0]! : Buffer.concat(this.memory, this.memoryBytes);
  }

  /** A new stream of the whole body (memory part, then the temp file), for one attempt. */
  stream(): Readable {
    return new BodyReader(this.memory, this.file);
  }

  /** Frees the temp file (the request is over). */
  close(): void {
    this.file?.close();
  }

  /** @internal TempFileOwner */
  onTempFileWritten(): void {
    if (!this.file!.idle) return;
    if (this.paused) {
      this.paused = false;
      this.source.resume();
    }
    if (this.ended) this.owner.onRequestBodyStored();
  }

  /** @internal TempFileOwner */
  onTempFileError(err: Error): void {
    this.owner.onRequestBodyError(err);
  }
}

/** Reads a stored body: the memory chunks, then the temp file in READ_SIZE pieces. */
class BodyReader extends Readable {
  private index = 0;
  private position = 0;

  constructor(private readonly memory: readonly Buffer[], private readonly file: TempFile | null) {
    super();
  }

  override _read(): void {
    if (this.index < this.memory.length) {
      this.push(this.memory[this.index++]);
      return;
    }
    const file = this.file;
    if (file === null || this.position >= file.written) {
      this.push(null);
      return;
    }
    file.read(this.position, Math.min(READ_SIZE, file.written - this.position), (err, data) => {
      if (err !== null) {
        this.destroy(err);
        return;
      }
      if (data.length === 0) {
        this.destroy(new Error('request body temp file ended early'));
        return;
      }
      this.position += data.length;
      this.push(data);
    });
  }
}
