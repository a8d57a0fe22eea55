/**
 * Issue 2: config validation messages (`FILE: $.json.path: message`), nginx defaults,
 * the generated JSON Schema staying in sync, and every example file loading.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadConfig, loadConfigFile } from '../src/config/load.js';
import { ConfigError, type Config } from '../src/config/model.js';
import { configJsonSchemaText } from '../src/config/json-schema.js';
import { parseDuration, parseSize } from '../src/nginx-language/units.js';

const minimal = (extra: Record<string, unknown> = {}, upstream: Record<string, unknown> = {}): Record<string, unknown> => ({
  servers: [{ listen: ['127.0.0.1:8080'], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
  upstreams: { backend: { servers: [{ address: '127.0.0.1:8000' }, { address: '127.0.0.1:8001' }], ...upstream } },
  ...extra,
});

/** The lines `check` would print for this config (empty when it is valid). */
async function problems(raw: unknown, file = 'my.json'): Promise<string[]> {
  try {
    await loadConfig(raw, file);
    return [];
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.message.split('\n');
  }
}

describe('validation messages', () => {
  it('uses the exact format FILE: $.path: message', async () => {
    const raw = minimal();
    (raw.upstreams as { backend: { servers: Record<string, unknown>[] } }).backend.servers[1]!.weight = 0;
    expect(await problems(raw, 'conf/lb.json')).toEqual(['conf/lb.json: $.upstreams.backend.servers[1].weight: must be an integer >= 1']);
  });

  it('rejects non-integer and wrongly typed numbers with the same message', async () => {
    const raw = minimal({}, { keepalive: 1.5 });
    (raw.upstreams as { backend: { servers: Record<string, unknown>[] } }).backend.servers[0]!.maxFails = '3';
    expect(await problems(raw)).toEqual([
      'my.json: $.upstreams.backend.servers[0].maxFails: must be an integer >= 0',
      'my.json: $.upstreams.backend.keepalive: must be an integer >= 0',
    ]);
  });

  it('reports unknown keys at every level (typos), each with its path', async () => {
    const raw = {
      servers: [{ listen: ['127.0.0.1:8080'], locations: [{ path: '/', proxyPass: 'http://backend', proxy_pass: 'x' }], servername: ['x'] }],
      upstreams: {
        backend: {
          servers: [{ address: '127.0.0.1:8000', wieght: 3 }],
          nextUpstream: { on: ['error'], retries: 2 },
          timeout: { read: '1s' },
        },
      },
      admin: { listen: '127.0.0.1:9100', alow: [] },
      'client_max_body_size': '1m',
    };
    expect((await problems(raw)).sort()).toEqual([
      'my.json: $.admin.alow: unknown key',
      'my.json: $.client_max_body_size: unknown key',
      'my.json: $.servers[0].locations[0].proxy_pass: unknown key',
      'my.json: $.servers[0].servername: unknown key',
      'my.json: $.upstreams.backend.nextUpstream.retries: unknown key',
      'my.json: $.upstreams.backend.servers[0].wieght: unknown key',
      'my.json: $.upstreams.backend.timeout: unknown key',
    ]);
  });

  it('reports missing required keys and wrong types', async () => {
    expect(await problems({})).toEqual(['my.json: $.servers: is required']);
    expect(await problems({ servers: [{ locations: [] }] })).toEqual(['my.json: $.servers[0].listen: is required']);
    expect(await problems({ servers: {} })).toEqual(['my.json: $.servers: must be an array of servers']);
    expect(await problems([])).toHaveLength(1);
    expect(await problems(minimal({}, { servers: [] }))).toEqual(['my.json: $.upstreams.backend.servers: must list at least one server']);
  });

  it('rejects bad durations and sizes', async () => {
    const dur = 'must be a duration such as "500ms", "10s" or "1m"';
    const raw = minimal({ clientMaxBodySize: '1 MB', shutdownTimeout: '-1s', keepaliveTimeout: 75 }, {
      timeouts: { connect: '1.5s', read: 'soon', send: '10sec' },
      nextUpstream: { timeout: '' },
    });
    (raw.upstreams as { backend: { servers: Record<string, unknown>[] } }).backend.servers[0]!.failTimeout = '10 s';
    expect((await problems(raw)).sort()).toEqual([
      'my.json: $.clientMaxBodySize: must be a size such as "1m", "512k" or "0"',
      `my.json: $.keepaliveTimeout: ${dur}`,
      `my.json: $.shutdownTimeout: ${dur}`,
      `my.json: $.upstreams.backend.nextUpstream.timeout: ${dur}`,
      `my.json: $.upstreams.backend.servers[0].failTimeout: ${dur}`,
      `my.json: $.upstreams.backend.timeouts.connect: ${dur}`,
      `my.json: $.upstreams.backend.timeouts.read: ${dur}`,
      `my.json: $.upstreams.backend.timeouts.send: ${dur}`,
    ]);
  });

  it('rejects bad addresses with a reason', async () => {
    const raw = {
      servers: [{ listen: ['127.0.0.1', '127.0.0.1:70000', 'exa mple:80'], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: {
        backend: {
          servers: [
            { address: '::1:8000' }, { address: '[::1:8000' }, { address: '[::1]8000' }, { address: '10.0.0.1:port' },
            { address: 'bad_host!:80' }, { address: '[fe80::zz]:80' }, { address: '10.0.0.2:8000' }, { address: '10.0.0.2:8000' },
          ],
        },
      },
      admin: { listen: '127.0.0.1:9100', allow: ['10.0.0.0/33', 'everyone'] },
    };
    expect(await problems(raw)).toEqual([
      'my.json: $.upstreams.backend.servers[0].address: IPv6 addresses must be written as "[addr]:port"',
      'my.json: $.upstreams.backend.servers[1].address: unterminated "[" in IPv6 address',
      'my.json: $.upstreams.backend.servers[2].address: expected ":port" after "]"',
      'my.json: $.upstreams.backend.servers[3].address: "port" is not a port number',
      'my.json: $.upstreams.backend.servers[4].address: "bad_host!" is not a valid IPv4 address or hostname',
      'my.json: $.upstreams.backend.servers[5].address: "fe80::zz" is not an IPv6 address',
      'my.json: $.upstreams.backend.servers[7].address: duplicate server 10.0.0.2:8000',
      'my.json: $.servers[0].listen[0]: a port is required ("host:port")',
      'my.json: $.servers[0].listen[1]: port must be 1-65535',
      'my.json: $.servers[0].listen[2]: address "exa": a port is required ("host:port")',
      'my.json: $.admin.allow[0]: "10.0.0.0/33" has an invalid prefix length (0-32)',
      'my.json: $.admin.allow[1]: "everyone" is not an address or CIDR such as "10.0.0.0/8"',
    ]);
  });

  it('rejects a proxyPass to an unknown upstream, and a malformed proxyPass', async () => {
    const raw = minimal();
    (raw.servers as { locations: Record<string, unknown>[] }[])[0]!.locations.push(
      { path: '/a/', proxyPass: 'http://backedn' },
      { path: '/b/', proxyPass: 'ftp://backend' },
      { path: '/c/', proxyPass: 'backend' },
    );
    expect(await problems(raw)).toEqual([
      'my.json: $.servers[0].locations[1].proxyPass: no upstream named "backedn" (define it under $.upstreams, or use "http://host:port")',
      'my.json: $.servers[0].locations[2].proxyPass: must be "http://upstream_name" or "http://host:port", or the same with "https://" (optionally followed by a URI path)',
      'my.json: $.servers[0].locations[3].proxyPass: must be "http://upstream_name" or "http://host:port", or the same with "https://" (optionally followed by a URI path)',
    ]);
  });

  it('reports cross-field problems together with shape problems (every problem at once)', async () => {
    const raw = {
      servers: [{ listen: ['127.0.0.1:8080', 'nope:'], locations: [{ path: '/', proxyPass: 'http://nosuch' }, { path: 'x', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: '127.0.0.1:8000', weight: -1 }, { address: '1.2.3.4:99999' }] } },
    };
    expect(await problems(raw)).toEqual([
      'my.json: $.servers[0].locations[1].path: must be a path starting with "/"',
      'my.json: $.upstreams.backend.servers[0].weight: must be an integer >= 1',
      'my.json: $.upstreams.backend.servers[1].address: port must be 1-65535',
      'my.json: $.servers[0].listen[1]: "" is not a port number',
      'my.json: $.servers[0].locations[0].proxyPass: no upstream named "nosuch" (define it under $.upstreams, or use "http://host:port")',
    ]);
  });

  it('does not guess at proxyPass names when $.upstreams itself is malformed', async () => {
    expect(await problems({ servers: [{ listen: ['127.0.0.1:8080'], locations: [{ path: '/', proxyPass: 'http://backend' }] }], upstreams: [] }))
      .toEqual(['my.json: $.upstreams: must be an object of named upstreams']);
  });

  it('rejects other cross-field mistakes', async () => {
    const raw = {
      servers: [
        { listen: ['127.0.0.1:8080'], default: true, locations: [{ path: '/', proxyPass: 'http://backend' }, { path: '/', proxyPass: 'http://backend' }] },
        { listen: ['127.0.0.1:8080'], default: true, locations: [{ path: '/', proxyPass: 'http://backend' }, { path: '/', exact: true, proxyPass: 'http://backend' }] },
      ],
      upstreams: {
        backend: { servers: [{ address: '127.0.0.1:8000' }], nextUpstream: { on: ['off', 'error'] } },
        'bad name': { servers: [{ address: '127.0.0.1:8001' }] },
      },
      admin: { listen: '127.0.0.1:8080' },
    };
    expect(await problems(raw)).toEqual([
      'my.json: $.upstreams.backend.nextUpstream.on: "off" cannot be combined with other conditions',
      'my.json: $.upstreams["bad name"]: upstream names may contain only letters, digits, "_", "-" and "."',
      'my.json: $.servers[0].locations[1].path: duplicate location "/"',
      'my.json: $.servers[1].default: a default server for 127.0.0.1:8080 is already $.servers[0]',
      'my.json: $.admin.listen: 127.0.0.1:8080 is also a server listen address',
    ]);
  });

  it('rejects a wildcard listen and a specific address on the same port (the second bind would fail)', async () => {
    const loc = [{ path: '/', proxyPass: 'http://127.0.0.1:9000' }];
    const raw = {
      servers: [
        { listen: ['8080', '[::]:8081'], locations: loc },
        { listen: ['127.0.0.1:8080', '[::1]:8081', '127.0.0.1:8081', '0.0.0.0:8080'], serverName: ['b'], locations: loc },
      ],
    };
    expect(await problems(raw)).toEqual([
      'my.json: $.servers[1].listen[0]: 127.0.0.1:8080 cannot be bound together with 0.0.0.0:8080 ($.servers[0].listen[0]); listen on the same address in both servers',
      'my.json: $.servers[1].listen[1]: [::1]:8081 cannot be bound together with [::]:8081 ($.servers[0].listen[1]); listen on the same address in both servers',
      'my.json: $.servers[1].listen[0]: 127.0.0.1:8080 cannot be bound together with 0.0.0.0:8080 ($.servers[1].listen[3]); listen on the same address in both servers',
    ]);
    // The same wildcard address in several servers is ordinary name-based virtual hosting.
    expect(await problems({ servers: [{ listen: ['8080'], locations: loc }, { listen: ['0.0.0.0:8080'], serverName: ['b'], locations: loc }] })).toEqual([]);
  });

  it('rejects proxySetHeader entries that would break the request (bad names, CR/LF, framing headers)', async () => {
    const raw = minimal();
    (raw.servers as { locations: Record<string, unknown>[] }[])[0]!.locations[0]!.proxySetHeader = {
      'Bad Name': 'x', 'X-Split': 'a\r\nInjected: 1', 'Content-Length': '5', 'Transfer-Encoding': 'chunked', Connection: 'close',
      Upgrade: '', 'X-Fine': 'ok',
    };
    expect(await problems(raw)).toEqual([
      'my.json: $.servers[0].locations[0].proxySetHeader["Bad Name"]: is not a valid header name',
      'my.json: $.servers[0].locations[0].proxySetHeader["X-Split"]: header values may not contain CR, LF or NUL',
      'my.json: $.servers[0].locations[0].proxySetHeader["Content-Length"]: cannot be set: sessionlb manages "Content-Length" itself (connection handling and body framing); only "" is accepted',
      'my.json: $.servers[0].locations[0].proxySetHeader["Transfer-Encoding"]: cannot be set: sessionlb manages "Transfer-Encoding" itself (connection handling and body framing); only "" is accepted',
      'my.json: $.servers[0].locations[0].proxySetHeader.Connection: cannot be set: sessionlb manages "Connection" itself (connection handling and body framing); only "" is accepted',
    ]);
  });

  it('lists the allowed nextUpstream conditions', async () => {
    const lines = await problems(minimal({}, { nextUpstream: { on: ['error', 'http_418'] } }));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^my\.json: \$\.upstreams\.backend\.nextUpstream\.on\[1\]: must be one of error, timeout, .*http_429.*non_idempotent, off$/);
  });

  it('reports an unreadable file and invalid JSON at $', async () => {
    await expect(loadConfigFile('/nonexistent/x.json')).rejects.toThrow(/^\/nonexistent\/x\.json: \$: cannot read file: /);
  });
});

describe('defaults (nginx)', () => {
  it('fills in every issue-2 default', async () => {
    const c: Config = await loadConfig(minimal({ admin: { listen: '9100' } }));
    const up = c.upstreams.get('backend')!;
    expect(up.balance.kind).toBe('round_robin');
    expect(up.servers[0]).toMatchObject({ address: '127.0.0.1:8000', host: '127.0.0.1', port: 8000, weight: 1, maxFails: 1, failTimeoutMs: 10_000, backup: false, down: false, maxConns: 0 });
    expect(up.keepalive).toBe(32);
    expect(up.keepaliveTimeoutMs).toBe(60_000);
    expect([...up.nextUpstream.on]).toEqual(['error', 'timeout']);
    expect(up.nextUpstream.tries).toBe(0);
    expect(up.nextUpstream.timeoutMs).toBe(0);
    expect(up.timeouts).toEqual({ connectMs: 60_000, sendMs: 60_000, readMs: 60_000 });
    expect(c.servers[0]!.locations[0]!.clientMaxBodySize).toBe(1024 * 1024);
    expect(c.servers[0]!.isDefault).toBe(false);
    expect(c.keepaliveTimeoutMs).toBe(75_000);
    expect(c.shutdownTimeoutMs).toBe(30_000);
    expect(c.sendTimeoutMs).toBe(60_000);
    expect(c.admin!.listen).toMatchObject({ host: '127.0.0.1', port: 9100 });
    expect(c.admin!.allowText).toEqual(['127.0.0.1/32', '::1/128']);
    expect(c.admin!.allow.check('127.0.0.1', 'ipv4')).toBe(true);
    expect(c.admin!.allow.check('10.0.0.1', 'ipv4')).toBe(false);
  });

  it('upstream server port defaults to 80; IPv6 and hostnames are accepted; localhost is resolved', async () => {
    const c = await loadConfig(minimal({}, { servers: [{ address: '10.0.0.1' }, { address: '[::1]:81' }, { address: 'localhost:82' }] }));
    const servers = c.upstreams.get('backend')!.servers;
    expect(servers[0]).toMatchObject({ address: '10.0.0.1:80', port: 80 });
    expect(servers[1]).toMatchObject({ address: '[::1]:81', host: '::1', port: 81 });
    const local = servers.slice(2);
    expect(local.length).toBeGreaterThanOrEqual(1);
    for (const s of local) expect(['127.0.0.1', '::1']).toContain(s.host);
  });

  it('clientMaxBodySize is inherited global -> server -> location; "0" is unlimited', async () => {
    const c = await loadConfig({
      clientMaxBodySize: '2m',
      servers: [
        { listen: ['127.0.0.1:8080'], locations: [{ path: '/', proxyPass: 'http://backend' }, { path: '/up/', proxyPass: 'http://backend', clientMaxBodySize: '0' }] },
        { listen: ['127.0.0.1:8081'], clientMaxBodySize: '512k', locations: [{ path: '/', proxyPass: 'http://backend' }] },
      ],
      upstreams: { backend: { servers: [{ address: '127.0.0.1:8000' }] } },
    });
    expect(c.servers[0]!.locations.map((l) => l.clientMaxBodySize)).toEqual([2 * 1024 * 1024, 0]);
    expect(c.servers[1]!.locations[0]!.clientMaxBodySize).toBe(512 * 1024);
  });

  it('proxyPass to host:port makes an implicit upstream; a URI becomes the rewrite prefix', async () => {
    const c = await loadConfig({
      servers: [{ listen: ['127.0.0.1:8080'], locations: [{ path: '/old/', proxyPass: 'http://127.0.0.1:9000/new/' }, { path: '/', proxyPass: 'http://[::1]:9001' }] }],
    });
    const [old, root] = c.servers[0]!.locations;
    expect(old).toMatchObject({ upstream: '127.0.0.1:9000', rewritePrefix: '/new/' });
    expect(root).toMatchObject({ upstream: '[::1]:9001', rewritePrefix: null });
    expect(c.upstreams.get('127.0.0.1:9000')!.implicit).toBe(true);
    expect(c.upstreams.get('[::1]:9001')!.servers[0]!.host).toBe('::1');
  });

  it('parses nginx durations and sizes', () => {
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('10s')).toBe(10_000);
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(parseDuration('30')).toBe(30_000);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('1.5s')).toBeNaN();
    expect(parseDuration('1m30')).toBeNaN();
    expect(parseSize('0')).toBe(0);
    expect(parseSize('512k')).toBe(512 * 1024);
    expect(parseSize('1M')).toBe(1024 * 1024);
    expect(parseSize('1g')).toBe(1024 ** 3);
    expect(parseSize('1mb')).toBeNaN();
  });
});

