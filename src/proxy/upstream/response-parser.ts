/**
 * A strict, small HTTP/1.x response framer for the upstream side of the proxy.
 *
 * It parses what an upstream sends back: the status line, the header block, interim
 * 1xx responses (skipped; 101 ends parsing for an upgrade), and the body framed by
 * Content-Length, chunked transfer coding, or the connection close (RFC 9112 section 6).
 * HEAD responses, 204 and 304 have no body whatever their headers say.
 *
 * Strictness is the point (speed never buys a looser parser; response smuggling and
 * cache poisoning start with a framer that guesses):
 * - lines end with CRLF: a bare LF or a bare CR is an error, so are obs-fold continuation
 *   lines, whitespace between a field name and its colon, and control bytes in values;
 * - Content-Length is 1*DIGIT (at most 15 digits); several Content-Length fields must agree;
 * - Transfer-Encoding must be exactly `chunked` (as nginx requires of upstreams), appear
 *   once, and never together with Content-Length;
 * - chunk sizes are 1*HEXDIG (at most 13 digits), each chunk's data is followed by CRLF,
 *   extensions and trailers are bounded and syntax-checked (trailers are discarded);
 * - the header block (status line included) and the trailer block are bounded in size and count.
 *
 * It is a push parser with no allocation per body chunk beyond `subarray`: `execute(buf)`
 * consumes bytes and calls the handler's methods; the transport applies back-pressure by
 * pausing its socket. Errors are thrown as `ResponseParseError` (only on bad input).
 */
import { equalsLower } from '../../nginx-language/header-tokens.js';

export interface ResponseParserLimits {
  /** Bytes in the status line plus header block (and separately the trailer block). */
  maxHeaderBytes: number;
  /** Header fields in one block. */
  maxHeaderCount: number;
  /** Interim (1xx) responses before the final one. */
  maxInterimResponses: number;
  /** Bytes of chunk extensions on one chunk-size line. */
  maxChunkExtensionBytes: number;
}

export const DEFAULT_RESPONSE_LIMITS: ResponseParserLimits = {
  maxHeaderBytes: 16 * 1024,
  maxHeaderCount: 256,
  maxInterimResponses: 16,
  maxChunkExtensionBytes: 1024,
};

/** How the body of the current response is delimited. */
export const enum BodyFraming {
  None = 0,
  Length = 1,
  Chunked = 2,
  /** Until the upstream closes the connection (no Content-Length, no Transfer-Encoding). */
  Close = 3,
}

export type ResponseParseErrorCode =
  | 'HEADER_TOO_LARGE' | 'TOO_MANY_HEADERS' | 'INVALID_STATUS_LINE' | 'INVALID_HEADER'
  | 'OBS_FOLD' | 'BARE_LF' | 'BARE_CR' | 'INVALID_CONTENT_LENGTH' | 'CONFLICTING_CONTENT_LENGTH'
  | 'INVALID_TRANSFER_ENCODING' | 'CONTENT_LENGTH_AND_TRANSFER_ENCODING' | 'INVALID_CHUNK'
  | 'UNEXPECTED_UPGRADE' | 'TOO_MANY_INTERIM' | 'PREMATURE_EOF';

export class ResponseParseError extends Error {
  constructor(readonly code: ResponseParseErrorCode, message: string) {
    super(message);
    this.name = 'ResponseParseError';
  }
}

/** What the parser tells its owner. Methods, not closures: one handler object per connection. */
export interface ResponseParserHandler {
  /** The final response's head is parsed; read it from the parser's fields. */
  onResponseHead(parser: Http1ResponseParser): void;
  /** A piece of the (de-chunked) body: a view into the buffer given to `execute`. */
  onResponseBody(chunk: Buffer): void;
  /** The whole response (body and trailers) has been read. */
  onResponseComplete(): void;
}

const enum State {
  Idle = 0,
  Head = 1,
  BodyLength = 2,
  ChunkSizeStart = 3,
  ChunkSize = 4,
  ChunkSizeWs = 5,
  ChunkExt = 6,
  ChunkSizeLf = 7,
  ChunkData = 8,
  ChunkDataCr = 9,
  ChunkDataLf = 10,
  TrailerLineStart = 11,
  TrailerName = 12,
  TrailerValue = 13,
  TrailerLf = 14,
  TrailerEndLf = 15,
  BodyClose = 16,
  Done = 17,
  Upgraded = 18,
  Stopped = 19,
}

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;
const COLON = 58;
const SEMI = 59;

