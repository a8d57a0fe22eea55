/**
 * src/tls/client-hello.ts: the ClientHello read before node's TLS stack sees the connection.
 * - hellos captured from real clients (node's tls.connect, `openssl s_client`, `curl`) on a
 *   net.Server on loopback: server name and ALPN, none without SNI;
 * - hand-built hellos for each rule (lengths, duplicates, names, records), every way of cutting a
 *   hello into two records, and one-byte records;
 * - readClientHello on real sockets: a hello in one-byte writes, a hello rewritten into two records,
 *   not TLS, too large, a client that stops half way (timeout) or leaves (closed), a paused socket;
 *   what it leaves on the socket (no listeners, paused);
 * - the round trip: after readClientHello, socket.unshift(bytes) and tlsServer.emit('connection'),
 *   a real handshake (node's client and openssl's) completes and the client gets the server's data;
 * - a seeded fuzz: mutations and truncations of the captured hellos never throw, and a result, once
 *   given for a prefix, is the result of the whole input.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { parseClientHello, readClientHello, type HelloResult } from '../src/tls/client-hello.js';
import { prng } from './helpers/prng.js';
import { TestPki } from './helpers/tls-certs.js';

const MAX = 16384;

function has(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const HAS_CURL = has('curl', ['--version']);
const CURL_HTTP2 = HAS_CURL && /\bHTTP2\b/.test(execFileSync('curl', ['--version'], { encoding: 'utf8' }));

// ---- building hellos by hand ----

const u8 = (n: number): Buffer => Buffer.from([n & 0xff]);
const u16 = (n: number): Buffer => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const u24 = (n: number): Buffer => Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
const vec8 = (b: Buffer): Buffer => Buffer.concat([u8(b.length), b]);
const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b]);

function ext(type: number, data: Buffer): Buffer {
  return Buffer.concat([u16(type), vec16(data)]);
}
function sniExt(...names: (string | Buffer)[]): Buffer {
  return ext(0, vec16(Buffer.concat(names.map((n) => Buffer.concat([u8(0), vec16(Buffer.from(n))])))));
}
function alpnExt(...protocols: string[]): Buffer {
  return ext(16, vec16(Buffer.concat(protocols.map((p) => vec8(Buffer.from(p))))));
}

interface Parts {
  version?: Buffer;
  sessionId?: Buffer;
  suites?: Buffer;
  compression?: Buffer;
  /** null: no extensions block at all. */
  extensions?: Buffer[] | null;
  /** Replaces the extensions block's length. */
  extensionsLength?: number;
  type?: number;
}

/** A ClientHello handshake message (its 4-byte header included). */
function message(parts: Parts = {}): Buffer {
  const extensions = parts.extensions === undefined ? [sniExt('a.test'), alpnExt('h2', 'http/1.1')] : parts.extensions;
  const extBlock = extensions === null ? Buffer.alloc(0) : Buffer.concat(extensions);
  const body = Buffer.concat([
    parts.version ?? Buffer.from([3, 3]),
    Buffer.alloc(32, 7),
    vec8(parts.sessionId ?? Buffer.alloc(32, 1)),
    vec16(parts.suites ?? Buffer.from([0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f])),
    vec8(parts.compression ?? Buffer.from([0])),
    extensions === null ? Buffer.alloc(0) : Buffer.concat([u16(parts.extensionsLength ?? extBlock.length), extBlock]),
  ]);
  return Buffer.concat([u8(parts.type ?? 1), u24(body.length), body]);
}

function record(payload: Buffer, type = 22, version = 0x0301): Buffer {
  return Buffer.concat([u8(type), u16(version), u16(payload.length), payload]);
}

/** `msg` cut into records at `cuts` (offsets into msg). */
function records(msg: Buffer, cuts: number[] = []): Buffer {
  const edges = [0, ...cuts, msg.length];
  const out: Buffer[] = [];
  for (let i = 0; i + 1 < edges.length; i++) out.push(record(msg.subarray(edges[i], edges[i + 1])));
  return Buffer.concat(out);
}

const hello = (parts: Parts = {}): Buffer => records(message(parts));
const parse = (buf: Buffer, max = MAX): HelloResult | null => parseClientHello(buf, max);
const ok = (serverName: string | undefined, alpn: string[] | undefined): HelloResult => ({ ok: true, hello: { serverName, alpn } });
const failed = (reason: string): HelloResult => ({ ok: false, reason } as HelloResult);

/** The handshake message of a one-record hello as captured. */
function messageOf(captured: Buffer): Buffer {
  expect(captured[0]).toBe(22);
  expect(captured.readUInt16BE(3)).toBe(captured.length - 5);
  return captured.subarray(5);
}

