/**
 * Issue 14's defects, each with the exact bytes or steps that showed it: real backends (raw
 * sockets where the defect is in framing or connection handling) and sessionlb in-process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { freePort, request, startBackend } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import { CLI, canConnect, writeConfig } from './helpers/child.js';

const { cleanup, lb: lbWith } = useScope();

/** One request as a raw backend saw it. */
interface Seen {
  method: string;
  target: string;
  head: string;
  body: Buffer;
}

/**
 * A backend on a raw socket that parses requests (Content-Length or chunked bodies) and hands
 * each to `answer`, which writes a response or closes the connection. Records every request.
 */
async function rawBackend(answer: (seen: Seen, socket: net.Socket) => void): Promise<{ address: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const [method = '', target = ''] = head.split(' ');
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        const chunked = /\r\ntransfer-encoding:\s*chunked/i.test(head);
        let bodyEnd = end + 4;
        let body = Buffer.alloc(0);
        if (cl !== null) {
          bodyEnd += Number(cl[1]);
          if (buf.length < bodyEnd) return;
          body = buf.subarray(end + 4, bodyEnd);
        } else if (chunked) {
          const last = buf.indexOf('\r\n0\r\n\r\n', end + 4);
          const first = buf.indexOf('0\r\n\r\n', end + 4);
          const stop = first === end + 4 ? first + 5 : last >= 0 ? last + 7 : -1;
          if (stop < 0) return;
          bodyEnd = stop;
          body = buf.subarray(end + 4, bodyEnd);
        }
        buf = buf.subarray(bodyEnd);
        const s: Seen = { method, target, head, body };
        seen.push(s);
        answer(s, socket);
      }
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  cleanup.push(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  return { address: `127.0.0.1:${port}`, seen };
}

function ok(socket: net.Socket, body = 'ok'): void {
  socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
}

/** Sends raw bytes on a new connection; resolves with everything read until the server closes (or `waitMs`). */
function rawExchange(port: number, bytes: string | Buffer, waitMs = 3000): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const done = (): void => { clearTimeout(timer); socket.destroy(); resolve(Buffer.concat(chunks).toString('latin1')); };
    const timer = setTimeout(done, waitMs);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('close', done);
    socket.on('error', done);
    socket.write(bytes);
  });
}

