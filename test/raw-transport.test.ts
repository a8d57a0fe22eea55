/**
 * The raw upstream transport (src/proxy/upstream/raw-pool.ts) against real loopback
 * backends: raw TCP servers that send exactly the bytes a test needs (smuggling
 * attempts, broken framing, early answers) and node:http servers. Most tests go
 * through sessionlb in-process; a few drive a PeerPool directly to check what the
 * proxy is told (failure kinds, retry hints, abort).
 */
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { AttemptFailure, AttemptHandler, PoolOptions, UpstreamResponse } from '../src/proxy/upstream/transport.js';
import { RawPeerPool } from '../src/proxy/upstream/raw-pool.js';
import { bodyChunkStats } from '../src/proxy/upstream/body-chunks.js';
import { freePort, request, startBackend, startLB, type Backend, type RunningLB } from './helpers/net.js';

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanup.length > 0) await cleanup.pop()!().catch(() => undefined);
});

async function lbWith(raw: Record<string, unknown>): Promise<RunningLB> {
  const lb = await startLB(raw);
  cleanup.push(() => lb.stop());
  return lb;
}

async function backend(name: string, handler?: Parameters<typeof startBackend>[1]): Promise<Backend> {
  const b = await startBackend(name, handler);
  cleanup.push(() => b.close());
  return b;
}

interface RawServer {
  address: string;
  /** Connections accepted so far. */
  connections: number;
  /** Connections currently open. */
  open: number;
  /** Request heads received, in order, with the index of the connection they came on. */
  requests: { conn: number; head: string }[];
}

/**
 * A raw TCP backend: for each complete request head, `respond(n, conn, socket)` writes
 * whatever bytes it likes (n = request number overall, conn = connection number).
 */
async function rawServer(respond: (n: number, conn: number, socket: net.Socket, head: string) => void): Promise<RawServer> {
  const state: RawServer = { address: '', connections: 0, open: 0, requests: [] };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    const conn = ++state.connections;
    state.open++;
    sockets.add(socket);
    let buffered = '';
    socket.on('data', (d: Buffer) => {
      buffered += d.toString('latin1');
      let end: number;
      while ((end = buffered.indexOf('\r\n\r\n')) >= 0) {
        const head = buffered.slice(0, end);
        buffered = buffered.slice(end + 4);
        state.requests.push({ conn, head });
        respond(state.requests.length, conn, socket, head);
      }
    });
    socket.on('close', () => { state.open--; sockets.delete(socket); });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.address = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  cleanup.push(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  return state;
}

/** A GET over a keep-alive agent (one connection), so consecutive calls share the client connection. */
function get(url: string, agent?: http.Agent): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('latin1'), headers: res.headers }));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('response aborted')));
    });
    req.on('error', reject);
  });
}

const until = async (cond: () => boolean, ms = 5000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
};

