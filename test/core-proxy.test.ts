/**
 * Issue 2 integration tests: sessionlb in-process in front of real HTTP backends on
 * loopback. Distribution, passive health, retries, error statuses, websockets.
 */
import http from 'node:http';
import net from 'node:net';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { loadConfig } from '../src/config/load.js';
import { SessionLB } from '../src/runtime/sessionlb.js';
import {
  freePort, load, nameHandler, request, startBackend, tally,
  type Backend, type BackendHandler,
} from './helpers/net.js';
import { useScope } from './helpers/scope.js';

const { cleanup, backends, lb: lbWith } = useScope();

/** sessionlb with an event log we can read (the error log lines as parsed JSON). */
async function lbWithLog(raw: Record<string, unknown>): Promise<{ url: string; lines: { msg: string; upstream?: string }[] }> {
  const port = await freePort();
  const lines: { msg: string; upstream?: string }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l) as { msg: string });
      cb();
    },
  });
  const config = await loadConfig({
    servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
    ...raw,
  }, '<test>');
  const lb = new SessionLB(config, { log: pino({ level: 'info' }, sink) });
  await lb.start();
  cleanup.push(() => lb.stop(2000));
  return { url: `http://127.0.0.1:${port}`, lines };
}

/** A port nothing listens on (connections are refused). */
async function deadAddress(): Promise<string> {
  return `127.0.0.1:${await freePort()}`;
}

const backendOf = (r: { headers: http.IncomingHttpHeaders; status: number }): string =>
  r.status === 200 ? String(r.headers['x-backend']) : `status ${r.status}`;

describe('distribution', () => {
  it('weights 3:1:1:1 give exactly 300/100/100/100 over 600 requests through the proxy', async () => {
    const [a, b, c, d] = await backends(['a', 'b', 'c', 'd']);
    const lb = await lbWith({
      upstreams: { backend: { servers: [{ address: a!.address, weight: 3 }, { address: b!.address }, { address: c!.address }, { address: d!.address }] } },
    });
    const responses = await load(lb.url + '/', 600, 8);
    expect(tally(responses.map(backendOf))).toEqual({ a: 300, b: 100, c: 100, d: 100 });
  });

  it('the first requests follow the smooth order a a b a c a a for weights 5,1,1', async () => {
    const [a, b, c] = await backends(['a', 'b', 'c']);
    const lb = await lbWith({
      upstreams: { backend: { servers: [{ address: a!.address, weight: 5 }, { address: b!.address }, { address: c!.address }] } },
    });
    const seq: string[] = [];
    for (let i = 0; i < 7; i++) seq.push(backendOf(await request(lb.url + '/')));
    expect(seq.join(' ')).toBe('a a b a c a a');
  });
});