describe('defect 1: a non-idempotent request is never sent twice', () => {
  /**
   * The backend answers GETs (so that the upstream connection is kept alive), reads a whole POST or
   * PATCH and closes the connection without a word. The client gets one 502, the backend saw the
   * request once: the stale-connection retry must not replay it.
   */
  async function closesAfterReading(nextUpstream: Record<string, unknown> | undefined): Promise<{ lbUrl: string; port: number; seen: Seen[] }> {
    const backend = await rawBackend((s, socket) => {
      if (s.method === 'GET') ok(socket);
      else socket.end();
    });
    const upstream: Record<string, unknown> = { servers: [{ address: backend.address }] };
    if (nextUpstream !== undefined) upstream.nextUpstream = nextUpstream;
    const lb = await lbWith({ upstreams: { backend: upstream } });
    return { lbUrl: lb.url, port: lb.port, seen: backend.seen };
  }

  for (const nextUpstream of [undefined, { on: ['off'] }, { on: ['error', 'timeout'] }]) {
    for (const [method, framing] of [['POST', 'length'], ['POST', 'chunked'], ['PATCH', 'length']] as const) {
      it(`${method} with a ${framing} body over a kept-alive connection, nextUpstream ${JSON.stringify(nextUpstream ?? 'default')}: delivered once, one 502`, async () => {
        const { port, seen } = await closesAfterReading(nextUpstream);
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        cleanup.push(async () => agent.destroy());
        const warm = await request(`http://127.0.0.1:${port}/warm`, { agent });
        expect(warm.status).toBe(200);
        const body = 'x'.repeat(100);
        const headers: Record<string, string> = framing === 'length' ? { 'Content-Length': '100' } : { 'Transfer-Encoding': 'chunked' };
        const res = await request(`http://127.0.0.1:${port}/submit`, { agent, method, headers, body });
        expect(res.status).toBe(502);
        const submits = seen.filter((s) => s.target === '/submit');
        expect(submits.length).toBe(1);
        expect(submits[0]!.method).toBe(method);
      });
    }
  }

  it('with nextUpstream.on "non_idempotent" the stale-connection retry may send it again', async () => {
    const { port, seen } = await closesAfterReading({ on: ['error', 'timeout', 'non_idempotent'] });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanup.push(async () => agent.destroy());
    await request(`http://127.0.0.1:${port}/warm`, { agent });
    const res = await request(`http://127.0.0.1:${port}/submit`, { agent, method: 'POST', headers: { 'Content-Length': '3' }, body: 'abc' });
    expect(res.status).toBe(502);
    expect(seen.filter((s) => s.target === '/submit').length).toBe(2);
  });

  it('an idempotent PUT keeps the stale-connection retry (a kept-alive connection closed under it)', async () => {
    let puts = 0;
    const backend = await rawBackend((s, socket) => {
      if (s.method === 'PUT' && ++puts === 1) socket.end(); // the first one finds a dead connection
      else ok(socket, s.method);
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: backend.address }] } } });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanup.push(async () => agent.destroy());
    await request(`${lb.url}/warm`, { agent });
    const res = await request(`${lb.url}/put`, { agent, method: 'PUT', headers: { 'Content-Length': '3' }, body: 'abc' });
    expect(res.status).toBe(200);
    expect(res.body).toBe('PUT');
  });

  it('a custom method (not idempotent by RFC 9110) is not retried on the next server after it was sent', async () => {
    const first = await rawBackend((_s, socket) => socket.destroy());
    const second = await rawBackend((s, socket) => ok(socket, s.method));
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: first.address }, { address: second.address }] } } });
    const res = await request(`${lb.url}/dav`, { method: 'PROPPATCH', headers: { 'Content-Length': '3' }, body: 'abc' });
    expect(res.status).toBe(502);
    expect(first.seen.length + second.seen.length).toBe(1);
  });
});


/** The raw backend's view of header lines: [name, value] in order. */
function headerLines(seen: Seen): Array<[string, string]> {
  return seen.head.split('\r\n').slice(1).map((l) => {
    const c = l.indexOf(':');
    return [l.slice(0, c), l.slice(c + 1).trim()] as [string, string];
  });
}

describe('defect 3: a request over the header limits is refused, never forwarded with part of its headers', () => {
  async function setup(extra: Record<string, unknown> = {}): Promise<{ port: number; seen: Seen[] }> {
    const backend = await rawBackend((_s, socket) => ok(socket));
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: backend.address }] } }, ...extra });
    return { port: lb.port, seen: backend.seen };
  }

  it('2,100 small headers that fit large_client_header_buffers all reach the backend', async () => {
    const { port, seen } = await setup();
    const res = await rawExchange(port, `GET /many HTTP/1.1\r\nHost: x\r\n${'a: 1\r\n'.repeat(2100)}Connection: close\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 200 /);
    expect(headerLines(seen[0]!).filter(([n]) => n === 'a').length).toBe(2100);
  });

  it('a POST whose Content-Length and Cookie come after 1,100 other headers keeps its body and cookie', async () => {
    const { port, seen } = await setup();
    const res = await rawExchange(port,
      `POST /late HTTP/1.1\r\nHost: x\r\n${'b: 2\r\n'.repeat(1100)}Content-Length: 5\r\nCookie: PHPSESSID=abc\r\nConnection: close\r\n\r\nhello`);
    expect(res).toMatch(/^HTTP\/1\.1 200 /);
    expect(seen.length).toBe(1);
    expect(seen[0]!.body.toString()).toBe('hello');
    expect(headerLines(seen[0]!)).toContainEqual(['Cookie', 'PHPSESSID=abc']);
  });

  it('a header section over NUMBER x SIZE (4 x 8k) is answered 431 and nothing reaches the backend', async () => {
    const { port, seen } = await setup();
    const res = await rawExchange(port, `GET / HTTP/1.1\r\nHost: x\r\n${`c: ${'v'.repeat(1000)}\r\n`.repeat(40)}\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 431 /);
    expect(seen.length).toBe(0);
  });

  it('one header line over one buffer is 400, a request line over one buffer is 414 (nginx large_client_header_buffers 4 8k)', async () => {
    const { port, seen } = await setup();
    const cookie = await rawExchange(port, `GET / HTTP/1.1\r\nHost: x\r\nCookie: ${'k'.repeat(9000)}\r\n\r\n`);
    expect(cookie).toMatch(/^HTTP\/1\.1 400 /);
    const uri = await rawExchange(port, `GET /${'u'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(uri).toMatch(/^HTTP\/1\.1 414 /);
    expect(seen.length).toBe(0);
  });

  it('largeClientHeaderBuffers "4 16k" lets the 9,000-byte cookie through', async () => {
    const { port, seen } = await setup({ largeClientHeaderBuffers: '4 16k' });
    const res = await rawExchange(port, `GET / HTTP/1.1\r\nHost: x\r\nCookie: ${'k'.repeat(9000)}\r\nConnection: close\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 200 /);
    expect(headerLines(seen[0]!).find(([n]) => n === 'Cookie')?.[1].length).toBe(9000);
  });
});