// ---- sockets ----

const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0).reverse()) c();
});

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

function kill(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

/**
 * The first TLS record a client sends (its ClientHello, one record for every client here), read by
 * the record header alone, on a net.Server that then closes the connection.
 */
async function capture(startClient: (port: number) => (() => void) | void): Promise<Buffer> {
  let resolveHello!: (b: Buffer) => void;
  const got = new Promise<Buffer>((resolve) => { resolveHello = resolve; });
  const server = net.createServer((socket) => {
    let buf = Buffer.alloc(0);
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
        resolveHello(buf.subarray(0, 5 + buf.readUInt16BE(3)));
        socket.destroy();
      }
    });
  });
  const port = await listen(server);
  const stop = startClient(port);
  try {
    return await got;
  } finally {
    stop?.();
  }
}

function nodeClient(opts: tls.ConnectionOptions): (port: number) => () => void {
  return (port) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts });
    s.on('error', () => {});
    return () => s.destroy();
  };
}

function spawned(cmd: string, args: (port: number) => string[]): (port: number) => () => void {
  return (port) => {
    const child = spawn(cmd, args(port), { stdio: 'ignore' });
    child.on('error', () => {});
    return () => kill(child);
  };
}

const captured: Record<string, Buffer> = {};

beforeAll(async () => {
  captured.node = await capture(nodeClient({ servername: 'Node.Example.TEST', ALPNProtocols: ['h2', 'http/1.1'] }));
  captured.nodeTls12 = await capture(nodeClient({ servername: 'tls12.test', maxVersion: 'TLSv1.2' }));
  captured.nodeIp = await capture(nodeClient({}));
  captured.nodeEmpty = await capture(nodeClient({ servername: '' }));
  captured.openssl = await capture(spawned('openssl', (port) => ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'x', '-alpn', 'h2']));
  captured.opensslNoSni = await capture(spawned('openssl', (port) => ['s_client', '-connect', `127.0.0.1:${port}`, '-noservername']));
  if (HAS_CURL) {
    captured.curl = await capture(spawned('curl', (port) => ['-sk', '--max-time', '10', '--resolve', `curl.test:${port}:127.0.0.1`, `https://curl.test:${port}/`]));
  }
});

describe('parseClientHello: hellos of real clients', () => {
  it("node's tls.connect: SNI (lowercased) and ALPN", () => {
    expect(parse(captured.node!)).toEqual(ok('node.example.test', ['h2', 'http/1.1']));
    expect(parse(captured.nodeTls12!)).toEqual(ok('tls12.test', undefined));
  });

  it('node without SNI (an IP host, servername empty): serverName undefined', () => {
    expect(parse(captured.nodeIp!)).toEqual(ok(undefined, undefined));
    expect(parse(captured.nodeEmpty!)).toEqual(ok(undefined, undefined));
  });

  it('openssl s_client -servername x -alpn h2, and -noservername', () => {
    expect(parse(captured.openssl!)).toEqual(ok('x', ['h2']));
    expect(parse(captured.opensslNoSni!)).toEqual(ok(undefined, undefined));
  });

  it.skipIf(!HAS_CURL)('curl https://curl.test', () => {
    expect(parse(captured.curl!)).toEqual(ok('curl.test', CURL_HTTP2 ? ['h2', 'http/1.1'] : ['http/1.1']));
  });

  it('every proper prefix needs more; the exact bytes, or more after them, give the result', () => {
    for (const [name, h] of Object.entries(captured)) {
      const whole = parse(h);
      expect(whole?.ok, name).toBe(true);
      for (let i = 0; i < h.length; i++) expect(parse(h.subarray(0, i)), `${name} prefix ${i}`).toBeNull();
      expect(parse(Buffer.concat([h, record(Buffer.from([1]), 20)]))).toEqual(whole);
      expect(parse(h, h.length)).toEqual(whole);
      expect(parse(h, h.length - 1)).toEqual(failed('too_large'));
    }
  });

  it('a captured hello cut into two records at every offset, or into one-byte records, reads the same', () => {
    for (const name of ['node', 'openssl']) {
      const msg = messageOf(captured[name]!);
      const want = parse(captured[name]!);
      for (let cut = 1; cut < msg.length; cut++) {
        const two = records(msg, [cut]);
        expect(parse(two), `${name} cut at ${cut}`).toEqual(want);
        expect(parse(two.subarray(0, two.length - 1))).toBeNull();
      }
      const ones = records(msg, Array.from({ length: msg.length - 1 }, (_, i) => i + 1));
      expect(parse(ones)).toEqual(want);
      expect(parse(ones, ones.length - 1)).toEqual(failed('too_large'));
    }
  });
});

