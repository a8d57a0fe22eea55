/**
 * Request and response buffering (nginx proxy_request_buffering / proxy_buffering, both on by
 * default): real backends on loopback, slow clients written as raw sockets with a bounded pace.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { request } from './helpers/net.js';
import { useScope } from './helpers/scope.js';

const { cleanup, backend, lb: lbWith } = useScope();

const MiB = 1024 * 1024;

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sessionlb-buffers-'));
  cleanup.push(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function metric(adminPort: number, name: string): Promise<number> {
  const text = (await request(`http://127.0.0.1:${adminPort}/metrics`)).body;
  const m = new RegExp(`^${name.replace(/[{}"]/g, '\\$&')} (\\d+)`, 'm').exec(text);
  return m === null ? 0 : Number(m[1]);
}

/** A backend that echoes what it received: length, framing and a hash of the body. */
const echo: Parameters<typeof backend>[1] = (req, res, b) => {
  const hash = createHash('sha256');
  let length = 0;
  req.on('data', (c: Buffer) => { hash.update(c); length += c.length; });
  req.on('end', () => {
    res.writeHead(200, {
      'X-Backend': b.name, 'X-Len': String(length), 'X-CL': String(req.headers['content-length'] ?? ''),
      'X-TE': String(req.headers['transfer-encoding'] ?? ''), 'X-Hash': hash.digest('hex'),
    });
    res.end();
  });
};

function post(url: string, body: Buffer, chunked: boolean, method = 'POST'): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false, headers: chunked ? { 'Transfer-Encoding': 'chunked' } : { 'Content-Length': body.length } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
    for (let i = 0; i < body.length; i += 50_000) req.write(body.subarray(i, i + 50_000));
    req.end();
  });
}

describe('request buffering (proxyRequestBuffering, default on)', () => {
  it('a 300 KiB body, with Content-Length or chunked, reaches the backend whole with its length, through a temp file that is already unlinked', async () => {
    const b = await backend('a', echo);
    const dir = tempDir();
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: b.address }] } }, clientBodyTempPath: dir });
    const body = Buffer.alloc(300 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 0xff;
    const digest = createHash('sha256').update(body).digest('hex');
    for (const chunked of [false, true]) {
      const r = await post(lb.url + '/', body, chunked);
      expect(r.status).toBe(200);
      expect(r.headers['x-len']).toBe(String(body.length));
      expect(r.headers['x-cl']).toBe(String(body.length)); // nginx sends a chunked body with its length once read
      expect(r.headers['x-te']).toBe('');
      expect(r.headers['x-hash']).toBe(digest);
    }
    expect(await metric(lb.adminPort, 'sessionlb_temp_files_total{direction="request"}')).toBe(2);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a large body can be retried on the next server (it was stored whole)', async () => {
    let failing = 0;
    const bad = await backend('bad', (req, res) => {
      req.resume();
      req.on('end', () => { failing++; res.writeHead(502); res.end(); });
    });
    const good = await backend('good', echo);
    const lb = await lbWith({
      upstreams: { backend: { servers: [{ address: bad.address, weight: 100 }, { address: good.address }], nextUpstream: { on: ['error', 'timeout', 'http_502'] } } },
    });
    const body = Buffer.alloc(500 * 1024, 'p');
    const r = await post(lb.url + '/', body, false, 'PUT');
    expect(r.status).toBe(200);
    expect(r.headers['x-backend']).toBe('good');
    expect(r.headers['x-len']).toBe(String(body.length));
    expect(failing).toBe(1);
  });

  it('defect 5: a 3 MiB chunked upload over a 1 MiB limit gets 413 and the backend never sees the request', async () => {
    let connections = 0;
    const b = await backend('a', echo);
    b.server.on('connection', () => { connections++; });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: b.address }] } }, clientMaxBodySize: '1m' });
    const status = await new Promise<number>((resolve) => {
      const req = http.request(lb.url + '/', { method: 'POST', agent: false, headers: { 'Transfer-Encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => resolve(-1));
      let sent = 0;
      const pump = (): void => {
        while (sent < 3 * MiB) {
          sent += 64 * 1024;
          if (!req.write(Buffer.alloc(64 * 1024, 'z'))) { req.once('drain', pump); return; }
        }
        req.end();
      };
      pump();
    });
    expect(status).toBe(413);
    expect(connections).toBe(0);
    expect(b.hits).toBe(0);
  });
});

/**
 * A backend with two "workers", like a small PHP-FPM pool: at most two requests are handled at
 * once, the others wait their turn. A worker is busy from the request's arrival until its response
 * is finished (every byte handed to the socket), as a PHP worker is.
 */
