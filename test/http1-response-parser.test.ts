/**
 * Unit tests of the strict upstream response framer (src/proxy/upstream/response-parser.ts):
 * framing by Content-Length / chunked / close, 1xx and 101, HEAD/204/304, keep-alive,
 * and the malformed or ambiguous framings a proxy must refuse (response smuggling):
 * CL+TE, differing CLs, TE other than chunked, bad chunk sizes, obs-fold, bare LF/CR,
 * oversized heads. Property tests check that how the bytes are split across reads
 * never changes the outcome.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  BodyFraming, DEFAULT_RESPONSE_LIMITS, Http1ResponseParser, ResponseParseError,
  type ResponseParserHandler, type ResponseParserLimits,
} from '../src/proxy/upstream/response-parser.js';

interface Outcome {
  heads: { status: number; message: string; headers: string[]; keepAlive: boolean; framing: BodyFraming; upgraded: boolean }[];
  body: string;
  complete: boolean;
  /** Bytes of input that belong to the response (the rest is left over). */
  consumed: number;
  error: string | null;
}

class Collector implements ResponseParserHandler {
  out: Outcome = { heads: [], body: '', complete: false, consumed: 0, error: null };
  onResponseHead(p: Http1ResponseParser): void {
    this.out.heads.push({ status: p.statusCode, message: p.statusMessage, headers: [...p.rawHeaders], keepAlive: p.keepAlive, framing: p.framing, upgraded: p.upgraded });
  }
  onResponseBody(chunk: Buffer): void {
    this.out.body += chunk.toString('latin1');
  }
  onResponseComplete(): void {
    this.out.complete = true;
  }
}

interface ParseOptions { head?: boolean; upgrade?: boolean; eof?: boolean; limits?: ResponseParserLimits }

/** Feeds `pieces` one `execute` at a time (then EOF when asked); records what the parser reported. */
function parsePieces(pieces: Buffer[], opts: ParseOptions = {}): Outcome {
  const c = new Collector();
  const p = new Http1ResponseParser(c, opts.limits ?? DEFAULT_RESPONSE_LIMITS);
  p.reset(opts.head ?? false, opts.upgrade ?? false);
  try {
    for (const piece of pieces) {
      const n = p.execute(piece);
      c.out.consumed += n;
      if (n < piece.length) break;
    }
    if (opts.eof) p.finish();
  } catch (err) {
    if (!(err instanceof ResponseParseError)) throw err;
    c.out.error = err.code;
  }
  return c.out;
}

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');
const parse = (s: string, opts: ParseOptions = {}): Outcome => parsePieces([bytes(s)], opts);
/** The same input split into single bytes. */
const parseBytewise = (s: string, opts: ParseOptions = {}): Outcome => parsePieces([...bytes(s)].map((b) => Buffer.from([b])), opts);

