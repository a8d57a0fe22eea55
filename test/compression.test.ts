/**
 * Response compression (nginx gzip, ngx_brotli): which responses are compressed, the coding chosen
 * from Accept-Encoding q-values, header changes, a large body streamed through zlib to a slow
 * client, and a round trip with curl --compressed.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { promisify } from 'node:util';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { acceptQ, chooseCoding } from '../src/proxy/http/compression.js';
import { useScope } from './helpers/scope.js';
import { loadConfig } from '../src/config/load.js';
import { NGINX, startNginx } from './helpers/nginx.js';
import { freePort } from './helpers/net.js';

const scope = useScope();
const { backend, lb: lbWith } = scope;

const HTML = Buffer.from('<!doctype html><title>t</title>' + '<p>hello compression</p>\n'.repeat(200));
const MiB = 1024 * 1024;
const BIG = Buffer.from(randomBytes(3 * MiB).toString('hex').slice(0, 5 * MiB)); // compresses to about half

const handler: Parameters<typeof backend>[1] = (req, res) => {
  const url = req.url ?? '/';
  const html = { 'Content-Type': 'text/html; charset=utf-8' };
  switch (url) {
    case '/html': res.writeHead(200, { ...html, ETag: '"abc"', 'Accept-Ranges': 'bytes' }); res.end(HTML); return;
    case '/chunked': res.writeHead(200, html); res.write(HTML.subarray(0, 100)); setTimeout(() => res.end(HTML.subarray(100)), 20); return;
    case '/css': res.writeHead(200, { 'Content-Type': 'text/css' }); res.end(HTML); return;
    case '/png': res.writeHead(200, { 'Content-Type': 'image/png' }); res.end(HTML); return;
    case '/204': res.writeHead(204, html); res.end(); return;
    case '/304': res.writeHead(304, { ...html, ETag: '"abc"' }); res.end(); return;
    case '/206': res.writeHead(206, { ...html, 'Content-Range': `bytes 0-${HTML.length - 1}/${HTML.length}` }); res.end(HTML); return;
    case '/500': res.writeHead(500, html); res.end(HTML); return;
    case '/no-transform': res.writeHead(200, { ...html, 'Cache-Control': 'no-transform' }); res.end(HTML); return;
    case '/encoded': res.writeHead(200, { ...html, 'Content-Encoding': 'gzip' }); res.end(HTML); return;
    case '/tiny': res.writeHead(200, { ...html, 'Content-Length': 9 }); res.end('<p>hi</p>'); return;
    case '/tiny-chunked': res.writeHead(200, html); res.end('<p>hi</p>'); return;
    case '/private': res.writeHead(200, { ...html, 'Cache-Control': 'private' }); res.end(HTML); return;
    case '/big': {
      res.writeHead(200, { 'Content-Type': 'text/html', 'Content-Length': BIG.length });
      let at = 0;
      const more = (): void => {
        while (at < BIG.length) {
          const chunk = BIG.subarray(at, at + 64 * 1024);
          at += chunk.length;
          if (!res.write(chunk)) { res.once('drain', more); return; }
        }
        res.end();
      };
      more();
      return;
    }
    default: res.writeHead(404); res.end();
  }
};

interface Got { status: number; headers: http.IncomingHttpHeaders; body: Buffer }
function get(url: string, headers: Record<string, string>, method = 'GET', slow = false): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        if (slow) { res.pause(); setTimeout(() => res.resume(), 2); }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}
function decode(r: Got): Buffer {
  const ce = r.headers['content-encoding'];
  return ce === 'gzip' ? gunzipSync(r.body) : ce === 'br' ? brotliDecompressSync(r.body) : r.body;
}

async function start(extra: Record<string, unknown> = {}): Promise<string> {
  const b = await backend('a', handler);
  const lb = await lbWith({ upstreams: { backend: { servers: [{ address: b.address }] } }, gzip: true, brotli: true, gzipTypes: ['text/css'], gzipVary: true, ...extra });
  return lb.url;
}

describe('Accept-Encoding q-values', () => {
  it.each([
    ['gzip, deflate, br', true, true, 'br'],
    ['gzip, deflate', true, true, 'gzip'],
    ['br;q=0.5, gzip', true, true, 'gzip'],
    ['br;q=1, gzip;q=1', true, true, 'br'],
    ['br', false, true, 'br'],
    ['br', true, false, null],
    ['br, gzip', true, false, 'gzip'],
    ['gzip;q=0', true, true, null],
    ['*', true, true, 'br'],
    ['*;q=0.3, gzip;q=0.5', true, true, 'gzip'],
    ['*, br;q=0', true, true, 'gzip'],
    ['identity', true, true, null],
    ['identity;q=0', true, true, null],
    ['GZIP;Q=0.8', true, true, 'gzip'],
    ['x-gzip', true, true, 'gzip'],
    ['gzip;q=2', true, true, null],
    ['', true, true, null],
  ] as const)('%j (gzip %s, brotli %s) -> %s', (header, gzip, brotli, expected) => {
    expect(chooseCoding(header, gzip, brotli)).toBe(expected);
  });
  it('q of a coding: its own entry before "*"', () => {
    expect(acceptQ('*;q=0.1, gzip;q=0.7', 'gzip')).toBe(0.7);
    expect(acceptQ('deflate', 'gzip')).toBe(0);
  });
});

describe('compression (gzip, brotli)', () => {
  it('HTML is compressed with br when offered, gzip otherwise; ETag weak, no Content-Length for streamed bodies, Vary set', async () => {
    const url = await start();
    const br = await get(url + '/html', { 'Accept-Encoding': 'gzip, br' });
    expect(br.headers['content-encoding']).toBe('br');
    expect(decode(br)).toEqual(HTML);
    expect(br.headers.etag).toBe('W/"abc"');
    expect(br.headers.vary).toBe('Accept-Encoding');
    expect(br.headers['accept-ranges']).toBeUndefined();
    expect(Number(br.headers['content-length'])).toBe(br.body.length); // a whole small body: compressed in one go
    const gz = await get(url + '/html', { 'Accept-Encoding': 'gzip' });
    expect(gz.headers['content-encoding']).toBe('gzip');
    expect(decode(gz)).toEqual(HTML);
    const chunked = await get(url + '/chunked', { 'Accept-Encoding': 'gzip' });
    expect(chunked.headers['content-encoding']).toBe('gzip');
    expect(decode(chunked)).toEqual(HTML);
    const none = await get(url + '/html', {});
    expect(none.headers['content-encoding']).toBeUndefined();
    expect(none.headers.vary).toBe('Accept-Encoding');
    expect(none.body).toEqual(HTML);
    const css = await get(url + '/css', { 'Accept-Encoding': 'br, gzip' });
    expect(css.headers['content-encoding']).toBe('gzip'); // listed in gzipTypes only
  });

  it.each([
    ['/png', 'GET', 'a type not listed'],
    ['/html', 'HEAD', 'HEAD'],
    ['/204', 'GET', '204'],
    ['/304', 'GET', '304'],
    ['/206', 'GET', 'a range'],
    ['/500', 'GET', 'a status nginx does not compress'],
    ['/no-transform', 'GET', 'Cache-Control: no-transform'],
    ['/encoded', 'GET', 'an encoded response'],
    ['/tiny', 'GET', 'below gzipMinLength'],
  ])('%s (%s) is not compressed: %s', async (path, method) => {
    const url = await start();
    const r = await get(url + path, { 'Accept-Encoding': 'gzip, br' }, method);
    if (path === '/encoded') expect(r.headers['content-encoding']).toBe('gzip');
    else expect(r.headers['content-encoding']).toBeUndefined();
  });

  it('gzipProxied as nginx: off by default for requests with Via; "private" allows Cache-Control: private (and responses with no Cache-Control/Expires); "no_etag" refuses an ETag; "any" allows all', async () => {
    let url = await start();
    expect((await get(url + '/html', { 'Accept-Encoding': 'gzip', Via: '1.1 cdn' })).headers['content-encoding']).toBeUndefined();
    url = await start({ gzipProxied: ['no_etag'] });
    expect((await get(url + '/html', { 'Accept-Encoding': 'gzip', Via: '1.1 cdn' })).headers['content-encoding']).toBeUndefined();
    expect((await get(url + '/css', { 'Accept-Encoding': 'gzip', Via: '1.1 cdn' })).headers['content-encoding']).toBe('gzip');
    expect((await get(url + '/no-transform', { 'Accept-Encoding': 'gzip', Via: '1.1 cdn' })).headers['content-encoding']).toBeUndefined();
    url = await start({ gzipProxied: ['private'] });
    expect((await get(url + '/html', { 'Accept-Encoding': 'gzip', Via: '1.1 cdn' })).headers['content-encoding']).toBe('gzip');
    expect((await get(url + '/private', { 'Accept-Encoding': 'gzip', Via: '1.1 cdn' })).headers['content-encoding']).toBe('gzip');
    url = await start({ gzipProxied: 'any' });
    expect((await get(url + '/html', { 'Accept-Encoding': 'gzip', Via: '1.1 cdn' })).headers['content-encoding']).toBe('gzip');
  });

  it('location settings: nearest level wins (a location turns gzip off, another sets its level)', async () => {
    const config = await loadConfig({
      upstreams: { backend: { servers: [{ address: '127.0.0.1:1' }] } }, gzip: true, gzipTypes: ['text/css'],
      servers: [{ listen: ['127.0.0.1:8080'], gzipCompLevel: 5, locations: [
        { path: '/', proxyPass: 'http://backend' },
        { path: '/off', proxyPass: 'http://backend', gzip: false },
        { path: '/br', proxyPass: 'http://backend', brotli: true, gzipMinLength: '1k' },
      ] }],
    }, '<test>');
    const [root, off, br] = config.servers[0]!.locations;
    expect(root!.compression).toMatchObject({ gzip: { level: 5, minLength: 20 }, brotli: null, vary: false });
    expect([...root!.compression!.gzip!.types]).toEqual(['text/html', 'text/css']);
    expect(off!.compression).toBeNull();
    expect(br!.compression).toMatchObject({ gzip: { level: 5, minLength: 1024 }, brotli: { level: 6, minLength: 20 } });
  });

  it.each([false, true])('a 5 MiB streamed body to a slow client arrives whole (proxyBuffering %s)', async (buffering) => {
    const url = await start({ proxyBuffering: buffering });
    for (const ae of ['gzip', 'br']) {
      const r = await get(url + '/big', { 'Accept-Encoding': ae }, 'GET', true);
      expect(r.headers['content-encoding']).toBe(ae);
      expect(r.headers['content-length']).toBeUndefined();
      expect(r.body.length).toBeLessThan(BIG.length);
      expect(decode(r).equals(BIG)).toBe(true);
    }
  }, 60_000);

  it('curl --compressed round trip', async () => {
    const url = await start();
    const { stdout } = await promisify(execFile)('curl', ['-s', '--compressed', '-D', '-', url + '/html'], { encoding: 'buffer', maxBuffer: 10 * MiB });
    const text = stdout.toString('latin1');
    const split = text.indexOf('\r\n\r\n');
    expect(text.slice(0, split)).toMatch(/content-encoding: (br|gzip)/i);
    expect(stdout.subarray(split + 4)).toEqual(HTML);
  });
});

describe('import-nginx: gzip and brotli directives', () => {
  it('map to the keys of the same level', async () => {
    const { importNginx } = await import('../src/tools/import-nginx/import-nginx.js');
    const result = importNginx([
      'http {',
      '  upstream b { server 127.0.0.1:8080; }',
      '  gzip on; gzip_types text/css application/json; gzip_min_length 1000; gzip_comp_level 5; gzip_proxied expired no-cache auth; gzip_vary on;',
      '  gzip_disable msie6;',
      '  server { listen 80; brotli on; brotli_comp_level 4; brotli_types text/css;',
      '    location / { proxy_pass http://b; }',
      '    location /img/ { proxy_pass http://b; gzip off; brotli off; }',
      '  }',
      '}',
    ].join('\n'), 't.conf');
    const config = result.config as Record<string, unknown> & { servers: Record<string, unknown>[] };
    expect(config).toMatchObject({ gzip: true, gzipTypes: ['text/css', 'application/json'], gzipMinLength: '1000', gzipCompLevel: 5, gzipProxied: ['expired', 'no-cache', 'auth'], gzipVary: true });
    expect(config.servers[0]).toMatchObject({ brotli: true, brotliCompLevel: 4, brotliTypes: ['text/css'] });
    expect((config.servers[0]!.locations as unknown[])[1]).toMatchObject({ gzip: false, brotli: false });
    expect(result.warnings.map((w) => `${w.line}: ${w.message}`)).toContain('4: "gzip_disable" is not supported by sessionlb; ignored');
    const loaded = await loadConfig(config, '<import>');
    expect(loaded.servers[0]!.locations[0]!.compression).toMatchObject({ gzip: { level: 5, minLength: 1000 }, brotli: { level: 4 }, vary: true });
  });
});

describe.skipIf(NGINX === null && process.env.CI !== 'true')('which responses get gzip: the same as nginx', () => {
  it('a table of responses and requests', async () => {
    const { cleanup } = scope;
    const b = await backend('a', handler);
    const port = await freePort();
    const nginx = await startNginx(port, `
      server { listen 127.0.0.1:${port}; gzip on; gzip_types text/css; gzip_vary on; gzip_proxied no_etag;
        location / { proxy_pass http://${b.address}; } }`);
    cleanup.push(() => nginx.stop());
    const lb = await lbWith({ upstreams: { backend: { servers: [{ address: b.address }] } }, gzip: true, gzipTypes: ['text/css'], gzipVary: true, gzipProxied: ['no_etag'] });
    const cases: Array<[string, string, Record<string, string>]> = [];
    // Not compared: HEAD (nginx sends the head GET would get, Content-Encoding included; sessionlb leaves HEAD alone) and no-transform (nginx ignores it).
    for (const path of ['/html', '/chunked', '/css', '/png', '/204', '/304', '/206', '/500', '/encoded', '/tiny', '/tiny-chunked', '/private', '/nothing']) {
      cases.push([path, 'GET', { 'Accept-Encoding': 'gzip, deflate' }], [path, 'GET', {}],
        [path, 'GET', { 'Accept-Encoding': 'gzip', Via: '1.1 cdn' }], [path, 'GET', { 'Accept-Encoding': 'gzip;q=0, deflate' }]);
    }
    const seen = (r: Got): string => `${r.status} ${r.headers['content-encoding'] ?? '-'} vary=${r.headers.vary ?? '-'} etag=${r.headers.etag ?? '-'}`;
    const mismatches: string[] = [];
    for (const [path, method, headers] of cases) {
      const ours = seen(await get(lb.url + path, headers, method));
      const theirs = seen(await get(`http://127.0.0.1:${port}${path}`, headers, method));
      if (ours !== theirs) mismatches.push(`${method} ${path} ${JSON.stringify(headers)}: sessionlb ${ours}, nginx ${theirs}`);
    }
    expect(mismatches).toEqual([]);
  }, 60_000);
});
