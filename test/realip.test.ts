/**
 * nginx realip (src/net/real-ip.ts) without sockets: nginx's address parsing and printing
 * (ngx_parse_addr_port, ngx_sock_ntop), and the X-Forwarded-For walk of
 * ngx_http_get_forwarded_addr for trusted and untrusted peers, recursive or not, several headers,
 * garbage; X-Forwarded-Proto kept only from a trusted peer. realip-nginx.test.ts compares the
 * same cases with real nginx.
 */
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { freePort } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import { formatAddr, parseAddr, parseAddrPort, RealIp, type RealIpSettings } from '../src/net/real-ip.js';
import { requestClientAddress, requestPeerTrusted, setProxiedClient } from '../src/net/client-address.js';
import { upstreamRequestHeaders } from '../src/proxy/http/headers.js';
import { loadConfig } from '../src/config/load.js';
import { importNginx } from '../src/tools/import-nginx/import-nginx.js';
import { configProblems } from './helpers/config.js';

function resolve(settings: Partial<RealIpSettings>, peer: string, headers: string[]): { address: string; trusted: boolean } {
  const r = new RealIp({ from: ['127.0.0.1', '10.0.0.0/8'], header: 'X-Forwarded-For', recursive: false, ...settings });
  const req = { socket: { remoteAddress: peer }, rawHeaders: headers };
  r.apply(req);
  return { address: requestClientAddress(req), trusted: requestPeerTrusted(req) };
}

