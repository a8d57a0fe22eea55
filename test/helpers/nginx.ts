/**
 * Real nginx (Debian's package) as the reference for behaviour sessionlb copies: `startNginx`
 * runs it in the foreground with a given `http {}` body on loopback, in its own temporary prefix
 * (no system files touched), and stops it by its PID. `NGINX` is null when nginx is not installed
 * (tests then skip, except under CI=true, where .ci/run installs it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary } from './memcached.js';
import { canConnect } from './child.js';

export const NGINX = findBinary('nginx');

export interface RunningNginx {
  /** The prefix directory (conf, logs, anything the test writes there). */
  readonly dir: string;
  readonly pid: number;
  /** nginx's error log so far (for a failing test's message). */
  errorLog(): string;
  stop(): Promise<void>;
}

/**
 * Starts nginx with `httpBody` inside `http { ... }` (and `streamBody` inside `stream { ... }` when
 * given), one worker, and waits until `port` accepts connections. `files` are written into the
 * prefix directory first (htpasswd files, error pages); `$DIR` in the bodies is replaced by it.
 */
export async function startNginx(port: number, httpBody: string, options: { files?: Record<string, string>; streamBody?: string } = {}): Promise<RunningNginx> {
  if (NGINX === null) throw new Error('nginx is not installed (Debian: apt-get install nginx)');
  const dir = mkdtempSync(join(tmpdir(), 'sessionlb-nginx-'));
  for (const [name, text] of Object.entries(options.files ?? {})) writeFileSync(join(dir, name), text);
  const sub = (s: string): string => s.replaceAll('$DIR', dir);
  const conf = [
    'daemon off;',
    'master_process off;',
    'worker_processes 1;',
    `pid ${join(dir, 'nginx.pid')};`,
    `error_log ${join(dir, 'error.log')} info;`,
    'events { worker_connections 256; }',
    'http {',
    `  access_log off;`,
    `  client_body_temp_path ${join(dir, 'body')};`,
    `  proxy_temp_path ${join(dir, 'proxy')};`,
    `  fastcgi_temp_path ${join(dir, 'fastcgi')};`,
    `  uwsgi_temp_path ${join(dir, 'uwsgi')};`,
    `  scgi_temp_path ${join(dir, 'scgi')};`,
    sub(httpBody),
    '}',
    ...(options.streamBody === undefined ? [] : ['stream {', sub(options.streamBody), '}']),
  ].join('\n');
  const file = join(dir, 'nginx.conf');
  writeFileSync(file, conf);
  const child: ChildProcess = spawn(NGINX, ['-p', dir, '-c', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const errorLog = (): string => {
    try { return readFileSync(join(dir, 'error.log'), 'utf8'); } catch { return ''; }
  };
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 10_000;
  while (!(await canConnect(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`nginx did not start: ${stderr}\n${errorLog()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    dir,
    pid: child.pid!,
    errorLog,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM'); // by PID: the process this helper started
        await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
