/**
 * Issue 2: header rules between client and upstream, server_name and location
 * matching, proxy_pass URI rewriting — through a real sessionlb and real backends.
 */
import http from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { freePort, startBackend, type Backend } from './helpers/net.js';
import { useScope } from './helpers/scope.js';

const { cleanup, lb: lbWith } = useScope();

interface Echo {
  backend: string;
  url: string;
  rawHeaders: string[];
  headers: http.IncomingHttpHeaders;
}

/** A backend that answers with what it received, as JSON. */
async function echoBackend(name: string, responseHeaders: string[] = []): Promise<Backend> {
  const b = await startBackend(name, (req, res) => {
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ backend: name, url: req.url ?? '', rawHeaders: req.rawHeaders, headers: req.headers } satisfies Echo);
      res.writeHead(200, ['Content-Type', 'application/json', 'Content-Length', String(Buffer.byteLength(body)), ...responseHeaders]);
      res.end(body);
    });
  });
  cleanup.push(() => b.close());
  return b;
}


/** GET with exactly these raw headers (no Host unless given); resolves with the response and the parsed echo. */
function get(port: number, path: string, headers: [string, string][]): Promise<{ status: number; rawHeaders: string[]; headers: http.IncomingHttpHeaders; echo: Echo | null }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent: false, setHost: false, headers: headers.flat() });
    req.on('response', (res) => {
      let text = '';
      res.on('data', (d: Buffer) => { text += d.toString(); });
      res.on('end', () => {
        let echo: Echo | null = null;
        try { echo = JSON.parse(text) as Echo; } catch { /* not an echo (error page) */ }
        resolve({ status: res.statusCode ?? 0, rawHeaders: res.rawHeaders, headers: res.headers, echo });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** Sends exact request bytes (anything node's client refuses to send) and reads until the server closes. */
function rawExchange(port: number, text: string): Promise<{ head: string; body: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(text));
    let data = '';
    s.on('data', (d: Buffer) => { data += d.toString(); });
    s.on('end', () => {
      const at = data.indexOf('\r\n\r\n');
      resolve({ head: data.slice(0, at), body: data.slice(at + 4) });
    });
    s.on('error', reject);
  });
}

const names = (raw: string[]): string[] => raw.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());

describe('request headers to the upstream', () => {
  it('keeps Host, appends X-Forwarded-For, sets X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host, strips hop-by-hop', async () => {
    const b = await echoBackend('a');
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: b.address }] } } });
    const request = [
      'GET /p?q=1 HTTP/1.1',
      'Host: www.example.com',
      'X-Forwarded-For: 203.0.113.7',
      'X-Real-IP: 198.51.100.1',
      'X-Forwarded-Proto: https',
      'X-Forwarded-Host: spoofed.example',
      'Connection: close, X-Hop',
      'X-Hop: secret',
      'Keep-Alive: timeout=5',
      'TE: trailers',
      'Trailer: X-Checksum',
      'Proxy-Authorization: Basic Zm9vOmJhcg==',
      'Proxy-Connection: keep-alive',
      'Upgrade: h2c',
      'X-Custom: kept',
      'Cookie: PHPSESSID=abc',
    ].join('\r\n') + '\r\n\r\n';
    const raw = await rawExchange(lb.port, request);
    expect(raw.head).toMatch(/^HTTP\/1\.1 200 /);
    const r = { echo: JSON.parse(raw.body) as Echo };
    const h = r.echo!.headers;
    expect(r.echo!.url).toBe('/p?q=1');
    expect(h.host).toBe('www.example.com');
    expect(h['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
    expect(h['x-real-ip']).toBe('127.0.0.1');
    expect(h['x-forwarded-proto']).toBe('http');
    expect(h['x-forwarded-host']).toBe('www.example.com');
    expect(h['x-custom']).toBe('kept');
    expect(h.cookie).toBe('PHPSESSID=abc');
    const sent = names(r.echo!.rawHeaders);
    for (const hop of ['x-hop', 'keep-alive', 'te', 'trailer', 'proxy-authorization', 'proxy-connection', 'upgrade']) {
      expect(sent, hop).not.toContain(hop);
    }
    // Exactly one of each header we set.
    for (const own of ['x-forwarded-for', 'x-real-ip', 'x-forwarded-proto', 'x-forwarded-host', 'host']) {
      expect(sent.filter((n) => n === own), own).toHaveLength(1);
    }
  });

  it('answers Expect: 100-continue itself and does not pass Expect upstream', async () => {
    const b = await echoBackend('a');
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: b.address }] } } });
    const echo = await new Promise<Echo>((resolve, reject) => {
      const req = http.request(`${lb.url}/up`, { method: 'POST', agent: false, headers: { Expect: '100-continue', 'Content-Length': '5' } });
      req.on('continue', () => req.end('hello'));
      req.on('response', (res) => {
        let text = '';
        res.on('data', (d: Buffer) => { text += d.toString(); });
        res.on('end', () => resolve(JSON.parse(text) as Echo));
      });
      req.on('error', reject);
    });
    expect(echo.headers.expect).toBeUndefined();
    expect(echo.headers['content-length']).toBe('5');
  });

  it('several X-Forwarded-For lines are joined, then the client is appended', async () => {
    const b = await echoBackend('a');
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: b.address }] } } });
    const r = await get(lb.port, '/', [['Host', 'x'], ['X-Forwarded-For', '10.0.0.1'], ['X-Forwarded-For', '10.0.0.2, 10.0.0.3']]);
    expect(r.echo!.headers['x-forwarded-for']).toBe('10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1');
  });

  it('proxySetHeader overrides (Host too), adds, and removes with ""', async () => {
    const b = await echoBackend('a');
    const lb = await lbWith({
      upstreams: { backend: { servers: [{ address: b.address }] } },
      servers: [{
        listen: [`127.0.0.1:${await freePort()}`],
        locations: [{
          path: '/',
          proxyPass: 'http://backend',
          proxySetHeader: { Host: 'app.internal', 'X-Forwarded-Proto': 'https', 'X-Added': 'yes', 'X-Remove-Me': '', 'X-Real-IP': '' },
        }],
      }],
    });
    const port = [...lb.lb.addresses().values()][0]!;
    const r = await get(port, '/', [['Host', 'www.example.com'], ['X-Remove-Me', 'no'], ['X-Other', 'o']]);
    const h = r.echo!.headers;
    expect(h.host).toBe('app.internal');
    expect(h['x-forwarded-proto']).toBe('https');
    expect(h['x-added']).toBe('yes');
    expect(h['x-remove-me']).toBeUndefined();
    expect(h['x-real-ip']).toBeUndefined();
    expect(h['x-other']).toBe('o');
    expect(h['x-forwarded-host']).toBe('www.example.com');
    expect(names(r.echo!.rawHeaders).filter((n) => n === 'host')).toHaveLength(1);
    expect(names(r.echo!.rawHeaders).filter((n) => n === 'x-forwarded-proto')).toHaveLength(1);
  });
});