describe('defect 4: Expect: 100-continue', () => {
  it('a declared length over clientMaxBodySize gets 413 without a 100 Continue', async () => {
    const backend = await rawBackend((_s, socket) => ok(socket));
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: backend.address }] } } });
    const res = await rawExchange(lb.port, 'POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n');
    expect(res).toMatch(/^HTTP\/1\.1 413 /);
    expect(res).not.toContain('100 Continue');
    expect(backend.seen.length).toBe(0);
  });

  it('an acceptable one is invited with 100 Continue and delivered', async () => {
    const backend = await rawBackend((_s, socket) => ok(socket));
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: backend.address }] } } });
    const got = await new Promise<string>((resolve) => {
      const socket = net.connect(lb.port, '127.0.0.1');
      let text = '';
      socket.on('data', (c: Buffer) => {
        text += c.toString('latin1');
        if (text.startsWith('HTTP/1.1 100 Continue\r\n\r\n') && !text.includes('200')) socket.write('hello');
        if (text.includes('\r\n\r\nok')) { socket.destroy(); resolve(text); }
      });
      socket.on('close', () => resolve(text));
      socket.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
    });
    expect(got).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
    expect(backend.seen[0]!.body.toString()).toBe('hello');
    expect(headerLines(backend.seen[0]!).some(([n]) => n.toLowerCase() === 'expect')).toBe(false);
  });
});

describe('defect 6: an h2c upgrade is never forwarded', () => {
  it('Upgrade: h2c with HTTP2-Settings reaches the backend as a plain HTTP/1.1 request', async () => {
    const backend = await rawBackend((_s, socket) => ok(socket));
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: backend.address }] } } });
    const res = await rawExchange(lb.port,
      'GET /plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n');
    expect(res).toMatch(/^HTTP\/1\.1 200 /);
    expect(res).toMatch(/\r\n\r\nok$/);
    expect(backend.seen.length).toBe(1);
    const names = headerLines(backend.seen[0]!).map(([n]) => n.toLowerCase());
    expect(names).not.toContain('upgrade');
    expect(names).not.toContain('http2-settings');
    expect(backend.seen[0]!.head).not.toMatch(/h2c|AAMAAABk/i);
  });

  it('an h2c upgrade that carries a body is refused, nothing forwarded', async () => {
    const backend = await rawBackend((_s, socket) => ok(socket));
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: backend.address }] } } });
    const res = await rawExchange(lb.port,
      'POST /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: websocket, h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 3\r\n\r\nabc');
    expect(res).toMatch(/^HTTP\/1\.1 400 /);
    expect(backend.seen.length).toBe(0);
  });
});

describe('defect 8: clientHeaderTimeout', () => {
  it('a client that sends half a header is closed within about a second of clientHeaderTimeout', async () => {
    const backend = await rawBackend((_s, socket) => ok(socket));
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: backend.address }] } }, clientHeaderTimeout: '2s' });
    const started = Date.now();
    const res = await rawExchange(lb.port, 'GET / HTTP/1.1\r\nHost: x\r\n', 10_000);
    const took = Date.now() - started;
    expect(res).toMatch(/^HTTP\/1\.1 408 /);
    expect(took).toBeGreaterThanOrEqual(1900);
    expect(took).toBeLessThan(4500);
  });
});