/** RFC 9110 tchar. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) TCHAR[c] = 1;
for (let c = 65; c <= 90; c++) TCHAR[c] = 1;
for (let c = 97; c <= 122; c++) TCHAR[c] = 1;

/** field-value bytes: HTAB, SP, VCHAR, obs-text. */
const VCHAR = new Uint8Array(256);
VCHAR[HTAB] = 1;
for (let c = 32; c <= 126; c++) VCHAR[c] = 1;
for (let c = 128; c <= 255; c++) VCHAR[c] = 1;

/** Hex digit value + 1 (0 = not a hex digit). */
const HEX = new Uint8Array(256);
for (let c = 48; c <= 57; c++) HEX[c] = c - 48 + 1;
for (let c = 65; c <= 70; c++) HEX[c] = c - 65 + 11;
for (let c = 97; c <= 102; c++) HEX[c] = c - 97 + 11;

const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');
/** What every response's first bytes must be (HTTP/1.0 or HTTP/1.1). */
const STATUS_PREFIX = Buffer.from('HTTP/1.', 'latin1');
/** Content-Length digits: 15 decimal digits stay below 2^53. */
const MAX_DIGITS = 15;
/** Chunk-size digits: 13 hex digits (52 bits) stay exact in a double. */
const MAX_HEX_DIGITS = 13;

function fail(code: ResponseParseErrorCode, message: string): never {
  throw new ResponseParseError(code, message);
}

export class Http1ResponseParser {
  // The final response's head, valid from onResponseHead until the next `reset`.
  statusCode = 0;
  statusMessage = '';
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  versionMinor = 1;
  rawHeaders: string[] = [];
  framing: BodyFraming = BodyFraming.None;
  /** Content-Length of the body (Length framing). */
  contentLength = 0;
  /** The connection may carry another request after this response (HTTP version, `Connection`, framing). */
  keepAlive = false;
  /** This response is a 101 to an upgrade request; bytes after the head belong to the new protocol. */
  upgraded = false;

  private state: State = State.Idle;
  private noBody = false;
  private expectUpgrade = false;
  /** The start of a head split over reads (capacity), and how much of it is filled. */
  private pending: Buffer | null = null;
  private pendingLength = 0;
  private interim = 0;
  private remaining = 0;
  private chunkDigits = 0;
  private extBytes = 0;
  private trailerBytes = 0;
  private trailerCount = 0;

  constructor(
    private readonly handler: ResponseParserHandler,
    readonly limits: ResponseParserLimits = DEFAULT_RESPONSE_LIMITS,
  ) {}

  /** Prepares for the response to a new request (`HEAD` responses carry no body; `upgrade` allows a 101). */
  reset(headRequest: boolean, upgrade = false): void {
    this.state = State.Head;
    this.noBody = headRequest;
    this.expectUpgrade = upgrade;
    this.pending = null;
    this.pendingLength = 0;
    this.interim = 0;
    this.statusCode = 0;
    this.statusMessage = '';
    this.rawHeaders = [];
    this.framing = BodyFraming.None;
    this.contentLength = 0;
    this.keepAlive = false;
    this.upgraded = false;
  }

  /** True while a response is being read (between `reset` and completion). */
  get inMessage(): boolean {
    return this.state !== State.Idle && this.state !== State.Done && this.state !== State.Upgraded && this.state !== State.Stopped;
  }

  /** True once a final response head has been delivered (body may still be coming). */
  get headDone(): boolean {
    return this.state !== State.Head && this.state !== State.Idle;
  }

  /** Whether any byte of the current response has been received. */
  get started(): boolean {
    return this.pending !== null || this.interim > 0 || this.headDone;
  }

  /** Stops parsing (the owner tore the connection down from inside a callback). */
  stop(): void {
    this.state = State.Stopped;
  }

