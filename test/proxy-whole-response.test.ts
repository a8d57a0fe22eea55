/**
 * Small responses whose whole body came with the head leave in one write
 * (src/proxy/http/whole-response.ts, which relies on ServerResponse fields node does not document).
 * What a user relies on: the bytes on the wire are a correct HTTP/1.1 response in every case
 * (keep-alive, pipelining, HEAD, 204/304, chunked upstream framing, HTTP/1.0 clients), and on the
 * node in use the single-write path is really taken (so a node upgrade that changes those fields
 * shows up here as a failure instead of a silent slow-down).
 */
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { wholeResponseStats } from '../src/proxy/http/whole-response.js';
import { startBackend, startLB, type Backend, type RunningLB } from './helpers/net.js';

let backend: Backend;
let lb: RunningLB;

beforeAll(async () => {
  backend = await startBackend('b', (req, res) => {
    req.resume();
    const u = new URL(req.url ?? '/', 'http://x');
    const status = Number(u.searchParams.get('status') ?? 200);
    if (u.pathname === '/chunked') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }); // no length: node frames it chunked
      res.end(`chunked ${u.search}`);
      return;
    }
    // Bytes 0-255 in the body: the single write sends it as latin1 text, which must be lossless.
    const body = u.pathname === '/binary' ? Buffer.from(Array.from({ length: 256 }, (_, i) => i)) : Buffer.from(`body of ${req.url}`);
    if (status === 204 || status === 304) {
      res.writeHead(status, { 'X-Seen': req.url ?? '' });
      res.end();
      return;
    }
    res.writeHead(status, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length, 'X-Seen': req.url ?? '' });
    res.end(body);
  });
  lb = await startLB({ upstreams: { backend: { servers: [{ address: backend.address }] } } });
});

afterAll(async () => {
  await lb.stop();
  await backend.close();
});

/** Sends `raw` on one connection and collects everything until the server closes or `settle` ms of silence. */
function exchange(raw: string, settle = 300): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(lb.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout | null = null;
    const done = (): void => {
      if (timer !== null) clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks));
    };
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      if (timer !== null) clearTimeout(timer);
      timer = setTimeout(done, settle);
    });
    socket.on('end', done);
    socket.on('error', reject);
    socket.write(raw);
  });
}

/** Splits a byte stream of HTTP/1.1 responses (Content-Length or chunked framing) into [head, body] pairs. */
function parseResponses(data: Buffer, heads: string[]): Array<{ head: string; body: Buffer }> {
  const out: Array<{ head: string; body: Buffer }> = [];
  let at = 0;
  for (const method of heads) {
    const end = data.indexOf('\r\n\r\n', at);
    expect(end).toBeGreaterThan(-1);
    const head = data.subarray(at, end).toString('latin1');
    at = end + 4;
    const status = Number(head.split(' ')[1]);
    const length = /\r\ncontent-length: (\d+)/i.exec(head);
    let body: Buffer = Buffer.alloc(0);
    if (method === 'HEAD' || status === 204 || status === 304) {
      // no body
    } else if (length !== null) {
      body = data.subarray(at, at + Number(length[1]));
      at += body.length;
    } else {
      expect(head).toMatch(/\r\ntransfer-encoding: chunked/i);
      const parts: Buffer[] = [];
      for (;;) {
        const lineEnd = data.indexOf('\r\n', at);
        const size = parseInt(data.subarray(at, lineEnd).toString('latin1'), 16);
        at = lineEnd + 2;
        if (size === 0) { at += 2; break; }
        parts.push(data.subarray(at, at + size));
        at += size + 2;
      }
      body = Buffer.concat(parts);
    }
    out.push({ head, body });
  }
  expect(at).toBe(data.length); // nothing extra, nothing missing
  return out;
}

