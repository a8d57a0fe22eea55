/**
 * Issue 16, config side: nginx listen parameters ("0.0.0.0:443 ssl", "80 default_server"), a
 * server's `ssl` block and `http2`, and `proxyPass: "https://..."` with the proxySsl* keys:
 * the listen parser, the model loadConfig builds, and every rule's message at its JSON path
 * (both when the rest of the file is valid and when its shape is wrong elsewhere).
 */
import { describe, expect, it } from 'vitest';
import { parseListen } from '../src/nginx-language/listen.js';
import { loadConfig } from '../src/config/load.js';
import { ConfigError, type Config } from '../src/config/model.js';

const FILE = '/etc/sessionlb/lb.json';
const loc = [{ path: '/', proxyPass: 'http://backend' }];
const upstreams = { backend: { servers: [{ address: '127.0.0.1:8000' }] } };
const ssl = { certificate: 'certs/shop.pem', certificateKey: 'certs/shop.key' };

async function load(raw: Record<string, unknown>): Promise<Config> {
  return loadConfig({ upstreams, ...raw }, FILE);
}

/** The lines `check` would print (empty when the file is valid). */
async function problems(raw: Record<string, unknown>): Promise<string[]> {
  try {
    await load(raw);
    return [];
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.message.split('\n').map((l) => l.replace(`${FILE}: `, ''));
  }
}

/** The same problems when the shape of another part of the file is wrong (cross-check path): the extra shape problem first. */
async function problemsWithShapeError(raw: Record<string, unknown>): Promise<string[]> {
  const lines = await problems({ ...raw, keepaliveTimeout: 'soon' });
  expect(lines[0]).toBe('$.keepaliveTimeout: must be a duration such as "500ms", "10s" or "1m"');
  return lines.slice(1);
}

describe('parseListen (nginx "ADDRESS [PARAMETER ...]")', () => {
  it('parses the address and the parameters sessionlb takes', () => {
    expect(parseListen('0.0.0.0:443 ssl')).toEqual({ host: '0.0.0.0', port: 443, family: 4, ssl: true, defaultServer: false, http2: false, proxyProtocol: false });
    expect(parseListen('[::]:443 ssl')).toEqual({ host: '::', port: 443, family: 6, ssl: true, defaultServer: false, http2: false, proxyProtocol: false });
    expect(parseListen('80 default_server')).toEqual({ host: '0.0.0.0', port: 80, family: 4, ssl: false, defaultServer: true, http2: false, proxyProtocol: false });
    expect(parseListen('127.0.0.1:8443  ssl   http2 default')).toMatchObject({ host: '127.0.0.1', port: 8443, ssl: true, defaultServer: true, http2: true });
    expect(parseListen(' 8080 ')).toEqual({ host: '0.0.0.0', port: 8080, family: 4, ssl: false, defaultServer: false, http2: false, proxyProtocol: false });
    expect(parseListen('9100', '127.0.0.1')).toMatchObject({ host: '127.0.0.1', port: 9100 });
  });

  it('names the parameter it rejects', () => {
    expect(parseListen('443 ssl proxy_protocol')).toMatchObject({ ssl: true, proxyProtocol: true });
    expect(parseListen('443 deferred')).toBe('listen parameter "deferred" is not supported by sessionlb (it takes "ssl", "default_server", "http2" and "proxy_protocol")');
    expect(parseListen('443 ssl quic')).toBe('listen parameter "quic" is not supported (no HTTP/3)');
    expect(parseListen('80 reuseport')).toBe('listen parameter "reuseport" is not supported by sessionlb (it takes "ssl", "default_server", "http2" and "proxy_protocol")');
    expect(parseListen('80 backlog=511')).toBe('listen parameter "backlog=511" is not supported by sessionlb (it takes "ssl", "default_server", "http2" and "proxy_protocol")');
    expect(parseListen('80 SSL')).toBe('unknown listen parameter "SSL" (sessionlb takes "ssl", "default_server", "http2" and "proxy_protocol")');
    expect(parseListen('80 constructor')).toBe('unknown listen parameter "constructor" (sessionlb takes "ssl", "default_server", "http2" and "proxy_protocol")');
  });

  it('reports a bad address as address.ts does', () => {
    expect(parseListen('')).toBe('must be a non-empty "host:port"');
    expect(parseListen('127.0.0.1')).toBe('a port is required ("host:port")');
    expect(parseListen('127.0.0.1 ssl')).toBe('address "127.0.0.1": a port is required ("host:port")');
    expect(parseListen('::1:443 ssl')).toBe('address "::1:443": IPv6 addresses must be written as "[addr]:port"');
    expect(parseListen('0.0.0.0:99999')).toBe('port must be 1-65535');
    // A space ends the address: the rest are parameters.
    expect(parseListen('exa mple:80')).toBe('address "exa": a port is required ("host:port")');
  });
});