  /**
   * Consumes bytes; returns how many belong to the current response. Fewer than
   * `data.length` means the response ended (or switched protocols) inside `data`:
   * the rest is the upgraded stream, or bytes an upstream must not send unasked.
   */
  execute(data: Buffer): number {
    const len = data.length;
    let i = 0;
    while (i < len) {
      switch (this.state) {
        case State.Head:
          i = this.readHead(data, i);
          break;
        case State.BodyLength: {
          const n = Math.min(this.remaining, len - i);
          this.remaining -= n;
          const chunk = data.subarray(i, i + n);
          i += n;
          if (this.remaining === 0) this.state = State.Done;
          this.handler.onResponseBody(chunk);
          if (this.state === State.Done) this.handler.onResponseComplete();
          break;
        }
        case State.ChunkData: {
          const n = Math.min(this.remaining, len - i);
          this.remaining -= n;
          const chunk = data.subarray(i, i + n);
          i += n;
          if (this.remaining === 0) this.state = State.ChunkDataCr;
          this.handler.onResponseBody(chunk);
          break;
        }
        case State.BodyClose: {
          const chunk = i === 0 ? data : data.subarray(i);
          i = len;
          this.handler.onResponseBody(chunk);
          break;
        }
        case State.Done:
        case State.Upgraded:
        case State.Stopped:
        case State.Idle:
          return i;
        default:
          i = this.readChunkFraming(data, i);
      }
    }
    return i;
  }

  /**
   * The upstream closed its side. Completes a close-delimited body; anywhere else in
   * a message it is an error (a truncated response must never look complete).
   */
  finish(): void {
    if (this.state === State.BodyClose) {
      this.state = State.Done;
      this.handler.onResponseComplete();
      return;
    }
    if (this.inMessage) {
      fail('PREMATURE_EOF', this.headDone ? 'upstream prematurely closed connection while reading upstream' : 'upstream prematurely closed connection while reading response header from upstream');
    }
  }

  // --- head ------------------------------------------------------------------------------

  private readHead(data: Buffer, start: number): number {
    const limit = this.limits.maxHeaderBytes;
    let buf: Buffer;
    let from: number;
    let searchFrom: number;
    /** Bytes of the head buffered from earlier reads (0: `buf` is `data` itself). */
    let prev = 0;
    if (this.pending === null) {
      buf = data;
      from = start;
      searchFrom = start;
    } else {
      // Append to the buffered start of the head (capacity doubles: linear however the bytes are split),
      // at most as much as an acceptable head can still take.
      prev = this.pendingLength;
      const take = Math.min(data.length - start, limit + 4 - prev);
      const need = prev + take;
      if (need > this.pending.length) {
        const grown = Buffer.allocUnsafe(Math.min(limit + 4, Math.max(need, this.pending.length * 2)));
        this.pending.copy(grown, 0, 0, prev);
        this.pending = grown;
      }
      data.copy(this.pending, prev, start, start + take);
      this.pendingLength = need;
      buf = this.pending.subarray(0, need);
      from = 0;
      searchFrom = prev > 3 ? prev - 3 : 0;
    }
    const end = buf.indexOf(HEAD_END, searchFrom);
    if (end === -1) {
      // Incomplete: reject what can be rejected now (not "HTTP/1.", bare LF or over-long), keep the
      // rest. A server that is not HTTP (an SSH banner, memcached's "ERROR" lines) gets its 502 at
      // once instead of after timeouts.read.
      for (let k = from, n = Math.min(buf.length, from + STATUS_PREFIX.length); k < n; k++) {
        if (buf[k] !== STATUS_PREFIX[k - from]) fail('INVALID_STATUS_LINE', 'upstream sent invalid status line');
      }
      if (buf.length - from > limit) fail('HEADER_TOO_LARGE', 'upstream sent too big header');
      for (let k = searchFrom; k < buf.length; k++) {
        if (buf[k] === LF && (k === from || buf[k - 1] !== CR)) fail('BARE_LF', 'upstream sent a bare LF in the response header');
      }
      if (this.pending === null) {
        const length = buf.length - from;
        this.pending = Buffer.allocUnsafe(Math.min(limit + 4, Math.max(1024, length * 2)));
        buf.copy(this.pending, 0, from);
        this.pendingLength = length;
      }
      return data.length;
    }
    const headEnd = end + 4;
    if (headEnd - from > limit) fail('HEADER_TOO_LARGE', 'upstream sent too big header');
    this.pending = null;
    this.pendingLength = 0;
    this.parseHead(buf, from, headEnd);
    // Bytes of `data` consumed: everything up to the end of the head.
    const consumed = prev === 0 ? headEnd : start + (headEnd - prev);
    this.afterHead();
    return consumed;
  }

