/**
 * Issue 14's defects, each with the exact bytes or steps that showed it: real backends (raw
 * sockets where the defect is in framing or connection handling) and sessionlb in-process.
 */
import http from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { freePort, request } from './helpers/net.js';
import { useScope } from './helpers/scope.js';

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