describe('listen entries with parameters', () => {
  it('keeps plain strings as they are, and strips the parameters off the address', async () => {
    const c = await load({
      servers: [
        { listen: ['8080', '0.0.0.0:8443 ssl', '[::]:8443 ssl http2'], ssl, locations: loc },
      ],
    });
    expect(c.servers[0]!.listen).toEqual([
      { host: '0.0.0.0', port: 8080, key: '0.0.0.0:8080', ssl: false, defaultServer: false, proxyProtocol: false },
      { host: '0.0.0.0', port: 8443, key: '0.0.0.0:8443', ssl: true, defaultServer: false, proxyProtocol: false },
      { host: '::', port: 8443, key: '[::]:8443', ssl: true, defaultServer: false, proxyProtocol: false },
    ]);
    expect(c.servers[0]!.http2).toBe(true);
  });

  it('default_server applies to its address only; the `default` key to every entry', async () => {
    const c = await load({
      servers: [
        { listen: ['8080', '8081 default_server'], locations: loc },
        { listen: ['8080', '8082'], serverName: ['b'], default: true, locations: loc },
      ],
    });
    expect(c.servers[0]!.listen.map((l) => l.defaultServer)).toEqual([false, true]);
    expect(c.servers[0]!.isDefault).toBe(false);
    expect(c.servers[1]!.listen.map((l) => l.defaultServer)).toEqual([true, true]);
    expect(c.servers[1]!.isDefault).toBe(true);
  });

  it('default servers on different addresses are fine; nginx\'s older "default" spelling works', async () => {
    const c = await load({
      servers: [
        { listen: ['8080 default', '8081'], locations: loc },
        { listen: ['8080', '8081 default_server'], serverName: ['b'], locations: loc },
      ],
    });
    expect(c.servers.map((s) => s.listen.map((l) => l.defaultServer))).toEqual([[true, false], [false, true]]);
  });

  it('rejects two default servers on one address, at the entry or at the `default` key', async () => {
    const raw = {
      servers: [
        { listen: ['8080 default_server', '8081'], locations: loc },
        { listen: ['8080 default_server'], serverName: ['b'], locations: loc },
        { listen: ['8081'], serverName: ['c'], default: true, locations: loc },
        { listen: ['8081 default_server'], serverName: ['d'], locations: loc },
      ],
    };
    const expected = [
      '$.servers[1].listen[0]: a default server for 0.0.0.0:8080 is already $.servers[0]',
      '$.servers[3].listen[0]: a default server for 0.0.0.0:8081 is already $.servers[2]',
    ];
    expect(await problems(raw)).toEqual(expected);
    expect(await problemsWithShapeError(raw)).toEqual(expected);
    expect(await problems({
      servers: [
        { listen: ['8080 default_server'], locations: loc },
        { listen: ['8080'], serverName: ['b'], default: true, locations: loc },
      ],
    })).toEqual(['$.servers[1].default: a default server for 0.0.0.0:8080 is already $.servers[0]']);
  });

  it('rejects parameters it does not take, and http2 without ssl on the entry', async () => {
    const raw = {
      servers: [{ listen: ['8080 deferred', '8081 reuseport', '8082 http2', '8083 sll'], locations: loc }],
    };
    const expected = [
      '$.servers[0].listen[0]: listen parameter "deferred" is not supported by sessionlb (it takes "ssl", "default_server", "http2" and "proxy_protocol")',
      '$.servers[0].listen[1]: listen parameter "reuseport" is not supported by sessionlb (it takes "ssl", "default_server", "http2" and "proxy_protocol")',
      '$.servers[0].listen[2]: "http2" without "ssl": sessionlb offers HTTP/2 only over TLS (h2c is not offered)',
      '$.servers[0].listen[3]: unknown listen parameter "sll" (sessionlb takes "ssl", "default_server", "http2" and "proxy_protocol")',
    ];
    expect(await problems(raw)).toEqual(expected);
    expect(await problemsWithShapeError(raw)).toEqual(expected);
  });

  it('requires every server on one address to agree on ssl', async () => {
    const raw = {
      servers: [
        { listen: ['8080', '8443 ssl'], ssl, locations: loc },
        { listen: ['0.0.0.0:8443', '8080 ssl'], serverName: ['b'], ssl, locations: loc },
      ],
    };
    const expected = [
      '$.servers[1].listen[0]: 0.0.0.0:8443 is listed without "ssl" here but with it in $.servers[0].listen[1]; ssl applies to an address: list it the same way in every server',
      '$.servers[1].listen[1]: 0.0.0.0:8080 is listed with "ssl" here but without it in $.servers[0].listen[0]; ssl applies to an address: list it the same way in every server',
    ];
    expect(await problems(raw)).toEqual(expected);
    expect(await problemsWithShapeError(raw)).toEqual(expected);
  });

  it('keeps the wildcard, stream and admin overlap checks working with parameters', async () => {
    expect(await problems({
      servers: [
        { listen: ['8443 ssl'], ssl, locations: loc },
        { listen: ['127.0.0.1:8443 ssl'], serverName: ['b'], ssl, locations: loc },
      ],
    })).toEqual([
      '$.servers[1].listen[0]: 127.0.0.1:8443 cannot be bound together with 0.0.0.0:8443 ($.servers[0].listen[0]); listen on the same address in both servers',
    ]);
    expect(await problems({
      servers: [{ listen: ['127.0.0.1:8443 ssl default_server', '127.0.0.1:9443 ssl'], ssl, locations: loc }],
      streams: [{ listen: ['127.0.0.1:8443'], proxyPass: '127.0.0.1:5432' }],
      admin: { listen: '127.0.0.1:9443' },
    })).toEqual([
      '$.admin.listen: 127.0.0.1:9443 is also a server listen address',
      '$.streams[0].listen[0]: 127.0.0.1:8443 is already a listen address of $.servers[0]',
    ]);
  });
});