  /** Parses a complete head `buf[from, end)` (ending in CRLF CRLF) into the fields. */
  private parseHead(buf: Buffer, from: number, end: number): void {
    // Status line: HTTP/1.x SP 3DIGIT [SP reason] CRLF
    let i = from;
    // The head as one latin1 string; names and values are slices of it (one native call per
    // response instead of one per field: ~40% of this function's time for a 5-field head).
    const head = buf.toString('latin1', from, end);
    if (end - from < 14
      || buf[i] !== 72 || buf[i + 1] !== 84 || buf[i + 2] !== 84 || buf[i + 3] !== 80 // HTTP
      || buf[i + 4] !== 47 || buf[i + 5] !== 49 || buf[i + 6] !== 46) { // /1.
      fail('INVALID_STATUS_LINE', 'upstream sent invalid status line');
    }
    const minor = buf[i + 7]!;
    if (minor !== 48 && minor !== 49) fail('INVALID_STATUS_LINE', 'upstream sent invalid HTTP version');
    if (buf[i + 8] !== SP) fail('INVALID_STATUS_LINE', 'upstream sent invalid status line');
    const d0 = buf[i + 9]! - 48;
    const d1 = buf[i + 10]! - 48;
    const d2 = buf[i + 11]! - 48;
    if (d0 < 1 || d0 > 9 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) fail('INVALID_STATUS_LINE', 'upstream sent invalid status code');
    this.versionMinor = minor - 48;
    this.statusCode = d0 * 100 + d1 * 10 + d2;
    i += 12;
    let reasonStart = i;
    if (buf[i] === SP) {
      reasonStart = ++i;
      while (buf[i] !== CR) {
        if (VCHAR[buf[i]!] === 0) fail(buf[i] === LF ? 'BARE_LF' : 'INVALID_STATUS_LINE', 'upstream sent invalid status line');
        i++;
      }
    } else if (buf[i] !== CR) {
      fail('INVALID_STATUS_LINE', 'upstream sent invalid status line');
    }
    if (buf[i + 1] !== LF) fail('BARE_CR', 'upstream sent a bare CR in the status line');
    this.statusMessage = i > reasonStart ? head.slice(reasonStart - from, i - from) : '';
    i += 2;

    // Header fields until the empty line.
    const raw: string[] = [];
    const maxCount = this.limits.maxHeaderCount;
    let clCount = 0;
    let cl = -1;
    let teCount = 0;
    let teChunked = false;
    let connClose = false;
    let connKeepAlive = false;
    while (true) {
      const c = buf[i]!;
      if (c === CR) {
        if (buf[i + 1] !== LF) fail('BARE_CR', 'upstream sent a bare CR in the response header');
        break; // the final CRLF
      }
      if (c === SP || c === HTAB) fail('OBS_FOLD', 'upstream sent an obsolete line folding in the response header');
      const nameStart = i;
      while (TCHAR[buf[i]!] === 1) i++;
      if (i === nameStart || buf[i] !== COLON) {
        fail(buf[i] === LF ? 'BARE_LF' : 'INVALID_HEADER', 'upstream sent invalid header');
      }
      const nameEnd = i;
      i++;
      while (buf[i] === SP || buf[i] === HTAB) i++;
      const valueStart = i;
      while (buf[i] !== CR) {
        if (VCHAR[buf[i]!] === 0) fail(buf[i] === LF ? 'BARE_LF' : 'INVALID_HEADER', 'upstream sent invalid header');
        i++;
      }
      if (buf[i + 1] !== LF) fail('BARE_CR', 'upstream sent a bare CR in the response header');
      let valueEnd = i;
      while (valueEnd > valueStart && (buf[valueEnd - 1] === SP || buf[valueEnd - 1] === HTAB)) valueEnd--;
      i += 2;
      if (raw.length >= maxCount * 2) fail('TOO_MANY_HEADERS', 'upstream sent too many headers');
      const name = head.slice(nameStart - from, nameEnd - from);
      const value = valueEnd > valueStart ? head.slice(valueStart - from, valueEnd - from) : '';
      raw.push(name, value);
      // Framing and connection fields, recognised by length first.
      switch (nameEnd - nameStart) {
        case 14:
          if (equalsLower(name, 'content-length')) {
            const n = parseContentLength(value);
            if (clCount > 0 && n !== cl) fail('CONFLICTING_CONTENT_LENGTH', 'upstream sent duplicate header line with different Content-Length values');
            cl = n;
            clCount++;
          }
          break;
        case 17:
          if (equalsLower(name, 'transfer-encoding')) {
            teCount++;
            if (teCount > 1 || !equalsLower(value, 'chunked')) fail('INVALID_TRANSFER_ENCODING', `upstream sent unknown "Transfer-Encoding": "${value}"`);
            teChunked = true;
          }
          break;
        case 10:
          if (equalsLower(name, 'connection')) {
            if (equalsLower(value, 'keep-alive')) {
              connKeepAlive = true;
              break;
            }
            if (equalsLower(value, 'close')) {
              connClose = true;
              break;
            }
            for (const token of value.split(',')) {
              const t = token.trim();
              if (equalsLower(t, 'close')) connClose = true;
              else if (equalsLower(t, 'keep-alive')) connKeepAlive = true;
            }
          }
          break;
      }
    }
    if (teChunked && clCount > 0) fail('CONTENT_LENGTH_AND_TRANSFER_ENCODING', 'upstream sent "Content-Length" and "Transfer-Encoding" headers at the same time');
    this.rawHeaders = raw;

    const status = this.statusCode;
    if (status < 200 || this.noBody || status === 204 || status === 304) {
      this.framing = BodyFraming.None;
    } else if (teChunked) {
      this.framing = BodyFraming.Chunked;
    } else if (clCount > 0) {
      this.framing = BodyFraming.Length;
      this.contentLength = cl;
    } else {
      this.framing = BodyFraming.Close;
    }
    this.keepAlive = !connClose && (this.versionMinor === 1 || connKeepAlive) && this.framing !== BodyFraming.Close;
  }

