/**
 * `sessionlb import-nginx`: the nginx tokenizer/parser, the conversion of every supported
 * directive, line-numbered syntax errors and warnings, validation of the result, and the
 * reference nginx.conf end to end (converted, then serving 3:1:1:1 through real backends).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { loadConfig } from '../src/config/load.js';
import { formatConfigJson, formatDiagnostic, importNginx, NginxSyntaxError, parseNginx, tokenize } from '../src/tools/import-nginx/import-nginx.js';
import { SessionLB } from '../src/runtime/sessionlb.js';
import { silentLog } from '../src/observability/log.js';
import { freePort, request, startBackend, tally, type Backend } from './helpers/net.js';
import { CLI, runCli, writeConfig } from './helpers/child.js';

/** The reference nginx.conf (examples/: the setup users migrate from). */
const REFERENCE = fileURLToPath(new URL('../examples/nginx.conf', import.meta.url));
const referenceText = readFileSync(REFERENCE, 'utf8');

function syntaxError(text: string): NginxSyntaxError {
  try {
    parseNginx(text, 'test.conf');
  } catch (err) {
    if (err instanceof NginxSyntaxError) return err;
    throw err;
  }
  throw new Error('expected a syntax error');
}

/** Warnings as "LINE: message" for compact assertions. */
function warningsOf(text: string): string[] {
  return importNginx(text, 't.conf').warnings.map((w) => `${w.line}: ${w.message}`);
}

