/**
 * Raw HTTP/1.x on loopback for the abuse tests: a client that sends exact bytes and reads
 * everything the other side sends until it closes (or a bounded time passes), a parser for the
 * responses it got, and a "recording backend" that keeps the exact bytes each connection
 * received and parses them strictly: anything a proxy should never pass on (bare LF, obs-fold,
 * both Content-Length and Transfer-Encoding, a Transfer-Encoding other than "chunked", bad chunk
 * sizes, control bytes, ...) is recorded as malformed.
 */
import net from 'node:net';
import { freePort } from './net.js';
import type { Scope } from './scope.js';

export interface RawResult {
  /** Every byte received, in order. */
  data: Buffer;
  /** `data` as latin1 text (one char per byte). */
  text: string;
  /** The peer closed (FIN or reset) before the deadline / `until`. */
  closed: boolean;
  /** The connection was reset (ECONNRESET, EPIPE) rather than closed cleanly. */
  reset: boolean;
  /** ms from connect until close (null when not closed). */
  closedAfterMs: number | null;
  /** Parsed responses (best effort; `rest` holds what did not parse as a complete response). */
  responses: RawResponse[];
  rest: Buffer;
}

export interface RawResponse {
  version: string;
  status: number;
  reason: string;
  /** [name, value] in order, names as sent. */
  headers: [string, string][];
  body: Buffer;
  /** The response's own bytes, head and body. */
  raw: Buffer;
}

export interface RawOptions {
  /** Overall bound: give up (and destroy the socket) after this long. Default 5000. */
  timeoutMs?: number;
  /** Pause between the given parts (each part is one write). Default 0 (all written at once). */
  gapMs?: number;
  /** Half-close (FIN) after the last write. Default false. */
  end?: boolean;
  /** Stop reading (and destroy) once this is true of what was received so far. */
  until?: (data: Buffer) => boolean;
  /** Methods of the requests sent, in order, to parse responses to HEAD without a body. */
  methods?: string[];
}

/** One raw connection: writes `parts` (each one write, `gapMs` apart), reads until close, `until`, or `timeoutMs`. */
export function rawExchange(port: number, parts: string | Buffer | (string | Buffer)[], opts: RawOptions = {}): Promise<RawResult> {
  const list = (Array.isArray(parts) ? parts : [parts]).map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p));
  const timeoutMs = opts.timeoutMs ?? 5000;
  return new Promise((resolve) => {
    const started = Date.now();
    const chunks: Buffer[] = [];
    let closed = false;
    let reset = false;
    let closedAt: number | null = null;
    let done = false;
    const socket = net.connect(port, '127.0.0.1');
    const timers: NodeJS.Timeout[] = [];
    const finish = (): void => {
      if (done) return;
      done = true;
      for (const t of timers) clearTimeout(t);
      socket.destroy();
      const data = Buffer.concat(chunks);
      const parsed = parseResponses(data, opts.methods);
      resolve({ data, text: data.toString('latin1'), closed, reset, closedAfterMs: closedAt === null ? null : closedAt - started, responses: parsed.responses, rest: parsed.rest });
    };
    timers.push(setTimeout(finish, timeoutMs));
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      if (opts.until !== undefined && opts.until(Buffer.concat(chunks))) finish();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') reset = true;
      closed = true;
      closedAt ??= Date.now();
      finish();
    });
    socket.on('close', () => {
      closed = true;
      closedAt ??= Date.now();
      finish();
    });
    socket.on('connect', () => {
      const gap = opts.gapMs ?? 0;
      if (gap === 0) {
        for (const p of list) socket.write(p);
        if (opts.end) socket.end();
        return;
      }
      list.forEach((p, i) => {
        timers.push(setTimeout(() => {
          if (socket.destroyed) return;
          socket.write(p);
          if (i === list.length - 1 && opts.end) socket.end();
        }, i * gap));
      });
    });
  });
}

/** `until` for rawExchange: stop once `n` complete responses arrived. */
export function responsesReceived(n: number, methods?: string[]): (data: Buffer) => boolean {
  return (data) => parseResponses(data, methods).responses.length >= n;
}

const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');