describe('a server\'s ssl block', () => {
  it('resolves certificate files against the config file\'s directory and applies nginx\'s defaults', async () => {
    const c = await load({ servers: [{ listen: ['80', '443 ssl'], ssl, locations: loc }] });
    expect(c.servers[0]!.ssl).toEqual({
      certificates: [{ certificate: '/etc/sessionlb/certs/shop.pem', key: '/etc/sessionlb/certs/shop.key' }],
      protocols: ['TLSv1.2', 'TLSv1.3'],
      ciphers: 'HIGH:!aNULL:!MD5',
      sessionTickets: true,
      sessionTimeoutMs: 300_000,
    });
    expect(c.servers[0]!.http2).toBe(false);
  });

  it('pairs lists of certificates and keys by position, and takes every setting', async () => {
    const c = await load({
      servers: [{
        listen: ['[::]:443 ssl'],
        http2: true,
        ssl: {
          certificate: ['/etc/ssl/shop.ecdsa.pem', '/etc/ssl/shop.rsa.pem'],
          certificateKey: ['/etc/ssl/shop.ecdsa.key', 'shop.rsa.key'],
          protocols: ['TLSv1.3', 'TLSv1.2', 'TLSv1.3'],
          ciphers: 'ECDHE+AESGCM',
          sessionTickets: false,
          sessionTimeout: '1h',
        },
        locations: loc,
      }],
    });
    expect(c.servers[0]!.ssl).toEqual({
      certificates: [
        { certificate: '/etc/ssl/shop.ecdsa.pem', key: '/etc/ssl/shop.ecdsa.key' },
        { certificate: '/etc/ssl/shop.rsa.pem', key: '/etc/sessionlb/shop.rsa.key' },
      ],
      protocols: ['TLSv1.2', 'TLSv1.3'],
      ciphers: 'ECDHE+AESGCM',
      sessionTickets: false,
      sessionTimeoutMs: 3_600_000,
    });
    expect(c.servers[0]!.http2).toBe(true);
  });

  it('serves several servers on one ssl address (chosen by SNI), each with its certificate', async () => {
    const c = await load({
      servers: [
        { listen: ['443 ssl default_server'], serverName: ['shop.example'], ssl, locations: loc },
        { listen: ['443 ssl'], serverName: ['*.example'], ssl: { certificate: 'wild.pem', certificateKey: 'wild.key' }, locations: loc },
      ],
    });
    expect(c.servers.map((s) => s.ssl!.certificates[0]!.certificate)).toEqual(['/etc/sessionlb/certs/shop.pem', '/etc/sessionlb/wild.pem']);
    expect(c.servers.map((s) => s.listen[0]!.defaultServer)).toEqual([true, false]);
  });

  it('requires an ssl block with a certificate for an ssl listen entry, and an ssl entry for an ssl block', async () => {
    const raw = {
      servers: [
        { listen: ['80', '443 ssl'], locations: loc },
        { listen: ['8080'], serverName: ['b'], ssl, locations: loc },
      ],
    };
    const expected = [
      '$.servers[0].ssl: is required: $.servers[0].listen[1] listens with "ssl"; give this server a "certificate" and a "certificateKey"',
      '$.servers[1].ssl: is set but this server has no listen entry with "ssl" (such as "443 ssl")',
    ];
    expect(await problems(raw)).toEqual(expected);
    expect(await problemsWithShapeError(raw)).toEqual(expected);
    expect(await problems({ servers: [{ listen: ['443 ssl'], ssl: { protocols: ['TLSv1.3'] }, locations: loc }] })).toEqual([
      '$.servers[0].ssl.certificate: is required',
      '$.servers[0].ssl.certificateKey: is required',
    ]);
  });

  it('checks the files, protocols and durations', async () => {
    const raw = {
      servers: [{
        listen: ['443 ssl'],
        ssl: { certificate: ['a.pem', 'b.pem'], certificateKey: 'a.key', sessionTimeout: '500ms' },
        locations: loc,
      }],
    };
    const expected = [
      '$.servers[0].ssl.certificateKey: lists 1 file but certificate lists 2: each certificate needs its key, in the same order',
      '$.servers[0].ssl.sessionTimeout: must be at least "1s"',
    ];
    expect(await problems(raw)).toEqual(expected);
    expect(await problemsWithShapeError(raw)).toEqual(expected);
    expect(await problems({
      servers: [{
        listen: ['443 ssl'],
        ssl: { certificate: [], certificateKey: 5, protocols: ['SSLv3'], ciphers: '', sessionTickets: 'yes', sessionTimeout: 'long', dhparam: 'x' },
        locations: loc,
      }],
    })).toEqual([
      '$.servers[0].ssl.certificate: must list at least one file',
      '$.servers[0].ssl.certificateKey: must be a file path or a list of file paths',
      '$.servers[0].ssl.protocols[0]: must be a list of "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"',
      '$.servers[0].ssl.ciphers: must be an OpenSSL cipher list',
      '$.servers[0].ssl.sessionTickets: must be true or false',
      '$.servers[0].ssl.sessionTimeout: must be a duration such as "500ms", "10s" or "1m"',
      '$.servers[0].ssl.dhparam: unknown key',
    ]);
  });

  it('offers HTTP/2 only over TLS', async () => {
    const raw = { servers: [{ listen: ['80'], http2: true, locations: loc }] };
    const expected = ['$.servers[0].http2: sessionlb offers HTTP/2 only over TLS (h2c is not offered): this server has no listen entry with "ssl"'];
    expect(await problems(raw)).toEqual(expected);
    expect(await problemsWithShapeError(raw)).toEqual(expected);
    // http2 with one ssl entry: on for that server (its ssl addresses).
    const c = await load({ servers: [{ listen: ['80', '443 ssl'], http2: true, ssl, locations: loc }] });
    expect(c.servers[0]!.http2).toBe(true);
  });
});

