/**
 * Issue 14, fault and abuse suite: request smuggling and framing variants, sent as exact bytes
 * to sessionlb (in-process) in front of a raw "recording" backend that keeps every byte it
 * receives and parses it strictly. For each variant we check the client's response and exactly
 * what the backend received: a request is either refused (and its connection closed, the backend
 * getting nothing) or forwarded as one well-framed request; a second request hidden in a body is
 * never seen by the backend. nginx 1.22's answer to each variant is noted where it matters
 * (measured with a real nginx on loopback, `proxy_http_version 1.1`).
 */
import net from 'node:net';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { freePort } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import {
  header, headerValues, parseResponses, rawExchange, responsesReceived, sleep, startRecordingBackend, statuses,
  type Answer, type RawResponse, type RecordedRequest, type RecordingBackend,
} from './helpers/raw-http.js';

const scope = useScope();

const H = 'Host: x\r\n';
/** Appended after a request that must be refused: if the backend ever sees it, a body was misframed. */
const SMUGGLED = `GET /smuggled HTTP/1.1\r\n${H}\r\n`;

/** A chunked body: each part as one chunk, then the last chunk. */
function chunked(...parts: (string | Buffer)[]): Buffer {
  const out: Buffer[] = [];
  for (const p of parts) {
    const b = typeof p === 'string' ? Buffer.from(p, 'latin1') : p;
    out.push(Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n'));
  }
  out.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(out);
}

const bytes = (...parts: (string | Buffer)[]): Buffer => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p)));

async function setup(answer?: (r: RecordedRequest) => Answer | Promise<Answer>, raw: Record<string, unknown> = {}): Promise<{ be: RecordingBackend; port: number }> {
  const be = await startRecordingBackend(answer);
  scope.cleanup.push(() => be.close());
  const lb = await scope.lb({ upstreams: { backend: { servers: [{ address: be.address }] } }, ...raw }, { admin: false });
  return { be, port: lb.port };
}

const show = (b: string | Buffer): string => JSON.stringify((typeof b === 'string' ? b : b.toString('latin1')).slice(0, 300));
const totalBytes = (be: RecordingBackend): number => be.connections.reduce((n, c) => n + c.length, 0);

/** What must hold after any exchange: the backend parsed everything it got, nothing was cut off, nothing smuggled. */
function backendSawOnlyWellFramedRequests(be: RecordingBackend, sent: string | Buffer): void {
  expect(be.malformed.map((m) => `${m.reason}: ${show(m.raw)}`), `backend got a malformed request for ${show(sent)}`).toEqual([]);
  expect(be.partial.map((p) => p.toString('latin1')).filter((p) => p !== ''), `backend got part of a request for ${show(sent)}`).toEqual([]);
  expect(be.requests.filter((r) => r.target.includes('smuggled')).map((r) => show(r.raw)), `a smuggled request reached the backend for ${show(sent)}`).toEqual([]);
}

interface Case {
  name: string;
  bytes: string | Buffer;
  /** Statuses accepted when sessionlb refuses it. Absent: it must be forwarded. */
  refuse?: number[];
  /** Check of what the backend got when it is forwarded (answered 200). Absent: it must be refused. */
  forwarded?: (reqs: RecordedRequest[], res: RawResponse) => void;
  /** A refusal may also be a close without any response (CONNECT). */
  silentCloseOk?: boolean;
}

/** One request forwarded with exactly this body, and no Content-Length/Transfer-Encoding mix. */
const oneRequestWithBody = (method: string, body: string | Buffer) => (reqs: RecordedRequest[]): void => {
  expect(reqs).toHaveLength(1);
  const r = reqs[0]!;
  expect(r.method).toBe(method);
  expect(r.body.toString('latin1')).toBe(typeof body === 'string' ? body : body.toString('latin1'));
  const cl = headerValues(r, 'content-length');
  const te = headerValues(r, 'transfer-encoding');
  // One framing header (none is fine for an empty body): never both, never two.
  if (body.length > 0) expect(cl.length + te.length, `framing headers ${JSON.stringify(r.headers)}`).toBe(1);
  else expect(cl.length + te.length, `framing headers ${JSON.stringify(r.headers)}`).toBeLessThanOrEqual(1);
};

const POST = (hdrs: string, body: string | Buffer = ''): Buffer => bytes(`POST / HTTP/1.1\r\n${H}${hdrs}\r\n`, body);
const GET = (hdrs: string, target = '/'): string => `GET ${target} HTTP/1.1\r\n${H}${hdrs}\r\n`;

const GZ_HELLO = gzipSync('hello');
const SMUGGLE_IN_BODY = `GPOST /smuggled HTTP/1.1\r\n${H}Content-Length: 15\r\n\r\nx=1`;