describe('raw transport through sessionlb', () => {
  it('is the transport in use for these tests', async () => {
    const b = await backend('a');
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: b.address }] } } });
    expect(lb.lb.upstreams.get('backend')!.find(b.address)!.pool).toBeInstanceOf(RawPeerPool);
  });

  it('bytes after a complete response are never delivered as the next response (response smuggling)', async () => {
    const srv = await rawServer((n, _conn, socket) => {
      if (n === 1) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled');
      else socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nreal-${n}`);
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: srv.address }] } } });
    expect((await get(`${lb.url}/`)).body).toBe('ok');
    const second = await get(`${lb.url}/`);
    expect(second.body).toBe('real-2');
    // The poisoned connection was closed: the second request came on a new one.
    expect(srv.requests.map((r) => r.conn)).toEqual([1, 2]);
  });

  it('Content-Length with Transfer-Encoding, differing Content-Lengths, TE gzip, obs-fold: 502, never relayed', async () => {
    const bad = [
      'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc',
      'HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n',
      `HTTP/1.1 200 OK\r\nX-Big: ${'x'.repeat(20_000)}\r\nContent-Length: 0\r\n\r\n`,
    ];
    const srv = await rawServer((n, _conn, socket) => { socket.write(bad[(n - 1) % bad.length]!); });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: srv.address, maxFails: 0 }] } } });
    for (let i = 0; i < bad.length; i++) {
      const r = await request(`${lb.url}/`);
      expect(r.status).toBe(502);
    }
  });

  it('an invalid response is retried on the next server when invalid_header is listed', async () => {
    const srv = await rawServer((_n, _conn, socket) => { socket.write('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'); });
    const good = await backend('good');
    const lb = await lbWith({
      upstreams: { backend: { servers: [{ address: srv.address, weight: 100 }, { address: good.address }], nextUpstream: { on: ['error', 'timeout', 'invalid_header'] } } },
    });
    const r = await request(`${lb.url}/`);
    expect(r.status).toBe(200);
    expect(r.body).toBe('good');
  });

  it('chunked responses with extensions and trailers arrive de-chunked and complete; the connection is reused', async () => {
    const srv = await rawServer((n, _conn, socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n${n < 10 ? '0' : ''}${n}\r\n${'d'.repeat(n)}\r\n0\r\nX-Trailer: yes\r\n\r\n`);
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: srv.address }] } } });
    for (let i = 1; i <= 3; i++) {
      const r = await get(`${lb.url}/`);
      expect(r.status).toBe(200);
      expect(r.body).toBe(`abc${'d'.repeat(i)}`);
      expect(r.headers['x-trailer']).toBeUndefined();
    }
    expect(srv.connections).toBe(1);
  });

  it('a close-delimited body (no length) is relayed whole and its connection is not reused', async () => {
    const srv = await rawServer((n, _conn, socket) => {
      socket.end(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close-${n}`);
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: srv.address }] } } });
    expect((await get(`${lb.url}/`)).body).toBe('until-close-1');
    expect((await get(`${lb.url}/`)).body).toBe('until-close-2');
    expect(srv.connections).toBe(2);
  });

  it('HTTP/1.0 responses and Connection: close are not kept alive; HTTP/1.0 with keep-alive is', async () => {
    const srv = await rawServer((n, _conn, socket) => {
      const variants = [
        'HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nv0',
        'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nv1',
        'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nv2',
        'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nv3',
      ];
      socket.write(variants[n - 1] ?? 'HTTP/1.1 500 X\r\nContent-Length: 0\r\n\r\n');
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: srv.address }] } } });
    expect((await get(`${lb.url}/`)).body).toBe('v0');
    expect((await get(`${lb.url}/`)).body).toBe('v1');
    expect((await get(`${lb.url}/`)).body).toBe('v2');
    expect((await get(`${lb.url}/`)).body).toBe('v3');
    expect(srv.requests.map((r) => r.conn)).toEqual([1, 2, 3, 3]);
  });

  it('interim 100/103 responses are skipped; the final response is relayed', async () => {
    const srv = await rawServer((_n, _conn, socket) => {
      socket.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n');
      setTimeout(() => socket.write('HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone'), 20);
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: srv.address }] } } });
    const r = await request(`${lb.url}/`);
    expect(r.status).toBe(201);
    expect(r.body).toBe('done');
  });

  it('a broken chunk in the middle of a body breaks the client connection instead of ending the response cleanly', async () => {
    const srv = await rawServer((_n, _conn, socket) => {
      socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
      setTimeout(() => socket.write('zz\r\nbad\r\n0\r\n\r\n'), 30);
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: srv.address }] } } });
    await expect(get(`${lb.url}/`)).rejects.toThrow();
  });

  it('a body cut short by the upstream (Content-Length not reached) breaks the client connection', async () => {
    const srv = await rawServer((_n, _conn, socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part');
      setTimeout(() => socket.destroy(), 30);
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: srv.address }] } } });
    await expect(get(`${lb.url}/`)).rejects.toThrow();
  });

  it('request heads: method, path, header names in their case and repeated fields in order, one Host', async () => {
    const srv = await rawServer((_n, _conn, socket) => { socket.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'); });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: srv.address }] } } });
    await new Promise<void>((resolve, reject) => {
      const req = http.request(`${lb.url}/p/a%20th?q=1&r=%0D`, { method: 'DELETE', agent: false, headers: [['X-CaSe', 'One'], ['x-multi', 'a'], ['X-Multi', 'b'], ['Host', 'example.test']] as unknown as http.OutgoingHttpHeaders }, (res) => {
        res.resume();
        res.on('end', () => resolve());
      });
      req.on('error', reject);
      req.end();
    });
    const lines = srv.requests[0]!.head.split('\r\n');
    expect(lines[0]).toBe('DELETE /p/a%20th?q=1&r=%0D HTTP/1.1');
    expect(lines).toContain('X-CaSe: One');
    expect(lines.filter((l) => /^x-multi:/i.test(l))).toEqual(['x-multi: a', 'X-Multi: b']);
    expect(lines.filter((l) => /^host:/i.test(l))).toEqual(['Host: example.test']);
  });

  it('request bodies: buffered, streamed with Content-Length, and chunked all arrive intact (proxyRequestBuffering off)', async () => {
    const echo = await backend('echo', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        res.writeHead(200, { 'X-Len': String(body.length), 'X-TE': String(req.headers['transfer-encoding'] ?? '') });
        res.end(body);
      });
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: echo.address }] } }, proxyRequestBuffering: false });
    const small = 'small body';
    const large = Buffer.alloc(300 * 1024, 'L'); // over the 64 KiB replay buffer: streamed
    for (const [body, chunked] of [[Buffer.from(small), false], [large, false], [large, true]] as [Buffer, boolean][]) {
      const r = await new Promise<{ status: number; len: string; te: string; body: Buffer }>((resolve, reject) => {
        const req = http.request(`${lb.url}/`, { method: 'POST', agent: false, headers: chunked ? { 'Transfer-Encoding': 'chunked' } : { 'Content-Length': body.length } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, len: String(res.headers['x-len']), te: String(res.headers['x-te']), body: Buffer.concat(chunks) }));
        });
        req.on('error', reject);
        if (chunked) {
          for (let i = 0; i < body.length; i += 50_000) req.write(body.subarray(i, i + 50_000));
          req.end();
        } else {
          req.end(body);
        }
      });
      expect(r.status).toBe(200);
      expect(r.len).toBe(String(body.length));
      expect(r.te).toBe(chunked ? 'chunked' : '');
      expect(r.body.equals(body)).toBe(true);
    }
  });

  it('an upstream that answers before reading the whole upload: the answer is relayed, the connection is not reused', async () => {
    const srv = await rawServer((n, _conn, socket) => {
      socket.write(n === 1 ? 'HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig' : 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: srv.address }] } }, clientMaxBodySize: '0', proxyRequestBuffering: false });
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${lb.url}/`, { method: 'PUT', agent: false, headers: { 'Content-Length': 1024 * 1024 } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => resolve(-1)); // the proxy may close before the whole body is sent
      req.write(Buffer.alloc(128 * 1024, 'u'));
      setTimeout(() => req.destroy(), 500);
      req.on('close', () => undefined);
      void reject;
    });
    expect([413, -1]).toContain(status);
    expect((await get(`${lb.url}/`)).body).toBe('ok');
    expect(srv.requests.at(-1)!.conn).toBeGreaterThan(1);
  });

  it('keeps at most `keepalive` idle connections per server', async () => {
    // Answers nothing until 8 requests are waiting (so 8 connections are open at once), then everything.
    const waiting: net.Socket[] = [];
    const slow = await rawServer((n, _conn, socket) => {
      if (n > 8) {
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
        return;
      }
      waiting.push(socket);
      if (waiting.length === 8) for (const s of waiting) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: slow.address }], keepalive: 2 } } });
    const results = await Promise.all(Array.from({ length: 8 }, () => request(`${lb.url}/`)));
    expect(results.map((r) => r.status)).toEqual(Array(8).fill(200));
    expect(slow.connections).toBe(8);
    await until(() => slow.open <= 2);
    expect(slow.open).toBe(2);
    // The kept ones are reused.
    await request(`${lb.url}/`);
    await request(`${lb.url}/`);
    expect(slow.connections).toBe(8);
  });

  it('bodies stay byte-exact with many responses in flight, slow and fast clients, small and streamed (reads share one buffer, copies reuse buffers)', async () => {
    // Every upstream connection reads into one shared buffer; any byte kept past its read must be
    // copied out. Overlapping responses of different sizes to clients that stall make later
    // reads land while earlier bodies still wait in the proxy: a missed copy shows as corruption.
    const pattern = (seed: number, size: number): Buffer => {
      const b = Buffer.allocUnsafe(size);
      let x = seed * 2654435761 >>> 0;
      for (let i = 0; i < size; i++) {
        x = (x * 1103515245 + 12345) >>> 0;
        b[i] = x >>> 24;
      }
      return b;
    };
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      const u = new URL(req.url ?? '/', 'http://x');
      const body = pattern(Number(u.searchParams.get('seed')), Number(u.searchParams.get('size')));
      req.resume();
      res.writeHead(200, { 'Content-Length': body.length });
      // Large bodies in pieces, so that heads and body parts of several connections interleave.
      if (body.length < 4096) res.end(body);
      else {
        const cut = Math.floor(body.length / 3);
        res.write(body.subarray(0, cut));
        setImmediate(() => res.end(body.subarray(cut)));
      }
    };
    const backends = await Promise.all([0, 1, 2].map((i) => backend(`blob-${i}`, handler)));
    const lb = await lbWith({ upstreams: { backend: { servers: backends.map((b) => ({ address: b.address })) } } });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    cleanup.push(async () => agent.destroy());
    // `stall` ms without reading after the first chunk: the kernel buffers fill up (12 MiB is more
    // than loopback buffers hold), the proxy must keep body bytes while other reads go on.
    const fetchOne = (seed: number, size: number, stall: number): Promise<boolean> => new Promise((resolve, reject) => {
      const req = http.get(`${lb.url}/blob?seed=${seed}&size=${size}`, { agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => {
          if (chunks.length === 0 && stall > 0) { res.pause(); setTimeout(() => res.resume(), stall); }
          chunks.push(c);
        });
        res.on('end', () => resolve(res.statusCode === 200 && Buffer.concat(chunks).equals(pattern(seed, size))));
        res.on('error', reject);
      });
      req.on('error', reject);
    });
    const sizes = [10, 700, 3000, 20_000, 70_000, 300_000];
    const reusedBefore = bodyChunkStats.reused;
    const stalled = [0, 1, 2, 3].map((seed) => fetchOne(seed, 12 * 1024 * 1024, 400));
    const others = Array.from({ length: 120 }, (_, i) => fetchOne(100 + i, sizes[i % sizes.length]!, 0));
    const results = await Promise.all([...stalled, ...others]);
    expect(results.filter((ok) => !ok).length).toBe(0);
    // Copies went into recycled buffers (body-chunks.ts) while the stalled bodies still held theirs.
    expect(bodyChunkStats.reused).toBeGreaterThan(reusedBefore);
  }, 30_000);

  it('closes idle upstream connections after keepaliveTimeout', async () => {
    const srv = await rawServer((_n, _conn, socket) => { socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'); });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: srv.address }], keepaliveTimeout: '200ms' } } });
    expect((await request(`${lb.url}/`)).status).toBe(200);
    expect(srv.open).toBe(1);
    await until(() => srv.open === 0, 5000);
    expect(srv.open).toBe(0);
  });
});