async function twoWorkerBackend(responseBytes: (req: http.IncomingMessage) => number): Promise<{ address: string; maxBusy: () => number }> {
  let busy = 0;
  let maxBusy = 0;
  const queue: Array<() => void> = [];
  const b = await backend('php', (req, res) => {
    const run = (): void => {
      busy++;
      maxBusy = Math.max(maxBusy, busy);
      req.resume();
      req.on('end', () => {
        const n = responseBytes(req);
        res.writeHead(200, { 'Content-Length': String(n) });
        let left = n;
        const write = (): void => {
          while (left > 0) {
            const size = Math.min(16 * 1024, left);
            left -= size;
            if (!res.write(Buffer.alloc(size, 'd'))) { res.once('drain', write); return; }
          }
          res.end();
        };
        write();
      });
      res.on('close', () => {
        busy--;
        queue.shift()?.();
      });
    };
    if (busy < 2) run();
    else queue.push(run);
  });
  return { address: b.address, maxBusy: () => maxBusy };
}

/** Uploads `bytes` at ~100 KiB/s (10 KiB every 100 ms) on a raw socket; bounded by `stopAt`. */
function slowUpload(port: number, bytes: number, stopAt: number): net.Socket {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  socket.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${bytes}\r\n\r\n`);
  let sent = 0;
  const timer = setInterval(() => {
    if (sent >= bytes || Date.now() > stopAt || socket.destroyed) {
      clearInterval(timer);
      return;
    }
    const n = Math.min(10 * 1024, bytes - sent);
    sent += n;
    socket.write(Buffer.alloc(n, 'u'));
  }, 100);
  socket.on('close', () => clearInterval(timer));
  return socket;
}

/** Downloads at ~100 KiB/s: the socket is paused and 10 KiB taken every 100 ms; bounded by `stopAt`. */
function slowDownload(port: number, stopAt: number): net.Socket {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  socket.write('GET /download HTTP/1.1\r\nHost: x\r\n\r\n');
  socket.pause();
  const timer = setInterval(() => {
    if (Date.now() > stopAt || socket.destroyed) {
      clearInterval(timer);
      return;
    }
    for (let taken = 0; taken < 10 * 1024;) {
      const c = socket.read() as Buffer | null;
      if (c === null) break;
      taken += c.length;
    }
  }, 100);
  socket.on('close', () => clearInterval(timer));
  return socket;
}

/** Time for one fast GET /fast (ms), or `capMs` when it did not finish by then. */
function fastRequest(url: string, capMs: number): Promise<number> {
  const started = Date.now();
  return new Promise((resolve) => {
    const timer = setTimeout(() => { req.destroy(); resolve(capMs); }, capMs);
    const req = http.get(`${url}/fast`, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => { clearTimeout(timer); resolve(Date.now() - started); });
    });
    req.on('error', () => undefined);
  });
}

/**
 * Downloads are 16 MiB, not 1: Linux autotunes a loopback connection's socket buffers to several
 * MiB (tcp_wmem up to 4 MiB on the client side, tcp_rmem on the upstream side), so a 1 MiB (or
 * even 6 MiB) response leaves the backend at once even without proxy buffering; only a larger one
 * shows what a slow client does to a backend worker. Four slow downloads (two per worker, two more
 * queued) show it with 64 MiB in all, which a 2-core CI machine moves in well under a second.
 */
const DOWNLOAD = 16 * MiB;
const SLOW_CLIENTS = { upload: 50, download: 4 };

describe('a two-worker backend behind slow clients (50 uploading 1 MiB, 4 downloading 16 MiB, at 100 KiB/s each)', () => {
  for (const kind of ['upload', 'download'] as const) {
    it(`${kind}s: with buffering a fast request is served within a second; without it, it waits behind the slow ones`, async () => {
      const php = await twoWorkerBackend((req) => (req.url === '/download' ? DOWNLOAD : 2));
      const dir = tempDir();
      const results: Record<string, number> = {};
      for (const buffering of [true, false]) {
        const lb = await lbWith({
          upstreams: { backend: { servers: [{ address: php.address, maxConns: 0 }], timeouts: { read: '60s' } } },
          clientMaxBodySize: '2m',
          proxyRequestBuffering: buffering,
          proxyBuffering: buffering,
          clientBodyTempPath: dir,
          proxyTempPath: dir,
        });
        const stopAt = Date.now() + 15_000;
        const slow: net.Socket[] = [];
        for (let i = 0; i < SLOW_CLIENTS[kind]; i++) slow.push(kind === 'upload' ? slowUpload(lb.port, MiB, stopAt) : slowDownload(lb.port, stopAt));
        await new Promise((r) => setTimeout(r, 1000)); // every slow client is under way
        results[String(buffering)] = await fastRequest(lb.url, 4000);
        for (const s of slow) s.destroy();
        await lb.stop();
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(results.true).toBeLessThan(1000);
      expect(results.false).toBeGreaterThanOrEqual(2000);
    }, 40_000);
  }
});

describe('response buffering (proxyBuffering, default on)', () => {
  it('a slow client does not hold the backend: the response is read whole (memory, then an unlinked temp file) and arrives intact', async () => {
    let finishedAt = 0;
    const size = 12 * MiB; // over what the kernel's socket buffers take on loopback (see DOWNLOAD)
    const payload = Buffer.alloc(size);
    for (let i = 0; i < size; i++) payload[i] = (i * 13) & 0xff;
    const b = await backend('big', (_req, res) => {
      res.writeHead(200, { 'Content-Length': String(size) });
      res.end(payload);
      res.on('finish', () => { finishedAt = Date.now(); });
    });
    const dir = tempDir();
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: b.address }] } }, proxyTempPath: dir });
    const started = Date.now();
    const socket = net.connect(lb.port, '127.0.0.1');
    socket.write('GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    socket.pause();
    // The client reads nothing for a while: the backend must be done long before it is.
    await new Promise((r) => setTimeout(r, 1500));
    expect(finishedAt).toBeGreaterThan(0);
    expect(finishedAt - started).toBeLessThan(1500);
    expect(await metric(lb.adminPort, 'sessionlb_temp_files_total{direction="response"}')).toBe(1);
    expect(readdirSync(dir)).toEqual([]);
    // The descriptor is open on a deleted file in `dir` (created there, unlinked at once).
    const open = readdirSync('/proc/self/fd').map((fd) => { try { return readlinkSync(`/proc/self/fd/${fd}`); } catch { return ''; } });
    expect(open.some((l) => l.startsWith(dir) && l.endsWith('(deleted)'))).toBe(true);
    const received = await new Promise<Buffer>((resolve) => {
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('end', () => resolve(Buffer.concat(chunks)));
      socket.resume();
    });
    const body = received.subarray(received.indexOf('\r\n\r\n') + 4);
    expect(body.length).toBe(size);
    expect(body.equals(payload)).toBe(true);
  });

  it('proxyMaxTempFileSize "0": memory only, then the backend waits for the client (and the body still arrives intact)', async () => {
    const size = 12 * MiB;
    let finishedAt = 0;
    const b = await backend('big', (_req, res) => {
      res.writeHead(200, { 'Content-Length': String(size) });
      res.end(Buffer.alloc(size, 'm'));
      res.on('finish', () => { finishedAt = Date.now(); });
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: b.address }] } }, proxyMaxTempFileSize: '0' });
    const socket = net.connect(lb.port, '127.0.0.1');
    socket.write('GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    socket.pause();
    await new Promise((r) => setTimeout(r, 1000));
    expect(finishedAt).toBe(0);
    expect(await metric(lb.adminPort, 'sessionlb_temp_files_total{direction="response"}')).toBe(0);
    const received = await new Promise<number>((resolve) => {
      let n = 0;
      socket.on('data', (c: Buffer) => { n += c.length; });
      socket.on('end', () => resolve(n));
      socket.resume();
    });
    expect(received).toBeGreaterThan(size);
  });
});

describe('send_timeout with response buffering', () => {
  it('a client that keeps taking data in bursts, for longer than sendTimeout in all, gets the whole response; one that stops is cut off', async () => {
    const size = 16 * MiB;
    const b = await backend('big', (_req, res) => {
      res.writeHead(200, { 'Content-Length': String(size) });
      res.end(Buffer.alloc(size, 's'));
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: b.address }] } }, sendTimeout: '1s' });
    /** Reads in bursts: `onMs` flowing, then `offMs` paused (offMs null: reads nothing for 2.5 s, then everything). */
    const read = (onMs: number, offMs: number | null): Promise<{ bytes: number; ms: number }> => new Promise((resolve) => {
      const started = Date.now();
      const socket = net.connect(lb.port, '127.0.0.1');
      socket.write('GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      socket.pause();
      let bytes = 0;
      socket.on('data', (c: Buffer) => { bytes += c.length; });
      let timer: NodeJS.Timeout | null = null;
      const cycle = (): void => {
        socket.resume();
        if (offMs === null) return;
        timer = setTimeout(() => { socket.pause(); timer = setTimeout(cycle, offMs); }, onMs);
      };
      timer = setTimeout(cycle, offMs === null ? 2500 : 300);
      const stop = setTimeout(() => socket.destroy(), 20_000);
      socket.on('close', () => { if (timer !== null) clearTimeout(timer); clearTimeout(stop); resolve({ bytes, ms: Date.now() - started }); });
      socket.on('end', () => socket.destroy());
      socket.on('error', () => undefined);
    });
    const bursts = await read(1, 400);
    expect(bursts.ms).toBeGreaterThan(1500); // longer than sendTimeout in all
    expect(bursts.bytes).toBeGreaterThan(size);
    // Cut off after 1 s without taking anything: what it finds once it reads is what the kernel
    // held when the connection was closed, not the response.
    const stalled = await read(0, null);
    expect(stalled.bytes).toBeLessThan(size / 2);
  });
});
