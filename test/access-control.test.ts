/**
 * allow/deny and auth_basic against real nginx: the same rules in both, requests from 127.0.0.1,
 * 127.0.0.2 and 127.0.0.3 (localAddress) to several locations, statuses and WWW-Authenticate
 * compared; the htpasswd file holds bcrypt (bcryptjs), SHA-512 crypt and apr1 users (openssl
 * passwd at test time). Then reloads: a changed user file, a missing one.
 */
import http from 'node:http';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigFile } from '../src/config/load.js';
import { SessionLB } from '../src/runtime/sessionlb.js';
import { freePort, startBackend, type Backend } from './helpers/net.js';
import { captureLog, type LogRecord } from './helpers/capture-log.js';
import { findBinary } from './helpers/memcached.js';
import { NGINX, startNginx, type RunningNginx } from './helpers/nginx.js';

const OPENSSL = findBinary('openssl');
const withNginx = NGINX !== null || process.env.CI === 'true';

function openssl(flag: string, password: string): string {
  if (OPENSSL === null) throw new Error('openssl is not installed');
  return execFileSync(OPENSSL, ['passwd', flag, password]).toString().trim();
}

interface Answer { status: number; realm: string | undefined; body: string }

function get(port: number, path: string, from: string, auth?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { Host: 'localhost' };
    if (auth !== undefined) headers.Authorization = auth;
    const req = http.request({ host: from.includes(':') ? '::1' : '127.0.0.1', port, path, localAddress: from, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => {
        resolve({ status: res.statusCode!, realm: res.headers['www-authenticate'], body });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

let dir: string;
let backend: Backend;
let htpasswd: string;
const users = { bob: 'bcrypt pass', sam: 'sha512 pass', alice: 'apr1 pass' };

function userFile(entries: Record<string, string>): string {
  return Object.entries(entries).map(([u, h]) => `${u}:${h}`).join('\n') + '\n';
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sessionlb-acl-'));
  backend = await startBackend('b');
  htpasswd = userFile({
    bob: bcrypt.hashSync(users.bob, 5).replace(/^\$2b\$/, '$2y$'), // htpasswd -B writes $2y$
    sam: openssl('-6', users.sam),
    alice: openssl('-apr1', users.alice),
  });
});
afterAll(async () => {
  await backend?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The rules, written once for nginx and once for sessionlb. */
function nginxBody(port: number, file: string): string {
  const pass = `proxy_pass http://127.0.0.1:${backend.port};`;
  return `
  server {
    listen 127.0.0.1:${port};
    listen [::1]:${port};
    server_name localhost;
    deny 127.0.0.3;
    location / { ${pass} }
    location /api/ { allow 127.0.0.1; deny all; ${pass} }
    location /v6/ { allow ::/0; deny all; ${pass} }
    location /open/ { allow all; ${pass} }
    location /net/ { deny 127.0.0.2/32; allow 127.0.0.0/8; allow ::1; deny all; ${pass} }
    location /net6/ { deny ::1; allow all; ${pass} }
    location /private/ { auth_basic "Restricted Area"; auth_basic_user_file ${file}; ${pass} }
    location /private/public/ { auth_basic off; ${pass} }
    location /both/ { allow 127.0.0.1; deny all; auth_basic "Both"; auth_basic_user_file ${file}; ${pass} }
  }`;
}

function sessionlbConfig(port: number, file: string): Record<string, unknown> {
  const pass = `http://127.0.0.1:${backend.port}`;
  return {
    workers: 1,
    accessLog: false,
    servers: [{
      listen: [`127.0.0.1:${port}`, `[::1]:${port}`],
      serverName: ['localhost'],
      access: [{ deny: '127.0.0.3' }],
      locations: [
        { path: '/', proxyPass: pass },
        { path: '/api/', proxyPass: pass, access: [{ allow: '127.0.0.1' }, { deny: 'all' }] },
        { path: '/v6/', proxyPass: pass, access: [{ allow: '::/0' }, { deny: 'all' }] },
        { path: '/open/', proxyPass: pass, access: [{ allow: 'all' }] },
        { path: '/net/', proxyPass: pass, access: [{ deny: '127.0.0.2/32' }, { allow: '127.0.0.0/8' }, { allow: '::1' }, { deny: 'all' }] },
        { path: '/net6/', proxyPass: pass, access: [{ deny: '::1' }, { allow: 'all' }] },
        { path: '/private/', proxyPass: pass, authBasic: 'Restricted Area', authBasicUserFile: file },
        { path: '/private/public/', proxyPass: pass, authBasic: 'off' },
        { path: '/both/', proxyPass: pass, access: [{ allow: '127.0.0.1' }, { deny: 'all' }], authBasic: 'Both', authBasicUserFile: file },
      ],
    }],
  };
}

const CLIENTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3', '::1'];
const PATHS = ['/', '/api/x', '/v6/', '/open/', '/net/', '/net6/', '/private/', '/private/public/', '/both/'];
const AUTHS: Array<string | undefined> = [
  undefined,
  basic('bob', users.bob), basic('sam', users.sam), basic('alice', users.alice),
  basic('bob', 'wrong'), basic('sam', users.alice), basic('nobody', 'x'),
  'Basic !!!', 'Bearer abc', basic('', 'x'), `Basic ${Buffer.from('nocolon').toString('base64')}`, `basic ${Buffer.from(`alice:${users.alice}`).toString('base64')}`,
];

async function table(port: number): Promise<string[]> {
  const rows: string[] = [];
  for (const from of CLIENTS) {
    for (const path of PATHS) {
      const auths = path.startsWith('/private/') || path === '/both/' ? AUTHS : [undefined];
      for (const auth of auths) {
        const a = await get(port, path, from, auth);
        rows.push(`${from} ${path} ${auth ?? '-'} -> ${a.status} ${a.realm ?? ''}`);
      }
    }
  }
  return rows;
}

async function startSessionlb(configFile: string): Promise<{ lb: SessionLB; records: LogRecord[] }> {
  const { log, records } = captureLog();
  const lb = new SessionLB(await loadConfigFile(configFile), { log });
  await lb.start();
  return { lb, records };
}

describe('allow/deny and auth_basic', () => {
  it('answer as nginx does (403 before 401, realms, inheritance, bcrypt/SHA-512/apr1 users)', async () => {
    const file = join(dir, 'htpasswd');
    writeFileSync(file, htpasswd);
    const port = await freePort();
    const configFile = join(dir, 'sessionlb.json');
    writeFileSync(configFile, JSON.stringify(sessionlbConfig(port, file)));
    const { lb, records } = await startSessionlb(configFile);
    let ours: string[];
    try {
      ours = await table(port);
    } finally {
      await lb.stop(1000);
    }
    // What nginx does, spelled out (and checked against nginx itself below when it is installed).
    const expectRow = (from: string, path: string, auth: string | undefined): string => {
      const row = ours.find((r) => r.startsWith(`${from} ${path} ${auth ?? '-'} ->`));
      return row!.slice(row!.indexOf('->') + 3).trim();
    };
    expect(expectRow('127.0.0.1', '/', undefined)).toBe('200');
    expect(expectRow('127.0.0.3', '/', undefined)).toBe('403');
    expect(expectRow('127.0.0.3', '/open/', undefined)).toBe('200'); // a location's own list replaces the server's
    expect(expectRow('127.0.0.2', '/api/x', undefined)).toBe('403');
    expect(expectRow('127.0.0.1', '/v6/', undefined)).toBe('403'); // IPv4 client, IPv6 rule: only `all` matches
    expect(expectRow('127.0.0.2', '/net/', undefined)).toBe('403');
    expect(expectRow('127.0.0.1', '/net/', undefined)).toBe('200');
    expect(expectRow('::1', '/v6/', undefined)).toBe('200');
    expect(expectRow('::1', '/api/x', undefined)).toBe('403');
    expect(expectRow('::1', '/net6/', undefined)).toBe('403');
    expect(expectRow('127.0.0.1', '/net6/', undefined)).toBe('200');
    expect(expectRow('127.0.0.1', '/private/', undefined)).toBe('401 Basic realm="Restricted Area"');
    for (const [u, p] of Object.entries(users)) expect(expectRow('127.0.0.2', '/private/', basic(u, p))).toBe('200');
    expect(expectRow('127.0.0.1', '/private/', basic('bob', 'wrong'))).toBe('401 Basic realm="Restricted Area"');
    expect(expectRow('127.0.0.1', '/private/public/', undefined)).toBe('200');
    expect(expectRow('127.0.0.2', '/both/', basic('bob', users.bob))).toBe('403');
    expect(expectRow('127.0.0.1', '/both/', undefined)).toBe('401 Basic realm="Both"');
    // The log: nginx's messages, never a password or the Authorization header.
    const text = JSON.stringify(records);
    expect(text).toContain('access forbidden by rule');
    expect(text).toContain('user \\"bob\\": password mismatch');
    for (const p of Object.values(users)) expect(text).not.toContain(p);
    expect(text).not.toContain(Buffer.from(`bob:wrong`).toString('base64'));

    if (!withNginx) return;
    const nginxPort = await freePort();
    const nginx: RunningNginx = await startNginx(nginxPort, nginxBody(nginxPort, '$DIR/htpasswd'), { files: { htpasswd } });
    let theirs: string[];
    try {
      theirs = await table(nginxPort);
    } finally {
      await nginx.stop();
    }
    expect(ours).toEqual(theirs);
  }, 60_000);

  it('re-reads the user file on reload; a missing file fails the reload and the old users still work', async () => {
    const sub = mkdtempSync(join(dir, 'reload-'));
    const file = join(sub, 'htpasswd');
    writeFileSync(file, userFile({ sam: openssl('-6', 'first') }));
    const port = await freePort();
    const configFile = join(sub, 'sessionlb.json');
    writeFileSync(configFile, JSON.stringify(sessionlbConfig(port, file)));
    const { lb, records } = await startSessionlb(configFile);
    try {
      expect((await get(port, '/private/', '127.0.0.1', basic('sam', 'first'))).status).toBe(200);
      writeFileSync(file, userFile({ sam: openssl('-6', 'second'), alice: openssl('-apr1', 'third') }));
      expect(await lb.reloadFromFile(configFile)).toBe(true);
      expect((await get(port, '/private/', '127.0.0.1', basic('sam', 'first'))).status).toBe(401);
      expect((await get(port, '/private/', '127.0.0.1', basic('sam', 'second'))).status).toBe(200);
      expect((await get(port, '/private/', '127.0.0.1', basic('alice', 'third'))).status).toBe(200);
      unlinkSync(file);
      expect(await lb.reloadFromFile(configFile)).toBe(false);
      const failure = records.filter((r) => r.level >= 50).map((r) => JSON.stringify(r)).join('\n');
      expect(failure).toContain(`cannot read user file ${file}`);
      expect((await get(port, '/private/', '127.0.0.1', basic('sam', 'second'))).status).toBe(200);
      expect((await get(port, '/private/', '127.0.0.1', basic('alice', 'nope'))).status).toBe(401);
    } finally {
      await lb.stop(1000);
    }
  }, 30_000);

  it('guards websocket upgrades too: 403 before the handshake reaches the server, 401 with the realm', async () => {
    const sub = mkdtempSync(join(dir, 'ws-'));
    const file = join(sub, 'htpasswd');
    writeFileSync(file, userFile({ alice: openssl('-apr1', 'pw') }));
    const port = await freePort();
    const configFile = join(sub, 'sessionlb.json');
    writeFileSync(configFile, JSON.stringify(sessionlbConfig(port, file)));
    const { lb } = await startSessionlb(configFile);
    let upgrades = 0;
    backend.server.on('upgrade', (_req: http.IncomingMessage, socket: net.Socket) => {
      upgrades++;
      socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    });
    const upgrade = (path: string, from: string, auth = ''): Promise<string> => new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port, localAddress: from }, () => {
        socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${auth}\r\n`);
      });
      let text = '';
      socket.setEncoding('latin1').on('data', (d: string) => { text += d; if (text.includes('\r\n\r\n')) { socket.destroy(); resolve(text.split('\r\n\r\n')[0]!); } });
      socket.on('error', reject);
      socket.on('close', () => resolve(text));
    });
    try {
      expect(await upgrade('/api/x', '127.0.0.2')).toMatch(/^HTTP\/1.1 403 /);
      const challenged = await upgrade('/private/', '127.0.0.1');
      expect(challenged).toMatch(/^HTTP\/1.1 401 /);
      expect(challenged).toContain('WWW-Authenticate: Basic realm="Restricted Area"');
      expect(upgrades).toBe(0);
      // Right credentials: on to the server, which switches protocols.
      expect(await upgrade('/private/', '127.0.0.1', `Authorization: ${basic('alice', 'pw')}\r\n`)).toMatch(/^HTTP\/1.1 101 /);
      expect(upgrades).toBe(1);
    } finally {
      await lb.stop(1000);
    }
  });

  it('refuses a DES user file and authBasic without a user file at load', async () => {
    const sub = mkdtempSync(join(dir, 'bad-'));
    const file = join(sub, 'htpasswd');
    writeFileSync(file, 'old:rl0hN3Vf9ALvM\n');
    const configFile = join(sub, 'sessionlb.json');
    const port = await freePort();
    writeFileSync(configFile, JSON.stringify(sessionlbConfig(port, file)));
    await expect(loadConfigFile(configFile)).rejects.toThrow(/htpasswd:1: the password of user "old" is a crypt\(3\) DES hash/);
    const raw = sessionlbConfig(port, file) as { servers: Array<{ locations: Array<Record<string, unknown>> }> };
    delete raw.servers[0]!.locations[6]!.authBasicUserFile;
    writeFileSync(configFile, JSON.stringify(raw));
    await expect(loadConfigFile(configFile)).rejects.toThrow(/\$\.servers\[0\]\.locations\[6\]\.authBasic: needs "authBasicUserFile"/);
    raw.servers[0]!.locations[1]!.access = [{ allow: '10.0.0.0/33' }];
    writeFileSync(configFile, JSON.stringify(raw));
    await expect(loadConfigFile(configFile)).rejects.toThrow(/locations\[1\]\.access\[0\]\.allow: "10.0.0.0\/33" has an invalid prefix/);
  });
});