describe('proxyPass "https://..." and the proxySsl* keys', () => {
  it('builds upstreamTls with nginx\'s defaults; "http://" has none', async () => {
    const c = await load({
      servers: [{
        listen: ['80'],
        locations: [
          { path: '/', proxyPass: 'https://backend' },
          { path: '/plain/', proxyPass: 'http://backend' },
          { path: '/ip/', proxyPass: 'https://127.0.0.1/new/' },
          { path: '/v6/', proxyPass: 'https://[::1]:8443' },
        ],
      }],
    });
    const [named, plain, ip, v6] = c.servers[0]!.locations;
    const defaults = { verify: false, trustedCertificate: null, serverName: false, protocols: ['TLSv1.2', 'TLSv1.3'] };
    expect(named).toMatchObject({ upstream: 'backend', upstreamTls: { ...defaults, name: 'backend' } });
    expect(plain!.upstreamTls).toBeNull();
    // A missing port is 443 for https (nginx); the implicit upstream is named host:port.
    expect(ip).toMatchObject({ upstream: '127.0.0.1:443', rewritePrefix: '/new/', upstreamTls: { ...defaults, name: '127.0.0.1' } });
    expect(c.upstreams.get('127.0.0.1:443')).toMatchObject({ implicit: true, servers: [{ host: '127.0.0.1', port: 443 }] });
    expect(v6).toMatchObject({ upstream: '[::1]:8443', upstreamTls: { name: '::1' } });
  });

  it('takes each key from the nearest of location, server and top level', async () => {
    const c = await load({
      proxySslVerify: true,
      proxySslTrustedCertificate: 'ca.pem',
      proxySslProtocols: ['TLSv1.3'],
      servers: [{
        listen: ['80'],
        proxySslServerName: true,
        proxySslName: 'api.internal',
        locations: [
          { path: '/', proxyPass: 'https://backend' },
          { path: '/x/', proxyPass: 'https://backend', proxySslVerify: false, proxySslName: 'x.internal', proxySslTrustedCertificate: '/etc/ssl/x-ca.pem' },
        ],
      }],
    });
    expect(c.servers[0]!.locations.map((l) => l.upstreamTls)).toEqual([
      { verify: true, trustedCertificate: '/etc/sessionlb/ca.pem', serverName: true, name: 'api.internal', protocols: ['TLSv1.3'] },
      { verify: false, trustedCertificate: '/etc/ssl/x-ca.pem', serverName: true, name: 'x.internal', protocols: ['TLSv1.3'] },
    ]);
  });

  it('rejects proxySslVerify without a trusted certificate (as nginx), and the keys on an "http://" location', async () => {
    const raw = {
      proxySslVerify: true,
      servers: [{
        listen: ['80'],
        locations: [
          { path: '/', proxyPass: 'https://backend' },
          { path: '/a/', proxyPass: 'https://backend' },
          { path: '/b/', proxyPass: 'http://backend', proxySslName: 'b', proxySslVerify: false },
          { path: '/c/', proxyPass: 'https://backend', proxySslVerify: true },
        ],
      }],
    };
    const expected = [
      '$.proxySslVerify: needs proxySslTrustedCertificate (the CA certificates to verify against), which $.servers[0].locations[0] does not have',
      '$.servers[0].locations[2].proxySslVerify: applies only to a "https://" proxyPass',
      '$.servers[0].locations[2].proxySslName: applies only to a "https://" proxyPass',
      '$.servers[0].locations[3].proxySslVerify: needs proxySslTrustedCertificate (the CA certificates to verify against), which $.servers[0].locations[3] does not have',
    ];
    expect(await problems(raw)).toEqual(expected);
    expect(await problemsWithShapeError(raw)).toEqual(expected);
    // On a server or the top level, the keys apply to its https locations only: no problem for http ones.
    expect(await problems({ proxySslName: 'x', servers: [{ listen: ['80'], proxySslServerName: true, locations: loc }] })).toEqual([]);
  });

  it('checks the shape of the keys', async () => {
    expect(await problems({
      servers: [{
        listen: ['80'],
        locations: [{ path: '/', proxyPass: 'https://backend', proxySslName: 'a b', proxySslProtocols: [], proxySslServerName: 1, proxySslTrustedCertificate: '' }],
      }],
    })).toEqual([
      '$.servers[0].locations[0].proxySslTrustedCertificate: must be a file path',
      '$.servers[0].locations[0].proxySslName: must be a host name',
      '$.servers[0].locations[0].proxySslServerName: must be true or false',
      '$.servers[0].locations[0].proxySslProtocols: must list at least one protocol',
    ]);
  });

  it('names the scheme in proxyPass messages', async () => {
    expect(await problems({
      servers: [{
        listen: ['80'],
        locations: [{ path: '/', proxyPass: 'https://backedn' }, { path: '/a/', proxyPass: 'ftp://backend' }],
      }],
    })).toEqual([
      '$.servers[0].locations[0].proxyPass: no upstream named "backedn" (define it under $.upstreams, or use "https://host:port")',
      '$.servers[0].locations[1].proxyPass: must be "http://upstream_name" or "http://host:port", or the same with "https://" (optionally followed by a URI path)',
    ]);
  });
});
