/**
 * Issue 14, fault and abuse suite: header and body limits. sessionlb (in-process) in front of a
 * raw recording backend; every request is sent as exact bytes. A request over a limit is refused
 * (414 / 400 / 431 / 413) and its connection closed, and the backend gets none of it; a request
 * within the limits is forwarded whole: never with part of its headers, never without its body.
 *
 * Limits (nginx's names): `largeClientHeaderBuffers` ("4 8k": the request line and each header line
 * must fit one buffer, the whole head NUMBER x SIZE), `underscoresInHeaders` (false), and
 * `clientMaxBodySize` ("1m", with request buffering on).
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { useScope } from './helpers/scope.js';
import {
  headerValues, parseResponses, rawExchange, recordingSetup, responsesReceived, sleep, statuses,
  type RawResult, type RecordingBackend,
} from './helpers/raw-http.js';

const scope = useScope();

const setup = (raw: Record<string, unknown> = {}): ReturnType<typeof recordingSetup> => recordingSetup(scope, raw);

const show = (b: string | Buffer): string => {
  const t = typeof b === 'string' ? b : b.toString('latin1');
  return JSON.stringify(t.length > 200 ? `${t.slice(0, 120)}...(${t.length} bytes)...${t.slice(-60)}` : t);
};
const totalBytes = (be: RecordingBackend): number => be.connections.reduce((n, c) => n + c.length, 0);

/** `n` small headers "X-H0000: 0" ... (12 bytes each with CRLF). */
const smallHeaders = (n: number): string => Array.from({ length: n }, (_, i) => `X-H${String(i).padStart(4, '0')}: ${i % 10}\r\n`).join('');

/** Reads until a 2xx arrived, or until the connection closes (a refusal). */
function exchange(port: number, sent: string | Buffer | (string | Buffer)[], timeoutMs = 5000): Promise<RawResult> {
  return rawExchange(port, sent, { timeoutMs, until: (d) => parseResponses(d).responses.some((r) => r.status >= 200 && r.status < 300) });
}

async function expectRefused(be: RecordingBackend, res: RawResult, allowed: number[], sent: string | Buffer): Promise<void> {
  await sleep(50);
  const where = `sent ${show(sent)}, received ${show(res.text)}`;
  expect(statuses(res), where).toHaveLength(1);
  expect(allowed, where).toContain(statuses(res)[0]);
  expect(res.closed, `connection left open; ${where}`).toBe(true);
  expect(be.requests.map((r) => show(r.raw)), `refused but forwarded; ${where}`).toEqual([]);
  expect(totalBytes(be), `bytes reached the backend; ${where}`).toBe(0);
}

function expectWellFramed(be: RecordingBackend): void {
  expect(be.malformed.map((m) => m.reason)).toEqual([]);
  expect(be.partial.filter((p) => p.length > 0).map((p) => show(p))).toEqual([]);
}