describe('passive health and retries', () => {
  it('a backend killed mid-run: GETs see zero failures, the dead one is skipped for failTimeout, then tried again', async () => {
    const bs = await backends(['a', 'b', 'c', 'd']);
    const lb = await lbWith({
      upstreams: { backend: { servers: bs.map((b) => ({ address: b.address, maxFails: 1, failTimeout: '2s' })) } },
    });
    const victim = bs[1]!;
    // Kill it while requests are in flight.
    const running = load(lb.url + '/', 400, 4);
    while (victim.hits < 20) await new Promise((r) => setTimeout(r, 2));
    await victim.close();
    const killedAt = Date.now();
    const first = await running;
    expect(first.filter((r) => r.status !== 200)).toEqual([]);
    const peer = lb.lb.upstreams.get('backend')!.find(victim.address)!;
    const failuresAfterKill = peer.state.failedRequests;
    expect(failuresAfterKill).toBeGreaterThanOrEqual(1);
    expect(failuresAfterKill).toBeLessThanOrEqual(4); // at most the requests that raced the kill

    // Within failTimeout nobody even tries the dead server.
    if (Date.now() - killedAt < 1500) {
      const second = await load(lb.url + '/', 100, 4);
      expect(second.filter((r) => r.status !== 200)).toEqual([]);
      expect(new Set(second.map(backendOf))).toEqual(new Set(['a', 'c', 'd']));
      if (Date.now() - killedAt < 1900) expect(peer.state.failedRequests).toBe(failuresAfterKill);
    }

    // Back on the same port after failTimeout: it gets traffic again.
    const revived = await startBackend('b', nameHandler, victim.port);
    cleanup.push(() => revived.close());
    await new Promise((r) => setTimeout(r, Math.max(0, killedAt + 2100 - Date.now())));
    const third = await load(lb.url + '/', 60, 2);
    expect(third.filter((r) => r.status !== 200)).toEqual([]);
    expect(revived.hits).toBeGreaterThan(0);
  });

  it('backup servers take traffic only when every primary is down', async () => {
    const [p1, p2, bk] = await backends(['p1', 'p2', 'backup']);
    const lb = await lbWith({
      upstreams: { backend: { servers: [{ address: p1!.address }, { address: p2!.address }, { address: bk!.address, backup: true }] } },
    });
    const before = await load(lb.url + '/', 40, 4);
    expect(tally(before.map(backendOf))).toEqual({ p1: 20, p2: 20 });
    await p1!.close();
    await p2!.close();
    const after = await load(lb.url + '/', 40, 4);
    expect(after.filter((r) => r.status !== 200)).toEqual([]);
    expect(tally(after.map(backendOf))).toEqual({ backup: 40 });
  });

  it('a "down" server is never used, even when the others fail', async () => {
    const [a, b] = await backends(['a', 'b']);
    const lb = await lbWith({
      upstreams: { backend: { servers: [{ address: a!.address }, { address: b!.address, down: true }] } },
    });
    const r = await load(lb.url + '/', 30, 3);
    expect(tally(r.map(backendOf))).toEqual({ a: 30 });
    await a!.close();
    const dead = await load(lb.url + '/', 5, 1);
    expect(dead.map((x) => x.status)).toEqual([502, 502, 502, 502, 502]);
    expect(b!.hits).toBe(0);
  });

  it('GET is retried on the next server after a connection error', async () => {
    const [b] = await backends(['b']);
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: await deadAddress() }, { address: b!.address }] } } });
    const r = await load(lb.url + '/', 10, 2);
    expect(tally(r.map(backendOf))).toEqual({ b: 10 });
  });
});