  private afterHead(): void {
    const status = this.statusCode;
    if (status < 200) {
      if (status === 101) {
        if (!this.expectUpgrade) fail('UNEXPECTED_UPGRADE', 'upstream sent 101 Switching Protocols to a request that did not ask for it');
        this.upgraded = true;
        this.keepAlive = false;
        this.state = State.Upgraded;
        this.handler.onResponseHead(this);
        return;
      }
      // Interim response (100 Continue, 103 Early Hints...): skip it and read the next head.
      if (++this.interim > this.limits.maxInterimResponses) fail('TOO_MANY_INTERIM', 'upstream sent too many interim responses');
      this.rawHeaders = [];
      return;
    }
    switch (this.framing) {
      case BodyFraming.None:
        this.state = State.Done;
        break;
      case BodyFraming.Length:
        this.remaining = this.contentLength;
        this.state = this.contentLength === 0 ? State.Done : State.BodyLength;
        break;
      case BodyFraming.Chunked:
        this.state = State.ChunkSizeStart;
        break;
      case BodyFraming.Close:
        this.state = State.BodyClose;
        break;
    }
    this.handler.onResponseHead(this);
    if (this.state === State.Done) this.handler.onResponseComplete();
  }

  // --- chunked framing ---------------------------------------------------------------------