const cases: Case[] = [
  // ---- Content-Length and Transfer-Encoding together (nginx 1.22: 400 for both orders)
  {
    name: 'CL then TE, the rest a smuggled GET (CL.TE)',
    bytes: POST('Content-Length: 6\r\nTransfer-Encoding: chunked\r\n', `0\r\n\r\n${SMUGGLED}`),
    refuse: [400],
    // RFC 9112 6.3: TE wins, CL is removed, and the connection is closed after the response.
    forwarded: oneRequestWithBody('POST', ''),
  },
  {
    name: 'TE then CL, a smuggled request inside the chunk (TE.CL)',
    bytes: POST('Transfer-Encoding: chunked\r\nContent-Length: 4\r\n', chunked(SMUGGLE_IN_BODY)),
    refuse: [400],
    forwarded: oneRequestWithBody('POST', SMUGGLE_IN_BODY),
  },
  {
    name: 'two different Content-Length values',
    bytes: POST('Content-Length: 5\r\nContent-Length: 40\r\n', `hello${SMUGGLED}`),
    refuse: [400],
  },
  {
    name: 'the same Content-Length twice (nginx 400)',
    bytes: POST('Content-Length: 5\r\nContent-Length: 5\r\n', 'hello'),
    refuse: [400],
    forwarded: oneRequestWithBody('POST', 'hello'),
  },
  {
    name: 'Content-Length list "5, 5" (nginx 400)',
    bytes: POST('Content-Length: 5, 5\r\n', 'hello'),
    refuse: [400],
    forwarded: oneRequestWithBody('POST', 'hello'),
  },
  {
    name: 'Content-Length with a space inside ("1 2")',
    bytes: POST('Content-Length: 1 2\r\n', `hello${SMUGGLED}`),
    refuse: [400],
  },
  // ---- Transfer-Encoding values
  {
    name: 'TE "gzip, chunked" (a coding sessionlb cannot apply: nginx 501)',
    bytes: POST('Transfer-Encoding: gzip, chunked\r\n', chunked(GZ_HELLO)),
    refuse: [400, 501],
    // Forwarding is only right if the gzip coding was removed too (the backend gets "hello").
    forwarded: oneRequestWithBody('POST', 'hello'),
  },
  {
    name: 'TE "chunked, identity" (chunked not last: nginx 501)',
    bytes: POST('Transfer-Encoding: chunked, identity\r\n', bytes(chunked('hello'), SMUGGLED)),
    refuse: [400, 501],
  },
  {
    name: 'TE "chunked" on two lines',
    bytes: POST('Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', bytes(chunked('hello'), SMUGGLED)),
    refuse: [400, 501],
  },
  {
    name: 'TE "xchunked" (nginx 501)',
    bytes: POST('Transfer-Encoding: xchunked\r\n', bytes(chunked('hello'), SMUGGLED)),
    refuse: [400, 501],
  },
  {
    name: 'TE "xchunked" with Content-Length',
    bytes: POST('Transfer-Encoding: xchunked\r\nContent-Length: 4\r\n', bytes(chunked('hello'), SMUGGLED)),
    refuse: [400, 501],
  },
  {
    name: 'TE "identity" with Content-Length (nginx 501)',
    bytes: POST('Transfer-Encoding: identity\r\nContent-Length: 5\r\n', `hello${SMUGGLED}`),
    refuse: [400, 501],
  },
  {
    name: 'TE empty with Content-Length (nginx 501)',
    bytes: POST('Transfer-Encoding: \r\nContent-Length: 5\r\n', 'hello'),
    refuse: [400, 501],
    forwarded: oneRequestWithBody('POST', 'hello'),
  },
  {
    name: 'TE in mixed case "ChUnKeD" (a valid token)',
    bytes: POST('Transfer-Encoding: ChUnKeD\r\n', chunked('hello')),
    forwarded: oneRequestWithBody('POST', 'hello'),
  },
  {
    name: 'TE with a tab before "chunked" (OWS; nginx 501)',
    bytes: POST('Transfer-Encoding:\tchunked\r\n', chunked('hello')),
    refuse: [400, 501],
    forwarded: oneRequestWithBody('POST', 'hello'),
  },
  {
    name: 'TE continued on an obs-fold line',
    bytes: POST('Transfer-Encoding:\r\n chunked\r\n', bytes(chunked('hello'), SMUGGLED)),
    refuse: [400],
  },
  {
    name: 'TE "x" folded onto "chunked", with Content-Length',
    bytes: POST('Transfer-Encoding: x\r\n chunked\r\nContent-Length: 3\r\n', `abc${SMUGGLED}`),
    refuse: [400],
  },
  {
    name: 'obs-fold in another header (nginx 400)',
    bytes: bytes(GET('X-A: a\r\n b\r\n'), SMUGGLED),
    refuse: [400],
    forwarded: (reqs) => {
      expect(reqs).toHaveLength(1);
      expect(headerValues(reqs[0]!, 'x-a')).toEqual(['a b']); // RFC 9112 5.2: folding replaced by SP
    },
  },
  {
    name: 'TE with a space before the colon',
    bytes: POST('Transfer-Encoding : chunked\r\nContent-Length: 3\r\n', `abc${SMUGGLED}`),
    refuse: [400],
  },
  {
    name: 'CL with a space before the colon',
    bytes: POST('Content-Length : 3\r\n', `abc${SMUGGLED}`),
    refuse: [400],
  },
  {
    name: 'TE chunked on HTTP/1.0 (nginx 400)',
    bytes: bytes(`POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n`, chunked('hello')),
    refuse: [400],
    forwarded: oneRequestWithBody('POST', 'hello'),
  },
  // ---- line endings
  {
    name: 'bare LF line endings (nginx accepts)',
    bytes: `GET / HTTP/1.1\nHost: x\nX-A: 1\n\n`,
    refuse: [400],
    forwarded: (reqs) => {
      expect(reqs).toHaveLength(1);
      expect(headerValues(reqs[0]!, 'x-a')).toEqual(['1']);
    },
  },
  {
    name: 'one bare LF among CRLFs',
    bytes: `GET / HTTP/1.1\r\n${H}X-A: 1\n\r\n`,
    refuse: [400],
    forwarded: (reqs) => expect(reqs).toHaveLength(1),
  },
  {
    name: 'bare CR inside the header section',
    bytes: bytes(`GET / HTTP/1.1\r\n${H}X-A: 1\rX-B: 2\r\n\r\n`, SMUGGLED),
    refuse: [400],
  },
  {
    name: 'CRLFs before the request line (RFC 9112 2.2: ignored)',
    bytes: `\r\n\r\nGET /lead HTTP/1.1\r\n${H}\r\n`,
    refuse: [400],
    forwarded: (reqs) => {
      expect(reqs).toHaveLength(1);
      expect(reqs[0]!.target).toBe('/lead');
    },
  },
  {
    name: 'whitespace before the first header line',
    bytes: bytes(`GET / HTTP/1.1\r\n ${H}\r\n`, SMUGGLED),
    refuse: [400],
  },
  // ---- chunk sizes
  {
    name: 'chunk extensions',
    bytes: POST('Transfer-Encoding: chunked\r\n', '5;name=val;x="y"\r\nhello\r\n0;end\r\n\r\n'),
    forwarded: oneRequestWithBody('POST', 'hello'),
  },
  {
    name: 'chunk size with invalid hex "5g"',
    bytes: POST('Transfer-Encoding: chunked\r\n', `5g\r\nhello\r\n0\r\n\r\n${SMUGGLED}`),
    refuse: [400],
  },
  {
    name: 'chunk size "0x5"',
    bytes: POST('Transfer-Encoding: chunked\r\n', `0x5\r\nhello\r\n0\r\n\r\n${SMUGGLED}`),
    refuse: [400],
  },
  {
    name: 'chunk size "-5"',
    bytes: POST('Transfer-Encoding: chunked\r\n', `-5\r\nhello\r\n0\r\n\r\n${SMUGGLED}`),
    refuse: [400],
  },
  {
    name: 'chunk size of 18 hex digits (overflows 64 bits)',
    bytes: POST('Transfer-Encoding: chunked\r\n', `ffffffffffffffffff\r\nhello\r\n0\r\n\r\n${SMUGGLED}`),
    refuse: [400, 413],
  },
  {
    name: 'chunk size 2^64 + 5 (wraps to 5 in a 64-bit parser)',
    bytes: POST('Transfer-Encoding: chunked\r\n', `10000000000000005\r\nhello\r\n0\r\n\r\n${SMUGGLED}`),
    refuse: [400, 413],
  },
  {
    name: 'chunk data longer than its size',
    bytes: POST('Transfer-Encoding: chunked\r\n', `3\r\nhello\r\n0\r\n\r\n${SMUGGLED}`),
    refuse: [400],
  },
  {
    name: 'chunk lines ending in bare LF (nginx accepts)',
    bytes: POST('Transfer-Encoding: chunked\r\n', '5\nhello\n0\n\n'),
    refuse: [400],
    forwarded: oneRequestWithBody('POST', 'hello'),
  },
  {
    name: 'trailer section with Content-Length and another field (never merged into the header)',
    bytes: POST('Transfer-Encoding: chunked\r\n', '5\r\nhello\r\n0\r\nContent-Length: 50\r\nX-Trailer: 1\r\n\r\n'),
    refuse: [400],
    forwarded: (reqs) => {
      oneRequestWithBody('POST', 'hello')(reqs);
      expect(headerValues(reqs[0]!, 'content-length').filter((v) => v === '50')).toEqual([]);
      expect(headerValues(reqs[0]!, 'x-trailer')).toEqual([]);
    },
  },
  {
    name: '100 KB of chunk extension',
    bytes: POST('Transfer-Encoding: chunked\r\n', `5;${'a'.repeat(100_000)}\r\nhello\r\n0\r\n\r\n`),
    refuse: [400, 413],
    forwarded: oneRequestWithBody('POST', 'hello'),
  },
  // ---- Content-Length values
  {
    name: 'Content-Length "-1"',
    bytes: POST('Content-Length: -1\r\n', `x${SMUGGLED}`),
    refuse: [400],
  },
  {
    name: 'Content-Length "+5"',
    bytes: POST('Content-Length: +5\r\n', `hello${SMUGGLED}`),
    refuse: [400],
  },
  {
    name: 'Content-Length "0x5"',
    bytes: POST('Content-Length: 0x5\r\n', `hello${SMUGGLED}`),
    refuse: [400],
  },
  {
    name: 'Content-Length of 23 digits',
    bytes: POST('Content-Length: 99999999999999999999999\r\n', `hello${SMUGGLED}`),
    refuse: [400, 413],
  },
  {
    name: 'Content-Length with leading zeros "005" (nginx forwards "5")',
    bytes: POST('Content-Length: 005\r\n', 'hello'),
    forwarded: (reqs) => {
      oneRequestWithBody('POST', 'hello')(reqs);
      expect(headerValues(reqs[0]!, 'content-length')).toEqual(['5']);
    },
  },
  {
    name: 'Content-Length with trailing whitespace',
    bytes: POST('Content-Length: 5 \t\r\n', 'hello'),
    refuse: [400],
    forwarded: oneRequestWithBody('POST', 'hello'),
  },
  // ---- request lines
  {
    name: 'absolute-form target (sent upstream in origin form)',
    bytes: `GET http://other.example/path?q=1 HTTP/1.1\r\n${H}\r\n`,
    forwarded: (reqs) => {
      expect(reqs).toHaveLength(1);
      expect(reqs[0]!.target).toBe('/path?q=1');
    },
  },
  {
    name: 'GET with a body',
    bytes: bytes(GET('Content-Length: 5\r\n', '/g'), 'hello'),
    forwarded: oneRequestWithBody('GET', 'hello'),
  },
  {
    name: 'GET whose body is a complete request',
    bytes: bytes(GET(`Content-Length: ${SMUGGLED.length}\r\n`, '/g'), SMUGGLED),
    forwarded: oneRequestWithBody('GET', SMUGGLED),
  },
  {
    name: 'chunked POST whose chunk is a complete request',
    bytes: POST('Transfer-Encoding: chunked\r\n', chunked(SMUGGLED)),
    forwarded: oneRequestWithBody('POST', SMUGGLED),
  },
  {
    name: 'HTTP/1.0 without Host (upstream Host is the upstream name, as nginx $proxy_host)',
    bytes: 'GET /old HTTP/1.0\r\n\r\n',
    forwarded: (reqs) => {
      expect(reqs).toHaveLength(1);
      expect(reqs[0]!.version).toBe('HTTP/1.1');
      expect(headerValues(reqs[0]!, 'host')).toEqual(['backend']);
    },
  },
  {
    name: 'version HTTP/2.0 on the request line (nginx 505)',
    bytes: `GET / HTTP/2.0\r\n${H}\r\n`,
    refuse: [400, 505],
    forwarded: (reqs) => expect(reqs.map((r) => r.version)).toEqual(['HTTP/1.1']),
  },
  {
    name: 'version HTTP/1.2',
    bytes: `GET / HTTP/1.2\r\n${H}\r\n`,
    refuse: [400, 505],
    forwarded: (reqs) => expect(reqs.map((r) => r.version)).toEqual(['HTTP/1.1']),
  },
  {
    name: 'HTTP/1.1 without Host (RFC 9112 3.2: 400)',
    bytes: 'GET / HTTP/1.1\r\n\r\n',
    refuse: [400],
  },
  {
    name: 'two Host headers',
    bytes: `GET / HTTP/1.1\r\n${H}Host: y\r\n\r\n`,
    refuse: [400],
  },
  {
    name: 'a space inside the target',
    bytes: bytes(`GET /a b HTTP/1.1\r\n${H}\r\n`, SMUGGLED),
    refuse: [400],
  },
  {
    name: 'NUL in the target',
    bytes: bytes(`GET /a\0b HTTP/1.1\r\n${H}\r\n`, SMUGGLED),
    refuse: [400],
  },
  {
    name: 'a 5,000-byte method (nginx forwards it)',
    bytes: bytes(`${'A'.repeat(5000)} / HTTP/1.1\r\n${H}\r\n`, SMUGGLED),
    refuse: [400, 405, 414, 501],
    forwarded: (reqs) => expect(reqs.map((r) => r.method.length)).toEqual([5000]),
  },
  {
    name: 'unknown method FOO (nginx forwards it)',
    bytes: `FOO /m HTTP/1.1\r\n${H}\r\n`,
    refuse: [400, 405, 501],
    forwarded: (reqs) => expect(reqs.map((r) => r.method)).toEqual(['FOO']),
  },
  {
    name: 'lower-case method (nginx 400)',
    bytes: `get / HTTP/1.1\r\n${H}\r\n`,
    refuse: [400, 405, 501],
    forwarded: (reqs) => expect(reqs.map((r) => r.method)).toEqual(['get']),
  },
  {
    name: 'CONNECT (never tunnelled)',
    bytes: `CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n`,
    refuse: [400, 405, 501],
    silentCloseOk: true,
  },
  {
    name: 'OPTIONS * (nginx 400)',
    bytes: `OPTIONS * HTTP/1.1\r\n${H}\r\n`,
    refuse: [400],
    forwarded: (reqs) => expect(reqs.map((r) => r.target)).toEqual(['*']),
  },
  // ---- header names and values
  {
    name: 'header name with "(" (nginx drops the header)',
    bytes: GET('X(bad): 1\r\n'),
    refuse: [400],
    forwarded: (reqs) => expect(reqs[0]!.headers.filter(([n]) => n.includes('('))).toEqual([]),
  },
  {
    name: 'header name with a space inside',
    bytes: bytes(GET('X bad: 1\r\n'), SMUGGLED),
    refuse: [400],
  },
  {
    name: 'header line without a colon (nginx forwards "Xbad:")',
    bytes: GET('Xbad\r\n'),
    refuse: [400],
    forwarded: (reqs) => expect(reqs).toHaveLength(1),
  },
  {
    name: 'empty header name',
    bytes: bytes(GET(': v\r\n'), SMUGGLED),
    refuse: [400],
  },
  {
    name: 'NUL in a header value',
    bytes: bytes(GET('X-A: a\0b\r\n'), SMUGGLED),
    refuse: [400],
  },
  {
    name: 'NUL in a header name',
    bytes: bytes(GET('X-\0A: ab\r\n'), SMUGGLED),
    refuse: [400],
  },
  {
    name: 'control byte 0x01 in a header value (nginx forwards it as is)',
    bytes: GET('X-A: a\x01b\r\n'),
    refuse: [400],
    forwarded: (reqs) => expect(headerValues(reqs[0]!, 'x-a')).toEqual([]),
  },
  {
    name: 'DEL (0x7f) in a header value (nginx forwards it as is)',
    bytes: GET('X-A: a\x7fb\r\n'),
    refuse: [400],
    forwarded: (reqs) => expect(headerValues(reqs[0]!, 'x-a')).toEqual([]),
  },
  {
    name: 'obs-text (latin1 0xE9) in a header value, passed byte for byte',
    bytes: GET('X-A: caf\xe9\r\n'),
    forwarded: (reqs) => expect(headerValues(reqs[0]!, 'x-a')).toEqual(['caf\xe9']),
  },
];