describe('error statuses', () => {
  it('502 when the only server refuses (no retry left)', async () => {
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: await deadAddress() }] } } });
    const r = await request(lb.url + '/x');
    expect(r.status).toBe(502);
    expect(r.body).toContain('502 Bad Gateway');
  });

  it('502 and a "no live upstreams" error log when every server is marked failed', async () => {
    const { url, lines } = await lbWithLog({
      upstreams: { backend: { servers: [{ address: await deadAddress() }, { address: await deadAddress() }] } },
    });
    expect((await request(url + '/')).status).toBe(502); // both tried, both refused
    expect((await request(url + '/')).status).toBe(502); // both failed: nothing to try
    await new Promise((r) => setTimeout(r, 20));
    const noLive = lines.filter((l) => l.msg.includes('no live upstreams'));
    expect(noLive.length).toBeGreaterThanOrEqual(1);
    expect(noLive[0]!.msg).toContain('"backend"');
    expect(noLive[0]!.upstream).toBe('backend');
  });

  it('503 from the server is passed through when http_503 is not in nextUpstream.on', async () => {
    const [a] = await backends(['a'], (req, res) => { req.resume(); res.writeHead(503, { 'Retry-After': '5' }); res.end('busy'); });
    const [b] = await backends(['b']);
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: a!.address }, { address: b!.address }] } } });
    const r = await request(lb.url + '/');
    expect(r.status).toBe(503);
    expect(r.body).toBe('busy');
    expect(r.headers['retry-after']).toBe('5');
  });

  it('503 is retried on the next server when http_503 is listed, and passed through when no server is left', async () => {
    const busy: BackendHandler = (req, res) => { req.resume(); res.writeHead(503); res.end('busy'); };
    const [a] = await backends(['a'], busy);
    const [b] = await backends(['b']);
    const lb = await lbWith({
      upstreams: { backend: { servers: [{ address: a!.address, maxFails: 0 }, { address: b!.address }], nextUpstream: { on: ['error', 'timeout', 'http_503'] } } },
    });
    const r = await load(lb.url + '/', 10, 1);
    expect(tally(r.map(backendOf))).toEqual({ b: 10 });
    expect(a!.hits).toBeGreaterThan(0);

    const [c, d] = await backends(['c', 'd'], busy);
    const lb2 = await lbWith({
      upstreams: { backend: { servers: [{ address: c!.address }, { address: d!.address }], nextUpstream: { on: ['error', 'http_503'] } } },
    });
    const r2 = await request(lb2.url + '/');
    expect(r2.status).toBe(503);
    expect(r2.body).toBe('busy');
    expect(c!.hits + d!.hits).toBe(2);
  });

  it('504 when the server does not answer within timeouts.read', async () => {
    const [slow] = await backends(['slow'], (req) => { req.resume(); /* never answers */ });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: slow!.address }], timeouts: { read: '300ms' } } } });
    const t0 = Date.now();
    const r = await request(lb.url + '/');
    expect(r.status).toBe(504);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
  });

  it('504 after a read timeout is retried on the next server for GET (timeout is in nextUpstream.on by default)', async () => {
    const [slow] = await backends(['slow'], (req) => { req.resume(); });
    const [fast] = await backends(['fast']);
    const lb = await lbWith({
      upstreams: { backend: { servers: [{ address: slow!.address }, { address: fast!.address }], timeouts: { read: '300ms' } } },
    });
    const r = await request(lb.url + '/');
    expect(backendOf(r)).toBe('fast');
  });

  it('413 for a Content-Length over clientMaxBodySize, without contacting the server', async () => {
    const [a] = await backends(['a']);
    const lb = await lbWith({ clientMaxBodySize: '1k', upstreams: { backend: { servers: [{ address: a!.address }] } } });
    const r = await request(lb.url + '/', { method: 'POST', body: Buffer.alloc(2000, 120) });
    expect(r.status).toBe(413);
    expect(a!.hits).toBe(0);
    const ok = await request(lb.url + '/', { method: 'POST', body: Buffer.alloc(1024, 120) });
    expect(ok.status).toBe(200);
  });

  it('413 for a chunked body that grows over clientMaxBodySize', async () => {
    const [a] = await backends(['a']);
    const lb = await lbWith({ clientMaxBodySize: '4k', upstreams: { backend: { servers: [{ address: a!.address }] } } });
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(lb.url + '/', { method: 'POST', agent: false, headers: { 'Transfer-Encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.write(Buffer.alloc(3000, 120));
      setTimeout(() => req.end(Buffer.alloc(3000, 120)), 50);
    });
    expect(status).toBe(413);
    const small = await new Promise<number>((resolve, reject) => {
      const req = http.request(lb.url + '/', { method: 'POST', agent: false, headers: { 'Transfer-Encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.write(Buffer.alloc(1000, 120));
      req.end(Buffer.alloc(1000, 120));
    });
    expect(small).toBe(200);
    expect(a!.hits).toBe(1); // the oversized body never reached the server (it is read first, up to 64 KiB)
  });

  it('404 when no location matches', async () => {
    const [a] = await backends(['a']);
    const port = await freePort();
    const lb = await lbWith({
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/api/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: a!.address }] } },
    });
    expect((await request(`http://127.0.0.1:${port}/api/x`)).status).toBe(200);
    const r = await request(`http://127.0.0.1:${port}/other`);
    expect(r.status).toBe(404);
    expect(a!.hits).toBe(1);
    expect(lb.port).toBeGreaterThan(0);
  });

  it('400 for request targets nginx rejects, and for a malformed request', async () => {
    const [a] = await backends(['a']);
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: a!.address }] } } });
    // `path` rather than a URL: node's URL parser would normalise the dot segments away.
    expect((await request(lb.url, { path: '/../../etc/passwd' })).status).toBe(400);
    expect((await request(lb.url, { path: '/%zz' })).status).toBe(400);
    expect((await request(lb.url, { path: '/a/%00' })).status).toBe(400);
    expect((await request(lb.url, { path: '/a/../b' })).status).toBe(200); // stays inside the root: fine
    const raw = await new Promise<string>((resolve, reject) => {
      const s = net.connect(lb.port, '127.0.0.1', () => s.write('GARBAGE\r\n\r\n'));
      let text = '';
      s.on('data', (d) => { text += d.toString(); });
      s.on('end', () => resolve(text));
      s.on('error', reject);
    });
    expect(raw).toMatch(/^HTTP\/1\.1 400 /);
    const dupHost = await new Promise<string>((resolve, reject) => {
      const s = net.connect(lb.port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n'));
      let text = '';
      s.on('data', (d) => { text += d.toString(); });
      s.on('end', () => resolve(text));
      s.on('error', reject);
    });
    expect(dupHost).toMatch(/^HTTP\/1\.1 400 /);
    expect(a!.hits).toBe(1);
  });
});