describe('largeClientHeaderBuffers (default "4 8k")', () => {
  it('a request line longer than one buffer (9,000 bytes) is 414; 7,000 bytes is forwarded whole', async () => {
    const { be, port } = await setup();
    const long = `GET /${'a'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`;
    await expectRefused(be, await exchange(port, long), [414], long);
    const fits = `GET /${'b'.repeat(7000)} HTTP/1.1\r\nHost: x\r\n\r\n`;
    const res = await exchange(port, fits);
    expect(statuses(res)).toEqual([200]);
    expect(be.requests.map((r) => r.target)).toEqual([`/${'b'.repeat(7000)}`]);
    expectWellFramed(be);
  });

  it('a header line longer than one buffer (9,000 bytes) is 400 or 431; 7,000 bytes is forwarded with its whole value', async () => {
    const { be, port } = await setup();
    const long = `GET / HTTP/1.1\r\nHost: x\r\nX-Long: ${'a'.repeat(9000)}\r\n\r\n`;
    await expectRefused(be, await exchange(port, long), [400, 431], long);
    const cookie = `GET / HTTP/1.1\r\nHost: x\r\nCookie: PHPSESSID=${'c'.repeat(9000)}\r\n\r\n`;
    await expectRefused(be, await exchange(port, cookie), [400, 431], cookie);
    const fits = `GET / HTTP/1.1\r\nHost: x\r\nX-Long: ${'b'.repeat(7000)}\r\n\r\n`;
    expect(statuses(await exchange(port, fits))).toEqual([200]);
    expect(be.requests.map((r) => headerValues(r, 'x-long'))).toEqual([['b'.repeat(7000)]]);
    expectWellFramed(be);
  });

  it('a header section over 4 x 8k (five 7,000-byte lines) is 431 or 400; three such lines are forwarded, all three', async () => {
    const { be, port } = await setup();
    const lines = (n: number): string => Array.from({ length: n }, (_, i) => `X-L${i}: ${String(i).repeat(7000)}\r\n`).join('');
    const over = `GET / HTTP/1.1\r\nHost: x\r\n${lines(5)}\r\n`;
    await expectRefused(be, await exchange(port, over), [400, 431], over);
    const fits = `GET / HTTP/1.1\r\nHost: x\r\n${lines(3)}\r\n`;
    expect(statuses(await exchange(port, fits))).toEqual([200]);
    expect(be.requests).toHaveLength(1);
    expect([0, 1, 2].map((i) => headerValues(be.requests[0]!, `x-l${i}`))).toEqual([0, 1, 2].map((i) => [String(i).repeat(7000)]));
    expectWellFramed(be);
  });

  it('2,100 small headers (25 KB, within 4 x 8k) are forwarded, every one of them, in order', async () => {
    const { be, port } = await setup();
    const sent = `GET /many HTTP/1.1\r\nHost: x\r\n${smallHeaders(2100)}\r\n`;
    const res = await exchange(port, sent);
    expect(statuses(res), `received ${show(res.text)}`).toEqual([200]);
    expect(be.requests).toHaveLength(1);
    const got = be.requests[0]!.headers.filter(([n]) => n.startsWith('X-H'));
    expect(got.length, 'X-H headers the backend got (of 2,100 sent)').toBe(2100);
    expect(got.map(([n, v]) => `${n}: ${v}`).join('\r\n') + '\r\n').toBe(smallHeaders(2100));
    expectWellFramed(be);
  });

  it('3,000 small headers (36 KB, over 4 x 8k) are refused, not forwarded with some of them', async () => {
    const { be, port } = await setup();
    const sent = `GET /many HTTP/1.1\r\nHost: x\r\n${smallHeaders(3000)}\r\n`;
    await expectRefused(be, await exchange(port, sent), [400, 431], sent);
  });

  it.each([1100, 2100])('a POST whose Content-Length and Cookie come after %i other headers: forwarded with its body and cookie, or refused; never without them', async (n) => {
    const { be, port } = await setup();
    const sent = `POST /late HTTP/1.1\r\nHost: x\r\n${smallHeaders(n)}Content-Length: 5\r\nCookie: PHPSESSID=abcdefghijklmnopqrstuvwxyz\r\n\r\nhello`;
    const res = await exchange(port, sent);
    await sleep(50);
    const status = statuses(res)[0];
    if (status === 200) {
      expect(be.requests).toHaveLength(1);
      const r = be.requests[0]!;
      expect(r.body.toString(), 'body the backend got').toBe('hello');
      expect(headerValues(r, 'cookie'), 'Cookie the backend got').toEqual(['PHPSESSID=abcdefghijklmnopqrstuvwxyz']);
      expect(r.headers.filter(([h]) => h.startsWith('X-H')).length).toBe(n);
    } else {
      await expectRefused(be, res, [400, 431], sent);
    }
    expectWellFramed(be);
  });

  it('"2 1k": request line over 1k is 414, a header line over 1k 400/431, a head over 2k 431/400; a 1.2k head of short lines passes', async () => {
    const { be, port } = await setup({ largeClientHeaderBuffers: '2 1k' });
    const line = `GET /${'a'.repeat(1100)} HTTP/1.1\r\nHost: x\r\n\r\n`;
    await expectRefused(be, await exchange(port, line), [414], line);
    const hdr = `GET / HTTP/1.1\r\nHost: x\r\nX-Long: ${'a'.repeat(1100)}\r\n\r\n`;
    await expectRefused(be, await exchange(port, hdr), [400, 431], hdr);
    const total = `GET / HTTP/1.1\r\nHost: x\r\n${[0, 1, 2].map((i) => `X-L${i}: ${'a'.repeat(900)}\r\n`).join('')}\r\n`;
    await expectRefused(be, await exchange(port, total), [400, 431], total);
    const fits = `GET /ok HTTP/1.1\r\nHost: x\r\n${smallHeaders(100)}\r\n`;
    expect(statuses(await exchange(port, fits))).toEqual([200]);
    expect(be.requests.map((r) => r.headers.filter(([h]) => h.startsWith('X-H')).length)).toEqual([100]);
    expectWellFramed(be);
  });
});

describe('underscoresInHeaders', () => {
  const sent = 'GET / HTTP/1.1\r\nHost: x\r\nX_Real_IP: 6.6.6.6\r\nX_Custom: 1\r\nX-Normal: 2\r\n\r\n';

  it('default (false): headers whose name has "_" are dropped before forwarding', async () => {
    const { be, port } = await setup();
    expect(statuses(await exchange(port, sent))).toEqual([200]);
    const r = be.requests[0]!;
    expect(r.headers.filter(([n]) => n.includes('_')), 'underscore headers the backend got').toEqual([]);
    expect(headerValues(r, 'x-real-ip')).toEqual(['127.0.0.1']);
    expect(headerValues(r, 'x-normal')).toEqual(['2']);
  });

  it('true: they pass', async () => {
    const { be, port } = await setup({ underscoresInHeaders: true });
    expect(statuses(await exchange(port, sent))).toEqual([200]);
    const r = be.requests[0]!;
    expect(headerValues(r, 'x_real_ip')).toEqual(['6.6.6.6']);
    expect(headerValues(r, 'x_custom')).toEqual(['1']);
    expect(headerValues(r, 'x-real-ip')).toEqual(['127.0.0.1']);
  });
});