describe('smuggling and framing variants (exact bytes)', () => {
  it.each(cases)('$name', async (c) => {
    const { be, port } = await setup();
    const res = await rawExchange(port, c.bytes, {
      timeoutMs: 4000,
      // A 2xx ends the exchange at once; a refusal is read until the connection closes.
      until: (d) => parseResponses(d).responses.some((r) => r.status >= 200 && r.status < 300),
    });
    await sleep(50);
    const where = `sent ${show(c.bytes)}\nreceived ${show(res.text)}`;
    backendSawOnlyWellFramedRequests(be, c.bytes);
    const final = res.responses.filter((r) => r.status >= 200);
    if (final.length === 0) {
      expect(c.silentCloseOk === true && res.closed, `no response at all; ${where}`).toBe(true);
      expect(totalBytes(be)).toBe(0);
      return;
    }
    const first = final[0]!;
    if (first.status >= 200 && first.status < 300) {
      expect(c.forwarded, `forwarded (${first.status}) although it must be refused; ${where}\nbackend got ${be.requests.map((r) => show(r.raw)).join(' + ')}`).toBeDefined();
      c.forwarded!(be.requests, first);
      return;
    }
    expect(c.refuse ?? [], `status ${first.status}; ${where}`).toContain(first.status);
    expect(final, `more than one response; ${where}`).toHaveLength(1);
    expect(res.closed, `connection left open after a ${first.status}; ${where}`).toBe(true);
    expect(be.requests.map((r) => show(r.raw)), `refused (${first.status}) but the backend got it; ${where}`).toEqual([]);
    expect(totalBytes(be)).toBe(0);
  });

  it('CL.TE forwarded or not, the connection is closed after the response (RFC 9112 6.1), so the bytes after it are never a request', async () => {
    const { be, port } = await setup();
    const sent = POST('Content-Length: 6\r\nTransfer-Encoding: chunked\r\n', `0\r\n\r\n${SMUGGLED}`);
    const res = await rawExchange(port, sent, { timeoutMs: 4000 });
    expect(res.closed).toBe(true);
    expect(statuses(res)).toHaveLength(1);
    backendSawOnlyWellFramedRequests(be, sent);
  });
});