describe('parseClientHello: the rules', () => {
  it('not TLS: decided by the first byte', () => {
    expect(parse(Buffer.from('G'))).toEqual(failed('not_tls'));
    expect(parse(Buffer.from('GET / HTTP/1.1\r\n'))).toEqual(failed('not_tls'));
    // An SSLv2-compatible hello: 2-byte length with the top bit set, then type 1.
    expect(parse(Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01]))).toEqual(failed('not_tls'));
    expect(parse(Buffer.alloc(0))).toBeNull();
    expect(parse(Buffer.from([22]))).toBeNull();
  });

  it('the record layer', () => {
    const msg = message();
    expect(parse(record(msg, 22, 0x0300))).toEqual(failed('malformed'));
    expect(parse(record(msg, 22, 0x0305))).toEqual(failed('malformed'));
    expect(parse(Buffer.from([22, 2]))).toEqual(failed('malformed'));
    expect(parse(Buffer.from([22, 3, 0]))).toEqual(failed('malformed'));
    for (const v of [0x0301, 0x0302, 0x0303, 0x0304]) expect(parse(record(msg, 22, v))).toEqual(ok('a.test', ['h2', 'http/1.1']));
    expect(parse(Buffer.from([22, 3, 1, 0, 0]))).toEqual(failed('malformed')); // empty record
    expect(parse(Buffer.from([22, 3, 1, 0x41, 0x01]), 1e6)).toEqual(failed('malformed')); // 2^14 + 257
    expect(parse(Buffer.from([22, 3, 1, 0x41, 0x00]), 1e6)).toBeNull(); // 2^14 + 256: fine so far
    // A record of another type before the hello is complete.
    const cut = 20;
    const mixed = Buffer.concat([record(msg.subarray(0, cut)), record(Buffer.from([1]), 20), record(msg.subarray(cut))]);
    expect(parse(mixed)).toEqual(failed('malformed'));
    expect(parse(mixed.subarray(0, 5 + cut + 1))).toEqual(failed('malformed'));
    // The record goes on after the hello (here: known from the header, before the rest is in).
    const long = record(Buffer.concat([msg, Buffer.from([1, 0, 0, 0])]));
    expect(parse(long)).toEqual(failed('malformed'));
    expect(parse(long.subarray(0, 9))).toEqual(failed('malformed'));
  });

  it('the handshake message', () => {
    expect(parse(hello({ type: 2 }))).toEqual(failed('malformed'));
    expect(parse(Buffer.from([22, 3, 1, 1, 0, 2]))).toEqual(failed('malformed')); // decided at the type byte
    expect(parse(record(Buffer.from([1, 0, 0, 40, ...Buffer.alloc(40)])))).toEqual(failed('malformed')); // shorter than any hello
    expect(parse(record(Buffer.concat([message().subarray(0, 4), Buffer.alloc(3)])))).toBeNull();
    // A handshake length over the bytes its record carries: fine (more records follow), unless over maxBytes.
    const big = Buffer.from([22, 3, 1, 0, 4, 1, 0, 0x40, 0]); // a 16 KiB hello announced
    expect(parse(big, 1e6)).toBeNull();
    expect(parse(big, 16384)).toEqual(failed('too_large'));
    expect(parse(Buffer.from([22]), 40)).toEqual(failed('too_large')); // no hello fits in 40 bytes
  });

  it('version, session id, cipher suites, compression methods', () => {
    expect(parse(hello({ version: Buffer.from([2, 0]) }))).toEqual(failed('malformed'));
    expect(parse(hello({ sessionId: Buffer.alloc(0) }))?.ok).toBe(true);
    expect(parse(hello({ sessionId: Buffer.alloc(33) }))).toEqual(failed('malformed'));
    expect(parse(hello({ suites: Buffer.alloc(0) }))).toEqual(failed('malformed'));
    expect(parse(hello({ suites: Buffer.alloc(3) }))).toEqual(failed('malformed'));
    expect(parse(hello({ suites: Buffer.alloc(2) }))?.ok).toBe(true);
    expect(parse(hello({ compression: Buffer.alloc(0) }))).toEqual(failed('malformed'));
    // A session id length past the end of the message.
    const m = message({ extensions: null, sessionId: Buffer.alloc(0), suites: Buffer.alloc(2) });
    m[4 + 34] = 32;
    expect(parse(record(m))).toEqual(failed('malformed'));
  });

  it('extensions: absent, lengths, duplicates', () => {
    expect(parse(hello({ extensions: null }))).toEqual(ok(undefined, undefined));
    expect(parse(hello({ extensions: [] }))).toEqual(ok(undefined, undefined));
    expect(parse(hello({ extensions: [ext(0x0a, Buffer.from([0, 2, 0, 0x1d]))] }))).toEqual(ok(undefined, undefined));
    expect(parse(hello({ extensionsLength: 100 }))).toEqual(failed('malformed'));
    expect(parse(hello({ extensions: [sniExt('a.test')], extensionsLength: 3 }))).toEqual(failed('malformed'));
    // An extension whose length runs past the block.
    const e = ext(0x0a, Buffer.from([0, 2, 0, 0x1d]));
    e.writeUInt16BE(5, 2);
    expect(parse(hello({ extensions: [e] }))).toEqual(failed('malformed'));
    expect(parse(hello({ extensions: [Buffer.from([0, 0x0a, 0])] }))).toEqual(failed('malformed')); // 3 bytes left
    expect(parse(hello({ extensions: [ext(0x0a, Buffer.alloc(0)), ext(0x0a, Buffer.alloc(0))] }))).toEqual(failed('malformed'));
    expect(parse(hello({ extensions: [sniExt('a.test'), sniExt('b.test')] }))).toEqual(failed('malformed'));
    expect(parse(hello({ extensions: [alpnExt('h2'), alpnExt('h2')] }))).toEqual(failed('malformed'));
  });

  it('server_name: the first host_name, checked and lowercased', () => {
    const sni = (...names: (string | Buffer)[]): HelloResult | null => parse(hello({ extensions: [sniExt(...names)] }));
    expect(sni('Example.COM.')).toEqual(ok('example.com', undefined));
    expect(sni('under_score-1.test')).toEqual(ok('under_score-1.test', undefined));
    expect(sni('localhost')).toEqual(ok('localhost', undefined));
    expect(sni('first.test', 'second.test')).toEqual(ok('first.test', undefined));
    const long = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}`; // 255
    expect(sni(long)).toEqual(ok(long, undefined));
    expect(sni(`${long}.`)).toEqual(ok(long, undefined));
    for (const bad of ['', '.', 'a..b', '.a', 'a b', 'a/b', 'a:443', 'a.b..', `${long}a`, 'a'.repeat(64), 'caf\u00e9.test', Buffer.from([0x61, 0])]) {
      expect(sni(bad), JSON.stringify(bad.toString())).toEqual(failed('malformed'));
    }
    // Another name type only: no server name; a host_name after it is taken.
    const other = Buffer.concat([u8(1), vec16(Buffer.from('x'))]);
    const host = Buffer.concat([u8(0), vec16(Buffer.from('b.test'))]);
    expect(parse(hello({ extensions: [ext(0, vec16(other))] }))).toEqual(ok(undefined, undefined));
    expect(parse(hello({ extensions: [ext(0, vec16(Buffer.concat([other, host])))] }))).toEqual(ok('b.test', undefined));
    // Empty extension, empty list, list length wrong, entry past the end.
    expect(parse(hello({ extensions: [ext(0, Buffer.alloc(0))] }))).toEqual(failed('malformed'));
    expect(parse(hello({ extensions: [ext(0, u16(0))] }))).toEqual(failed('malformed'));
    expect(parse(hello({ extensions: [ext(0, Buffer.concat([u16(host.length + 1), host]))] }))).toEqual(failed('malformed'));
    expect(parse(hello({ extensions: [ext(0, vec16(Buffer.concat([u8(0), u16(50), Buffer.from('b.test')])))] }))).toEqual(failed('malformed'));
  });

  it('ALPN: non-empty names, a non-empty list', () => {
    const alpn = (data: Buffer): HelloResult | null => parse(hello({ extensions: [ext(16, data)] }));
    expect(parse(hello({ extensions: [alpnExt('h2', 'http/1.1', 'x'.repeat(255))] }))).toEqual(ok(undefined, ['h2', 'http/1.1', 'x'.repeat(255)]));
    expect(alpn(vec16(Buffer.alloc(0)))).toEqual(failed('malformed'));
    expect(alpn(Buffer.alloc(0))).toEqual(failed('malformed'));
    expect(alpn(vec16(Buffer.from([2, 0x68, 0x32, 0])))).toEqual(failed('malformed')); // an empty name
    expect(alpn(vec16(Buffer.from([3, 0x68, 0x32])))).toEqual(failed('malformed')); // past the list
    expect(alpn(Buffer.concat([u16(9), Buffer.from([2, 0x68, 0x32])]))).toEqual(failed('malformed'));
  });

  it('maxBytes counts the records and their headers; decided as soon as the lengths say so', () => {
    const h = hello();
    expect(parse(h, h.length)?.ok).toBe(true);
    expect(parse(h, h.length - 1)).toEqual(failed('too_large'));
    expect(parse(h.subarray(0, 9), h.length - 1)).toEqual(failed('too_large'));
    expect(parse(h.subarray(0, 5), h.length - 1)).toEqual(failed('too_large')); // the record is longer than that
    const two = records(message(), [10]);
    expect(parse(two, two.length)?.ok).toBe(true);
    // After the first record's 10 bytes, the 4-byte header says how much is left: 5 more for the next header.
    expect(parse(two.subarray(0, 15), two.length - 1)).toEqual(failed('too_large'));
    expect(parse(two.subarray(0, 15), two.length)).toBeNull();
  });
});

describe('parseClientHello: fuzz', () => {
  it('random mutations and truncations never throw, and a prefix decides as the whole does', () => {
    const random = prng(0x5e55);
    const int = (n: number): number => Math.floor(random() * n);
    const seeds = [...Object.values(captured), hello(), records(message(), [7, 60]), hello({ extensions: [sniExt('a.test', 'b.test'), alpnExt('a', 'bb')] })];
    const reasons = new Set(['not_tls', 'malformed', 'too_large']);
    const counts: Record<string, number> = {};
    const check = (input: Buffer, max: number): HelloResult | null => {
      const r = parseClientHello(input, max);
      if (r !== null) {
        if (r.ok) {
          expect(r.hello.serverName === undefined || /^[a-z0-9_.-]{1,255}$/.test(r.hello.serverName)).toBe(true);
          expect(r.hello.alpn === undefined || (r.hello.alpn.length > 0 && r.hello.alpn.every((p) => p.length > 0))).toBe(true);
        } else {
          expect(reasons.has(r.reason)).toBe(true);
        }
      }
      return r;
    };
    for (let i = 0; i < 6000; i++) {
      const m = Buffer.from(seeds[int(seeds.length)]!);
      let input: Buffer = m;
      const ops = 1 + int(3);
      for (let k = 0; k < ops; k++) {
        switch (int(6)) {
          case 0: input[int(input.length)] = int(256); break;
          case 1: { const at = int(input.length); input[at] = (input[at] ?? 0) ^ (1 << int(8)); break; }
          case 2: input = input.subarray(0, int(input.length + 1)); break;
          case 3: { const at = int(input.length + 1); input = Buffer.concat([input.subarray(0, at), Buffer.from(Array.from({ length: 1 + int(8) }, () => int(256))), input.subarray(at)]); break; }
          case 4: { const at = int(input.length); input = Buffer.concat([input.subarray(0, at), input.subarray(at + 1 + int(16))]); break; }
          default: { if (input.length > 2) { const at = int(input.length - 1); input.writeUInt16BE((input.readUInt16BE(at) + int(64) - 32) & 0xffff, at); } }
        }
      }
      const max = int(4) === 0 ? int(input.length + 50) : MAX;
      const whole = check(input, max);
      const key = whole === null ? 'null' : whole.ok ? 'ok' : whole.reason;
      counts[key] = (counts[key] ?? 0) + 1;
      for (let k = 0; k < 4; k++) {
        const part = check(input.subarray(0, int(input.length + 1)), max);
        if (part !== null) expect(whole).toEqual(part);
      }
    }
    // The mutations reach every outcome.
    for (const k of ['null', 'ok', 'malformed', 'too_large', 'not_tls']) expect(counts[k] ?? 0, k).toBeGreaterThan(0);
  });
});

// ---- readClientHello on sockets ----

interface Read {
  result: HelloResult;
  bytes: Buffer;
  ms: number;
  /** Listener counts before and after, and isPaused() when done was called. */
  listenersBefore: number[];
  listenersAfter: number[];
  paused: boolean;
  dataEvents: number;
  calls: number;
}

const EVENTS = ['data', 'end', 'close', 'error', 'readable'] as const;

/**
 * A net.Server whose connections go through readClientHello; each read is reported, then
 * `then(socket, read)` (default: destroy the socket).
 */
async function helloServer(
  options: { maxBytes: number; timeoutMs: number },
  then: (socket: net.Socket, read: Read) => void = (s) => s.destroy(),
  serverOptions: net.ServerOpts = {},
): Promise<{ port: number; next: () => Promise<Read> }> {
  const reads: Read[] = [];
  const waiting: ((r: Read) => void)[] = [];
  const server = net.createServer(serverOptions, (socket) => {
    const started = Date.now();
    let dataEvents = 0;
    const count = (): void => { dataEvents++; };
    socket.prependListener('data', count);
    const listenersBefore = EVENTS.map((e) => socket.listenerCount(e));
    let calls = 0;
    readClientHello(socket, options, (result, bytes) => {
      calls++;
      socket.removeListener('data', count);
      const read: Read = {
        result, bytes, ms: Date.now() - started, listenersBefore: listenersBefore.map((n, i) => (EVENTS[i] === 'data' ? n - 1 : n)),
        listenersAfter: EVENTS.map((e) => socket.listenerCount(e)), paused: socket.isPaused(), dataEvents, get calls() { return calls; },
      };
      const w = waiting.shift();
      if (w) w(read);
      else reads.push(read);
      then(socket, read);
    });
  });
  const port = await listen(server);
  return {
    port,
    next: () => new Promise((resolve) => {
      const r = reads.shift();
      if (r) resolve(r);
      else waiting.push(resolve);
    }),
  };
}

function rawClient(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.setNoDelay(true);
    s.on('error', () => {});
    s.once('error', reject);
    closers.push(() => s.destroy());
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function writeSlowly(socket: net.Socket, pieces: Buffer[], delayMs: number): Promise<void> {
  for (const p of pieces) {
    socket.write(p);
    await sleep(delayMs);
  }
}

const bytesOf = (b: Buffer, size: number): Buffer[] => Array.from({ length: Math.ceil(b.length / size) }, (_, i) => b.subarray(i * size, (i + 1) * size));

describe('readClientHello', () => {
  it('a hello in one-byte writes: read whole, the socket left paused with no listener of ours', async () => {
    const srv = await helloServer({ maxBytes: MAX, timeoutMs: 20_000 });
    const c = await rawClient(srv.port);
    const h = captured.node!;
    void writeSlowly(c, bytesOf(h, 1), 1);
    const read = await srv.next();
    expect(read.result).toEqual(ok('node.example.test', ['h2', 'http/1.1']));
    expect(read.bytes.equals(h)).toBe(true);
    expect(read.dataEvents).toBeGreaterThan(20); // the bytes did come apart
    expect(read.listenersAfter).toEqual(read.listenersBefore);
    expect(read.paused).toBe(true);
    await sleep(20);
    expect(read.calls).toBe(1);
  });

  it('a hello in two records, written apart; bytes after the hello are returned too', async () => {
    const srv = await helloServer({ maxBytes: MAX, timeoutMs: 20_000 });
    const c = await rawClient(srv.port);
    const two = records(messageOf(captured.openssl!), [3]);
    const extra = record(Buffer.from([1]), 20);
    await writeSlowly(c, [two.subarray(0, 10), two.subarray(10, 30), two.subarray(30)], 20);
    const read = await srv.next();
    expect(read.result).toEqual(ok('x', ['h2']));
    expect(read.bytes.equals(two)).toBe(true);
    c.write(extra);

    // All in one write with something after it: all of it comes back.
    const c2 = await rawClient(srv.port);
    c2.write(Buffer.concat([two, extra]));
    const read2 = await srv.next();
    expect(read2.result).toEqual(ok('x', ['h2']));
    expect(read2.bytes.equals(Buffer.concat([two, extra]))).toBe(true);
  });

  it('a socket paused before the call (pauseOnConnect) is read too', async () => {
    const srv = await helloServer({ maxBytes: MAX, timeoutMs: 20_000 }, undefined, { pauseOnConnect: true });
    const c = await rawClient(srv.port);
    c.write(captured.node!);
    const read = await srv.next();
    expect(read.result.ok).toBe(true);
    expect(read.paused).toBe(true);
  });

  it('not TLS: an HTTP request', async () => {
    const srv = await helloServer({ maxBytes: MAX, timeoutMs: 20_000 });
    const c = await rawClient(srv.port);
    c.write('GET / HTTP/1.1\r\n');
    const read = await srv.next();
    expect(read.result).toEqual(failed('not_tls'));
    expect('GET / HTTP/1.1\r\n'.startsWith(read.bytes.toString('latin1'))).toBe(true);
    expect(read.bytes.length).toBeGreaterThan(0);
    expect(read.listenersAfter).toEqual(read.listenersBefore);
  });

  it('malformed lengths', async () => {
    const srv = await helloServer({ maxBytes: MAX, timeoutMs: 20_000 });
    const c = await rawClient(srv.port);
    c.write(hello({ extensionsLength: 7 }));
    expect((await srv.next()).result).toEqual(failed('malformed'));
  });

  it('too large: a hello over maxBytes, known from its header before the rest comes', async () => {
    const h = captured.node!;
    const srv = await helloServer({ maxBytes: h.length - 1, timeoutMs: 20_000 });
    const c = await rawClient(srv.port);
    c.write(h.subarray(0, 9));
    const read = await srv.next();
    expect(read.result).toEqual(failed('too_large'));
    expect(read.bytes.equals(h.subarray(0, 9))).toBe(true);

    const exact = await helloServer({ maxBytes: h.length, timeoutMs: 20_000 });
    (await rawClient(exact.port)).write(h);
    expect((await exact.next()).result.ok).toBe(true);
  });

  it('timeout: half a hello, then nothing', async () => {
    const srv = await helloServer({ maxBytes: MAX, timeoutMs: 300 });
    const c = await rawClient(srv.port);
    const half = captured.node!.subarray(0, 100);
    c.write(half);
    const read = await srv.next();
    expect(read.result).toEqual(failed('timeout'));
    expect(read.ms).toBeGreaterThanOrEqual(290);
    expect(read.bytes.equals(half)).toBe(true);
    expect(read.listenersAfter).toEqual(read.listenersBefore);
    expect(c.destroyed).toBe(false);
  });

  it('closed: the client ends, or resets, half way', async () => {
    const srv = await helloServer({ maxBytes: MAX, timeoutMs: 20_000 });
    const half = captured.node!.subarray(0, 100);
    const c = await rawClient(srv.port);
    c.end(half);
    const read = await srv.next();
    expect(read.result).toEqual(failed('closed'));
    expect(read.bytes.equals(half)).toBe(true);
    expect(read.ms).toBeLessThan(5000);

    const c2 = await rawClient(srv.port);
    c2.write(half);
    await sleep(50);
    c2.resetAndDestroy();
    expect((await srv.next()).result).toEqual(failed('closed'));
  });

  it('an already destroyed socket: closed, on a later tick', async () => {
    const socket = new net.Socket();
    socket.destroy();
    let sync = true;
    const got = await new Promise<HelloResult>((resolve) => {
      readClientHello(socket, { maxBytes: MAX, timeoutMs: 10_000 }, (r, bytes) => {
        expect(sync).toBe(false);
        expect(bytes.length).toBe(0);
        resolve(r);
      });
      sync = false;
    });
    expect(got).toEqual(failed('closed'));
  });
});

// ---- the round trip into node's TLS server ----

describe('readClientHello, then socket.unshift(bytes) and tlsServer.emit("connection")', () => {
  let pki: TestPki;
  let certFile: string;
  let keyFile: string;
  let rootCa: string;

  beforeAll(() => {
    pki = new TestPki();
    const leaf = pki.issue('a.test', { names: ['a.test', 'b.test'] });
    certFile = pki.concat('chain.crt', leaf.cert, pki.intermediate.cert);
    keyFile = leaf.key;
    rootCa = pki.root.cert;
  });
  afterAll(() => pki.remove());

  /** A net.Server handing connections to a tls.Server after readClientHello; the TLS server writes what it saw and ends. */
  async function frontedTls(): Promise<{ port: number; next: () => Promise<Read>; tlsErrors: Error[] }> {
    const tlsErrors: Error[] = [];
    const tlsServer = tls.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile), ALPNProtocols: ['h2', 'http/1.1'] }, (s) => {
      s.on('error', () => {});
      s.end(`hello ${String(s.servername)} ${String(s.alpnProtocol)}\n`);
    });
    tlsServer.on('tlsClientError', (err) => tlsErrors.push(err));
    const srv = await helloServer({ maxBytes: MAX, timeoutMs: 20_000 }, (socket, read) => {
      if (!read.result.ok) {
        socket.destroy();
        return;
      }
      socket.unshift(read.bytes);
      tlsServer.emit('connection', socket);
    });
    return { port: srv.port, next: srv.next, tlsErrors };
  }

  function nodeTlsClient(port: number, servername: string, alpn: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername, ALPNProtocols: alpn, ca: readFileSync(rootCa) });
      closers.push(() => s.destroy());
      let text = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => { text += d; });
      s.on('end', () => resolve(text));
      s.on('error', reject);
    });
  }

  it("node's client: the handshake completes (certificate verified), SNI and ALPN reach the TLS server", async () => {
    const f = await frontedTls();
    const text = nodeTlsClient(f.port, 'b.test', ['h2', 'http/1.1']);
    const read = await f.next();
    expect(read.result).toEqual(ok('b.test', ['h2', 'http/1.1']));
    expect(await text).toBe('hello b.test h2\n');
    expect(f.tlsErrors).toEqual([]);
  });

  it('TLS 1.2 too', async () => {
    const f = await frontedTls();
    const text = new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: f.port, servername: 'a.test', maxVersion: 'TLSv1.2', ca: readFileSync(rootCa) });
      closers.push(() => s.destroy());
      let t = '';
      s.on('data', (d: Buffer) => { t += d.toString(); });
      s.on('end', () => resolve(`${t}${s.getProtocol() ?? ''}`));
      s.on('error', reject);
    });
    expect(await text).toBe('hello a.test false\nTLSv1.2');
  });

  /**
   * A relay in front of `port` that rewrites the client's first record (its hello) into `pieces`,
   * written one at a time with `delayMs` between them, then passes everything else both ways.
   */
  async function rewritingRelay(port: number, rewrite: (first: Buffer) => Buffer[], delayMs: number): Promise<number> {
    const relay = net.createServer((client) => {
      const upstream = net.connect(port, '127.0.0.1');
      upstream.setNoDelay(true);
      closers.push(() => { client.destroy(); upstream.destroy(); });
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
      upstream.pipe(client);
      let buf = Buffer.alloc(0);
      const onData = (chunk: Buffer): void => {
        buf = Buffer.concat([buf, chunk]);
        if (buf.length < 5 || buf.length < 5 + buf.readUInt16BE(3)) return;
        client.removeListener('data', onData);
        client.pause();
        const end = 5 + buf.readUInt16BE(3);
        void writeSlowly(upstream, rewrite(buf.subarray(0, end)), delayMs).then(() => {
          upstream.write(buf.subarray(end));
          client.pipe(upstream);
        });
      };
      client.on('data', onData);
    });
    return listen(relay);
  }

  it('a hello that came in one-byte writes, or in two records, is replayed byte for byte', async () => {
    const f = await frontedTls();
    const oneByte = await rewritingRelay(f.port, (h) => bytesOf(h, 1), 1);
    const text = nodeTlsClient(oneByte, 'a.test', ['http/1.1']);
    const read = await f.next();
    expect(read.result).toEqual(ok('a.test', ['http/1.1']));
    expect(read.dataEvents).toBeGreaterThan(20);
    expect(await text).toBe('hello a.test http/1.1\n');

    for (const cut of [2, 200]) {
      const twoRecords = await rewritingRelay(f.port, (h) => bytesOf(records(h.subarray(5), [cut]), 100), 5);
      const t = nodeTlsClient(twoRecords, 'b.test', ['h2']);
      expect((await f.next()).result).toEqual(ok('b.test', ['h2']));
      expect(await t).toBe('hello b.test h2\n');
    }
    expect(f.tlsErrors).toEqual([]);
  });

  it('openssl s_client: the handshake completes and it prints what the server wrote', async () => {
    const f = await frontedTls();
    const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${f.port}`, '-servername', 'a.test', '-alpn', 'http/1.1',
      '-CAfile', rootCa, '-verify_return_error', '-quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
    closers.push(() => kill(child));
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect((await f.next()).result).toEqual(ok('a.test', ['http/1.1']));
    expect(out, err).toContain('hello a.test http/1.1');
    expect(err).toMatch(/depth=0 CN = a\.test\nverify return:1/);
    expect(err).not.toMatch(/verify error/);
    // s_client exits 1 here ("unexpected eof while reading"), as it does against a plain tls.Server
    // whose connection ends with end(): not the fronting's doing.
    expect(code === 0 || /unexpected eof/.test(err), err).toBe(true);
  });

  it.skipIf(!HAS_CURL)('curl: the handshake completes', async () => {
    const f = await frontedTls();
    // The TLS server answers with a line that is no HTTP; curl's own errors tell the handshake was done.
    const child = spawn('curl', ['-sv', '--http1.1', '--max-time', '10', '--cacert', rootCa, '--resolve', `a.test:${f.port}:127.0.0.1`, `https://a.test:${f.port}/`],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    closers.push(() => kill(child));
    let err = '';
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    await new Promise((resolve) => child.on('close', resolve));
    expect((await f.next()).result).toEqual(ok('a.test', ['http/1.1']));
    expect(err).toMatch(/SSL connection using TLSv1\.3/);
    expect(err).toMatch(/ALPN: server accepted http\/1\.1/);
  });
});