describe('a whole small response in one write', () => {
  it('is the path taken on this node for plain keep-alive responses, and the bytes are exact', async () => {
    const before = wholeResponseStats.single;
    const data = await exchange('GET /binary HTTP/1.1\r\nHost: x\r\n\r\n');
    const [r] = parseResponses(data, ['GET']);
    expect(r!.head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(r!.head).toMatch(/\r\nContent-Length: 256(\r\n|$)/);
    expect(r!.head).toMatch(/\r\nConnection: keep-alive/);
    expect(r!.body.equals(Buffer.from(Array.from({ length: 256 }, (_, i) => i)))).toBe(true);
    expect(wholeResponseStats.single).toBe(before + 1);
  });

  it('pipelined requests get their responses in order, each complete (HEAD, 204, 304, chunked included)', async () => {
    const requests: Array<[string, string]> = [
      ['GET', '/a'], ['HEAD', '/b'], ['GET', '/c?status=204'], ['GET', '/d?status=304'], ['GET', '/chunked?e'],
      ['GET', '/f?status=404'], ['GET', '/binary'], ['GET', '/g'],
    ];
    const raw = requests.map(([m, p]) => `${m} ${p} HTTP/1.1\r\nHost: x\r\n\r\n`).join('');
    const data = await exchange(raw);
    const responses = parseResponses(data, requests.map(([m]) => m));
    expect(responses.map((r) => Number(r.head.split(' ')[1]))).toEqual([200, 200, 204, 304, 200, 404, 200, 200]);
    expect(responses[0]!.body.toString()).toBe('body of /a');
    expect(responses[1]!.head).toMatch(/\r\nContent-Length: 10/); // HEAD: the length of the GET body, no body
    expect(responses[4]!.body.toString()).toBe('chunked ?e');
    expect(responses[5]!.body.toString()).toBe('body of /f?status=404');
    expect(responses[6]!.body.length).toBe(256);
    expect(responses[7]!.body.toString()).toBe('body of /g');
    for (const [i, r] of responses.entries()) expect(r.head, `response ${i}`).toMatch(/^HTTP\/1\.1 \d{3} [^\r\n]*\r\n/);
  });

  it('a chunked upstream body that came whole is sent with Content-Length in one write; HEAD gets no invented length', async () => {
    const before = wholeResponseStats.single;
    const [r] = parseResponses(await exchange('GET /chunked?x HTTP/1.1\r\nHost: x\r\n\r\n'), ['GET']);
    expect(r!.head).toMatch(/\r\nContent-Length: 10(\r\n|$)/i); // "chunked ?x"
    expect(r!.head).not.toMatch(/transfer-encoding/i);
    expect(r!.body.toString()).toBe('chunked ?x');
    expect(wholeResponseStats.single).toBe(before + 1);
    // HEAD: the upstream answers with chunked framing and no body; a Content-Length of 0 would be a lie about the GET.
    const [h] = parseResponses(await exchange('HEAD /chunked?x HTTP/1.1\r\nHost: x\r\n\r\n'), ['HEAD']);
    expect(h!.head).toMatch(/^HTTP\/1\.1 200 /);
    expect(h!.head).not.toMatch(/content-length/i);
  });

  it('an HTTP/1.0 client gets Connection: close and the connection ends after the body', async () => {
    const data = await exchange('GET /h HTTP/1.0\r\n\r\n', 5000);
    const [r] = parseResponses(data, ['GET']);
    expect(r!.head).toMatch(/\r\nConnection: close/i);
    expect(r!.body.toString()).toBe('body of /h');
  });

  it('keep-alive clients (node http.Agent) reuse the connection across many responses', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<net.Socket>();
    for (let i = 0; i < 50; i++) {
      const body = await new Promise<string>((resolve, reject) => {
        http.get(`${lb.url}/k${i}`, { agent }, (res) => {
          sockets.add(res.socket as net.Socket);
          let text = '';
          res.setEncoding('latin1').on('data', (d: string) => { text += d; }).on('end', () => resolve(text));
        }).on('error', reject);
      });
      expect(body).toBe(`body of /k${i}`);
    }
    agent.destroy();
    expect(sockets.size).toBe(1);
  });
});