describe('defect 9: headers with underscores', () => {
  it('are dropped by default (X_Real_IP cannot forge HTTP_X_REAL_IP) and passed with underscoresInHeaders', async () => {
    const backend = await rawBackend((_s, socket) => ok(socket));
    const off = await lbWith({ upstreams: { backend: { servers: [{ address: backend.address }] } } });
    await rawExchange(off.port, 'GET / HTTP/1.1\r\nHost: x\r\nX_Real_IP: 6.6.6.6\r\nMy_Header: 1\r\nConnection: close\r\n\r\n');
    const on = await lbWith({ upstreams: { backend: { servers: [{ address: backend.address }] } }, underscoresInHeaders: true });
    await rawExchange(on.port, 'GET / HTTP/1.1\r\nHost: x\r\nX_Real_IP: 6.6.6.6\r\nConnection: close\r\n\r\n');
    expect(backend.seen.length).toBe(2);
    const dropped = headerLines(backend.seen[0]!);
    expect(dropped.map(([n]) => n)).not.toContain('X_Real_IP');
    expect(dropped.map(([n]) => n)).not.toContain('My_Header');
    expect(dropped).toContainEqual(['X-Real-IP', '127.0.0.1']);
    expect(headerLines(backend.seen[1]!)).toContainEqual(['X_Real_IP', '6.6.6.6']);
  });
});