describe('response headers to the client', () => {
  it('strips hop-by-hop headers (and those named in Connection) from the response', async () => {
    const b = await echoBackend('a', [
      'Connection', 'X-Resp-Hop', 'X-Resp-Hop', 'secret', 'Keep-Alive', 'timeout=5, max=77',
      'Proxy-Authenticate', 'Basic', 'Upgrade', 'h2c', 'X-Kept', 'yes', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2',
    ]);
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: b.address }] } } });
    const r = await get(lb.port, '/', [['Host', 'x']]);
    expect(r.status).toBe(200);
    expect(r.headers['x-resp-hop']).toBeUndefined();
    expect(r.headers['proxy-authenticate']).toBeUndefined();
    expect(r.headers.upgrade).toBeUndefined();
    expect(String(r.headers['keep-alive'] ?? '')).not.toContain('max=77');
    expect(r.headers['x-kept']).toBe('yes');
    expect(r.headers['set-cookie']).toEqual(['a=1', 'b=2']);
  });
});

describe('server_name matching (nginx order)', () => {
  it('exact, longest *.suffix, .suffix (with the bare name), prefix.*, then the default server', async () => {
    const bs: Record<string, Backend> = {};
    for (const n of ['exact', 'wild', 'deeper', 'dot', 'tail', 'dflt', 'first']) bs[n] = await echoBackend(n);
    const port = await freePort();
    const listen = [`127.0.0.1:${port}`];
    const to = (n: string) => [{ path: '/', proxyPass: `http://${bs[n]!.address}` }];
    const lb = await lbWith({
      servers: [
        { listen, serverName: ['first.test'], locations: to('first') },
        { listen, serverName: ['www.example.com'], locations: to('exact') },
        { listen, serverName: ['*.example.com'], locations: to('wild') },
        { listen, serverName: ['*.api.example.com'], locations: to('deeper') },
        { listen, serverName: ['.example.org'], locations: to('dot') },
        { listen, serverName: ['www.example.*'], locations: to('tail') },
        { listen, serverName: ['default.test'], default: true, locations: to('dflt') },
      ],
    });
    const via = async (host: string | null): Promise<string> =>
      (await get(port, '/', host === null ? [] : [['Host', host]])).echo?.backend ?? 'none';
    expect(await via('www.example.com')).toBe('exact');
    expect(await via('WWW.Example.COM:8080')).toBe('exact');
    expect(await via('www.example.com.')).toBe('exact');
    expect(await via('shop.example.com')).toBe('wild');
    expect(await via('v1.api.example.com')).toBe('deeper');
    expect(await via('example.com')).toBe('dflt'); // "*.example.com" does not match the bare name
    expect(await via('example.org')).toBe('dot');
    expect(await via('a.b.example.org')).toBe('dot');
    expect(await via('www.example.net')).toBe('tail');
    expect(await via('first.test')).toBe('first');
    expect(await via('unknown.test')).toBe('dflt');
    // HTTP/1.0 without Host goes to the default server (HTTP/1.1 without Host is a 400, as in nginx).
    const noHost = await rawExchange(port, 'GET / HTTP/1.0\r\n\r\n');
    expect((JSON.parse(noHost.body) as Echo).backend).toBe('dflt');
    // ...and the upstream still gets a Host (nginx's default $proxy_host: the proxyPass host:port).
    expect((JSON.parse(noHost.body) as Echo).headers.host).toBe(bs.dflt!.address);
    expect((await rawExchange(port, 'GET / HTTP/1.1\r\nConnection: close\r\n\r\n')).head).toMatch(/^HTTP\/1\.1 400 /);
    expect(lb.port).toBeGreaterThan(0);
  });

  it('without "default": true the first server of a listen address is its default', async () => {
    const a = await echoBackend('a');
    const b = await echoBackend('b');
    const port = await freePort();
    const listen = [`127.0.0.1:${port}`];
    await lbWith({
      servers: [
        { listen, serverName: ['a.test'], locations: [{ path: '/', proxyPass: `http://${a.address}` }] },
        { listen, serverName: ['b.test'], locations: [{ path: '/', proxyPass: `http://${b.address}` }] },
      ],
    });
    expect((await get(port, '/', [['Host', 'b.test']])).echo!.backend).toBe('b');
    expect((await get(port, '/', [['Host', 'zzz.test']])).echo!.backend).toBe('a');
  });

  it('"default_server" on one listen entry makes the server default on that address only (nginx)', async () => {
    const a = await echoBackend('a');
    const b = await echoBackend('b');
    const p1 = await freePort();
    const p2 = await freePort();
    await lbWith({
      servers: [
        { listen: [`127.0.0.1:${p1}`, `127.0.0.1:${p2}`], serverName: ['a.test'], locations: [{ path: '/', proxyPass: `http://${a.address}` }] },
        { listen: [`127.0.0.1:${p1}`, `127.0.0.1:${p2} default_server`], serverName: ['b.test'], locations: [{ path: '/', proxyPass: `http://${b.address}` }] },
      ],
    });
    expect((await get(p1, '/', [['Host', 'zzz.test']])).echo!.backend).toBe('a'); // the first server
    expect((await get(p2, '/', [['Host', 'zzz.test']])).echo!.backend).toBe('b'); // default_server here
  });
});