/** Parses consecutive HTTP/1.x responses (Content-Length, chunked, no body for 1xx/204/304/HEAD, else up to the end). */
export function parseResponses(data: Buffer, methods: string[] = []): { responses: RawResponse[]; rest: Buffer } {
  const responses: RawResponse[] = [];
  let pos = 0;
  while (pos < data.length) {
    const headEnd = data.indexOf(HEAD_END, pos);
    if (headEnd < 0) break;
    const lines = data.subarray(pos, headEnd).toString('latin1').split('\r\n');
    const m = /^(HTTP\/\d\.\d) (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
    if (!m) break;
    const headers: [string, string][] = [];
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      if (i > 0) headers.push([line.slice(0, i), line.slice(i + 1).trim()]);
    }
    const status = Number(m[2]);
    const get = (name: string): string | undefined => headers.find(([n]) => n.toLowerCase() === name)?.[1];
    const bodyStart = headEnd + 4;
    let body: Buffer;
    let end: number;
    const method = methods[responses.filter((r) => r.status >= 200).length];
    if ((status >= 100 && status < 200) || status === 204 || status === 304 || method === 'HEAD') {
      body = Buffer.alloc(0);
      end = bodyStart;
    } else if (get('transfer-encoding')?.toLowerCase() === 'chunked') {
      const parts: Buffer[] = [];
      let p = bodyStart;
      let complete = false;
      for (let guard = 0; guard < 100_000; guard++) {
        const lineEnd = data.indexOf(CRLF, p);
        if (lineEnd < 0) break;
        const size = parseInt(data.subarray(p, lineEnd).toString('latin1').split(';')[0]!.trim(), 16);
        if (Number.isNaN(size)) break;
        if (size === 0) {
          // trailers until an empty line
          let q = lineEnd + 2;
          for (let g = 0; g < 1000; g++) {
            const e = data.indexOf(CRLF, q);
            if (e < 0) { q = -1; break; }
            if (e === q) { q = e + 2; complete = true; break; }
            q = e + 2;
          }
          p = q;
          break;
        }
        if (lineEnd + 2 + size + 2 > data.length) break;
        parts.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
        p = lineEnd + 2 + size + 2;
      }
      if (!complete) break;
      body = Buffer.concat(parts);
      end = p;
    } else if (get('content-length') !== undefined) {
      const n = Number(get('content-length'));
      if (bodyStart + n > data.length) break;
      body = data.subarray(bodyStart, bodyStart + n);
      end = bodyStart + n;
    } else {
      body = data.subarray(bodyStart);
      end = data.length;
    }
    responses.push({ version: m[1]!, status, reason: m[3] ?? '', headers, body, raw: data.subarray(pos, end) });
    pos = end;
  }
  return { responses, rest: data.subarray(pos) };
}

/** A response header's value (first of that name, any letter case). */
export function header(r: RawResponse, name: string): string | undefined {
  const lower = name.toLowerCase();
  return r.headers.find(([n]) => n.toLowerCase() === lower)?.[1];
}

/** The status codes of every response in a RawResult, final ones only (no 1xx), e.g. [200, 400]. */
export function statuses(r: RawResult): number[] {
  return r.responses.filter((x) => x.status >= 200).map((x) => x.status);
}

// ---------------------------------------------------------------- recording backend

export interface RecordedRequest {
  /** Index of the backend connection it came on (0-based, in accept order). */
  conn: number;
  method: string;
  target: string;
  version: string;
  /** [name, value] in order, as received. */
  headers: [string, string][];
  /** The de-framed body (chunked decoded). */
  body: Buffer;
  /** Exactly the bytes of this request (head and framed body). */
  raw: Buffer;
  /** Date.now() when it was complete, and when the answer was written (undefined until then). */
  receivedAt: number;
  answeredAt?: number;
}

export interface MalformedRequest {
  conn: number;
  reason: string;
  /** The connection's unparsed bytes from the start of the bad request. */
  raw: Buffer;
}