describe('JSON Schema', () => {
  it('config/sessionlb.schema.json is what `npm run schema` generates from the zod schema (not stale)', () => {
    const committed = readFileSync(new URL('../config/sessionlb.schema.json', import.meta.url), 'utf8');
    expect(committed, 'config/sessionlb.schema.json is stale: run `npm run schema`').toBe(configJsonSchemaText());
  });

  it('describes the issue-2 keys and forbids unknown ones', () => {
    const schema = JSON.parse(configJsonSchemaText()) as {
      additionalProperties: boolean;
      properties: Record<string, unknown>;
      anyOf: unknown;
    };
    expect(schema.additionalProperties).toBe(false);
    // `servers` is required unless the file has `streams` (TCP proxies only).
    expect(schema.anyOf).toEqual([{ required: ['servers'] }, { required: ['streams'] }]);
    for (const key of ['servers', 'upstreams', 'admin', 'clientMaxBodySize', 'keepaliveTimeout', 'shutdownTimeout', 'sendTimeout']) {
      expect(schema.properties, key).toHaveProperty(key);
    }
    const text = configJsonSchemaText();
    expect(text).not.toContain('"format": "starts_with"'); // zod-only format names break strict validators
    for (const key of ['weight', 'maxFails', 'failTimeout', 'backup', 'down', 'maxConns', 'keepalive', 'nextUpstream', 'timeouts', 'proxySetHeader', 'serverName', 'exact']) {
      expect(text, key).toContain(`"${key}"`);
    }
  });
});

