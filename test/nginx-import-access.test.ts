/** import-nginx: allow/deny and auth_basic carried over; restrictions that cannot be are errors unless --allow-open. */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { importNginx } from '../src/tools/import-nginx/import-nginx.js';
import { loadConfig } from '../src/config/load.js';

const CLI = join(import.meta.dirname, '..', 'dist', 'cli.js');
const dir = mkdtempSync(join(tmpdir(), 'sessionlb-import-access-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const CONF = `http {
  allow 10.0.0.0/8;
  deny all;
  server {
    listen 8080;
    auth_basic "Staff";
    auth_basic_user_file conf.d/htpasswd;
    satisfy all;
    location / { proxy_pass http://127.0.0.1:9001; }
    location /api/ {
      allow 192.168.1.0/24;
      allow 2001:db8::/32;
      deny all;
      auth_basic off;
      proxy_pass http://127.0.0.1:9001;
    }
  }
}
`;

describe('import-nginx: access control', () => {
  it('maps allow/deny and auth_basic to the same levels (nginx inheritance is sessionlb\'s)', async () => {
    const file = join(dir, 'nginx.conf');
    const result = importNginx(CONF, file);
    expect(result.errors).toEqual([]);
    expect(result.warnings).toEqual([]);
    const config = result.config as Record<string, unknown> & { servers: Array<Record<string, unknown> & { locations: Array<Record<string, unknown>> }> };
    expect(config.access).toEqual([{ allow: '10.0.0.0/8' }, { deny: 'all' }]);
    expect(config.servers[0]!.authBasic).toBe('Staff');
    expect(config.servers[0]!.authBasicUserFile).toBe(join(dir, 'conf.d/htpasswd'));
    expect(config.servers[0]!.locations[0]!.access).toBeUndefined();
    expect(config.servers[0]!.locations[1]).toMatchObject({
      access: [{ allow: '192.168.1.0/24' }, { allow: '2001:db8::/32' }, { deny: 'all' }], authBasic: 'off',
    });
    // What loads: the user file must exist (read at load).
    const raw = JSON.parse(JSON.stringify(config)) as typeof config;
    raw.servers[0]!.authBasicUserFile = join(dir, 'htpasswd');
    writeFileSync(join(dir, 'htpasswd'), 'u:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n');
    const loaded = await loadConfig(raw, join(dir, 'x.json'));
    expect(loaded.servers[0]!.locations[0]!.authBasic?.realm).toBe('Staff');
    expect(loaded.servers[0]!.locations[1]!.authBasic).toBeNull();
    expect(loaded.servers[0]!.locations[1]!.access).toHaveLength(3);
    expect(loaded.servers[0]!.locations[0]!.access).toHaveLength(2); // the top level's
  });

  const unmappable: Array<[string, string, RegExp]> = [
    ['auth_request', 'location /a/ { auth_request /auth; proxy_pass http://127.0.0.1:9001; }', /auth_request/],
    ['satisfy any', 'location /a/ { satisfy any; allow 10.0.0.0/8; auth_basic "x"; auth_basic_user_file /h; proxy_pass http://127.0.0.1:9001; }', /satisfy any/],
    ['deny inside if', 'location /a/ { if ($http_x = "1") { return 403; } proxy_pass http://127.0.0.1:9001; }', /"if" with access restrictions/],
    ['internal', 'location /a/ { internal; proxy_pass http://127.0.0.1:9001; }', /"internal"/],
    ['valid_referers', 'location /a/ { valid_referers none example.com; proxy_pass http://127.0.0.1:9001; }', /valid_referers/],
    ['limit_except', 'location /a/ { limit_except GET { deny all; } proxy_pass http://127.0.0.1:9001; }', /limit_except/],
    ['a dropped location with deny', 'location /admin/ { deny all; }', /location \/admin\/ restricts access and is not converted/],
  ];
  it.each(unmappable)('%s is an error (with its line), a warning with allowOpen', (_name, location, message) => {
    const text = `server {\n  listen 8080;\n  location / { proxy_pass http://127.0.0.1:9001; }\n  ${location}\n}\n`;
    const strict = importNginx(text, 'a.conf');
    expect(strict.errors.map((e) => `${e.line}: ${e.message}`).join('\n')).toMatch(new RegExp(`^4: .*${message.source}.*refusing to convert`, 'm'));
    const open = importNginx(text, 'a.conf', { allowOpen: true });
    expect(open.errors).toEqual([]);
    expect(open.warnings.map((w) => `${w.line}: ${w.message}`).join('\n')).toMatch(new RegExp(`^4: .*${message.source}.*--allow-open`, 'm'));
  });

  it('the CLI exits 1 naming FILE:LINE, and converts with --allow-open', async () => {
    const file = join(dir, 'open.conf');
    writeFileSync(file, 'server {\n  listen 8080;\n  location / {\n    auth_request /auth;\n    proxy_pass http://127.0.0.1:9001;\n  }\n}\n');
    const run = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => new Promise((resolve) => {
      execFile(process.execPath, [CLI, ...args], (err, stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
    });
    const strict = await run(['import-nginx', file]);
    expect(strict.code).toBe(1);
    expect(strict.stderr).toContain(`${file}:4: error: "auth_request": subrequest authentication`);
    expect(strict.stdout).toBe('');
    const open = await run(['import-nginx', file, '--allow-open']);
    expect(open.code).toBe(0);
    expect(open.stderr).toContain(`${file}:4: warning: "auth_request"`);
    expect(JSON.parse(open.stdout).servers[0].locations[0].path).toBe('/');
  });
});