describe('location matching and proxyPass URI', () => {
  it('exact beats prefix, the longest prefix wins, a proxyPass URI replaces the matched prefix', async () => {
    const bs: Record<string, Backend> = {};
    for (const n of ['exact', 'root', 'api', 'v2', 'rw', 'rwexact']) bs[n] = await echoBackend(n);
    const port = await freePort();
    await lbWith({
      servers: [{
        listen: [`127.0.0.1:${port}`],
        locations: [
          { path: '/', proxyPass: `http://${bs.root!.address}` },
          { path: '/login', exact: true, proxyPass: `http://${bs.exact!.address}` },
          { path: '/api/', proxyPass: `http://${bs.api!.address}` },
          { path: '/api/v2/', proxyPass: `http://${bs.v2!.address}` },
          { path: '/old/', proxyPass: `http://${bs.rw!.address}/new/` },
          { path: '/status', exact: true, proxyPass: `http://${bs.rwexact!.address}/healthz` },
        ],
      }],
    });
    const to = async (path: string): Promise<string> => {
      const e = (await get(port, path, [['Host', 'x']])).echo!;
      return `${e.backend} ${e.url}`;
    };
    expect(await to('/login')).toBe('exact /login');
    expect(await to('/login?next=/')).toBe('exact /login?next=/');
    expect(await to('/login/more')).toBe('root /login/more');
    expect(await to('/api/users')).toBe('api /api/users');
    expect(await to('/api/v2/users?x=1')).toBe('v2 /api/v2/users?x=1');
    // "/api/v2/" is not a prefix of "/api/v2": nginx's auto_redirect answers 301 to "/api/v2/" (issue 17).
    const slash = await get(port, '/api/v2?x=1', [['Host', 'x']]);
    expect([slash.status, slash.headers.location]).toEqual([301, `http://x:${port}/api/v2/?x=1`]);
    expect(await to('/old/page?id=3')).toBe('rw /new/page?id=3');
    expect(await to('/status?verbose=1')).toBe('rwexact /healthz?verbose=1');
    expect(await to('/anything')).toBe('root /anything');
    // Matching uses the normalised path; the request goes upstream as sent.
    expect(await to('/x/../api/users')).toBe('api /x/../api/users');
    // With a proxyPass URI the replacement is made in the normalised path (nginx too).
    expect(await to('/x/../old/a%20b?q=1')).toBe('rw /new/a%20b?q=1');
    expect(await to('/old/a%20b')).toBe('rw /new/a%20b');
    // An absolute-form target goes upstream in origin-form, as nginx sends it.
    const abs = await rawExchange(port, 'GET http://www.example.com/api/v2/abs?x=1 HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n');
    expect(JSON.parse(abs.body)).toMatchObject({ backend: 'v2', url: '/api/v2/abs?x=1' });
    const absRw = await rawExchange(port, 'GET http://www.example.com/old/p HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n');
    expect(JSON.parse(absRw.body)).toMatchObject({ backend: 'rw', url: '/new/p' });
  });
});