describe('non-idempotent requests', () => {
  /** Reads the whole request, then drops the connection without answering. */
  const dropper: BackendHandler = (req, res) => {
    req.resume();
    req.on('end', () => res.socket?.destroy());
  };

  it('a POST whose body was sent is not retried (502); a GET is', async () => {
    const [bad] = await backends(['bad'], dropper);
    const [good] = await backends(['good']);
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: bad!.address, maxFails: 0 }, { address: good!.address }] } } });
    const post = await request(lb.url + '/', { method: 'POST', body: 'x=1' });
    expect(post.status).toBe(502);
    expect(good!.hits).toBe(0);
    const get = await request(lb.url + '/');
    expect(backendOf(get)).toBe('good');
  });

  it('PATCH, LOCK and other methods RFC 9110 does not call idempotent are not retried once sent; PUT and DELETE are', async () => {
    const [bad] = await backends(['bad'], dropper);
    const [good] = await backends(['good']);
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: bad!.address, maxFails: 0, weight: 100 }, { address: good!.address }] } } });
    // An explicit Content-Length: node's client sends none for DELETE and friends.
    const outcome = async (method: string): Promise<string> =>
      backendOf(await request(lb.url + '/', { method, body: 'x', headers: { 'Content-Length': '1' } }));
    expect(await outcome('PATCH')).toBe('status 502');
    expect(await outcome('LOCK')).toBe('status 502');
    expect(await outcome('PUT')).toBe('good');
    expect(await outcome('DELETE')).toBe('good');
    expect(await outcome('PROPFIND')).toBe('status 502'); // nginx would retry it; issue 14 keeps RFC 9110's list
  });

  it('a POST is retried when "non_idempotent" is listed', async () => {
    const [bad] = await backends(['bad'], dropper);
    const [good] = await backends(['good']);
    const lb = await lbWith({
      upstreams: { backend: { servers: [{ address: bad!.address, maxFails: 0 }, { address: good!.address }], nextUpstream: { on: ['error', 'timeout', 'non_idempotent'] } } },
    });
    const post = await request(lb.url + '/', { method: 'POST', body: 'x=1' });
    expect(backendOf(post)).toBe('good');
    expect(bad!.hits).toBe(1);
  });

  it('a POST that never reached the server (connection refused) is retried', async () => {
    const [good] = await backends(['good'], (req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => { body += c.toString(); });
      req.on('end', () => { res.writeHead(200, { 'X-Backend': 'good' }); res.end(body); });
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: await deadAddress() }, { address: good!.address }] } } });
    const post = await request(lb.url + '/', { method: 'POST', body: 'x=1' });
    expect(post.status).toBe(200);
    expect(post.body).toBe('x=1');
  });
});

describe('chunked request bodies', () => {
  /** Answers with the number of body bytes and a checksum-ish sum, after reading it all. */
  const counter: BackendHandler = (req, res, b) => {
    let n = 0;
    let sum = 0;
    req.on('data', (c: Buffer) => { n += c.length; for (const x of c) sum = (sum + x) % 65521; });
    req.on('end', () => { res.writeHead(200, { 'X-Backend': b.name, 'X-TE': String(req.headers['transfer-encoding']) }); res.end(`${n}/${sum}`); });
  };
  function sendChunked(url: string, method: string, parts: Buffer[]): Promise<{ status: number; body: string; backend: string }> {
    return new Promise((resolve, reject) => {
      const req = http.request(url, { method, agent: false, headers: { 'Transfer-Encoding': 'chunked' } }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => { body += d.toString(); });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, backend: String(res.headers['x-backend']) }));
      });
      req.on('error', reject);
      for (const p of parts) req.write(p);
      req.end();
    });
  }
  const expectedOf = (parts: Buffer[]): string => {
    let n = 0;
    let sum = 0;
    for (const p of parts) { n += p.length; for (const x of p) sum = (sum + x) % 65521; }
    return `${n}/${sum}`;
  };

  it('a small chunked body is read first, so it can be retried on the next server', async () => {
    const [bad] = await backends(['bad'], (req, res) => { req.resume(); req.on('end', () => res.socket?.destroy()); });
    const [good] = await backends(['good'], counter);
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: bad!.address, maxFails: 0, weight: 100 }, { address: good!.address }] } } });
    const parts = [Buffer.from('hello '), Buffer.alloc(10_000, 7), Buffer.from('end')];
    const r = await sendChunked(lb.url + '/', 'PUT', parts);
    expect(r).toEqual({ status: 200, body: expectedOf(parts), backend: 'good' });
    expect(bad!.hits).toBe(1);
  });

  it('a chunked body larger than 64 KiB streams through whole (and is not retried once sent)', async () => {
    const [good] = await backends(['good'], counter);
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: good!.address }] } } });
    const parts = Array.from({ length: 20 }, (_, i) => Buffer.alloc(16 * 1024, i + 1));
    const r = await sendChunked(lb.url + '/', 'POST', parts);
    expect(r).toEqual({ status: 200, body: expectedOf(parts), backend: 'good' });
    const empty = await sendChunked(lb.url + '/', 'POST', []);
    expect(empty).toEqual({ status: 200, body: '0/0', backend: 'good' });
  });

  it('413 when a chunked body passes clientMaxBodySize after the first 64 KiB', async () => {
    const [good] = await backends(['good'], counter);
    const lb = await lbWith({ clientMaxBodySize: '100k', upstreams: { backend: { servers: [{ address: good!.address }] } } });
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(lb.url + '/', { method: 'POST', agent: false, headers: { 'Transfer-Encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      let sent = 0;
      const pump = (): void => {
        while (sent < 160 * 1024) {
          sent += 16 * 1024;
          if (!req.write(Buffer.alloc(16 * 1024, 1))) { req.once('drain', pump); return; }
        }
        req.end();
      };
      pump();
    });
    expect(status).toBe(413);
  });
});