describe('pipelining and keep-alive', () => {
  it('three pipelined GETs are answered in order, each with its own response', async () => {
    const { be, port } = await setup();
    const sent = `GET /1 HTTP/1.1\r\n${H}\r\nGET /2 HTTP/1.1\r\n${H}\r\nGET /3 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`;
    const res = await rawExchange(port, sent, { timeoutMs: 4000 });
    expect(res.responses.map((r) => `${r.status} ${r.body.toString()}`)).toEqual(['200 ok GET /1 0', '200 ok GET /2 0', '200 ok GET /3 0']);
    expect(res.closed).toBe(true);
    expect(be.requests.map((r) => r.target).sort()).toEqual(['/1', '/2', '/3']);
    backendSawOnlyWellFramedRequests(be, sent);
  });

  it('pipelined POST, GET, DELETE: answered in order, and the backend gets each only after the previous one was answered (RFC 9112 9.3.2: only safe methods may be processed in parallel; nginx serialises)', async () => {
    const { be, port } = await setup(async (r) => {
      if (r.method === 'POST') await sleep(300); // the POST takes a while, as a real write does
      return { body: `ok ${r.method} ${r.target}` };
    });
    const sent = `POST /cart/add HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\nx=1GET /cart HTTP/1.1\r\n${H}\r\nDELETE /cart HTTP/1.1\r\n${H}\r\n`;
    const res = await rawExchange(port, sent, { timeoutMs: 4000, until: responsesReceived(3) });
    expect(res.responses.map((r) => `${r.status} ${r.body.toString()}`)).toEqual(['200 ok POST /cart/add', '200 ok GET /cart', '200 ok DELETE /cart']);
    backendSawOnlyWellFramedRequests(be, sent);
    const arrival = [...be.requests].sort((a, b) => a.receivedAt - b.receivedAt).map((r) => `${r.method} ${r.target}`);
    expect(arrival, 'order in which the backend received the pipelined requests').toEqual(['POST /cart/add', 'GET /cart', 'DELETE /cart']);
    const [post, get, del] = [...be.requests].sort((a, b) => a.receivedAt - b.receivedAt);
    expect(get!.receivedAt, 'GET /cart reached the backend before POST /cart/add was answered').toBeGreaterThanOrEqual(post!.answeredAt!);
    expect(del!.receivedAt, 'DELETE /cart reached the backend before GET /cart was answered').toBeGreaterThanOrEqual(get!.answeredAt!);
  });

  it('HTTP/1.0 with Connection: keep-alive keeps the connection (and says so); HTTP/1.0 without it is closed after the response', async () => {
    const { be, port } = await setup();
    const first = `GET /a HTTP/1.0\r\n${H}Connection: keep-alive\r\n\r\n`;
    const second = `GET /b HTTP/1.0\r\n${H}\r\n`;
    const res = await rawExchange(port, [first, second], { gapMs: 300, timeoutMs: 4000 });
    expect(res.responses.map((r) => `${r.status} ${r.body.toString()}`)).toEqual(['200 ok GET /a 0', '200 ok GET /b 0']);
    expect(header(res.responses[0]!, 'connection')?.toLowerCase()).toBe('keep-alive');
    expect(header(res.responses[0]!, 'content-length')).toBe('11'); // an HTTP/1.0 client cannot read chunked
    expect(res.closed).toBe(true);
    expect(res.closedAfterMs!).toBeLessThan(2500);
    expect(be.requests.map((r) => `${r.version} ${r.target} ${headerValues(r, 'host').join()}`)).toEqual(['HTTP/1.1 /a x', 'HTTP/1.1 /b x']);
    backendSawOnlyWellFramedRequests(be, first + second);
  });

  it('a request that does not parse, pipelined after a good one: the good one still gets its own 200 first, then 400 and close (nginx); nothing after is forwarded', async () => {
    const { be, port } = await setup(async (r) => {
      await sleep(100); // the good request's answer is still on its way when the bad one is read
      return { body: `ok ${r.method} ${r.target} ${r.body.length}` };
    });
    const sent = `GET /1 HTTP/1.1\r\n${H}\r\nPOST /2 HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 40\r\n\r\nhello${SMUGGLED}`;
    const res = await rawExchange(port, sent, { timeoutMs: 4000 });
    expect(be.requests.map((r) => r.target)).toEqual(['/1']);
    backendSawOnlyWellFramedRequests(be, sent);
    // A client matches pipelined responses by order: a lone 400 would be taken as the answer to GET /1.
    expect(res.responses.map((r) => `${r.status} ${r.body.toString().slice(0, 20)}`), `received ${show(res.text)}`).toEqual(['200 ok GET /1 0', expect.stringMatching(/^400 /)]);
    expect(res.closed).toBe(true);
  });

  it.each([
    ['without Host', `GET /2 HTTP/1.1\r\n\r\n`],
    ['with two Host headers', `GET /2 HTTP/1.1\r\n${H}Host: y\r\n\r\n`],
    ['with a target that cannot be normalised', `GET /%zz HTTP/1.1\r\n${H}\r\n`],
  ])('a request refused with 400 %s ends the connection: the request pipelined after it is not forwarded (nginx reads no further)', async (_name, bad) => {
    const { be, port } = await setup();
    const sent = `GET /1 HTTP/1.1\r\n${H}\r\n${bad}GET /3 HTTP/1.1\r\n${H}\r\n`;
    const res = await rawExchange(port, sent, { timeoutMs: 4000 });
    expect(statuses(res), `received ${show(res.text)}`).toEqual([200, 400]);
    expect(res.closed).toBe(true);
    backendSawOnlyWellFramedRequests(be, sent);
    // GET /3 would be processed for a client that is told (400, Connection: close) nothing after /2 was.
    expect(be.requests.map((r) => r.target), 'requests the backend processed').toEqual(['/1']);
  });
});