describe('framing of valid responses', () => {
  it('Content-Length: status, reason, raw headers as sent, body, keep-alive', () => {
    const o = parse('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Mixed-Case:  spaced value \t\r\nContent-Length: 5\r\n\r\nhello');
    expect(o.error).toBeNull();
    expect(o.heads).toHaveLength(1);
    expect(o.heads[0]).toMatchObject({ status: 200, message: 'OK', keepAlive: true, framing: BodyFraming.Length });
    expect(o.heads[0]!.headers).toEqual(['Content-Type', 'text/plain', 'X-Mixed-Case', 'spaced value', 'Content-Length', '5']);
    expect(o.body).toBe('hello');
    expect(o.complete).toBe(true);
  });

  it('an empty reason phrase and a missing one are both accepted', () => {
    expect(parse('HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n').heads[0]).toMatchObject({ status: 404, message: '' });
    expect(parse('HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n').heads[0]).toMatchObject({ status: 404, message: '' });
    expect(parse('HTTP/1.1 599 Custom reason with spaces\r\nContent-Length: 0\r\n\r\n').heads[0]!.message).toBe('Custom reason with spaces');
  });

  it('chunked: de-chunks, accepts extensions, discards trailers', () => {
    const o = parse('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1;x="q"\r\n world\r\nA \t;e\r\n0123456789\r\n0\r\nX-Trailer: t\r\nOther: v\r\n\r\n');
    expect(o.error).toBeNull();
    expect(o.heads[0]!.framing).toBe(BodyFraming.Chunked);
    expect(o.body).toBe('hello world0123456789');
    expect(o.complete).toBe(true);
    expect(o.heads[0]!.keepAlive).toBe(true);
  });

  it('chunked: upper- and lower-case hex, leading zeros, "Chunked" in any case', () => {
    const body = 'x'.repeat(0x1f);
    const o = parse(`HTTP/1.1 200 OK\r\ntransfer-encoding: ChUnKeD\r\n\r\n001F\r\n${body}\r\n0000\r\n\r\n`);
    expect(o.error).toBeNull();
    expect(o.body).toBe(body);
    const lower = parse(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1f\r\n${body}\r\n0\r\n\r\n`);
    expect(lower.body).toBe(body);
  });

  it('no Content-Length and no Transfer-Encoding: the body runs to EOF and the connection is not reusable', () => {
    const text = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this until close';
    const open = parse(text);
    expect(open.heads[0]).toMatchObject({ framing: BodyFraming.Close, keepAlive: false });
    expect(open.complete).toBe(false);
    const closed = parse(text, { eof: true });
    expect(closed.body).toBe('all of this until close');
    expect(closed.complete).toBe(true);
  });

  it('HEAD, 204 and 304 have no body whatever their framing headers say', () => {
    const head = parse('HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n', { head: true });
    expect(head).toMatchObject({ complete: true, body: '' });
    expect(head.heads[0]).toMatchObject({ framing: BodyFraming.None, keepAlive: true });
    const headChunked = parse('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n', { head: true });
    expect(headChunked).toMatchObject({ complete: true, body: '' });
    for (const status of [204, 304]) {
      const o = parse(`HTTP/1.1 ${status} X\r\nContent-Length: 10\r\n\r\n`);
      expect(o).toMatchObject({ complete: true, body: '', consumed: o.consumed });
      expect(o.heads[0]!.framing).toBe(BodyFraming.None);
    }
    // A 204 followed by bytes: they are not the 204's body, they are left over.
    const extra = parse('HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\n');
    expect(extra.complete).toBe(true);
    expect(extra.consumed).toBe('HTTP/1.1 204 No Content\r\n\r\n'.length);
  });

  it('Content-Length: 0 completes at the end of the head', () => {
    const o = parse('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
    expect(o).toMatchObject({ complete: true, body: '' });
  });

  it('identical duplicate Content-Length fields are accepted (RFC 9110 8.6), leading zeros too', () => {
    const o = parse('HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 003\r\n\r\nabc');
    expect(o.error).toBeNull();
    expect(o.body).toBe('abc');
  });

  it('skips interim 1xx responses (100, 102, 103 with headers) and reports the final one', () => {
    const o = parse('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok');
    expect(o.error).toBeNull();
    expect(o.heads).toHaveLength(1);
    expect(o.heads[0]).toMatchObject({ status: 201, message: 'Created' });
    expect(o.heads[0]!.headers).toEqual(['Content-Length', '2']);
    expect(o.body).toBe('ok');
  });

  it('101 to an upgrade request ends parsing; the bytes after the head are left for the new protocol', () => {
    const head = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n';
    const o = parse(`${head}\x81\x05hello`, { upgrade: true });
    expect(o.error).toBeNull();
    expect(o.heads[0]).toMatchObject({ status: 101, upgraded: true, keepAlive: false });
    expect(o.consumed).toBe(head.length);
  });

  it('a non-101 answer to an upgrade request is an ordinary response', () => {
    const o = parse('HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno', { upgrade: true });
    expect(o.heads[0]).toMatchObject({ status: 403, upgraded: false });
    expect(o.body).toBe('no');
  });

  it('keep-alive follows the version and the Connection header', () => {
    const ka = (s: string): boolean => parse(s).heads[0]!.keepAlive;
    expect(ka('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')).toBe(true);
    expect(ka('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')).toBe(false);
    expect(ka('HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 0\r\n\r\n')).toBe(false);
    expect(ka('HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n')).toBe(false);
    expect(ka('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n')).toBe(true);
    expect(ka('HTTP/1.0 200 OK\r\nConnection: x-foo, keep-alive\r\nContent-Length: 0\r\n\r\n')).toBe(true);
  });

  it('returns the bytes of the response it consumed; what follows is left over', () => {
    const first = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';
    const o = parse(`${first}HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled`);
    expect(o.complete).toBe(true);
    expect(o.body).toBe('ok');
    expect(o.consumed).toBe(first.length);
  });

  it('reset() makes the parser read the next response on the same connection', () => {
    const c = new Collector();
    const p = new Http1ResponseParser(c);
    const two = bytes('HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n');
    p.reset(false);
    const n = p.execute(two);
    expect(c.out.complete).toBe(true);
    c.out.complete = false;
    p.reset(false);
    expect(p.execute(two.subarray(n))).toBe(two.length - n);
    expect(c.out.complete).toBe(true);
    expect(c.out.heads.map((h) => h.status)).toEqual([200, 202]);
    expect(c.out.body).toBe('ab');
  });
});

describe('rejected responses (smuggling and malformed framing)', () => {
  const cases: [string, string, string][] = [
    // [description, response, expected error code]
    ['Content-Length and Transfer-Encoding together', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'CONTENT_LENGTH_AND_TRANSFER_ENCODING'],
    ['Transfer-Encoding then Content-Length', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n', 'CONTENT_LENGTH_AND_TRANSFER_ENCODING'],
    ['two different Content-Length fields', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!', 'CONFLICTING_CONTENT_LENGTH'],
    ['a Content-Length list', 'HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello', 'INVALID_CONTENT_LENGTH'],
    ['a negative Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n', 'INVALID_CONTENT_LENGTH'],
    ['a signed Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello', 'INVALID_CONTENT_LENGTH'],
    ['a hex Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello', 'INVALID_CONTENT_LENGTH'],
    ['an exponent Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n', 'INVALID_CONTENT_LENGTH'],
    ['an empty Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n', 'INVALID_CONTENT_LENGTH'],
    ['a Content-Length with inner space', 'HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n', 'INVALID_CONTENT_LENGTH'],
    ['an overflowing Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n', 'INVALID_CONTENT_LENGTH'],
    ['Transfer-Encoding other than chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx', 'INVALID_TRANSFER_ENCODING'],
    ['Transfer-Encoding: gzip, chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n', 'INVALID_TRANSFER_ENCODING'],
    ['Transfer-Encoding: chunked, identity', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n', 'INVALID_TRANSFER_ENCODING'],
    ['Transfer-Encoding with garbage after chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n', 'INVALID_TRANSFER_ENCODING'],
    ['two Transfer-Encoding fields', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'INVALID_TRANSFER_ENCODING'],
    ['a space before the colon (Transfer-Encoding : chunked)', 'HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc', 'INVALID_HEADER'],
    ['obs-fold continuation line', 'HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n', 'OBS_FOLD'],
    ['obs-fold hiding Transfer-Encoding', 'HTTP/1.1 200 OK\r\nX-A: a\r\n\tTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n', 'OBS_FOLD'],
    ['a bare LF line ending in a header', 'HTTP/1.1 200 OK\r\nX-A: a\nContent-Length: 0\r\n\r\n', 'BARE_LF'],
    ['a bare LF status line', 'HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n', 'BARE_LF'],
    ['a bare CR inside a value', 'HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n', 'BARE_CR'],
    ['a NUL byte in a value', 'HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n', 'INVALID_HEADER'],
    ['a DEL byte in a value', 'HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\nContent-Length: 0\r\n\r\n', 'INVALID_HEADER'],
    ['a header without a colon', 'HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0\r\n\r\n', 'INVALID_HEADER'],
    ['an empty header name', 'HTTP/1.1 200 OK\r\n: value\r\nContent-Length: 0\r\n\r\n', 'INVALID_HEADER'],
    ['a non-token header name', 'HTTP/1.1 200 OK\r\nX(A): v\r\nContent-Length: 0\r\n\r\n', 'INVALID_HEADER'],
    ['HTTP/1.2', 'HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n', 'INVALID_STATUS_LINE'],
    ['HTTP/2', 'HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n', 'INVALID_STATUS_LINE'],
    ['lower-case protocol', 'http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n', 'INVALID_STATUS_LINE'],
    ['a two-digit status', 'HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n', 'INVALID_STATUS_LINE'],
    ['a four-digit status', 'HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n', 'INVALID_STATUS_LINE'],
    ['a status below 100', 'HTTP/1.1 099 OK\r\nContent-Length: 0\r\n\r\n', 'INVALID_STATUS_LINE'],
    ['two spaces before the status', 'HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n', 'INVALID_STATUS_LINE'],
    ['a control byte in the reason', 'HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n', 'INVALID_STATUS_LINE'],
    ['an HTTP/0.9 style answer', 'hello world\r\n\r\n', 'INVALID_STATUS_LINE'],
    ['101 to a request that did not ask for an upgrade', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n', 'UNEXPECTED_UPGRADE'],
    ['a negative chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n', 'INVALID_CHUNK'],
    ['a 0x chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n', 'INVALID_CHUNK'],
    ['a non-hex chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\ng\r\nx\r\n0\r\n\r\n', 'INVALID_CHUNK'],
    ['an empty chunk size line', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\nx\r\n0\r\n\r\n', 'INVALID_CHUNK'],
    ['an overflowing chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n', 'INVALID_CHUNK'],
    ['a chunk size that wraps 64 bits to 5', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n', 'INVALID_CHUNK'],
    ['whitespace after a chunk size without an extension', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n', 'INVALID_CHUNK'],
    ['whitespace before a chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n', 'INVALID_CHUNK'],
    ['chunk data longer than its size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n', 'INVALID_CHUNK'],
    ['chunk data without CRLF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello0\r\n\r\n', 'INVALID_CHUNK'],
    ['chunk data ended by a bare LF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n', 'INVALID_CHUNK'],
    ['a chunk size line ended by a bare LF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n', 'INVALID_CHUNK'],
    ['a bare CR after a chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\rhello\r\n0\r\n\r\n', 'BARE_CR'],
    ['a bare LF inside a chunk extension', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n', 'BARE_LF'],
    ['a control byte inside a chunk extension', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x01\r\nhello\r\n0\r\n\r\n', 'INVALID_CHUNK'],
    ['obs-fold in trailers', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: a\r\n b\r\n\r\n', 'OBS_FOLD'],
    ['a trailer without a colon', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbogus\r\n\r\n', 'INVALID_HEADER'],
    ['a bare LF ending the trailers', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n', 'BARE_LF'],
  ];

  for (const [what, text, code] of cases) {
    it(`${what}: ${code}`, () => {
      const whole = parse(text, { eof: true });
      expect(whole.error).toBe(code);
      // Byte by byte: the same verdict, and never a completed response first.
      const split = parseBytewise(text, { eof: true });
      expect(split.error).toBe(code);
      expect(whole.complete).toBe(false);
      expect(split.complete).toBe(false);
    });
  }

  it('bytes that cannot start "HTTP/1." are refused at once, before a head end (an SSH banner, memcached\'s ERROR line)', () => {
    expect(parsePieces([bytes('SSH-2.0-OpenSSH_9.2p1\r\n')]).error).toBe('INVALID_STATUS_LINE');
    expect(parsePieces([bytes('ERROR\r\nERROR\r\n')]).error).toBe('INVALID_STATUS_LINE');
    expect(parsePieces([bytes('HTT')]).error).toBeNull(); // may still become a response
  });

  it('a head with LF-only line endings is refused as soon as it is seen, not after waiting for more', () => {
    const o = parsePieces([bytes('HTTP/1.1 200 OK\nContent-Length: 0\n\n')]);
    expect(o.error).toBe('BARE_LF');
  });

  it('a head larger than the limit is refused (complete, or still growing without an end)', () => {
    const big = `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(DEFAULT_RESPONSE_LIMITS.maxHeaderBytes)}\r\nContent-Length: 0\r\n\r\n`;
    expect(parse(big).error).toBe('HEADER_TOO_LARGE');
    // Never-ending header: refused once the buffered part passes the limit, in pieces of 1 KiB.
    const pieces: Buffer[] = [bytes('HTTP/1.1 200 OK\r\nX-Big: ')];
    for (let i = 0; i < 20; i++) pieces.push(Buffer.alloc(1024, 'a'));
    expect(parsePieces(pieces).error).toBe('HEADER_TOO_LARGE');
    const small: ResponseParserLimits = { ...DEFAULT_RESPONSE_LIMITS, maxHeaderBytes: 64 };
    expect(parse(`HTTP/1.1 200 OK\r\nX: ${'b'.repeat(60)}\r\n\r\n`, { limits: small }).error).toBe('HEADER_TOO_LARGE');
    expect(parse('HTTP/1.1 200 OK\r\nX: b\r\nContent-Length: 0\r\n\r\n', { limits: small }).error).toBeNull();
  });

  it('a head just under the limit arriving one byte per read is parsed (the split start is buffered, not re-copied)', () => {
    const value = 'v'.repeat(DEFAULT_RESPONSE_LIMITS.maxHeaderBytes - 100);
    const o = parseBytewise(`HTTP/1.1 200 OK\r\nX-Big: ${value}\r\nContent-Length: 2\r\n\r\nok`);
    expect(o.error).toBeNull();
    expect(o.heads[0]!.headers).toEqual(['X-Big', value, 'Content-Length', '2']);
    expect(o.body).toBe('ok');
  });

  it('too many header fields, too many interim responses, too large trailers, too long chunk extensions', () => {
    const limits: ResponseParserLimits = { maxHeaderBytes: 4096, maxHeaderCount: 5, maxInterimResponses: 2, maxChunkExtensionBytes: 8 };
    const fields = (n: number): string => Array.from({ length: n }, (_, i) => `X-${i}: v\r\n`).join('');
    expect(parse(`HTTP/1.1 200 OK\r\n${fields(5)}\r\n`, { limits }).error).toBeNull();
    expect(parse(`HTTP/1.1 200 OK\r\n${fields(6)}\r\n`, { limits }).error).toBe('TOO_MANY_HEADERS');
    expect(parse('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n', { limits }).error).toBe('TOO_MANY_INTERIM');
    expect(parse(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ${'t'.repeat(5000)}\r\n\r\n`, { limits }).error).toBe('HEADER_TOO_LARGE');
    expect(parse('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;aaaaaaaaa\r\nx\r\n0\r\n\r\n', { limits }).error).toBe('INVALID_CHUNK');
    expect(parse('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;aaaaaaaa\r\nx\r\n0\r\n\r\n', { limits }).error).toBeNull();
  });

  it('EOF before the response is complete is an error, never a short success', () => {
    expect(parse('', { eof: true }).error).toBe('PREMATURE_EOF');
    expect(parse('HTTP/1.1 200 OK\r\nContent-Len', { eof: true }).error).toBe('PREMATURE_EOF');
    const shortCl = parse('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello', { eof: true });
    expect(shortCl).toMatchObject({ error: 'PREMATURE_EOF', complete: false, body: 'hello' });
    const noLastChunk = parse('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n', { eof: true });
    expect(noLastChunk).toMatchObject({ error: 'PREMATURE_EOF', complete: false });
    const noTrailerEnd = parse('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n', { eof: true });
    expect(noTrailerEnd).toMatchObject({ error: 'PREMATURE_EOF', complete: false });
  });
});