  /** Chunk-size lines, the CRLF after chunk data, and trailers: byte by byte (they are short). */
  private readChunkFraming(data: Buffer, start: number): number {
    const len = data.length;
    let i = start;
    while (i < len) {
      const c = data[i]!;
      switch (this.state) {
        case State.ChunkSizeStart: {
          const h = HEX[c]!;
          if (h === 0) fail('INVALID_CHUNK', 'upstream sent invalid chunked response');
          this.remaining = h - 1;
          this.chunkDigits = 1;
          this.extBytes = 0;
          this.state = State.ChunkSize;
          break;
        }
        case State.ChunkSize: {
          const h = HEX[c]!;
          if (h !== 0) {
            if (++this.chunkDigits > MAX_HEX_DIGITS) fail('INVALID_CHUNK', 'upstream sent too large chunk size');
            this.remaining = this.remaining * 16 + (h - 1);
          } else if (c === CR) {
            this.state = State.ChunkSizeLf;
          } else if (c === SEMI) {
            this.state = State.ChunkExt;
          } else if (c === SP || c === HTAB) {
            this.state = State.ChunkSizeWs;
          } else {
            fail('INVALID_CHUNK', 'upstream sent invalid chunked response');
          }
          break;
        }
        case State.ChunkSizeWs:
          // BWS is only allowed before a chunk extension.
          if (c === SEMI) this.state = State.ChunkExt;
          else if (c !== SP && c !== HTAB) fail('INVALID_CHUNK', 'upstream sent invalid chunked response');
          break;
        case State.ChunkExt:
          if (c === CR) {
            this.state = State.ChunkSizeLf;
          } else {
            if (VCHAR[c] === 0) fail(c === LF ? 'BARE_LF' : 'INVALID_CHUNK', 'upstream sent invalid chunk extension');
            if (++this.extBytes > this.limits.maxChunkExtensionBytes) fail('INVALID_CHUNK', 'upstream sent too long chunk extension');
          }
          break;
        case State.ChunkSizeLf:
          if (c !== LF) fail('BARE_CR', 'upstream sent invalid chunked response');
          if (this.remaining === 0) {
            this.trailerBytes = 0;
            this.trailerCount = 0;
            this.state = State.TrailerLineStart;
          } else {
            this.state = State.ChunkData;
            return i + 1; // data is sliced by execute()
          }
          break;
        case State.ChunkDataCr:
          if (c !== CR) fail('INVALID_CHUNK', 'upstream sent invalid chunked response: chunk data longer than its size');
          this.state = State.ChunkDataLf;
          break;
        case State.ChunkDataLf:
          if (c !== LF) fail('BARE_CR', 'upstream sent invalid chunked response');
          this.state = State.ChunkSizeStart;
          break;
        case State.TrailerLineStart:
          if (c === CR) {
            this.state = State.TrailerEndLf;
          } else if (TCHAR[c] === 1) {
            if (++this.trailerCount > this.limits.maxHeaderCount) fail('TOO_MANY_HEADERS', 'upstream sent too many trailers');
            this.state = State.TrailerName;
          } else if (c === SP || c === HTAB) {
            fail('OBS_FOLD', 'upstream sent an obsolete line folding in trailers');
          } else {
            fail(c === LF ? 'BARE_LF' : 'INVALID_HEADER', 'upstream sent invalid trailer');
          }
          break;
        case State.TrailerName:
          if (c === COLON) this.state = State.TrailerValue;
          else if (TCHAR[c] === 0) fail(c === LF ? 'BARE_LF' : 'INVALID_HEADER', 'upstream sent invalid trailer');
          break;
        case State.TrailerValue:
          if (c === CR) this.state = State.TrailerLf;
          else if (VCHAR[c] === 0) fail(c === LF ? 'BARE_LF' : 'INVALID_HEADER', 'upstream sent invalid trailer');
          break;
        case State.TrailerLf:
          if (c !== LF) fail('BARE_CR', 'upstream sent invalid trailer');
          this.state = State.TrailerLineStart;
          break;
        case State.TrailerEndLf:
          if (c !== LF) fail('BARE_CR', 'upstream sent invalid trailer');
          this.state = State.Done;
          this.handler.onResponseComplete();
          return i + 1;
        default:
          return i;
      }
      if (this.state >= State.TrailerLineStart && this.state <= State.TrailerEndLf && ++this.trailerBytes > this.limits.maxHeaderBytes) {
        fail('HEADER_TOO_LARGE', 'upstream sent too big trailers');
      }
      i++;
    }
    return i;
  }
}

/** Content-Length: 1*DIGIT, at most 15 digits (below 2^53). */
function parseContentLength(value: string): number {
  const len = value.length;
  if (len === 0 || len > MAX_DIGITS) fail('INVALID_CONTENT_LENGTH', `upstream sent invalid "Content-Length" header: "${value}"`);
  let n = 0;
  for (let k = 0; k < len; k++) {
    const d = value.charCodeAt(k) - 48;
    if (d < 0 || d > 9) fail('INVALID_CONTENT_LENGTH', `upstream sent invalid "Content-Length" header: "${value}"`);
    n = n * 10 + d;
  }
  return n;
}