describe('bodies cut off', () => {
  it('a client that closes before its body is complete: the backend gets nothing (small and > 64 KiB bodies, Content-Length and chunked)', async () => {
    const { be, port } = await setup();
    const variants = [
      POST('Content-Length: 10\r\n', 'hello'),
      POST('Transfer-Encoding: chunked\r\n', '5\r\nhello\r\n'),
      POST('Content-Length: 300000\r\n', Buffer.alloc(200_000, 97)),
      POST('Transfer-Encoding: chunked\r\n', `30d40\r\n${'a'.repeat(100_000)}`),
    ];
    for (const sent of variants) {
      const res = await rawExchange(port, sent, { timeoutMs: 4000, end: true });
      expect(res.closed, `connection not closed for ${show(sent)}`).toBe(true);
      expect(statuses(res).every((s) => s >= 400), `status ${statuses(res)} for ${show(sent)}`).toBe(true);
    }
    await sleep(100);
    expect(be.requests.map((r) => show(r.raw))).toEqual([]);
    expect(totalBytes(be), 'bytes of cut-off requests reached the backend (request buffering is on by default)').toBe(0);
  });

  it('a declared chunk of 2 MiB (over clientMaxBodySize) followed by a stall: the backend gets nothing (nginx answers 413 at once)', async () => {
    const { be, port } = await setup();
    const sent = POST('Transfer-Encoding: chunked\r\n', '200000\r\nhello');
    const res = await rawExchange(port, sent, { timeoutMs: 1500 });
    expect(statuses(res).filter((s) => s !== 413)).toEqual([]);
    expect(totalBytes(be)).toBe(0);
  });

  it('Expect: 100-continue with a small body: 100, then the body, then one 200', async () => {
    const { be, port } = await setup();
    const head = POST('Content-Length: 5\r\nExpect: 100-continue\r\n');
    const res = await rawExchange(port, [head, 'hello'], { gapMs: 300, timeoutMs: 4000, until: (d) => parseResponses(d).responses.some((r) => r.status === 200) });
    expect(res.responses.map((r) => r.status)).toEqual([100, 200]);
    expect(res.responses[1]!.body.toString()).toBe('ok POST / 5');
    expect(be.requests.map((r) => headerValues(r, 'expect'))).toEqual([[]]); // sessionlb answered the 100 itself
  });
});