describe('nginx tokenizer and parser', () => {
  it('reads directives, blocks, comments, quotes and escapes like nginx', () => {
    const tree = parseNginx([
      '# comment line',
      'http { # trailing comment',
      '  upstream "b a" { server 10.0.0.1:80 weight=2; }',
      "  x 'single \\' quote' \"double \\\" quote\" back\\\\slash tab\\tend a#b;",
      '  hash ${cookie_x}y{}',
      '  multi "line1',
      'line2";',
      '}',
    ].join('\n'), 't.conf');
    expect(tree).toHaveLength(1);
    const http = tree[0]!;
    expect(http).toMatchObject({ name: 'http', args: [], line: 2 });
    const [up, x, hash, multi] = http.block!;
    expect(up).toMatchObject({ name: 'upstream', args: ['b a'], line: 3 });
    expect(up!.block).toEqual([{ name: 'server', args: ['10.0.0.1:80', 'weight=2'], line: 3, block: null }]);
    // "#" inside a word is not a comment; \' \" \\ lose the backslash; \t is a tab.
    expect(x!.args).toEqual(["single ' quote", 'double " quote', 'back\\slash', 'tab\tend', 'a#b']);
    // "${" does not open a block; "{" after a word does.
    expect(hash!.args).toEqual(['${cookie_x}y']);
    expect(hash!.block).toEqual([]);
    expect(multi).toMatchObject({ args: ['line1\nline2'], line: 6 });
  });

  it('counts lines across quoted newlines and comments', () => {
    const tokens = tokenize('a "x\ny" # c\n  b;\n', 'f');
    expect(tokens.map((t) => [t.kind, t.text, t.line])).toEqual([
      ['word', 'a', 1], ['word', 'x\ny', 1], ['word', 'b', 3], [';', ';', 3], ['eof', '', 4],
    ]);
  });

  it('reports syntax errors with the line number', () => {
    const missingSemicolon = syntaxError('http {\n  upstream b {\n    server 10.0.0.1:80\n  }\n}\n');
    expect(missingSemicolon.line).toBe(4);
    expect(missingSemicolon.message).toBe('test.conf:4: unexpected "}" (directive "server" on line 3 is not terminated by ";")');

    const unclosed = syntaxError('http {\n  server {\n    listen 80;\n}\n');
    expect(unclosed.line).toBe(5);
    expect(unclosed.detail).toMatch(/unexpected end of file, expecting "}" \(the block opened on line 1/);

    expect(syntaxError('http {\n}\n}\n').message).toBe('test.conf:3: unexpected "}"');
    expect(syntaxError('a;\n;\n').message).toBe('test.conf:2: unexpected ";"');
    expect(syntaxError('\n\n{ x; }').line).toBe(3);
    expect(syntaxError('a "b;\n\n').detail).toMatch(/unterminated double-quoted string/);
    expect(syntaxError('a\n"b"c;').message).toBe('test.conf:2: unexpected "c" after a quoted string');
    expect(syntaxError('listen 80').detail).toMatch(/unexpected end of file, expecting ";" or "}"/);
  });
});

describe('import-nginx: the reference nginx.conf', () => {
  it('converts to weights 3:1:1:1 with the same listen, server_name and location, and validates', async () => {
    const result = importNginx(referenceText, REFERENCE);
    expect(result.errors).toEqual([]);
    expect(result.warnings).toEqual([]);
    expect(result.config).toEqual({
      workers: 1, // no worker_processes in a whole nginx.conf: nginx's one worker
      servers: [{ listen: ['80'], serverName: ['www.example.com'], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: {
        backend: {
          servers: [
            { address: '192.168.1.1:8000', weight: 3 },
            { address: '192.168.1.2:8001' },
            { address: '192.168.1.3:8002' },
            { address: '192.168.1.4:8003' },
          ],
        },
      },
    });
    const config = await loadConfig(result.config, 'converted');
    expect(config.servers[0]!.listen.map((l) => l.key)).toEqual(['0.0.0.0:80']);
    expect(config.servers[0]!.serverNames).toEqual(['www.example.com']);
    expect(config.servers[0]!.locations.map((l) => [l.path, l.exact, l.upstream])).toEqual([['/', false, 'backend']]);
    expect(config.upstreams.get('backend')!.servers.map((s) => s.weight)).toEqual([3, 1, 1, 1]);
    // nginx sends Host: $proxy_host by default; the difference is pointed out, not hidden.
    expect(result.notes.map((n) => n.message).join('\n')).toMatch(/Host: backend/);
  });

  describe('serving through real backends', () => {
    const backends: Backend[] = [];
    let lb: SessionLB | null = null;
    afterAll(async () => {
      await lb?.stop(2000);
      await Promise.all(backends.map((b) => b.close()));
    });

    it('the converted config balances 3:1:1:1 by server_name', async () => {
      for (let i = 1; i <= 4; i++) backends.push(await startBackend(`web${i}`));
      const port = await freePort();
      // The reference file with loopback addresses: same structure, same weights.
      let text = referenceText.replace('listen 80;', `listen 127.0.0.1:${port};`);
      backends.forEach((b, i) => { text = text.replace(new RegExp(`192\\.168\\.1\\.${i + 1}:800${i}`), b.address); });
      const result = importNginx(text, 'loopback.conf');
      expect(result.errors).toEqual([]);
      lb = new SessionLB(await loadConfig(result.config, 'loopback.conf'), { log: silentLog() });
      await lb.start();
      const names: string[] = [];
      for (let i = 0; i < 60; i++) {
        const r = await request(`http://127.0.0.1:${port}/x`, { headers: { Host: 'www.example.com' } });
        expect(r.status).toBe(200);
        names.push(r.body);
      }
      expect(tally(names)).toEqual({ web1: 30, web2: 10, web3: 10, web4: 10 });
    });
  });
});

const EVERYTHING = `# every directive the importer converts
http {
  keepalive_timeout 65s;
  client_max_body_size 8m;
  proxy_connect_timeout 5s;
  proxy_set_header Host $host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;

  upstream app {
    least_conn;
    server 10.0.0.1:8000 weight=3 max_fails=2 fail_timeout=30s max_conns=100 slow_start=20s;
    server 10.0.0.2 backup;
    server [2001:db8::3]:8000 down;
    server 10.0.0.4:8000 drain;
    keepalive 16;
    keepalive_timeout 30s;
  }
  upstream 'hashed' {
    hash $cookie_PHPSESSID consistent;
    server 10.0.1.1:80;
    server 10.0.1.2:80;
  }
  upstream rnd { random two least_conn; server 10.0.2.1:80; server 10.0.2.2:80; }
  upstream rnd2 { random two; server 10.0.2.3:80; }
  upstream iph { ip_hash; server 10.0.3.1:80; }
  upstream r1 { random; server 10.0.4.1:80; }
  upstream h2 { hash $remote_addr; server 10.0.5.1:80; }
  upstream learn {
    sticky learn create=$upstream_cookie_PHPSESSID lookup=$cookie_PHPSESSID zone=sessions:1m timeout=24m;
    server 10.0.6.1:80;
  }
  upstream own { sticky cookie srv_id httponly; server 10.0.7.1:80; }

  server {
    listen 80 default_server;
    listen [::]:8080;
    listen *:8081;
    server_name www.example.com "example.com";
    client_max_body_size 2m;
    location / {
      proxy_pass http://app;
      proxy_next_upstream error timeout http_502 http_503 non_idempotent;
      proxy_next_upstream_tries 3;
      proxy_next_upstream_timeout 10s;
      proxy_read_timeout 30s;
      proxy_send_timeout "1m 30s";
      health_check interval=2s fails=3 passes=2 uri=/health port=8080 mandatory;
    }
    location = /upload {
      proxy_pass http://app/u/;
      client_max_body_size 100m;
      proxy_http_version 1.1;
      proxy_set_header X-App "upload \\"v2\\"";
      proxy_set_header X-Removed "";
      proxy_set_header Connection "";
    }
    location ^~ /static/ { proxy_pass http://hashed; }
  }
  server {
    listen 127.0.0.1:8082;
    location /r { proxy_pass http://rnd; }
    location /r2 { proxy_pass http://rnd2; }
    location /i { proxy_pass http://iph; }
    location /x { proxy_pass http://r1; }
    location /h { proxy_pass http://h2; }
    location /l { proxy_pass http://learn; }
    location /o { proxy_pass http://own; }
    location =/direct { proxy_pass http://127.0.0.1:9000; proxy_read_timeout 5s; }
    location /plain { proxy_pass http://127.0.0.1:9001/p; }
  }
}
`;

describe('import-nginx: every supported directive', () => {
  it('converts to the expected configuration, which loadConfig accepts', async () => {
    const result = importNginx(EVERYTHING, 'all.conf');
    expect(result.errors).toEqual([]);
    expect(result.config).toEqual({
      workers: 1, // no worker_processes in a whole nginx.conf: nginx's one worker
      servers: [
        {
          // default_server belongs to the one address it is written on, as in nginx.
          listen: ['80 default_server', '[::]:8080', '0.0.0.0:8081'],
          serverName: ['www.example.com', 'example.com'],
          locations: [
            { path: '/', proxyPass: 'http://app' },
            {
              path: '/upload', exact: true, proxyPass: 'http://app/u/',
              // This location's proxy_set_header replaces the inherited list (nginx): Host $host is not inherited.
              proxySetHeader: { 'X-App': 'upload "v2"', 'X-Removed': '' },
              clientMaxBodySize: '100m',
              // nginx's defaults here, where "/" set its own: kept on this location (issue 17).
              nextUpstream: { on: ['error', 'timeout'], tries: 0, timeout: '0s' },
              timeouts: { read: '60s', send: '60s' },
            },
            { path: '/static/', match: '^~', proxyPass: 'http://hashed' },
          ],
          clientMaxBodySize: '2m',
        },
        {
          listen: ['127.0.0.1:8082'],
          locations: [
            { path: '/r', proxyPass: 'http://rnd' },
            { path: '/r2', proxyPass: 'http://rnd2' },
            { path: '/i', proxyPass: 'http://iph' },
            { path: '/x', proxyPass: 'http://r1' },
            { path: '/h', proxyPass: 'http://h2' },
            { path: '/l', proxyPass: 'http://learn' },
            { path: '/o', proxyPass: 'http://own' },
            { path: '/direct', exact: true, proxyPass: 'http://127.0.0.1_9000' },
            // The http-level proxy_connect_timeout applies here too, so the address gets an upstream.
            { path: '/plain', proxyPass: 'http://127.0.0.1_9001/p' },
          ],
        },
      ],
      upstreams: {
        app: {
          balance: 'least_conn',
          healthCheck: { interval: '2s', fails: 3, passes: 2, path: '/health', port: 8080, mandatory: true },
          servers: [
            { address: '10.0.0.1:8000', weight: 3, maxFails: 2, failTimeout: '30s', maxConns: 100, slowStart: '20s' },
            { address: '10.0.0.2:80', backup: true },
            { address: '[2001:db8::3]:8000', down: true },
            { address: '10.0.0.4:8000', drain: true },
          ],
          keepalive: 16,
          keepaliveTimeout: '30s',
          nextUpstream: { on: ['error', 'timeout', 'http_502', 'http_503', 'non_idempotent'], tries: 3, timeout: '10s' },
          timeouts: { connect: '5s', send: '1m30s', read: '30s' },
        },
        hashed: { balance: { hash: '$cookie_PHPSESSID', consistent: true }, servers: [{ address: '10.0.1.1:80' }, { address: '10.0.1.2:80' }], timeouts: { connect: '5s' } },
        rnd: { balance: { random: 'two', pick: 'least_conn' }, servers: [{ address: '10.0.2.1:80' }, { address: '10.0.2.2:80' }], timeouts: { connect: '5s' } },
        rnd2: { balance: { random: 'two' }, servers: [{ address: '10.0.2.3:80' }], timeouts: { connect: '5s' } },
        iph: { balance: 'ip_hash', servers: [{ address: '10.0.3.1:80' }], timeouts: { connect: '5s' } },
        r1: { balance: 'random', servers: [{ address: '10.0.4.1:80' }], timeouts: { connect: '5s' } },
        h2: { balance: { hash: '$remote_addr' }, servers: [{ address: '10.0.5.1:80' }], timeouts: { connect: '5s' } },
        learn: { sticky: { mode: 'learn', cookie: 'PHPSESSID', ttl: '24m' }, servers: [{ address: '10.0.6.1:80' }], timeouts: { connect: '5s' } },
        own: { sticky: { mode: 'cookie', cookie: 'srv_id' }, servers: [{ address: '10.0.7.1:80' }], timeouts: { connect: '5s' } },
        '127.0.0.1_9000': { servers: [{ address: '127.0.0.1:9000' }], timeouts: { connect: '5s', read: '5s' } },
        '127.0.0.1_9001': { servers: [{ address: '127.0.0.1:9001' }], timeouts: { connect: '5s' } },
      },
      clientMaxBodySize: '8m',
      keepaliveTimeout: '65s',
    });
    const config = await loadConfig(result.config, 'all.conf (converted)');
    const app = config.upstreams.get('app')!;
    expect(app.timeouts).toEqual({ connectMs: 5000, sendMs: 90_000, readMs: 30_000 });
    expect([...app.nextUpstream.on]).toEqual(['error', 'timeout', 'http_502', 'http_503', 'non_idempotent']);
    expect(config.upstreams.get('learn')!.sticky).toMatchObject({ mode: 'learn', cookie: 'PHPSESSID', ttlMs: 24 * 60_000 });
    // /upload keeps nginx's defaults where "/" set its own: per location now, no warning.
    expect(result.warnings).toEqual([]);
    const upload = config.servers[0]!.locations[1]!;
    expect(upload.timeouts).toEqual({ connectMs: 5000, sendMs: 60_000, readMs: 60_000 });
    expect([...upload.nextUpstream.on]).toEqual(['error', 'timeout']);
  });

  it('prints readable JSON that parses back to the same object', () => {
    const { config } = importNginx(EVERYTHING, 'all.conf');
    const text = formatConfigJson(config);
    expect(JSON.parse(text)).toEqual(config);
    expect(text).toContain('"listen": ["80 default_server", "[::]:8080", "0.0.0.0:8081"]');
    // Values that look like JSON punctuation survive the one-line layout.
    const tricky = { servers: [{ listen: ['80'], locations: [{ path: '/', proxyPass: 'http://b', proxySetHeader: { 'X-A': 'a": "b","c', 'X-B': '{x}, [y]' } }] }] };
    expect(JSON.parse(formatConfigJson(tricky))).toEqual(tricky);
  });
});

/** A typical nginx HTTPS site: port 80 and 443 servers, two certificate pairs, TLS to the upstreams. */
const HTTPS = `http {
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256;
  ssl_prefer_server_ciphers off;
  ssl_session_cache shared:SSL:10m;
  ssl_session_timeout 1d;
  proxy_ssl_protocols TLSv1.2 TLSv1.3;

  upstream app {
    server 10.0.0.1:8443;
    server 10.0.0.2:8443;
  }

  server {
    listen 80 default_server;
    listen [::]:80 default_server;
    server_name shop.example.com;
    location / { proxy_pass http://app; }
  }

  server {
    listen 443 ssl http2 reuseport;
    listen [::]:443 ssl http2;
    server_name shop.example.com;
    ssl_certificate /etc/nginx/tls/shop.ecdsa.pem;
    ssl_certificate_key /etc/nginx/tls/shop.ecdsa.key;
    ssl_certificate /etc/nginx/tls/shop.rsa.pem;
    ssl_certificate_key /etc/nginx/tls/shop.rsa.key;
    ssl_session_tickets off;
    ssl_stapling on;
    ssl_stapling_verify on;
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate /etc/nginx/tls/internal-ca.pem;
    location / {
      proxy_pass https://app;
      proxy_ssl_name app.internal;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
    }
    location /legacy/ {
      proxy_pass https://10.0.0.9:8443/;
      proxy_ssl_verify off;
      proxy_ssl_certificate /etc/nginx/tls/client.pem;
    }
  }
}
`;

describe('import-nginx: TLS (ssl_*, http2, proxy_pass https://, proxy_ssl_*)', () => {
  it('converts a typical HTTPS site: listen ssl/http2, certificate lists, http-level ssl_* inherited, https upstreams', async () => {
    const result = importNginx(HTTPS, 'https.conf');
    expect(result.errors).toEqual([]);
    expect(result.config).toEqual({
      workers: 1, // no worker_processes in a whole nginx.conf: nginx's one worker
      servers: [
        {
          listen: ['80', '[::]:80'],
          serverName: ['shop.example.com'],
          default: true,
          locations: [{ path: '/', proxyPass: 'http://app' }],
        },
        {
          listen: ['443 ssl http2', '[::]:443 ssl http2'],
          serverName: ['shop.example.com'],
          ssl: {
            certificate: ['/etc/nginx/tls/shop.ecdsa.pem', '/etc/nginx/tls/shop.rsa.pem'],
            certificateKey: ['/etc/nginx/tls/shop.ecdsa.key', '/etc/nginx/tls/shop.rsa.key'],
            // Inherited from http, as nginx does.
            protocols: ['TLSv1.2', 'TLSv1.3'],
            ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256',
            sessionTickets: false,
            sessionTimeout: '1d',
          },
          locations: [
            { path: '/', proxyPass: 'https://app', proxySslName: 'app.internal', proxySslServerName: true },
            { path: '/legacy/', proxyPass: 'https://10.0.0.9:8443/', proxySslVerify: false },
          ],
          proxySslVerify: true,
          proxySslTrustedCertificate: '/etc/nginx/tls/internal-ca.pem',
        },
      ],
      upstreams: { app: { servers: [{ address: '10.0.0.1:8443' }, { address: '10.0.0.2:8443' }] } },
      proxySslProtocols: ['TLSv1.2', 'TLSv1.3'],
    });
    expect(result.warnings.map((w) => `${w.line}: ${w.message}`)).toEqual([
      '4: "ssl_prefer_server_ciphers" is not converted: sessionlb has no setting for the cipher preference order; ignored',
      '22: listen 443: parameter "reuseport" is not supported by sessionlb; ignored',
      '30: "ssl_stapling" is not converted: OCSP stapling is not supported by sessionlb (clients check revocation themselves); ignored',
      '31: "ssl_stapling_verify" is not converted: OCSP stapling is not supported by sessionlb; ignored',
      '38: "proxy_ssl_session_reuse" is not converted: sessionlb has no setting for TLS session reuse to upstreams; ignored',
      '43: "proxy_ssl_certificate" is not converted: client certificates to upstreams are not supported by sessionlb: the upstream gets none; ignored',
    ]);
    expect(result.notes.map((n) => `${n.line}: ${n.message}`)).toEqual([
      '5: "ssl_session_cache shared:SSL:10m" is not converted: sessionlb resumes TLS sessions with session tickets shared by every worker (and, with the memcached session store, every instance); no session cache is needed',
      expect.stringMatching(/^18: nginx sends "Host: app"/),
    ]);
    // check does not read the certificate files; loadConfig accepts the result as it is.
    const config = await loadConfig(result.config, 'https.conf (converted)');
    const [plain, tls] = config.servers;
    expect(plain!.ssl).toBeNull();
    expect(tls!.http2).toBe(true);
    expect(tls!.listen.map((l) => [l.key, l.ssl])).toEqual([['0.0.0.0:443', true], ['[::]:443', true]]);
    expect(tls!.ssl!.certificates).toEqual([
      { certificate: '/etc/nginx/tls/shop.ecdsa.pem', key: '/etc/nginx/tls/shop.ecdsa.key' },
      { certificate: '/etc/nginx/tls/shop.rsa.pem', key: '/etc/nginx/tls/shop.rsa.key' },
    ]);
    expect(tls!.ssl!.sessionTimeoutMs).toBe(86_400_000);
    expect(tls!.locations.map((l) => l.upstreamTls)).toEqual([
      { verify: true, trustedCertificate: '/etc/nginx/tls/internal-ca.pem', serverName: true, name: 'app.internal', protocols: ['TLSv1.2', 'TLSv1.3'] },
      { verify: false, trustedCertificate: '/etc/nginx/tls/internal-ca.pem', serverName: false, name: '10.0.0.9', protocols: ['TLSv1.2', 'TLSv1.3'] },
    ]);
  });

  it('http2 on, ticket keys, relative paths, h2c, a missing certificate and proxy_ssl_* on an http:// location', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sessionlb-nginx-tls-'));
    try {
      const file = join(dir, 'nginx.conf');
      const result = importNginx([
        'http2 on;',                                                        // 1
        'ssl_session_ticket_key /etc/nginx/ticket.key;',                    // 2
        'ssl_certificate tls/site.pem;',                                    // 3
        'ssl_certificate_key tls/site.key;',                                // 4
        'server { listen 8443 ssl; location / { proxy_pass https://10.0.0.1; proxy_read_timeout 5s; } }', // 5
        'server { listen 8080 http2; location / { proxy_pass http://10.0.0.2:80; proxy_ssl_verify on; } }', // 6
        'server { listen 9443 ssl; ssl_certificate /a.pem; ssl_certificate /b.pem; location / { proxy_pass http://10.0.0.3:80; } }', // 7
      ].join('\n'), file);
      expect(result.errors.map((e) => `${e.line}: ${e.message}`)).toEqual([
        '7: server (line 7): 2 "ssl_certificate" but 1 "ssl_certificate_key": each certificate needs its key',
      ]);
      expect(result.config.servers![0]).toEqual({
        listen: ['8443 ssl'],
        ssl: { certificate: join(dir, 'tls/site.pem'), certificateKey: join(dir, 'tls/site.key') },
        http2: true,
        // The address gets an upstream of its own (per-upstream timeout); nginx's name for it stays the host.
        locations: [{ path: '/', proxyPass: 'https://10.0.0.1_443', proxySslName: '10.0.0.1' }],
      });
      expect(result.config.upstreams).toEqual({ '10.0.0.1_443': { servers: [{ address: '10.0.0.1:443' }], timeouts: { read: '5s' } } });
      expect(result.config.servers![1]).toEqual({ listen: ['8080'], locations: [{ path: '/', proxyPass: 'http://10.0.0.2:80' }] });
      expect(result.warnings.map((w) => `${w.line}: ${w.message}`)).toEqual([
        '1: "http2 on" for servers without "listen ... ssl": sessionlb offers HTTP/2 only over TLS (h2c is not offered); ignored there',
        '6: listen 8080 http2 without ssl: sessionlb offers HTTP/2 only over TLS (h2c is not offered); the parameter is ignored',
        '6: proxy_ssl_* in location /: its proxy_pass is "http://", so nginx does not use it either; ignored',
        '7: "ssl_certificate" in server (line 7) is paired with the "ssl_certificate_key" it inherits from http, as nginx does: check that they belong together',
      ]);
      expect(result.notes.map((n) => `${n.line}: ${n.message}`)).toEqual([
        '2: "ssl_session_ticket_key" is not used: sessionlb generates the session ticket keys, rotates them daily and shares them between workers (and instances) itself; key files are not used',
        `3: "ssl_certificate tls/site.pem": nginx reads relative paths from its configuration directory, sessionlb from the JSON file's; written as ${join(dir, 'tls/site.pem')}`,
        `4: "ssl_certificate_key tls/site.key": nginx reads relative paths from its configuration directory, sessionlb from the JSON file's; written as ${join(dir, 'tls/site.key')}`,
        expect.stringMatching(/^5: nginx sends "Host: 10.0.0.1:443"/),
        '5: proxy_pass https://10.0.0.1:443 has timeouts/retry settings, which sessionlb keeps per upstream: it becomes upstream "10.0.0.1_443"',
      ]);
      // Without the server in error, the rest is a valid configuration.
      await loadConfig({ ...result.config, servers: result.config.servers!.slice(0, 2) }, file);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('import-nginx: warnings and errors', () => {
  it('warns about every unsupported directive and parameter with its line, never dropping one silently', () => {
    const warnings = warningsOf([
      'worker_processes 4;',                                  // 1
      'events { worker_connections 1024; }',                  // 2
      'http {',                                               // 3
      '  include mime.types;',                                // 4
      '  ssi on;',                                            // 5
      '  upstream b { zone b 64k; server 10.0.0.1:80 route=a; ntlm; }', // 6
      '  server {',                                           // 7
      '    listen 80 reuseport;',                             // 8
      '    listen 443 ssl http2 backlog=511;',                // 9
      '    server_name ~^(www\\.)?example\\.com$;',           // 10
      '    ssl_certificate /x.pem; ssl_certificate_key /x.key; ssl_stapling on;', // 11
      '    location / { proxy_pass http://b; proxy_buffering off; proxy_set_header X-Id $request_id; }', // 12
      '    location ~ \\.php$ { proxy_pass http://b; }',      // 13
      '    location /files/ { root /srv; }',                  // 14
      '    location @fallback { proxy_pass http://b; }',      // 15
      '    location /tls { proxy_pass https://b; proxy_ssl_session_reuse off; }', // 16
      '  }',
      '}',
    ].join('\n'));
    const expected: Array<[number, RegExp]> = [
      [2, /"events" block ignored/], [4, /"include mime.types" is not followed/], [5, /"ssi" in http/],
      [6, /"zone" is not needed/], [6, /parameter "route=a"/], [6, /"ntlm" in upstream "b"/],
      [8, /parameter "reuseport"/], [9, /listen 443: parameter "backlog=511" is not supported/], [10, /regular expressions/],
      [11, /"ssl_stapling" is not converted: OCSP stapling is not supported/],
      [12, /"proxy_buffering" in location/], [12, /proxy_set_header X-Id "\$request_id": variables are not supported/],
      [14, /"root" in location/], [14, /location \/files\/ has no proxy_pass or return/],
      [15, /named locations/], [16, /"proxy_ssl_session_reuse" is not converted: sessionlb has no setting/],
    ];
    expect(warnings).toHaveLength(expected.length);
    expected.forEach(([line, re], i) => {
      expect(warnings[i]!.startsWith(`${line}: `), warnings[i]).toBe(true);
      expect(warnings[i]).toMatch(re);
    });
  });

  it('warns once about an inherited proxy_set_header with variables, not once per location', () => {
    const w = warningsOf('proxy_set_header X-Id $request_id;\nupstream b { server 10.0.0.1:80; }\nserver { location /a { proxy_pass http://b; } location /b { proxy_pass http://b; } }');
    expect(w).toHaveLength(1);
    expect(w[0]).toMatch(/^1: proxy_set_header X-Id "\$request_id": variables are not supported/);
  });

  it('puts the first timeout on the upstream and a differing one on its location (nginx inheritance kept)', async () => {
    const result = importNginx([
      'upstream b { server 10.0.0.1:80; }',
      'server {',
      '  listen 127.0.0.1:8080;',
      '  proxy_read_timeout 20s;',
      '  location /a { proxy_pass http://b; }',
      '  location /slow { proxy_pass http://b; proxy_read_timeout 5m; }',
      '  location /c { proxy_pass http://b; proxy_connect_timeout 2s; }',
      '  location /d { proxy_pass http://b; proxy_connect_timeout 2000ms; }',
      '}',
    ].join('\n'), 'c.conf');
    expect(result.config.upstreams!.b!.timeouts).toEqual({ connect: '2s', read: '20s' });
    // read: 20s (server level, inherited by /a) vs 5m on /slow. connect: nginx's 60s default for /a and /slow vs 2s.
    // 2s and 2000ms are the same time: /c and /d agree with the upstream.
    const locs = result.config.servers![0]!.locations!;
    expect(locs.map((l) => l.timeouts ?? null)).toEqual([{ connect: '60s' }, { read: '5m', connect: '60s' }, null, null]);
    expect(result.warnings).toEqual([]);
    const config = await loadConfig(result.config);
    expect(config.servers[0]!.locations.map((l) => [l.path, l.timeouts.connectMs, l.timeouts.readMs])).toEqual([
      ['/a', 60_000, 20_000], ['/slow', 60_000, 300_000], ['/c', 2000, 20_000], ['/d', 2000, 20_000],
    ]);
  });

  it('reports bad values as errors with their line', () => {
    const result = importNginx([
      'upstream b {',
      '  server 10.0.0.1:80 weight=x;',
      '  server unix:/run/app.sock;',
      '  server 10.0.0.2:80 fail_timeout=soon;',
      '}',
      'server { location / { proxy_pass http://nowhere_defined; proxy_read_timeout 1x; } }',
    ].join('\n'), 'e.conf');
    expect(result.errors.map((e) => `${e.line}: ${e.message}`)).toEqual([
      '2: invalid parameter "weight=x" of server 10.0.0.1:80 (expected a number)',
      '3: server "unix:/run/app.sock": unix sockets are not supported by sessionlb (use host:port)',
      '4: invalid parameter "fail_timeout=soon" of server 10.0.0.2:80 (expected a time such as "10s")',
      '6: "proxy_read_timeout": "1x" is not a time such as "500ms", "10s" or "1m"',
      '6: proxy_pass http://nowhere_defined: "nowhere_defined" is neither an upstream defined in this file nor a host:port',
    ]);
  });

  it('leaves nginx rules that sessionlb enforces to loadConfig (hash with a backup server)', async () => {
    const result = importNginx('upstream b { hash $remote_addr; server 10.0.0.1:80; server 10.0.0.2:80 backup; }\nserver { location / { proxy_pass http://b; } }', 'h.conf');
    expect(result.errors).toEqual([]);
    await expect(loadConfig(result.config, 'h.conf')).rejects.toThrow(/\$\.upstreams\.b\.servers\[1\]\.backup: backup servers cannot be used/);
  });
});

describe('import-nginx: PROXY protocol (listen proxy_protocol, set_real_ip_from, stream proxy_protocol)', () => {
  it('http: listen proxy_protocol stays on the entry; set_real_ip_from with real_ip_header proxy_protocol becomes proxyProtocolFrom (top level from http, else the server), and loads', async () => {
    const result = importNginx([
      'http {',                                                   // 1
      '  set_real_ip_from 10.0.0.0/8;',                           // 2
      '  set_real_ip_from 172.16.0.1;',                           // 3
      '  real_ip_header proxy_protocol;',                         // 4
      '  upstream app { server 10.1.0.1:80; }',                   // 5
      '  server {',                                               // 6
      '    listen 443 ssl http2 proxy_protocol default_server;',  // 7
      '    listen 80 proxy_protocol;',                            // 8
      '    ssl_certificate /etc/ssl/a.pem; ssl_certificate_key /etc/ssl/a.key;', // 9
      '    location / { proxy_pass http://app; proxy_set_header Host $host; }', // 10
      '  }',                                                      // 11
      '  server {',                                               // 12
      '    listen 8080 proxy_protocol;',                          // 13
      '    set_real_ip_from 192.168.0.0/16;',                     // 14
      '    set_real_ip_from 2001:db8::/32;',                      // 15
      '    location / { proxy_pass http://app; proxy_set_header Host $host; }', // 16
      '  }',                                                      // 17
      '}',
    ].join('\n'), 'pp.conf');
    expect(result.errors).toEqual([]);
    expect(result.warnings).toEqual([]);
    expect(result.config).toEqual({
      workers: 1, // no worker_processes in a whole nginx.conf: nginx's one worker
      servers: [
        {
          listen: ['443 ssl http2 proxy_protocol default_server', '80 proxy_protocol'],
          ssl: { certificate: '/etc/ssl/a.pem', certificateKey: '/etc/ssl/a.key' },
          locations: [{ path: '/', proxyPass: 'http://app' }],
        },
        {
          listen: ['8080 proxy_protocol'],
          proxyProtocolFrom: ['192.168.0.0/16', '2001:db8::/32'],
          locations: [{ path: '/', proxyPass: 'http://app' }],
        },
      ],
      upstreams: { app: { servers: [{ address: '10.1.0.1:80' }] } },
      proxyProtocolFrom: ['10.0.0.0/8', '172.16.0.1'],
    });
    const config = await loadConfig(result.config, 'pp.conf (converted)');
    expect(config.servers.map((s) => [s.listen.map((l) => [l.key, l.ssl, l.proxyProtocol]), s.proxyProtocolFrom])).toEqual([
      [[['0.0.0.0:443', true, true], ['0.0.0.0:80', false, true]], ['10.0.0.0/8', '172.16.0.1']],
      [[['0.0.0.0:8080', false, true]], ['192.168.0.0/16', '2001:db8::/32']],
    ]);
    expect(config.proxyProtocolFrom).toEqual(['10.0.0.0/8', '172.16.0.1']);
  });

  it('http: a server-level real_ip_header proxy_protocol takes the inherited http list as its own', async () => {
    const result = importNginx([
      'set_real_ip_from 10.0.0.0/8;',
      'server { listen 80 proxy_protocol; real_ip_header proxy_protocol; location / { proxy_pass http://10.1.0.1:80; proxy_set_header Host $host; } }',
    ].join('\n'), 's.conf');
    expect(result.warnings).toEqual([]);
    expect(result.config.proxyProtocolFrom).toBeUndefined();
    expect(result.config.servers![0]).toMatchObject({ listen: ['80 proxy_protocol'], proxyProtocolFrom: ['10.0.0.0/8'] });
    await loadConfig(result.config, 's.conf (converted)');
  });

  it('stream: proxy_protocol on/off (inherited), set_real_ip_from (stream and server level), listen proxy_protocol, proxy_protocol_timeout; loads', async () => {
    const result = importNginx([
      'stream {',                                               // 1
      '  proxy_protocol on;',                                   // 2
      '  set_real_ip_from 10.2.0.0/16;',                        // 3
      '  proxy_protocol_timeout 30s;',                          // 4: the default: nothing to say
      '  upstream db { server 10.3.0.1:3306; }',                // 5
      '  server { listen 3306 proxy_protocol; proxy_pass db; }', // 6
      '  server {',                                             // 7
      '    listen 127.0.0.1:3307 proxy_protocol reuseport;',    // 8
      '    proxy_pass 10.3.0.2:3306;',                          // 9
      '    proxy_protocol off;',                                // 10
      '    set_real_ip_from 192.168.1.0/24;',                   // 11
      '    proxy_protocol_timeout 10s;',                        // 12
      '  }',                                                    // 13
      '  server { listen 3308; proxy_pass db; }',               // 14
      '}',
    ].join('\n'), 'st.conf');
    expect(result.errors).toEqual([]);
    expect(result.warnings.map((w) => `${w.line}: ${w.message}`)).toEqual([
      '8: "listen": parameters "reuseport" are not supported by sessionlb; ignored',
      '12: "proxy_protocol_timeout 10s": sessionlb waits 30 s (nginx\'s default) for a stream\'s PROXY header, and clientHeaderTimeout on HTTP addresses; ignored',
    ]);
    expect(result.config).toEqual({
      streams: [
        { listen: ['3306 proxy_protocol'], proxyPass: 'db', proxyProtocol: true, proxyProtocolFrom: ['10.2.0.0/16'] },
        { listen: ['127.0.0.1:3307 proxy_protocol'], proxyPass: '10.3.0.2:3306', proxyProtocolFrom: ['192.168.1.0/24'] },
        { listen: ['3308'], proxyPass: 'db', proxyProtocol: true, proxyProtocolFrom: ['10.2.0.0/16'] },
      ],
      upstreams: { db: { servers: [{ address: '10.3.0.1:3306' }] } },
    });
    const config = await loadConfig(result.config, 'st.conf (converted)');
    expect(config.streams.map((s) => [s.listen[0]!.key, s.listen[0]!.proxyProtocol, s.proxyProtocol, s.proxyProtocolFrom])).toEqual([
      ['0.0.0.0:3306', true, true, ['10.2.0.0/16']],
      ['127.0.0.1:3307', true, false, ['192.168.1.0/24']],
      ['0.0.0.0:3308', false, true, ['10.2.0.0/16']],
    ]);
  });

  it('proxy_protocol with no set_real_ip_from: a warning at the listen line (FILE:LINE), no error, and check names the missing list', async () => {
    const result = importNginx([
      'http {',
      '  server {',
      '    listen 80 proxy_protocol;',
      '    real_ip_header proxy_protocol;',
      '    location / { proxy_pass http://10.1.0.1:80; proxy_set_header Host $host; }',
      '  }',
      '}',
      'stream {',
      '  server { listen 3306 proxy_protocol; proxy_pass 10.3.0.1:3306; }',
      '}',
    ].join('\n'), 'open.conf');
    expect(result.errors).toEqual([]);
    expect(result.warnings.map((w) => formatDiagnostic('open.conf', 'warning', w))).toEqual([
      'open.conf:3: warning: listen 80 proxy_protocol: add "proxyProtocolFrom": ["CIDR", ...] with the addresses of the proxies in front (nginx accepts a PROXY header from anyone here; sessionlb\'s check refuses a proxy_protocol address without that list)',
      'open.conf:9: warning: listen 3306 proxy_protocol: add "proxyProtocolFrom": ["CIDR", ...] with the addresses of the proxies in front (nginx accepts a PROXY header from anyone here; sessionlb\'s check refuses a proxy_protocol address without that list)',
    ]);
    expect(result.config.servers![0]!.listen).toEqual(['80 proxy_protocol']);
    expect(result.config.streams![0]!.listen).toEqual(['3306 proxy_protocol']);
    const err = await loadConfig(result.config, 'open.conf (converted)').then(() => null, (e: Error) => e.message);
    expect(err).toMatch(/\$\.servers\[0\]\.listen\[0\]: "proxy_protocol" needs the addresses allowed to send a PROXY header/);
    expect(err).toMatch(/\$\.streams\[0\]\.listen\[0\]: "proxy_protocol" needs the addresses/);
  });

  it('a stream without its own list gets the top-level one (from http), with a warning; set_real_ip_from for another header becomes the server\'s realIp', async () => {
    const result = importNginx([
      'http {',                                               // 1
      '  set_real_ip_from 10.0.0.0/8;',                       // 2
      '  real_ip_header proxy_protocol;',                     // 3
      '  server {',                                           // 4
      '    listen 8081;',                                     // 5
      '    set_real_ip_from 192.168.0.0/16;',                 // 6
      '    real_ip_header X-Forwarded-For;',                  // 7
      '    real_ip_recursive on;',                            // 8
      '    location / { proxy_pass http://10.1.0.1:80; proxy_set_header Host $host; }', // 9
      '  }',                                                  // 10
      '  server {',                                           // 11
      '    listen 8082 proxy_protocol;',                      // 12
      '    set_real_ip_from 192.168.2.0/24;',                 // 13
      '    real_ip_header X-Real-IP;',                        // 14
      '    location / { proxy_pass http://10.1.0.1:80; proxy_set_header Host $host; }', // 15
      '  }',                                                  // 16
      '}',                                                    // 17
      'stream {',                                             // 18
      '  server { listen 3306 proxy_protocol; proxy_pass 10.3.0.1:3306; }', // 19
      '}',
    ].join('\n'), 'mix.conf');
    expect(result.errors).toEqual([]);
    const w = result.warnings.map((x) => `${x.line}: ${x.message}`);
    expect(w).toHaveLength(2);
    // On a proxy_protocol address sessionlb rewrites the client address, nginx (with another header) does not; the top-level list applies.
    expect(w[0]).toMatch(/^12: listen 8082 proxy_protocol: sessionlb takes the PROXY header's source as the client's address .*"real_ip_header proxy_protocol"/);
    expect(w[0]).not.toMatch(/add "proxyProtocolFrom"/);
    expect(w[1]).toMatch(/^19: listen 3306 proxy_protocol: no "set_real_ip_from" in this stream, so nginx accepts a PROXY header from anyone; sessionlb applies the top-level "proxyProtocolFrom"/);
    expect(result.config.servers!.map((s) => s.realIp)).toEqual([
      { from: ['192.168.0.0/16'], header: 'X-Forwarded-For', recursive: true }, { from: ['192.168.2.0/24'] },
    ]);
    expect(result.config.proxyProtocolFrom).toEqual(['10.0.0.0/8']);
    expect(result.config.servers!.map((s) => s.proxyProtocolFrom)).toEqual([undefined, undefined]);
    const config = await loadConfig(result.config, 'mix.conf (converted)');
    expect(config.streams[0]!.proxyProtocolFrom).toEqual(['10.0.0.0/8']);
  });

  it('names the included file in warnings; bad addresses and values are errors with their line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sessionlb-nginx-pp-'));
    try {
      writeFileSync(join(dir, 'nginx.conf'), 'http {\n  include site.conf;\n}\nstream {\n  set_real_ip_from example.com;\n  server { listen 3306; proxy_pass 10.3.0.1:3306; proxy_protocol maybe; proxy_protocol_timeout 5x; }\n}\n');
      writeFileSync(join(dir, 'site.conf'), '# site\nserver {\n  listen 80 proxy_protocol;\n  set_real_ip_from unix:;\n  location / { proxy_pass http://10.1.0.1:80; proxy_set_header Host $host; }\n}\n');
      const main = join(dir, 'nginx.conf');
      const r = importNginx(readFileSync(main, 'utf8'), main);
      expect(r.warnings.map((x) => formatDiagnostic(main, 'warning', x))).toEqual([
        `${join(dir, 'site.conf')}:3: warning: listen 80 proxy_protocol: sessionlb takes the PROXY header's source as the client's address ($remote_addr, logs, X-Forwarded-For, ip_hash), which nginx does only with "real_ip_header proxy_protocol" (here it keeps the proxy's address and sets $proxy_protocol_addr); add "proxyProtocolFrom": ["CIDR", ...] with the addresses of the proxies in front (nginx accepts a PROXY header from anyone here; sessionlb's check refuses a proxy_protocol address without that list)`,
        `${join(dir, 'site.conf')}:4: warning: "set_real_ip_from unix:": unix sockets are not supported by sessionlb; ignored`,
      ]);
      expect(r.errors.map((x) => formatDiagnostic(main, 'error', x))).toEqual([
        `${main}:5: error: "set_real_ip_from": "example.com" is not an address or CIDR such as "10.0.0.0/8" (sessionlb takes no host names here)`,
        `${main}:6: error: "proxy_protocol": "maybe" must be "on" or "off"`,
        `${main}:6: error: "proxy_protocol_timeout": "5x" is not a time such as "30s"`,
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('sessionlb import-nginx (CLI, child process)', () => {
  it('prints the JSON, writes --out, and exits 1 with FILE:LINE on syntax and validation errors', async () => {
    if (!existsSync(CLI)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: fileURLToPath(new URL('..', import.meta.url)) });
    const ok = await runCli(['import-nginx', REFERENCE]);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual(importNginx(referenceText, REFERENCE).config);
    expect(ok.stderr).toContain(`${REFERENCE}:13: note: nginx sends "Host: backend"`);

    const outFile = writeConfig('{}', 'out.json');
    const written = await runCli(['import-nginx', REFERENCE, '--out', outFile]);
    expect(written.code).toBe(0);
    expect(written.stdout).toBe('');
    expect(readFileSync(outFile, 'utf8')).toBe(ok.stdout);
    const checked = await runCli(['check', '--config', outFile]);
    expect(checked.stdout).toContain('configuration OK');

    const bad = writeConfig('http {\n  upstream b {\n    server 10.0.0.1:80\n  }\n}\n', 'bad.conf');
    const syntax = await runCli(['import-nginx', bad]);
    expect(syntax.code).toBe(1);
    expect(syntax.stdout).toBe('');
    expect(syntax.stderr).toContain(`${bad}:4: error: unexpected "}"`);

    const invalid = writeConfig('upstream b { ip_hash; server 10.0.0.1:80; server 10.0.0.2:80 backup; }\nserver { listen 80; ssi on; location / { proxy_pass http://b; } }\n', 'invalid.conf');
    const rejected = await runCli(['import-nginx', invalid]);
    expect(rejected.code).toBe(1);
    expect(rejected.stdout).toBe('');
    expect(rejected.stderr).toContain(`${invalid}:2: warning: "ssi" in server is not supported by sessionlb; ignored`);
    expect(rejected.stderr).toMatch(/\$\.upstreams\.b\.servers\[1\]\.backup: backup servers cannot be used/);

    const conf = writeConfig('http {\n  include conf.d/*.conf;\n}\n', 'nginx.conf');
    mkdirSync(join(dirname(conf), 'conf.d'));
    writeFileSync(join(dirname(conf), 'conf.d', 'site.conf'), 'upstream b { server 127.0.0.1:8080; }\nserver {\n  listen 8000;\n  ssi on;\n  location / { proxy_pass http://b; }\n}\n');
    const included = await runCli(['import-nginx', conf]);
    expect(included.code).toBe(0);
    expect(JSON.parse(included.stdout).upstreams).toEqual({ b: { servers: [{ address: '127.0.0.1:8080' }] } });
    expect(included.stderr).toContain(`${join(dirname(conf), 'conf.d', 'site.conf')}:4: warning: "ssi" in server is not supported by sessionlb; ignored`);
  });
});

describe('import-nginx: include', () => {
  const dirs: string[] = [];
  afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

  /** Writes files (path relative to a new directory -> text); returns the directory. */
  function tree(files: Record<string, string>): string {
    const dir = mkdtempSync(join(tmpdir(), 'sessionlb-nginx-'));
    dirs.push(dir);
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, name)), { recursive: true });
      writeFileSync(join(dir, name), text);
    }
    return dir;
  }

  const importFile = (file: string) => importNginx(readFileSync(file, 'utf8'), file);

  it("follows a Debian layout: files and masks relative to nginx.conf's directory, in name order, in the block they are in", () => {
    const dir = tree({
      'nginx.conf': 'user www-data;\ninclude modules-enabled/*.conf;\nhttp {\n  include mime.types;\n  include conf.d/*.conf;\n  include sites-enabled/*;\n}\n',
      'mime.types': 'types {\n  text/html html;\n}\n',
      'conf.d/b-upstream.conf': 'upstream app {\n  server 10.0.0.1:80 weight=3;\n  include snippets/more-servers;\n}\n',
      'conf.d/a-timeouts.conf': 'keepalive_timeout 30s;\n',
      'conf.d/notes.txt': 'this is not nginx syntax {{{',
      'snippets/more-servers': 'server 10.0.0.2:80;\n',
      'sites-enabled/default': 'server {\n  listen 80;\n  location / {\n    proxy_pass http://app;\n    proxy_buffering off;\n  }\n}\n',
      'sites-enabled/.default.swp': 'garbage {{{',
    });
    const r = importFile(join(dir, 'nginx.conf'));
    expect(r.errors).toEqual([]);
    expect(r.config.upstreams).toEqual({ app: { servers: [{ address: '10.0.0.1:80', weight: 3 }, { address: '10.0.0.2:80' }] } });
    expect(r.config.servers).toEqual([{ listen: ['80'], locations: [{ path: '/', proxyPass: 'http://app' }] }]);
    expect(r.config.keepaliveTimeout).toBe('30s');
    // Each diagnostic names the file it is in (paths as given: the main file's directory + the include).
    const shown = r.warnings.map((w) => formatDiagnostic(join(dir, 'nginx.conf'), 'warning', w));
    expect(shown).toEqual([
      `${join(dir, 'nginx.conf')}:1: warning: "user" (nginx process setting) is not used by sessionlb; ignored`,
      `${join(dir, 'mime.types')}:1: warning: "types" block in http is not supported by sessionlb; ignored`,
      `${join(dir, 'sites-enabled/default')}:5: warning: "proxy_buffering" in location is not supported by sessionlb; ignored`,
    ]);
  });

  it('a missing file, a loop and a mask in a directory are warnings; a syntax error in an included file is an error with its line', () => {
    const dir = tree({
      'nginx.conf': 'http {\n  include missing.conf;\n  include loop.conf;\n  include */x.conf;\n  include broken.conf;\n  upstream b { server 10.0.0.1:80; }\n}\n',
      'loop.conf': 'include loop.conf;\n',
      'broken.conf': 'upstream c {\n  server 10.0.0.3:80\n}\n',
    });
    const main = join(dir, 'nginx.conf');
    const r = importFile(main);
    const shown = (list: typeof r.warnings, kind: 'warning' | 'error') => list.map((d) => formatDiagnostic(main, kind, d));
    expect(shown(r.warnings, 'warning')).toEqual([
      `${main}:2: warning: "include missing.conf" is not followed: cannot read ${join(dir, 'missing.conf')} (no such file); convert that file separately and merge its upstreams/servers`,
      `${main}:4: warning: "include */x.conf" is not followed: masks are supported in the file name only, not in directories; convert that file separately and merge its upstreams/servers`,
      `${join(dir, 'loop.conf')}:1: warning: "include loop.conf" is not followed: ${join(dir, 'loop.conf')} includes itself (through ${join(dir, 'loop.conf')}); convert that file separately and merge its upstreams/servers`,
    ]);
    expect(shown(r.errors, 'error')).toEqual([
      `${join(dir, 'broken.conf')}:3: error: unexpected "}" (directive "server" on line 2 is not terminated by ";") (included from ${main}:5)`,
    ]);
    expect(r.config.upstreams).toEqual({ b: { servers: [{ address: '10.0.0.1:80' }] } });
  });

  it('messages that point at another line name its file', () => {
    const dir = tree({
      'nginx.conf': 'http {\n  include conf.d/*.conf;\n  upstream app { server 10.0.0.9:80; }\n}\n',
      'conf.d/app.conf': '# the app\nupstream app { server 10.0.0.1:80; }\n',
    });
    const r = importFile(join(dir, 'nginx.conf'));
    expect(r.errors).toEqual([{ line: 3, message: `duplicate upstream "app" (first defined on ${join(dir, 'conf.d/app.conf')}:2)` }]);
  });
});

describe('import-nginx: worker_processes', () => {
  const conf = (main: string): string => `${main}\nevents {}\nhttp { upstream b { server 127.0.0.1:9001; } server { listen 80; location / { proxy_pass http://b; } } }`;
  it('keeps nginx\'s worker count: absent means 1 (nginx\'s default), auto and N carried over; a conf.d snippet does not say', () => {
    expect(importNginx(conf(''), 'n.conf').config.workers).toBe(1);
    expect(importNginx(conf('worker_processes auto;'), 'n.conf').config.workers).toBe('auto');
    expect(importNginx(conf('worker_processes 4;'), 'n.conf').config.workers).toBe(4);
    const bad = importNginx(conf('worker_processes many;'), 'n.conf');
    expect(bad.errors.map((e) => `${e.line}: ${e.message}`)).toEqual(['1: "worker_processes": "many" is not "auto" or a number of workers (1-256)']);
    const snippet = importNginx('upstream b { server 127.0.0.1:9001; } server { listen 80; location / { proxy_pass http://b; } }', 'site.conf');
    expect(snippet.config.workers).toBeUndefined();
  });
});