describe('defect 7: running out of file descriptors is never blamed on the servers', () => {
  /** Opens up to `count` idle connections; resolves with those the server kept (accepted and not closed). */
  async function occupy(port: number, count: number): Promise<net.Socket[]> {
    const sockets: net.Socket[] = [];
    for (let i = 0; i < count; i++) {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      sockets.push(s);
    }
    await new Promise((r) => setTimeout(r, 800));
    return sockets.filter((s) => !s.destroyed && !s.readableEnded && s.readyState === 'open');
  }

  /** `sessionlb run` with `ulimit -n 200`, until `port` accepts; killed after the test. `log()`: its output so far. */
  async function runUnderUlimit(file: string, port: number): Promise<{ child: ChildProcess; log: () => string }> {
    const child = spawn('bash', ['-c', `ulimit -n 200 && exec "${process.execPath}" "${CLI}" run --config "${file}"`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    cleanup.push(async () => { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited; } });
    for (let i = 0; i < 200 && !(await canConnect(port)); i++) await new Promise((r) => setTimeout(r, 50));
    return { child, log: () => out };
  }

  /** Writes "ping" on a new stream connection: what comes back ('ping' echoed), or 'error'/'closed'; `keep`: leave it open there (null: close it). */
  function pingThrough(port: number, keep: net.Socket[] | null): Promise<string> {
    return new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write('ping'));
      keep?.push(s);
      s.on('data', (d: Buffer) => {
        resolve(d.toString());
        if (keep === null) s.destroy();
      });
      s.on('error', () => resolve('error'));
      s.on('close', () => resolve('closed'));
    });
  }

  /** One request on an open socket (`extra`: more header lines); resolves with the status line's code. */
  function statusOn(socket: net.Socket, path: string, extra = ''): Promise<number> {
    return new Promise((resolve) => {
      let text = '';
      const onData = (c: Buffer): void => {
        text += c.toString('latin1');
        const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
        if (m !== null && text.includes('\r\n\r\n')) { socket.off('data', onData); resolve(Number(m[1])); }
      };
      socket.on('data', onData);
      socket.on('close', () => resolve(0));
      socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`);
    });
  }

  it('under ulimit -n, EMFILE while connecting upstream is a 500 for that request, and the servers stay up', async () => {
    const backend = await startBackend('a');
    cleanup.push(() => backend.close());
    const port = await freePort();
    const adminPort = await freePort();
    const file = writeConfig({
      workers: 1,
      accessLog: false,
      admin: { listen: `127.0.0.1:${adminPort}` },
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: backend.address, maxFails: 1, failTimeout: '30s' }], keepalive: 0 } },
    });
    const { child, log } = await runUnderUlimit(file, port);

    const held = await occupy(port, 260);
    expect(held.length).toBeGreaterThan(10);
    // Every descriptor is taken by a client: the upstream connect fails with EMFILE.
    const starved = await statusOn(held[0]!, '/starved');
    expect(starved).toBe(500);
    // A websocket upgrade meets the same: 500, counted, not the server's failure.
    expect(await statusOn(held[1]!, '/ws', 'Connection: Upgrade\r\nUpgrade: websocket\r\n')).toBe(500);
    // Descriptors free again: the server was never marked failed, so the next request is served at once.
    for (const s of held.slice(2)) s.destroy();
    await new Promise((r) => setTimeout(r, 300));
    const after = await request(`http://127.0.0.1:${port}/after`);
    expect(after.status).toBe(200);
    expect(after.headers['x-backend']).toBe('a');
    held[0]!.destroy();
    held[1]!.destroy();
    const metrics = (await request(`http://127.0.0.1:${adminPort}/metrics`)).body;
    expect(metrics).toMatch(/sessionlb_local_errors_total\{code="EMFILE",operation="connect"\} 2\n/);
    expect(metrics).not.toMatch(/sessionlb_upstream_failures_total\{[^}]*\} [1-9]/);
    expect(log()).toMatch(/local resource error while connecting to upstream/);
    expect(child.exitCode).toBe(null);
  });

  it('a stream (TCP) session that meets EMFILE connecting upstream is counted as a local error, never as a server failure', async () => {
    const echo = net.createServer((s) => { s.on('error', () => undefined); s.pipe(s); });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise<void>((r) => echo.close(() => r())));
    const echoPort = (echo.address() as net.AddressInfo).port;
    const httpPort = await freePort();
    const port = await freePort();
    const adminPort = await freePort();
    const file = writeConfig({
      workers: 1,
      accessLog: false,
      admin: { listen: `127.0.0.1:${adminPort}` },
      servers: [{ listen: [`127.0.0.1:${httpPort}`], locations: [{ path: '/', proxyPass: 'http://echo' }] }],
      streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: 'echo' }],
      upstreams: { echo: { servers: [{ address: `127.0.0.1:${echoPort}`, maxFails: 1, failTimeout: '30s' }] } },
    });
    const { child, log } = await runUnderUlimit(file, port);

    // Idle HTTP clients take every descriptor. Then, one at a time, an HTTP client leaves (one
    // descriptor free) and a stream client comes (two needed: the accepted socket and the upstream
    // one): once the slack is used up, a stream client is accepted on the last descriptor and its
    // upstream connect meets EMFILE (counted below).
    const held = await occupy(httpPort, 260);
    expect(held.length).toBeGreaterThan(10);
    const streams: net.Socket[] = [];
    cleanup.push(async () => { for (const s of streams) s.destroy(); });
    const outcomes: string[] = [];
    for (let i = 0; i < 8; i++) {
      held.pop()!.destroy();
      await new Promise((r) => setTimeout(r, 150));
      outcomes.push(await pingThrough(port, streams));
    }
    // nginx stream: when no server could be connected, the client is closed.
    expect(outcomes.filter((o) => o !== 'ping').length, outcomes.join(' ')).toBeGreaterThan(0);
    for (const s of streams) s.destroy();
    for (const s of held) s.destroy();
    await new Promise((r) => setTimeout(r, 500));
    // Descriptors free again: the server was never marked failed, so a new session is served at once.
    expect(await pingThrough(port, null)).toBe('ping');
    const metrics = (await request(`http://127.0.0.1:${adminPort}/metrics`)).body;
    expect(metrics).toMatch(/sessionlb_local_errors_total\{code="EMFILE",operation="connect"\} [1-9]/);
    expect(metrics).not.toMatch(/sessionlb_upstream_failures_total\{[^}]*\} [1-9]/);
    expect(log()).toMatch(/connect\(\) failed \(EMFILE\)/);
    expect(child.exitCode).toBe(null);
  });
});