describe('split reads (property tests)', () => {
  /** A valid response and what parsing it must produce. */
  interface Sample { text: string; status: number; body: string; headers: string[]; head: boolean }

  const token = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/).filter((n) => !/^(content-length|transfer-encoding|connection)$/i.test(n));
  const value = fc.stringMatching(/^[!-~]([ -~]{0,30}[!-~])?$/);
  const bodyText = fc.string({ unit: fc.constantFrom(...'abcxyz0123456789\r\n \x00\xff'), maxLength: 300 });

  const sample: fc.Arbitrary<Sample> = fc.record({
    status: fc.integer({ min: 200, max: 599 }).filter((s) => s !== 204 && s !== 304),
    reason: fc.stringMatching(/^[A-Za-z ]{0,12}$/),
    headers: fc.array(fc.tuple(token, value), { maxLength: 8 }),
    body: bodyText,
    framing: fc.constantFrom('length', 'chunked'),
    chunkSizes: fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 20 }),
    interim: fc.boolean(),
    trailers: fc.array(fc.tuple(token, value), { maxLength: 3 }),
    upperHex: fc.boolean(),
    head: fc.boolean(),
  }).map((r) => {
    const flat = r.headers.flatMap(([n, v]) => [n, v]);
    let text = r.interim ? 'HTTP/1.1 100 Continue\r\n\r\n' : '';
    text += `HTTP/1.1 ${r.status} ${r.reason}\r\n`;
    for (const [n, v] of r.headers) text += `${n}: ${v}\r\n`;
    const framingHeader = r.framing === 'length' ? ['Content-Length', String(r.body.length)] : ['Transfer-Encoding', 'chunked'];
    text += `${framingHeader[0]}: ${framingHeader[1]}\r\n\r\n`;
    if (!r.head) {
      if (r.framing === 'length') {
        text += r.body;
      } else {
        let rest = r.body;
        let k = 0;
        while (rest.length > 0) {
          const size = Math.min(rest.length, r.chunkSizes[k++ % Math.max(1, r.chunkSizes.length)] ?? rest.length);
          const hex = size.toString(16);
          text += `${r.upperHex ? hex.toUpperCase() : hex}\r\n${rest.slice(0, size)}\r\n`;
          rest = rest.slice(size);
        }
        text += '0\r\n';
        for (const [n, v] of r.trailers) text += `${n}: ${v}\r\n`;
        text += '\r\n';
      }
    }
    return { text, status: r.status, body: r.head ? '' : r.body, headers: [...flat, ...framingHeader], head: r.head };
  });

  /** Cuts `buf` at the given (sorted, deduplicated) offsets. */
  function cut(buf: Buffer, offsets: number[]): Buffer[] {
    const points = [...new Set(offsets.map((o) => o % (buf.length + 1)))].sort((a, b) => a - b);
    const out: Buffer[] = [];
    let prev = 0;
    for (const p of points) {
      out.push(buf.subarray(prev, p));
      prev = p;
    }
    out.push(buf.subarray(prev));
    return out.filter((b) => b.length > 0);
  }

  it('any valid response parses to the same head and body however it is split', () => {
    fc.assert(fc.property(sample, fc.array(fc.nat(), { maxLength: 12 }), (s, offsets) => {
      const buf = bytes(s.text);
      const o = parsePieces(cut(buf, offsets), { head: s.head });
      expect(o.error).toBeNull();
      expect(o.complete).toBe(true);
      expect(o.consumed).toBe(buf.length);
      expect(o.heads).toHaveLength(1);
      expect(o.heads[0]!.status).toBe(s.status);
      expect(o.heads[0]!.headers).toEqual(s.headers);
      expect(o.body).toBe(s.body);
    }), { numRuns: 400 });
  });

  it('split at every single byte boundary: the outcome equals the one-piece outcome (valid and invalid inputs)', () => {
    const inputs = [
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n',
      'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc',
      'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n',
      'HTTP/1.1 200 OK\nContent-Length: 0\n\n',
    ];
    for (const text of inputs) {
      const buf = bytes(text);
      const one = parse(text, { eof: true });
      for (let k = 0; k <= buf.length; k++) {
        const two = parsePieces([buf.subarray(0, k), buf.subarray(k)].filter((b) => b.length > 0), { eof: true });
        // (How many bytes were consumed before an error depends on the split; the verdict does not.)
        if (one.error !== null) expect({ k, ...two, consumed: 0 }).toEqual({ k, ...one, consumed: 0 });
        else expect({ k, ...two }).toEqual({ k, ...one });
      }
    }
  });

  it('arbitrary bytes never throw anything but ResponseParseError, and never report more than they were given', () => {
    const prefix = fc.constantFrom('', 'HTTP/1.1 200 OK\r\n', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n');
    const noise = fc.string({ unit: fc.constantFrom(...'HTTP/1.0 2:\r\n\t ;-0fFgzC\x00\x7f\xff'), maxLength: 120 });
    fc.assert(fc.property(prefix, noise, fc.array(fc.nat(), { maxLength: 6 }), fc.boolean(), (p, n, offsets, head) => {
      const buf = bytes(p + n);
      const o = parsePieces(cut(buf, offsets), { head, eof: true }); // throws if anything else is thrown
      expect(o.consumed).toBeLessThanOrEqual(buf.length);
      expect(o.body.length).toBeLessThanOrEqual(buf.length);
      if (o.error === null) expect(o.complete).toBe(true);
    }), { numRuns: 1000 });
  });
});