describe('docs/configuration.md', () => {
  it('documents every config key the schema accepts', () => {
    const readme = readFileSync(new URL('../docs/configuration.md', import.meta.url), 'utf8');
    const keys = new Set<string>();
    const walk = (node: unknown): void => {
      if (node === null || typeof node !== 'object') return;
      if (Array.isArray(node)) { node.forEach(walk); return; }
      const props = (node as { properties?: Record<string, unknown> }).properties;
      if (props !== undefined) for (const k of Object.keys(props)) keys.add(k);
      for (const v of Object.values(node)) walk(v);
    };
    walk(JSON.parse(configJsonSchemaText()));
    expect(keys.size).toBeGreaterThan(30);
    const undocumented = [...keys].filter((k) => !new RegExp(`[\`".]${k.replace(/\$/g, '\\$')}[\`"\\s:]`).test(readme));
    expect(undocumented).toEqual([]);
  });
});

describe('config files shipped in config/', () => {
  const dir = new URL('../config/examples/', import.meta.url);
  const examples = readdirSync(dir).filter((f) => f.endsWith('.json'));

  it('has the reference nginx setup and a failover example', () => {
    expect(examples).toContain('nginx-reference.json');
    expect(examples).toContain('failover.json');
  });

  it.each(examples)('examples/%s loads', async (name) => {
    const path = new URL(name, dir).pathname;
    const config = await loadConfigFile(path);
    expect(config.servers.length + config.streams.length).toBeGreaterThan(0);
  });

  it('default.json loads and is the demo setup (weights 3:1:1:1)', async () => {
    const c = await loadConfigFile(new URL('../config/default.json', import.meta.url).pathname);
    expect(c.upstreams.get('backend')!.servers.map((s) => s.weight)).toEqual([3, 1, 1, 1]);
  });

  it('the reference translation keeps nginx\'s weights 3:1:1:1 and server_name', async () => {
    const c = await loadConfigFile(new URL('nginx-reference.json', dir).pathname);
    expect(c.upstreams.get('backend')!.servers.map((s) => s.weight)).toEqual([3, 1, 1, 1]);
    expect(c.servers[0]!.serverNames).toEqual(['www.example.com']);
    expect(c.servers[0]!.listen[0]).toMatchObject({ port: 80 });
  });
});