describe('raw PeerPool', () => {
  const options: PoolOptions = { keepalive: 4, keepaliveTimeoutMs: 60_000, connectTimeoutMs: 2000, sendTimeoutMs: 2000, readTimeoutMs: 300, sendProxy: null };

  class Recorder implements AttemptHandler {
    failure: AttemptFailure | null = null;
    response: UpstreamResponse | null = null;
    readonly settled: Promise<void>;
    private resolve!: () => void;
    constructor() { this.settled = new Promise((r) => { this.resolve = r; }); }
    onUpstreamResponse(res: UpstreamResponse): void { this.response = res; this.resolve(); }
    onUpstreamError(f: AttemptFailure): void { this.failure = f; this.resolve(); }
  }

  const head = { method: 'GET', path: '/', headers: ['Host', 'x'] };

  it('connection refused: kind refused, request not sent (a POST may be retried)', async () => {
    const port = await freePort();
    const pool = new RawPeerPool('127.0.0.1', port, options);
    const r = new Recorder();
    pool.request({ ...head, method: 'POST' }, Buffer.from('x'), r);
    await r.settled;
    expect(r.failure).toMatchObject({ kind: 'refused', requestSent: false, staleConnection: false });
  });

  it('no answer within the read timeout: kind timeout, request sent', async () => {
    const srv = await rawServer(() => undefined);
    const [host, port] = srv.address.split(':');
    const pool = new RawPeerPool(host!, Number(port), options);
    const r = new Recorder();
    const started = Date.now();
    pool.request(head, null, r);
    await r.settled;
    expect(r.failure).toMatchObject({ kind: 'timeout', requestSent: true });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });

  it('an invalid head is reported as invalid_header', async () => {
    const srv = await rawServer((_n, _c, socket) => { socket.write('HTTP/1.1 200 OK\nContent-Length: 0\n\n'); });
    const [host, port] = srv.address.split(':');
    const pool = new RawPeerPool(host!, Number(port), options);
    const r = new Recorder();
    pool.request(head, null, r);
    await r.settled;
    expect(r.failure).toMatchObject({ kind: 'invalid_header' });
  });

  it('header values that would inject lines are refused before anything is sent, asynchronously', async () => {
    const srv = await rawServer((_n, _c, socket) => { socket.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'); });
    const [host, port] = srv.address.split(':');
    const pool = new RawPeerPool(host!, Number(port), options);
    const r = new Recorder();
    let returned = false;
    pool.request({ ...head, headers: ['X-Evil', 'a\r\nInjected: 1'] }, null, {
      onUpstreamResponse: (res) => r.onUpstreamResponse(res),
      onUpstreamError: (f) => { expect(returned).toBe(true); r.onUpstreamError(f); },
    });
    returned = true;
    await r.settled;
    expect(r.failure).toMatchObject({ kind: 'error', requestSent: false });
    expect(srv.requests).toHaveLength(0);
  });

  it('requests are written at the end of the turn that made them: one aborted in that turn never reaches the upstream', async () => {
    const srv = await rawServer((_n, _c, socket) => { socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'); });
    const [host, port] = srv.address.split(':');
    const pool = new RawPeerPool(host!, Number(port), options);
    // Three connections, connected and idle: a write on them would reach the server at once.
    const warm = [new Recorder(), new Recorder(), new Recorder()];
    for (const r of warm) pool.request(head, null, r);
    await Promise.all(warm.map((r) => r.settled));
    expect(srv.open).toBe(3);

    const [a, b, c] = [new Recorder(), new Recorder(), new Recorder()];
    pool.request({ ...head, path: '/a' }, null, a);
    pool.request({ ...head, path: '/b' }, null, b).abort();
    pool.request({ ...head, path: '/c' }, null, c);
    await Promise.all([a.settled, c.settled]);
    expect(a.response!.statusCode).toBe(200);
    expect(c.response!.statusCode).toBe(200);
    await until(() => srv.open === 2);
    const paths = srv.requests.slice(3).map((r) => r.head.split(' ')[1]);
    expect(paths.sort()).toEqual(['/a', '/c']);
    expect(srv.connections).toBe(3); // /a and /c went on kept-alive connections
    expect(b.failure).toBeNull(); // an aborted attempt reports nothing
    pool.closeIdle();
  });

  it('abort() in the middle of a body closes the upstream connection; the pool keeps working', async () => {
    const srv = await rawServer((n, _c, socket) => {
      if (n === 1) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial');
      else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const [host, port] = srv.address.split(':');
    const pool = new RawPeerPool(host!, Number(port), options);
    const r = new Recorder();
    const attempt = pool.request(head, null, r);
    await r.settled;
    expect(r.response!.statusCode).toBe(200);
    attempt.abort();
    await until(() => srv.open === 0);
    expect(srv.open).toBe(0);
    const r2 = new Recorder();
    pool.request(head, null, r2);
    await r2.settled;
    const chunks: Buffer[] = [];
    for await (const c of r2.response!.body) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('ok');
    pool.closeIdle();
  });
});