describe('routing by Host with an absolute-form target', () => {
  it('whichever virtual server a request reaches, the Host its backend gets is the one it was routed by', async () => {
    const a = await startRecordingBackend();
    const b = await startRecordingBackend();
    scope.cleanup.push(() => a.close(), () => b.close());
    const port = await freePort();
    await scope.lb({
      servers: [
        { listen: [`127.0.0.1:${port}`], serverName: ['x'], locations: [{ path: '/', proxyPass: 'http://a' }] },
        { listen: [`127.0.0.1:${port}`], serverName: ['other.example'], locations: [{ path: '/', proxyPass: 'http://b' }] },
      ],
      upstreams: { a: { servers: [{ address: a.address }] }, b: { servers: [{ address: b.address }] } },
    }, { admin: false });
    const sent = `GET http://other.example/p?q=1 HTTP/1.1\r\n${H}\r\n`;
    const res = await rawExchange(port, sent, { timeoutMs: 4000, until: responsesReceived(1) });
    expect(statuses(res)).toEqual([200]);
    const got = [...a.requests.map((r) => ['x', r] as const), ...b.requests.map((r) => ['other.example', r] as const)];
    expect(got).toHaveLength(1);
    const [routedBy, req] = got[0]!;
    expect(req.target).toBe('/p?q=1');
    expect(headerValues(req, 'host'), `routed to the "${routedBy}" server`).toEqual([routedBy]);
    backendSawOnlyWellFramedRequests(a, sent);
    backendSawOnlyWellFramedRequests(b, sent);
  });
});