describe('websocket (Upgrade)', () => {
  it('echoes bytes both ways after a 101 from the backend', async () => {
    const seen: http.IncomingHttpHeaders[] = [];
    const [ws] = await backends(['ws']);
    ws!.server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      seen.push(req.headers);
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Backend: ws\r\n\r\n');
      if (head.length > 0) socket.write(head);
      socket.pipe(socket); // echo
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: ws!.address }] } } });
    const { res, socket } = await new Promise<{ res: http.IncomingMessage; socket: net.Socket }>((resolve, reject) => {
      const req = http.request(lb.url + '/chat', {
        agent: false,
        headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version': '13' },
      });
      req.on('upgrade', (r, s) => resolve({ res: r, socket: s }));
      req.on('response', (r) => reject(new Error(`no upgrade: ${r.statusCode}`)));
      req.on('error', reject);
      req.end();
    });
    expect(res.statusCode).toBe(101);
    expect(res.headers.upgrade).toBe('websocket');
    expect(seen[0]!.upgrade).toBe('websocket');
    expect(seen[0]!.connection?.toLowerCase()).toContain('upgrade');
    expect(seen[0]!['sec-websocket-key']).toBe('dGhlIHNhbXBsZSBub25jZQ==');
    const echoed = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (d: Buffer) => {
        text += d.toString();
        if (text.length >= 10) resolve(text);
      });
      socket.write('hello');
      setTimeout(() => socket.write('world'), 20);
    });
    expect(echoed).toBe('helloworld');
    socket.destroy();
  });

  it('a client that leaves before the 101 does not leave the upstream connection open', async () => {
    let upstreamClosed = false;
    let upgraded = 0;
    const [ws] = await backends(['ws']);
    ws!.server.on('upgrade', (_req: http.IncomingMessage, socket: net.Socket) => {
      // EOF from the proxy = the proxy closed its side (this socket is half-open capable, so end ours too).
      socket.on('end', () => { upstreamClosed = true; socket.destroy(); });
      socket.on('error', () => undefined);
      setTimeout(() => {
        upgraded++;
        socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      }, 200);
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: ws!.address }] } } });
    const req = http.request(lb.url + '/', { agent: false, headers: { Connection: 'Upgrade', Upgrade: 'websocket' } });
    req.on('error', () => undefined);
    req.end();
    await new Promise((r) => setTimeout(r, 50));
    req.destroy();
    for (let i = 0; i < 100 && !upstreamClosed; i++) await new Promise((r) => setTimeout(r, 20));
    expect(upgraded).toBe(1);
    expect(upstreamClosed).toBe(true);
    expect(lb.lb.upstreams.get('backend')!.find(ws!.address)!.active).toBe(0);
  });

  it('an upgrade is retried on the next server after a connection error (nextUpstream "error")', async () => {
    const [ws] = await backends(['ws']);
    ws!.server.on('upgrade', (_req: http.IncomingMessage, socket: net.Socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      socket.pipe(socket);
      socket.on('error', () => undefined);
    });
    const upgrade = (url: string): Promise<number> => new Promise((resolve, reject) => {
      const req = http.request(url, { agent: false, headers: { Connection: 'Upgrade', Upgrade: 'websocket' } });
      req.on('upgrade', (_r, socket: net.Socket) => { socket.destroy(); resolve(101); });
      req.on('response', (r) => { r.resume(); resolve(r.statusCode ?? 0); });
      req.on('error', reject);
      req.end();
    });
    const dead = await deadAddress();
    const retrying = await lbWith({ upstreams: { backend: { servers: [{ address: dead, weight: 100 }, { address: ws!.address }] } } });
    expect(await upgrade(retrying.url + '/')).toBe(101);
    const noRetry = await lbWith({ upstreams: { backend: { servers: [{ address: dead, weight: 100 }, { address: ws!.address }], nextUpstream: { on: ['off'] } } } });
    expect(await upgrade(noRetry.url + '/')).toBe(502);
  });

  it('an upgrade to a dead server answers 502', async () => {
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: await deadAddress() }] } } });
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(lb.url + '/', { agent: false, headers: { Connection: 'Upgrade', Upgrade: 'websocket' } });
      req.on('upgrade', () => resolve(101));
      req.on('response', (r) => { r.resume(); resolve(r.statusCode ?? 0); });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(502);
  });
});