export interface Answer {
  status?: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export interface RecordingBackend {
  port: number;
  address: string;
  /** Every byte each connection received, in accept order. */
  connections: Buffer[];
  /** Requests that parsed, in arrival order. */
  requests: RecordedRequest[];
  /** Requests that did not parse strictly (each one answered 400 and its connection closed). */
  malformed: MalformedRequest[];
  /** Per connection, bytes received after its last complete request (a request cut off midway, or one still arriving). */
  partial: Buffer[];
  /** Forget what was recorded so far. */
  reset(): void;
  close(): Promise<void>;
}

/**
 * Default answer: 200, `Content-Length`, body "ok METHOD TARGET BODYLENGTH" (so a client can
 * check which request the answer is for). `X-Backend-Conn` and `X-Backend-Req` number the
 * connection and the request.
 */
export function defaultAnswer(r: RecordedRequest): Answer {
  return { status: 200, body: `ok ${r.method} ${r.target} ${r.body.length}` };
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Field values: visible ASCII, space, tab, and obs-text (bytes 0x80-0xFF); never CR, LF, NUL or other controls.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

type Parse =
  | { kind: 'need-more' }
  | { kind: 'bad'; reason: string }
  | { kind: 'ok'; request: Omit<RecordedRequest, 'conn' | 'receivedAt'>; length: number };

/** Strict parse of one request at the start of `buf`. */
export function parseRequestStrict(buf: Buffer, maxHead = 1 << 20): Parse {
  const headEnd = buf.indexOf(HEAD_END);
  if (headEnd < 0) {
    if (buf.length > maxHead) return { kind: 'bad', reason: 'head too large' };
    // A bare LF anywhere in what we have (before any CRLFCRLF) is already wrong.
    const text = buf.toString('latin1');
    if (/(^|[^\r])\n/.test(text)) return { kind: 'bad', reason: 'bare LF in head' };
    return { kind: 'need-more' };
  }
  const head = buf.subarray(0, headEnd).toString('latin1');
  if (/(^|[^\r])\n/.test(head)) return { kind: 'bad', reason: 'bare LF in head' };
  if (/\r(?!\n)/.test(head)) return { kind: 'bad', reason: 'bare CR in head' };
  const lines = head.split('\r\n');
  const rl = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) (HTTP\/1\.[01])$/.exec(lines[0]!);
  if (!rl) return { kind: 'bad', reason: `bad request line ${JSON.stringify(lines[0])}` };
  const headers: [string, string][] = [];
  for (const line of lines.slice(1)) {
    if (line.startsWith(' ') || line.startsWith('\t')) return { kind: 'bad', reason: 'obs-fold' };
    const i = line.indexOf(':');
    if (i <= 0) return { kind: 'bad', reason: `header line without name ${JSON.stringify(line.slice(0, 80))}` };
    const name = line.slice(0, i);
    if (!TOKEN.test(name)) return { kind: 'bad', reason: `bad header name ${JSON.stringify(name.slice(0, 80))}` };
    const value = line.slice(i + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (!FIELD_VALUE.test(value)) return { kind: 'bad', reason: `bad header value for ${name}` };
    headers.push([name, value]);
  }
  const all = (n: string): string[] => headers.filter(([h]) => h.toLowerCase() === n).map(([, v]) => v);
  const cls = all('content-length');
  const tes = all('transfer-encoding');
  if (cls.length > 0 && tes.length > 0) return { kind: 'bad', reason: 'both Content-Length and Transfer-Encoding' };
  if (all('host').length > 1) return { kind: 'bad', reason: 'more than one Host' };
  const start = headEnd + 4;
  const base = { method: rl[1]!, target: rl[2]!, version: rl[3]!, headers };
  if (tes.length > 0) {
    if (tes.length !== 1 || tes[0]!.toLowerCase() !== 'chunked') return { kind: 'bad', reason: `Transfer-Encoding ${JSON.stringify(tes)}` };
    const parts: Buffer[] = [];
    let p = start;
    for (let guard = 0; guard < 1_000_000; guard++) {
      const lineEnd = buf.indexOf(CRLF, p);
      if (lineEnd < 0) {
        if (buf.length - p > 4096) return { kind: 'bad', reason: 'chunk size line too long' };
        return { kind: 'need-more' };
      }
      const sizeText = buf.subarray(p, lineEnd).toString('latin1');
      // chunk-size [ chunk-ext ]: hex digits, then optional ";name[=value]" extensions (no CR, LF or NUL).
      if (!/^[0-9A-Fa-f]{1,8}(;[\t\x20-\x7e]*)?$/.test(sizeText)) return { kind: 'bad', reason: `bad chunk size ${JSON.stringify(sizeText.slice(0, 40))}` };
      const size = parseInt(sizeText, 16);
      if (size === 0) {
        // No trailers expected from a proxy: the last chunk is followed by CRLF at once.
        if (buf.length < lineEnd + 4) return { kind: 'need-more' };
        if (buf[lineEnd + 2] !== 13 || buf[lineEnd + 3] !== 10) return { kind: 'bad', reason: 'trailer section after the last chunk' };
        const length = lineEnd + 4;
        return { kind: 'ok', request: { ...base, body: Buffer.concat(parts), raw: Buffer.from(buf.subarray(0, length)) }, length };
      }
      if (buf.length < lineEnd + 2 + size + 2) return { kind: 'need-more' };
      parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
      if (buf[lineEnd + 2 + size] !== 13 || buf[lineEnd + 3 + size] !== 10) return { kind: 'bad', reason: 'chunk data not followed by CRLF' };
      p = lineEnd + 2 + size + 2;
    }
    return { kind: 'bad', reason: 'too many chunks' };
  }
  let bodyLength = 0;
  if (cls.length > 0) {
    if (cls.length !== 1 || !/^\d{1,15}$/.test(cls[0]!)) return { kind: 'bad', reason: `Content-Length ${JSON.stringify(cls)}` };
    bodyLength = Number(cls[0]);
  }
  if (buf.length < start + bodyLength) return { kind: 'need-more' };
  const length = start + bodyLength;
  return { kind: 'ok', request: { ...base, body: Buffer.from(buf.subarray(start, length)), raw: Buffer.from(buf.subarray(0, length)) }, length };
}

/**
 * A raw TCP backend on loopback that records every byte and answers each strictly parsed
 * request with `answer(request)` (keep-alive unless the request says `Connection: close`;
 * answers of one connection are written in request order, also when `answer` is async).
 * A request that does not parse is recorded in `malformed`, answered 400 with
 * `X-Backend-Malformed: 1`, and its connection closed.
 */
export async function startRecordingBackend(answer: (r: RecordedRequest) => Answer | Promise<Answer> = defaultAnswer): Promise<RecordingBackend> {
  const sockets = new Set<net.Socket>();
  const port = await freePort();
  const backend: RecordingBackend = {
    port,
    address: `127.0.0.1:${port}`,
    connections: [],
    requests: [],
    malformed: [],
    partial: [],
    reset() {
      backend.partial.length = 0;
      backend.connections.length = 0;
      backend.requests.length = 0;
      backend.malformed.length = 0;
    },
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
  let reqCount = 0;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    const conn = backend.connections.length;
    backend.connections.push(Buffer.alloc(0));
    backend.partial.push(Buffer.alloc(0));
    let pending: Buffer = Buffer.alloc(0);
    let dead = false;
    let queue: Promise<void> = Promise.resolve();
    socket.on('data', (d: Buffer) => {
      if (dead) return;
      // `conn` may point at a reset() array: record only while it still exists.
      if (backend.connections.length > conn) backend.connections[conn] = Buffer.concat([backend.connections[conn]!, d]);
      pending = pending.length === 0 ? d : Buffer.concat([pending, d]);
      try {
        consume();
      } finally {
        if (backend.partial.length > conn) backend.partial[conn] = Buffer.from(pending);
      }
    });
    const consume = (): void => {
      for (let guard = 0; guard < 10_000 && pending.length > 0; guard++) {
        const r = parseRequestStrict(pending);
        if (r.kind === 'need-more') return;
        if (r.kind === 'bad') {
          backend.malformed.push({ conn, reason: r.reason, raw: Buffer.from(pending) });
          dead = true;
          queue = queue.then(() => {
            socket.end('HTTP/1.1 400 Bad Request\r\nX-Backend-Malformed: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
          });
          return;
        }
        pending = pending.subarray(r.length);
        const rec: RecordedRequest = { conn, ...r.request, receivedAt: Date.now() };
        backend.requests.push(rec);
        const close = rec.headers.some(([n, v]) => n.toLowerCase() === 'connection' && /close/i.test(v));
        const n = reqCount++;
        queue = queue.then(async () => {
          const a = await answer(rec);
          if (socket.destroyed) return;
          const body = typeof a.body === 'string' ? Buffer.from(a.body) : (a.body ?? Buffer.alloc(0));
          let head = `HTTP/1.1 ${a.status ?? 200} X\r\nContent-Type: text/plain\r\nX-Backend-Conn: ${conn}\r\nX-Backend-Req: ${n}\r\n`;
          for (const [k, v] of Object.entries(a.headers ?? {})) head += `${k}: ${v}\r\n`;
          head += `Content-Length: ${body.length}\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;
          rec.answeredAt = Date.now();
          socket.write(Buffer.concat([Buffer.from(head, 'latin1'), body]));
          if (close) socket.end();
        }).catch(() => { socket.destroy(); });
        if (close) {
          dead = true;
          return;
        }
      }
    };
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return backend;
}

/** Every header of a recorded request with that name (any letter case). */
export function headerValues(r: RecordedRequest, name: string): string[] {
  const lower = name.toLowerCase();
  return r.headers.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v);
}

/** Polls `check` every 20 ms until true or `timeoutMs` passed; returns the last result. */
export async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 100_000; i++) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A recording backend behind an in-process sessionlb (more config in `raw`), both torn down with the test's scope. */
export async function recordingSetup(scope: Scope, raw: Record<string, unknown> = {}): Promise<{ be: RecordingBackend; port: number }> {
  const be = await startRecordingBackend();
  scope.cleanup.push(() => be.close());
  const lb = await scope.lb({ upstreams: { backend: { servers: [{ address: be.address }] } }, ...raw }, { admin: false });
  return { be, port: lb.port };
}