/**
 * A raw backend that switches protocols for any Upgrade it is offered (as an h2c-capable server
 * would) and then echoes bytes: what sessionlb forwards decides whether a client gets a tunnel.
 */
async function startUpgradingBackend(): Promise<{ address: string; heads: string[]; close(): Promise<void> }> {
  const heads: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    let buf = '';
    let upgraded = false;
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      if (upgraded) {
        socket.write(`echo:${d}`);
        return;
      }
      buf += d;
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.slice(0, end);
      buf = buf.slice(end + 4);
      heads.push(head);
      const up = /\r\nupgrade:[ \t]*([^\r]*)/i.exec(head);
      if (up) {
        upgraded = true;
        socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${up[1]!.split(',')[0]!.trim()}\r\n\r\n`);
      } else {
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain');
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    heads,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

describe('Upgrade: h2c is never passed upstream; websocket upgrades still work', () => {
  const h2cVariants: [string, string][] = [
    ['RFC 7540 h2c upgrade', `GET / HTTP/1.1\r\n${H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`],
    ['h2c without HTTP2-Settings', `GET / HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n`],
    ['H2C in upper case', `GET / HTTP/1.1\r\n${H}Connection: upgrade, http2-settings\r\nUpgrade: H2C\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`],
    ['h2c listed with websocket', `GET / HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: h2c, websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`],
  ];

  it.each(h2cVariants)('%s: no 101, and the backend sees neither Upgrade: h2c nor HTTP2-Settings', async (_name, sent) => {
    const up = await startUpgradingBackend();
    scope.cleanup.push(() => up.close());
    const lb = await scope.lb({ upstreams: { backend: { servers: [{ address: up.address }] } } }, { admin: false });
    const res = await rawExchange(lb.port, sent, { timeoutMs: 3000, until: (d) => parseResponses(d).responses.length > 0 });
    const first = res.responses[0];
    expect(first, `no response to ${show(sent)}: ${show(res.text)}`).toBeDefined();
    expect(first!.status, `h2c upgrade answered ${first!.status}: ${show(res.text)}`).not.toBe(101);
    expect([200, 400]).toContain(first!.status);
    for (const head of up.heads) {
      expect(head, 'the backend was offered h2c').not.toMatch(/\r\nupgrade:[^\r]*h2c/i);
      expect(head, 'HTTP2-Settings reached the backend').not.toMatch(/\r\nhttp2-settings:/i);
    }
  });

  it('a websocket upgrade still gets its 101 and a working tunnel', async () => {
    const up = await startUpgradingBackend();
    scope.cleanup.push(() => up.close());
    const lb = await scope.lb({ upstreams: { backend: { servers: [{ address: up.address }] } } }, { admin: false });
    const sent = `GET /ws HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;
    const res = await rawExchange(lb.port, [sent, 'ping'], { gapMs: 300, timeoutMs: 3000, until: (d) => d.toString('latin1').includes('echo:ping') });
    expect(res.text).toMatch(/^HTTP\/1\.1 101 /);
    expect(res.text).toContain('echo:ping');
    expect(up.heads).toHaveLength(1);
    expect(up.heads[0]).toMatch(/\r\nupgrade: websocket/i);
  });
});