describe('upstream connections and limits', () => {
  /** Backends that count the TCP connections they accept. */
  async function counting(names: string[]): Promise<{ bs: Backend[]; connections: () => number }> {
    const bs = await backends(names);
    let n = 0;
    for (const b of bs) b.server.on('connection', () => { n++; });
    return { bs, connections: () => n };
  }

  it('keepalive reuses upstream connections; keepalive 0 opens one per request', async () => {
    const pooled = await counting(['a']);
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: pooled.bs[0]!.address }], keepalive: 4 } } });
    for (let i = 0; i < 30; i++) expect((await request(lb.url + '/')).status).toBe(200);
    expect(pooled.connections()).toBe(1);

    const fresh = await counting(['b']);
    const lb2 = await lbWith({ upstreams: { backend: { servers: [{ address: fresh.bs[0]!.address }], keepalive: 0 } } });
    for (let i = 0; i < 10; i++) expect((await request(lb2.url + '/')).status).toBe(200);
    expect(fresh.connections()).toBe(10);
  });

  it('a kept-alive connection the backend drops as the next request arrives is retried once on a fresh connection, not a failure', async () => {
    // Raw backend: answers the first request of each connection, then closes when the second one arrives
    // (what a backend whose keep-alive timer just fired looks like to the proxy).
    let connections = 0;
    const server = net.createServer((socket) => {
      connections++;
      let requests = 0;
      let buffered = '';
      socket.on('data', (d: Buffer) => {
        buffered += d.toString('latin1');
        while (buffered.includes('\r\n\r\n')) {
          buffered = buffered.slice(buffered.indexOf('\r\n\r\n') + 4);
          if (++requests > 1) {
            socket.destroy();
            return;
          }
          socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: raw\r\n\r\nok');
        }
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanup.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const address = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const [other] = await backends(['other']);
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address, weight: 1000 }, { address: other!.address }] } } });
    const seen: string[] = [];
    for (let i = 0; i < 5; i++) seen.push(backendOf(await request(lb.url + '/')));
    expect(seen).toEqual(['raw', 'raw', 'raw', 'raw', 'raw']);
    expect(connections).toBe(5);
    expect(lb.lb.upstreams.get('backend')!.find(address)!.state.failedRequests).toBe(0);
    expect(other!.hits).toBe(0);
  });

  it('maxConns: a server at its limit is skipped; when all are, 502', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => { release = r; });
    const held: BackendHandler = (req, res, b) => { req.resume(); void gate.then(() => { res.writeHead(200, { 'X-Backend': b.name }); res.end(b.name); }); };
    const [a] = await backends(['a'], held);
    const [b] = await backends(['b'], held);
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: a!.address, maxConns: 1 }, { address: b!.address, maxConns: 1 }] } } });
    const first = request(lb.url + '/');
    const second = request(lb.url + '/');
    while (a!.hits + b!.hits < 2) await new Promise((r) => setTimeout(r, 5));
    const third = await request(lb.url + '/');
    expect(third.status).toBe(502);
    release();
    expect([backendOf(await first), backendOf(await second)].sort()).toEqual(['a', 'b']);
    expect(a!.hits).toBe(1);
    expect(b!.hits).toBe(1);
  });

  it('nextUpstream.tries bounds the attempts', async () => {
    const [good] = await backends(['good']);
    const lb = await lbWith({
      upstreams: { backend: { servers: [{ address: await deadAddress() }, { address: await deadAddress() }, { address: good!.address }], nextUpstream: { tries: 2 } } },
    });
    expect((await request(lb.url + '/')).status).toBe(502); // dead, dead: two tries used up
    expect(good!.hits).toBe(0);
    expect(backendOf(await request(lb.url + '/'))).toBe('good'); // both dead ones are now failed
  });

  it('HEAD, 204 and 304 responses pass without a body; POST keeps Content-Length: 0', async () => {
    const [a] = await backends(['a'], (req, res) => {
      req.resume();
      req.on('end', () => {
        if (req.url === '/204') { res.writeHead(204); res.end(); return; }
        if (req.url === '/304') { res.writeHead(304, { ETag: '"x"' }); res.end(); return; }
        const body = `${req.method} cl=${req.headers['content-length'] ?? '-'}`;
        res.writeHead(200, { 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
      });
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: a!.address }] } } });
    const head = await request(lb.url + '/', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    expect(head.headers['content-length']).toBe('9'); // the length of the body a GET would get ("HEAD cl=-")
    expect((await request(lb.url + '/204')).status).toBe(204);
    const nm = await request(lb.url + '/304', { headers: { 'If-None-Match': '"x"' } });
    expect(nm.status).toBe(304);
    expect(nm.headers.etag).toBe('"x"');
    const post = await request(lb.url + '/', { method: 'POST', headers: { 'Content-Length': '0' } });
    expect(post.body).toBe('POST cl=0');
    const get = await request(lb.url + '/');
    expect(get.body).toBe('GET cl=-');
  });
});