describe('nginx address parsing and printing', () => {
  it('parses as ngx_parse_addr_port and prints as ngx_sock_ntop', () => {
    const cases: Array<[string, string | null]> = [
      ['1.2.3.4', '1.2.3.4'], ['001.002.003.004', '1.2.3.4'], ['1.2.3.', '1.2.3.0'], ['1.2.3.256', null], ['1.2.3', null],
      ['1.2.3.4:80', '1.2.3.4'], ['1.2.3.4:0', null], ['1.2.3.4:65536', null], ['1.2.3.4:x', null],
      ['::1', '::1'], ['[::1]', '::1'], ['[::1]:443', '::1'], ['[::1]x', null], ['2001:DB8::0:1', '2001:db8::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], ['::ffff:1.2.3.4', '::ffff:1.2.3.4'], ['::1.2.3.4', '::1.2.3.4'],
      ['fe80::1%eth0', null], ['unknown', null], ['', null], ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'], ['1::2::3', null],
    ];
    for (const [text, want] of cases) {
      const a = parseAddrPort(text);
      expect(a === null ? null : formatAddr(a), text).toBe(want);
    }
    expect(parseAddr('1.2.3.4:80')).toBeNull();
  });
});

describe('the X-Forwarded-For walk (ngx_http_get_forwarded_addr)', () => {
  const XFF = 'X-Forwarded-For';
  it('an untrusted peer keeps its own address whatever it sends', () => {
    expect(resolve({}, '192.0.2.9', [XFF, '203.0.113.1'])).toEqual({ address: '192.0.2.9', trusted: false });
    expect(resolve({ recursive: true }, '::ffff:192.0.2.9', [XFF, '203.0.113.1'])).toEqual({ address: '192.0.2.9', trusted: false });
  });
  it('non-recursive: the last address of the last header', () => {
    expect(resolve({}, '127.0.0.1', [XFF, '203.0.113.1, 10.0.0.2']).address).toBe('10.0.0.2');
    expect(resolve({}, '127.0.0.1', [XFF, '203.0.113.1', XFF, '198.51.100.7, 10.1.1.1']).address).toBe('10.1.1.1');
    expect(resolve({}, '::ffff:127.0.0.1', [XFF, '203.0.113.1 ,, ']).address).toBe('203.0.113.1');
  });
  it('recursive: trusted addresses skipped from the right, across headers; all trusted: the leftmost', () => {
    expect(resolve({ recursive: true }, '127.0.0.1', [XFF, '203.0.113.1, 10.0.0.2']).address).toBe('203.0.113.1');
    expect(resolve({ recursive: true }, '127.0.0.1', [XFF, '198.51.100.1, 203.0.113.1, 10.0.0.2']).address).toBe('203.0.113.1');
    expect(resolve({ recursive: true }, '127.0.0.1', [XFF, '198.51.100.1', XFF, '10.0.0.3, 10.0.0.2']).address).toBe('198.51.100.1');
    expect(resolve({ recursive: true }, '127.0.0.1', [XFF, '10.9.9.9, 10.0.0.2']).address).toBe('10.9.9.9');
    expect(resolve({ recursive: true }, '127.0.0.1', [XFF, '203.0.113.1:4444, [2001:db8::7]:80']).address).toBe('2001:db8::7');
  });
  it('an address that does not parse keeps the last good one', () => {
    expect(resolve({}, '127.0.0.1', [XFF, 'garbage'])).toEqual({ address: '127.0.0.1', trusted: true });
    expect(resolve({ recursive: true }, '127.0.0.1', [XFF, '203.0.113.1, junk, 10.0.0.2']).address).toBe('10.0.0.2');
    expect(resolve({ recursive: true }, '127.0.0.1', [XFF, 'junk', XFF, '10.0.0.2']).address).toBe('10.0.0.2');
    expect(resolve({}, '127.0.0.1', [XFF, '']).address).toBe('127.0.0.1');
    expect(resolve({}, '127.0.0.1', []).address).toBe('127.0.0.1');
  });
  it('X-Real-IP (the default header): the first one; another header by name', () => {
    expect(resolve({ header: 'X-Real-IP' }, '127.0.0.1', ['x-real-ip', '203.0.113.5', 'X-Real-IP', '203.0.113.6']).address).toBe('203.0.113.5');
    expect(resolve({ header: 'X-Real-IP' }, '127.0.0.1', [XFF, '203.0.113.5']).address).toBe('127.0.0.1');
    expect(resolve({ header: 'CF-Connecting-IP' }, '127.0.0.1', ['cf-connecting-ip', '2001:DB8::1']).address).toBe('2001:db8::1');
  });
  it('proxy_protocol: the PROXY header\'s source only when the TCP peer is trusted', () => {
    const r = new RealIp({ from: ['127.0.0.1'], header: 'proxy_protocol', recursive: false });
    const socket = { remoteAddress: '127.0.0.1' };
    setProxiedClient(socket, { address: '203.0.113.8', port: 1, localAddress: '127.0.0.1', localPort: 2 });
    const req = { socket, rawHeaders: [] };
    r.apply(req);
    expect(requestClientAddress(req)).toBe('203.0.113.8');
    const other = { remoteAddress: '127.0.0.2' };
    setProxiedClient(other, { address: '203.0.113.8', port: 1, localAddress: '127.0.0.1', localPort: 2 });
    const req2 = { socket: other, rawHeaders: [] };
    r.apply(req2);
    expect(requestClientAddress(req2)).toBe('127.0.0.2');
  });
  it('without realIp the request reads the connection\'s address', () => {
    expect(requestClientAddress({ socket: { remoteAddress: '::ffff:192.0.2.1' } })).toBe('192.0.2.1');
    expect(requestPeerTrusted({})).toBe(false);
  });
});

describe('X-Forwarded-Proto', () => {
  const info = { remoteAddress: '203.0.113.1', scheme: 'http', bodyFraming: null, upgrade: null } as const;
  const get = (flat: string[], name: string): string[] => flat.filter((_, i) => i % 2 === 1 && flat[i - 1]!.toLowerCase() === name);
  it('kept from a trusted peer, replaced from another', () => {
    const raw = ['Host', 'x', 'X-Forwarded-Proto', 'https', 'X-Forwarded-For', '203.0.113.1'];
    expect(get(upstreamRequestHeaders(raw, { ...info, keepForwardedProto: true }, new Map()), 'x-forwarded-proto')).toEqual(['https']);
    expect(get(upstreamRequestHeaders(raw, { ...info }, new Map()), 'x-forwarded-proto')).toEqual(['http']);
    expect(get(upstreamRequestHeaders(['Host', 'x'], { ...info, keepForwardedProto: true }, new Map()), 'x-forwarded-proto')).toEqual(['http']);
  });
});

describe('realIp in the config', () => {
  const server = (extra: Record<string, unknown> = {}, listen = '127.0.0.1:8080 proxy_protocol') => ({
    listen: [listen], locations: [{ path: '/', proxyPass: 'http://127.0.0.1:9000' }], ...extra,
  });
  const problems = (raw: Record<string, unknown>): Promise<string[]> => configProblems(raw, '<test>');
  it('nearest wins, with nginx defaults; "proxy_protocol" with from stands in for proxyProtocolFrom', async () => {
    const c = await loadConfig({
      realIp: { from: ['10.0.0.0/8'], header: 'proxy_protocol' },
      servers: [server(), server({ realIp: { from: ['192.0.2.0/24'] } }, '127.0.0.1:8081')],
    }, '<test>');
    expect(c.servers[0]!.realIp).toEqual({ from: ['10.0.0.0/8'], header: 'proxy_protocol', recursive: false });
    expect(c.servers[0]!.proxyProtocolFrom).toEqual(['10.0.0.0/8']);
    expect(c.servers[1]!.realIp).toEqual({ from: ['192.0.2.0/24'], header: 'X-Real-IP', recursive: false });
  });
  it('check: proxy_protocol still needs a list; realIp CIDRs are checked', async () => {
    expect((await problems({ servers: [server({ realIp: { from: ['10.0.0.0/8'], header: 'X-Forwarded-For' } })] })).join('\n'))
      .toMatch(/servers\[0\]\.listen\[0\].*proxyProtocolFrom.*realIp/);
    expect(await problems({ servers: [server({ realIp: { from: ['10.0.0.0/8'], header: 'proxy_protocol' } })] })).toEqual([]);
    expect(await problems({ proxyProtocolFrom: ['10.0.0.0/8'], servers: [server()] })).toEqual([]);
    expect((await problems({ realIp: { from: ['10.0.0.0/33'] }, servers: [server({}, '127.0.0.1:8080')] })).join('\n')).toMatch(/realIp\.from\[0\]/);
    expect((await problems({ realIp: { from: [] }, servers: [server({}, '127.0.0.1:8080')] })).join('\n')).toMatch(/realIp\.from/);
  });
});

describe('import-nginx: set_real_ip_from, real_ip_header, real_ip_recursive', () => {
  it('become realIp at the level they are written, merged per directive as nginx inherits them', async () => {
    const r = importNginx(`http {
  set_real_ip_from 10.0.0.0/8;
  set_real_ip_from 192.0.2.1;
  real_ip_header X-Forwarded-For;
  upstream b { server 127.0.0.1:9000; }
  server { listen 8080; location / { proxy_pass http://b; } }
  server { listen 8081; real_ip_recursive on; location / { proxy_pass http://b; } }
  server {
    listen 8082 proxy_protocol;
    set_real_ip_from 127.0.0.1;
    real_ip_header proxy_protocol;
    location / { proxy_pass http://b; real_ip_header X-Real-IP; }
  }
  server { listen 8083 proxy_protocol; location / { proxy_pass http://b; } }
}`, 'r.conf');
    expect(r.errors).toEqual([]);
    const c = r.config as { realIp?: unknown; servers: Array<{ listen: string[]; realIp?: unknown }> };
    expect(c.realIp).toEqual({ from: ['10.0.0.0/8', '192.0.2.1'], header: 'X-Forwarded-For' });
    expect(c.servers[0]!.realIp).toBeUndefined();
    expect(c.servers[1]!.realIp).toEqual({ from: ['10.0.0.0/8', '192.0.2.1'], header: 'X-Forwarded-For', recursive: true });
    // proxy_protocol: the list is proxyProtocolFrom; a realIp too, to replace the top-level one.
    expect(c.servers[2]).toMatchObject({
      listen: ['8082 proxy_protocol'], proxyProtocolFrom: ['127.0.0.1'], realIp: { from: ['127.0.0.1'], header: 'proxy_protocol' },
    });
    const warnings = r.warnings.map((w) => w.message).join('\n');
    expect(warnings).toMatch(/"real_ip_header" in a location is not supported/);
    expect(warnings).toMatch(/listen 8083 proxy_protocol: .*add "proxyProtocolFrom"/);
    // What it wrote passes check once the listen without a list is gone.
    const loadable = { ...c, servers: c.servers.slice(0, 3) };
    const loaded = await loadConfig(loadable as Record<string, unknown>, '<import>');
    expect(loaded.servers[2]!.realIp).toEqual({ from: ['127.0.0.1'], header: 'proxy_protocol', recursive: false });
  });
});

const scope = useScope();

describe('realIp and access rules', () => {
  /** GET / from `from` (a loopback address) with an X-Real-IP header: the status. */
  const get = (port: number, from: string, realIp: string): Promise<number> => new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', localAddress: from, headers: { 'X-Real-IP': realIp }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });

  it('allow/deny see the real client address a trusted peer gives, and the peer\'s own from an untrusted one', async () => {
    const be = await scope.backend('a');
    const port = await freePort();
    await scope.lb({
      realIp: { from: ['127.0.0.1/32'], header: 'X-Real-IP' },
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend', access: [{ allow: '10.0.0.0/8' }, { allow: '127.0.0.2' }, { deny: 'all' }] }] }],
      upstreams: { backend: { servers: [{ address: be.address }] } },
    });
    expect(await get(port, '127.0.0.1', '10.1.2.3')).toBe(200);
    expect(await get(port, '127.0.0.1', '192.0.2.1')).toBe(403);
    // Not trusted: its header is ignored, its own address decides.
    expect(await get(port, '127.0.0.3', '10.1.2.3')).toBe(403);
    expect(await get(port, '127.0.0.2', '192.0.2.1')).toBe(200);
  });
});
