/**
 * Issue 2: request and response bodies stream with back-pressure. A 200 MiB upload
 * and a 200 MiB download go through `node dist/cli.js run` (a child process, so the
 * RSS read from /proc is the proxy's alone) and its RSS grows by less than 64 MiB.
 */
import http from 'node:http';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startBackend, type Backend } from './helpers/net.js';
import { rssBytes, startProxyProcess, writeConfig, type RunningChild } from './helpers/child.js';

const MiB = 1024 * 1024;
const TOTAL = 200 * MiB;
const CHUNK = Buffer.alloc(64 * 1024, 97);

/** A body of `total` bytes made from one reused chunk: the client itself holds no big buffers. */
function bigBody(total: number): Readable {
  let left = total;
  return new Readable({
    read() {
      if (left <= 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, CHUNK.length);
      left -= n;
      this.push(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n));
    },
  });
}

let backend: Backend;
let proxy: RunningChild;
let port: number;

beforeAll(async () => {
  backend = await startBackend('big', (req, res) => {
    if (req.url === '/upload') {
      let received = 0;
      let n = 0;
      req.on('data', (c: Buffer) => {
        received += c.length;
        // A backend slower than the client now and then: the proxy must hold the client back, not buffer.
        if (++n % 100 === 0) {
          req.pause();
          setTimeout(() => req.resume(), 20);
        }
      });
      req.on('end', () => {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.end(String(received));
      });
    } else if (req.url === '/download') {
      req.resume();
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(TOTAL) });
      bigBody(TOTAL).pipe(res);
    } else {
      req.resume();
      res.end('ok');
    }
  });
  port = await freePort();
  const file = writeConfig({
    servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://big' }] }],
    upstreams: { big: { servers: [{ address: backend.address }] } },
    clientMaxBodySize: '0',
  });
  proxy = await startProxyProcess(file, port);
  // Warm up (JIT, buffers, heap sizing) before the baseline: one 16 MiB transfer each way. The
  // 200 MiB transfers below must then not grow the proxy by more than 64 MiB.
  await new Promise<void>((resolve, reject) => {
    const req = http.request(`http://127.0.0.1:${port}/upload`, { method: 'POST', agent: false, headers: { 'Content-Length': String(16 * MiB) } }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
    bigBody(16 * MiB).pipe(req);
  });
  for (let i = 0; i < 20; i++) {
    await new Promise<void>((resolve, reject) => {
      http.get(`http://127.0.0.1:${port}/`, { agent: false }, (res) => { res.resume(); res.on('end', resolve); }).on('error', reject);
    });
  }
});

afterAll(async () => {
  await proxy?.kill();
  await backend?.close();
});

/** Samples the proxy's RSS every 25 ms while `work` runs; returns the peak growth over the baseline. */
async function peakGrowth(work: () => Promise<void>): Promise<number> {
  const baseline = rssBytes(proxy.pid);
  let peak = baseline;
  const timer = setInterval(() => { peak = Math.max(peak, rssBytes(proxy.pid)); }, 25);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  peak = Math.max(peak, rssBytes(proxy.pid));
  if (process.env.SESSIONLB_TEST_VERBOSE) console.log(`proxy RSS ${(baseline / MiB).toFixed(1)} MiB -> peak ${(peak / MiB).toFixed(1)} MiB`);
  return peak - baseline;
}

describe('streaming bodies through the proxy process', () => {
  it('a 200 MiB upload streams to the backend; proxy RSS grows < 64 MiB', async () => {
    let answer = '';
    const growth = await peakGrowth(() => new Promise<void>((resolve, reject) => {
      const req = http.request(`http://127.0.0.1:${port}/upload`, {
        method: 'POST', agent: false, headers: { 'Content-Length': String(TOTAL), 'Content-Type': 'application/octet-stream' },
      }, (res) => {
        res.on('data', (d: Buffer) => { answer += d.toString(); });
        res.on('end', resolve);
        res.on('error', reject);
      });
      req.on('error', reject);
      bigBody(TOTAL).pipe(req);
    }));
    expect(answer).toBe(String(TOTAL));
    expect(growth).toBeLessThan(64 * MiB);
  });

  it('a 200 MiB chunked upload streams too', async () => {
    let answer = '';
    const growth = await peakGrowth(() => new Promise<void>((resolve, reject) => {
      const req = http.request(`http://127.0.0.1:${port}/upload`, {
        method: 'PUT', agent: false, headers: { 'Transfer-Encoding': 'chunked' },
      }, (res) => {
        res.on('data', (d: Buffer) => { answer += d.toString(); });
        res.on('end', resolve);
        res.on('error', reject);
      });
      req.on('error', reject);
      bigBody(TOTAL).pipe(req);
    }));
    expect(answer).toBe(String(TOTAL));
    expect(growth).toBeLessThan(64 * MiB);
  });

  it('a 200 MiB download streams to a slow-ish client; proxy RSS grows < 64 MiB', async () => {
    let received = 0;
    const growth = await peakGrowth(() => new Promise<void>((resolve, reject) => {
      http.get(`http://127.0.0.1:${port}/download`, { agent: false }, (res) => {
        expect(res.statusCode).toBe(200);
        let n = 0;
        res.on('data', (d: Buffer) => {
          received += d.length;
          // Pause now and then so the proxy must hold back rather than buffer.
          if (++n % 100 === 0) {
            res.pause();
            setTimeout(() => res.resume(), 20);
          }
        });
        res.on('end', resolve);
        res.on('error', reject);
      }).on('error', reject);
    }));
    expect(received).toBe(TOTAL);
    expect(growth).toBeLessThan(64 * MiB);
  });
});