describe('more nextUpstream conditions', () => {
  it('nextUpstream.timeout stops retrying once that long has passed since the request arrived', async () => {
    const [s1, s2] = await backends(['s1', 's2'], (req) => { req.resume(); });
    const [good] = await backends(['good']);
    const servers = [{ address: s1!.address }, { address: s2!.address }, { address: good!.address }];
    const limited = await lbWith({ upstreams: { backend: { servers, timeouts: { read: '300ms' }, nextUpstream: { timeout: '400ms' } } } });
    expect((await request(limited.url + '/')).status).toBe(504); // s1 (300ms), s2 (600ms): past 400ms, no third try
    expect(good!.hits).toBe(0);
    const unlimited = await lbWith({ upstreams: { backend: { servers, timeouts: { read: '300ms' } } } });
    expect(backendOf(await request(unlimited.url + '/'))).toBe('good');
  });

  it('an invalid response is a 502, retried only with "invalid_header"', async () => {
    const garbage = net.createServer((socket) => {
      socket.on('data', () => socket.end('NOT HTTP AT ALL\r\n\r\n'));
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => garbage.listen(0, '127.0.0.1', resolve));
    cleanup.push(() => new Promise<void>((resolve) => garbage.close(() => resolve())));
    const bad = `127.0.0.1:${(garbage.address() as net.AddressInfo).port}`;
    const [good] = await backends(['good']);
    const plain = await lbWith({ upstreams: { backend: { servers: [{ address: bad, maxFails: 0 }, { address: good!.address }] } } });
    expect((await request(plain.url + '/')).status).toBe(502);
    const retrying = await lbWith({
      upstreams: { backend: { servers: [{ address: bad, maxFails: 0 }, { address: good!.address }], nextUpstream: { on: ['error', 'invalid_header'] } } },
    });
    expect(backendOf(await request(retrying.url + '/'))).toBe('good');
  });

  it('http_404 moves on without counting a failure; http_500 counts one', async () => {
    const [nf] = await backends(['nf'], (req, res) => { req.resume(); res.writeHead(404); res.end('no'); });
    const [err] = await backends(['err'], (req, res) => { req.resume(); res.writeHead(500); res.end('no'); });
    const [good] = await backends(['good']);
    const lb = await lbWith({
      upstreams: { backend: { servers: [{ address: nf!.address, weight: 10 }, { address: err!.address, weight: 5 }, { address: good!.address }], nextUpstream: { on: ['error', 'http_404', 'http_500'] } } },
    });
    expect(backendOf(await request(lb.url + '/'))).toBe('good');
    const up = lb.lb.upstreams.get('backend')!;
    expect(nf!.hits).toBe(1);
    expect(err!.hits).toBe(1);
    expect(up.find(nf!.address)!.state.passiveFails).toBe(0);
    expect(up.find(err!.address)!.state.passiveFails).toBe(1);
  });
});

describe('IPv6 on loopback', () => {
  it('listens on [::1], proxies to an [::1] backend, and reports the client as ::1', async () => {
    const v6 = http.createServer((req, res) => {
      req.resume();
      const body = JSON.stringify({ xff: req.headers['x-forwarded-for'], realIp: req.headers['x-real-ip'] });
      res.writeHead(200, { 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    });
    await new Promise<void>((resolve) => v6.listen(0, '::1', resolve));
    cleanup.push(() => new Promise<void>((resolve) => { v6.close(() => resolve()); v6.closeAllConnections(); }));
    const port = await freePort('::1');
    await lbWith({
      servers: [{ listen: [`[::1]:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: `[::1]:${(v6.address() as net.AddressInfo).port}` }] } },
    });
    const r = await request(`http://[::1]:${port}/`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ xff: '::1', realIp: '::1' });
  });
});

describe('read timeout vs back-pressure', () => {
  const TOTAL = 16 * 1024 * 1024;

  it('a client slower than timeouts.read still gets the whole body (the upstream is not timed out while paused)', async () => {
    const chunk = Buffer.alloc(64 * 1024, 97);
    const [big] = await backends(['big'], (req, res) => {
      req.resume();
      res.writeHead(200, { 'Content-Length': String(TOTAL) });
      let left = TOTAL;
      const pump = (): void => {
        while (left > 0) {
          left -= chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: big!.address }], timeouts: { read: '300ms' } } } });
    const received = await new Promise<number>((resolve, reject) => {
      http.get(lb.url + '/', { agent: false }, (res) => {
        let n = 0;
        let paused = false;
        res.on('data', (d: Buffer) => {
          n += d.length;
          if (!paused && n > 1024 * 1024) {
            paused = true;
            res.pause();
            setTimeout(() => res.resume(), 900); // three read timeouts without reading
          }
        });
        res.on('end', () => resolve(n));
        res.on('error', reject);
      }).on('error', reject);
    });
    expect(received).toBe(TOTAL);
  });

  it('a client that stops reading is disconnected after sendTimeout, and the upstream request is stopped (not a failure)', async () => {
    const chunk = Buffer.alloc(64 * 1024, 97);
    let upstreamClosedAt = 0;
    const [big] = await backends(['big'], (req, res) => {
      req.resume();
      res.writeHead(200, { 'Content-Length': String(64 * TOTAL) });
      res.on('close', () => { upstreamClosedAt = Date.now(); });
      const pump = (): void => {
        while (!res.destroyed && res.write(chunk)) { /* until back-pressure */ }
        if (!res.destroyed) res.once('drain', pump);
      };
      pump();
    });
    const lb = await lbWith({ sendTimeout: '500ms', upstreams: { backend: { servers: [{ address: big!.address }], timeouts: { read: '300ms' } } } });
    let pausedAt = 0;
    const client = http.get(lb.url + '/', { agent: false }, (res) => {
      res.once('data', () => { res.pause(); pausedAt = Date.now(); }); // and never read again
      res.on('error', () => undefined);
    });
    client.on('error', () => undefined);
    cleanup.push(async () => { client.destroy(); });
    // (The client itself may not notice: its kernel still holds unread data. The proxy lets go.)
    for (let i = 0; i < 250 && upstreamClosedAt === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(upstreamClosedAt).toBeGreaterThan(0);
    expect(upstreamClosedAt - pausedAt).toBeGreaterThanOrEqual(400);
    const peer = lb.lb.upstreams.get('backend')!.find(big!.address)!;
    expect(peer.state.passiveFails).toBe(0);
    expect(peer.active).toBe(0);
  });

  it('an upstream that stalls mid-body is cut after timeouts.read, and so is the client connection', async () => {
    const [stall] = await backends(['stall'], (req, res) => {
      req.resume();
      res.writeHead(200, { 'Content-Length': '1000' });
      res.write('x'.repeat(100)); // then nothing
    });
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: stall!.address }], timeouts: { read: '300ms' } } } });
    const t0 = Date.now();
    const outcome = await new Promise<string>((resolve) => {
      http.get(lb.url + '/', { agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve('end'));
        res.on('error', () => resolve('error'));
        res.on('aborted', () => resolve('aborted'));
      }).on('error', () => resolve('error'));
    });
    expect(outcome).not.toBe('end');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});