describe('clientMaxBodySize (default "1m", request buffering on)', () => {
  it('Expect: 100-continue with a Content-Length over the limit: 413 and no 100 Continue before it; the backend gets nothing', async () => {
    const { be, port } = await setup();
    const sent = 'POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n';
    const res = await rawExchange(port, sent, { timeoutMs: 3000 });
    expect(res.responses.map((r) => r.status), `received ${show(res.text)}`).toEqual([413]);
    expect(res.closed).toBe(true);
    await sleep(50);
    expect(totalBytes(be)).toBe(0);
  });

  it('Expect: 100-continue within the limit: 100, then the body is forwarded whole', async () => {
    const { be, port } = await setup();
    const body = Buffer.alloc(100_000, 98);
    const res = await rawExchange(port, ['POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n', body], {
      gapMs: 300, timeoutMs: 5000, until: (d) => parseResponses(d).responses.some((r) => r.status === 200),
    });
    expect(res.responses.map((r) => r.status)).toEqual([100, 200]);
    expect(be.requests.map((r) => r.body.length)).toEqual([100_000]);
    expectWellFramed(be);
  });

  it('a 3 MiB chunked body against "1m": 413, and the backend never sees the request at all', async () => {
    const { be, port } = await setup();
    const chunk = Buffer.alloc(64 * 1024, 97);
    const parts: Buffer[] = [Buffer.from('POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n')];
    for (let i = 0; i < 48; i++) parts.push(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]));
    parts.push(Buffer.from('0\r\n\r\n'));
    const res = await rawExchange(port, parts, { gapMs: 5, timeoutMs: 8000 });
    expect(statuses(res), `received ${show(res.text)}`).toEqual([413]);
    expect(res.closed).toBe(true);
    await sleep(100);
    expect(be.requests.map((r) => r.body.length), 'requests the backend got').toEqual([]);
    expect(totalBytes(be), 'bytes of the oversized request that reached the backend').toBe(0);
  });

  it('the 413 reaches a client that is still sending its body: sessionlb reads and drops the rest before closing (nginx lingering close), no reset', async () => {
    const { be, port } = await setup();
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    await new Promise<void>((r) => socket.once('connect', () => r()));
    socket.pause(); // read nothing until the end: a reset would discard what arrived meanwhile
    const chunk = Buffer.alloc(64 * 1024, 97);
    const piece = Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]);
    socket.write('POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
    for (let i = 0; i < 24; i++) socket.write(piece); // 1.5 MiB: over "1m", the 413 is sent
    await sleep(400);
    for (let i = 0; i < 8; i++) socket.write(piece); // still sending after sessionlb answered
    await sleep(400);
    const received: Buffer[] = [];
    let reset = false;
    const closed = new Promise<void>((r) => {
      socket.on('error', (err: NodeJS.ErrnoException) => { reset = err.code === 'ECONNRESET'; r(); });
      socket.on('close', () => r());
    });
    socket.on('data', (d: Buffer) => received.push(d));
    socket.end('0\r\n\r\n');
    socket.resume();
    await Promise.race([closed, sleep(8000)]);
    socket.destroy();
    const text = Buffer.concat(received).toString('latin1');
    expect(text, `reset ${reset}`).toMatch(/^HTTP\/1\.1 413 /);
    expect(reset).toBe(false);
    expect(be.requests).toEqual([]);
  });

  it('a 3 MiB Content-Length body against "1m": 413 before anything is sent upstream', async () => {
    const { be, port } = await setup();
    const res = await rawExchange(port, [Buffer.from(`POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: ${3 << 20}\r\n\r\n`), Buffer.alloc(3 << 20, 97)], { gapMs: 50, timeoutMs: 8000 });
    expect(statuses(res), `received ${show(res.text)}`).toEqual([413]);
    await sleep(100);
    expect(totalBytes(be)).toBe(0);
  });

  it('bodies of exactly 1 MiB pass, with Content-Length and chunked; the backend gets every byte', async () => {
    const { be, port } = await setup();
    const body = Buffer.alloc(1 << 20, 99);
    const withLength = await exchange(port, [Buffer.from(`POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`), body], 8000);
    expect(statuses(withLength)).toEqual([200]);
    const half = body.subarray(0, 1 << 19);
    const chunk = Buffer.concat([Buffer.from(`${half.length.toString(16)}\r\n`), half, Buffer.from('\r\n')]);
    const withChunks = await rawExchange(port, [Buffer.from('POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'), chunk, chunk, Buffer.from('0\r\n\r\n')], {
      gapMs: 20, timeoutMs: 8000, until: responsesReceived(1),
    });
    expect(statuses(withChunks)).toEqual([200]);
    expect(be.requests.map((r) => `${r.target} ${r.body.length} ${r.body.equals(body)}`)).toEqual([`/cl ${1 << 20} true`, `/te ${1 << 20} true`]);
    expectWellFramed(be);
  });
});
