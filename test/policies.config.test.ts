/** `balance` config forms, nginx's restrictions (check), and the key template variables. */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { ConfigError } from '../src/config/model.js';
import { compileTemplate, cookieValue, normalizeUriPath, queryArg, type CompiledTemplate, type VariableSource } from '../src/nginx-language/variables.js';

async function problems(upstream: Record<string, unknown>): Promise<string[]> {
  try {
    await loadConfig({
      servers: [{ listen: ['127.0.0.1:1'], locations: [{ path: '/', proxyPass: 'http://app' }] }],
      upstreams: { app: upstream },
    }, 'sessionlb.json');
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.message.split('\n');
    throw err;
  }
}

const two = [{ address: '10.0.0.1:80' }, { address: '10.0.0.2:80' }];

describe('balance values', () => {
  it.each([
    'round_robin', 'least_conn', 'ip_hash', 'random',
    { hash: '$cookie_PHPSESSID', consistent: true }, { hash: '$remote_addr' }, { hash: 'x$host${uri}y', consistent: false },
    { random: 'two', pick: 'least_conn' }, { random: 'two' },
  ])('accepts %j', async (balance) => {
    expect(await problems({ balance, servers: two })).toEqual([]);
  });

  it.each([
    ['least', '', 'must be one of "round_robin", "least_conn", "ip_hash", "random"'],
    [5, '', 'must be one of "round_robin", "least_conn", "ip_hash", "random"'],
    [{ hash: '' }, 'hash', 'must be a key such as "$cookie_PHPSESSID"'],
    [{ hash: 7 }, 'hash', 'must be a key such as "$cookie_PHPSESSID"'],
    [{ hash: '$cookie_x', consistent: 'yes' }, 'consistent', 'must be true or false'],
    [{ random: 'three' }, 'random', 'must be "two"'],
    [{ random: 'two', pick: 'round_robin' }, 'pick', 'must be "least_conn"'],
  ])('rejects %j', async (balance, key, message) => {
    const out = await problems({ balance, servers: two });
    expect(out).toHaveLength(1);
    // zod reports at the key when the object form is recognisable, else at `balance` (message names the key)
    expect(out[0]).toMatch(key === '' ? /^sessionlb\.json: \$\.upstreams\.app\.balance: / : new RegExp(`^sessionlb\\.json: \\$\\.upstreams\\.app\\.balance(\\.${key})?: `));
    expect(out[0]).toContain(message);
  });

  it('rejects unknown keys in the object forms', async () => {
    expect(await problems({ balance: { hash: '$uri', consistant: true }, servers: two }))
      .toEqual(['sessionlb.json: $.upstreams.app.balance.consistant: unknown key']);
  });

  it.each([
    ['$cookie', 'unknown variable "$cookie"'],
    ['$request_id', 'unknown variable "$request_id"'],
    ['a$', '"$" must be followed by a variable name'],
    ['${uri', 'missing "}"'],
  ])('reports a bad hash key %j at $.upstreams.app.balance.hash', async (key, message) => {
    const out = await problems({ balance: { hash: key }, servers: two });
    expect(out).toHaveLength(1);
    expect(out[0]).toContain('sessionlb.json: $.upstreams.app.balance.hash: ');
    expect(out[0]).toContain(message);
  });

  it.each(['ip_hash', 'random', { hash: '$uri' }, { hash: '$uri', consistent: true }, { random: 'two' }])(
    'rejects backup servers with %j, as nginx does',
    async (balance) => {
      const out = await problems({ balance, servers: [...two, { address: '10.0.0.3:80', backup: true }] });
      expect(out).toHaveLength(1);
      expect(out[0]).toMatch(/^sessionlb\.json: \$\.upstreams\.app\.servers\[2\]\.backup: backup servers cannot be used with "balance": /);
      expect(out[0]).toContain('does not support parameter "backup"');
    },
  );

  it('check reports these along with shape problems elsewhere in the file', async () => {
    const out = await problems({
      balance: { hash: '$nope' }, keepalive: -1,
      servers: [...two, { address: '10.0.0.3:80', backup: true }],
    });
    expect(out).toEqual([
      expect.stringContaining('$.upstreams.app.keepalive: must be an integer >= 0'),
      expect.stringContaining('$.upstreams.app.balance.hash: unknown variable "$nope"'),
      expect.stringContaining('$.upstreams.app.servers[2].backup: backup servers cannot be used with "balance": {"hash": "$nope"}'),
    ]);
  });

  it('allows backup servers with round_robin and least_conn', async () => {
    for (const balance of ['round_robin', 'least_conn']) {
      expect(await problems({ balance, servers: [...two, { address: '10.0.0.3:80', backup: true }] })).toEqual([]);
    }
  });

  it('rejects slowStart with hash, ip_hash and random, as nginx does', async () => {
    const out = await problems({ balance: 'ip_hash', servers: [...two, { address: '10.0.0.3:80', slowStart: '30s' }] });
    expect(out).toEqual([expect.stringContaining('$.upstreams.app.servers[2].slowStart: slowStart cannot be used with "balance": "ip_hash"')]);
    expect(await problems({ balance: 'least_conn', servers: [...two, { address: '10.0.0.3:80', slowStart: '30s' }] })).toEqual([]);
  });
});

describe('key templates (nginx variables)', () => {
  function evaluate(template: string, url: string, headers: Record<string, string> = {}, remoteAddress = '192.0.2.7'): string {
    const t = compileTemplate(template) as CompiledTemplate;
    expect(typeof t).toBe('object');
    return t.evaluate({ req: { url, headers }, remoteAddress } as unknown as VariableSource);
  }

  it('evaluates every variable', () => {
    const headers = { host: 'WWW.Example.com:8080', cookie: 'a=1; PHPSESSID=abc123 ; b=2', 'x-user-id': '42', 'user-agent': 'ua' };
    const url = '/a//b/./c/../d%20e?id=7&Name=x&empty&id=8';
    expect(evaluate('$remote_addr', url, headers)).toBe('192.0.2.7');
    expect(evaluate('$remote_addr', url, headers, '::ffff:192.0.2.9')).toBe('192.0.2.9');
    expect(evaluate('$request_uri', url, headers)).toBe(url);
    expect(evaluate('$uri', url, headers)).toBe('/a/b/d e');
    expect(evaluate('$args', url, headers)).toBe('id=7&Name=x&empty&id=8');
    expect(evaluate('$arg_id', url, headers)).toBe('7');
    expect(evaluate('$arg_name', url, headers)).toBe('x');
    expect(evaluate('$arg_empty', url, headers)).toBe('');
    expect(evaluate('$arg_missing', url, headers)).toBe('');
    expect(evaluate('$http_x_user_id', url, headers)).toBe('42');
    expect(evaluate('$http_user_agent', url, headers)).toBe('ua');
    expect(evaluate('$cookie_PHPSESSID', url, headers)).toBe('abc123');
    expect(evaluate('$cookie_phpsessid', url, headers)).toBe('abc123');
    expect(evaluate('$cookie_none', url, headers)).toBe('');
    expect(evaluate('$host', url, headers)).toBe('www.example.com');
    expect(evaluate('$host', url, { host: '[::1]:80' })).toBe('[::1]');
    expect(evaluate('user:${arg_id}:$cookie_b!', url, headers)).toBe('user:7:2!');
    expect(evaluate('plain', url, headers)).toBe('plain');
    expect(evaluate('é', url, headers)).toBe('\u00c3\u00a9'); // literal text hashes as UTF-8 bytes, like nginx
  });

  it('helpers', () => {
    expect(cookieValue('PHPSESSID=x', 'phpsessid')).toBe('x');
    expect(cookieValue('XPHPSESSID=y; PHPSESSID=x', 'phpsessid')).toBe('x');
    expect(cookieValue(undefined, 'a')).toBe('');
    expect(queryArg('/p?ab=1&a=2', 'a')).toBe('2');
    expect(queryArg('/p', 'a')).toBe('');
    expect(normalizeUriPath('/x/../../y')).toBe('/y');
    expect(normalizeUriPath('/plain/path')).toBe('/plain/path');
  });
});
