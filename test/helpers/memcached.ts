/**
 * Real memcached (and twemproxy/nutcracker) processes for tests, on free loopback ports.
 * Every process is killed by its PID in `stop()`; `memcachedAvailable()` tells tests to
 * skip with a clear message when the binaries are missing (.ci/run installs them).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './net.js';

/** The binary's path: on PATH, else Debian's location (/usr/sbin is not on every user's PATH); null when missing. */
export function findBinary(name: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  if (r.status === 0 && r.stdout.trim() !== '') return r.stdout.trim();
  for (const dir of ['/usr/bin', '/usr/sbin', '/usr/local/bin']) {
    if (existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

const MEMCACHED = findBinary('memcached');
const NUTCRACKER = findBinary('nutcracker');
export const memcachedAvailable = (): boolean => MEMCACHED !== null;
export const nutcrackerAvailable = (): boolean => NUTCRACKER !== null;

/** Waits (bounded) until something accepts TCP connections on 127.0.0.1:port. */
export async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; attempt < 1000; attempt++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => { s.destroy(); resolve(false); });
    });
    if (ok) return;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs}ms`);
}

/** Sends one text-protocol command and collects the reply up to `terminator` (bounded by time). */
export function memcachedCommand(port: number, command: string, terminator = 'END\r\n', timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`memcached ${command.trim()}: no reply in ${timeoutMs}ms`)); }, timeoutMs);
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      if (buf.endsWith(terminator) || buf.endsWith('ERROR\r\n')) {
        clearTimeout(timer);
        s.destroy();
        resolve(buf);
      }
    });
    s.on('error', (err) => { clearTimeout(timer); reject(err); });
    s.write(command.endsWith('\r\n') ? command : `${command}\r\n`);
  });
}

/** Linux: every thread of `pid` in state T (stopped); elsewhere (no /proc) true after the caller's first wait. */
function allThreadsStopped(pid: number): boolean {
  const tasks = `/proc/${pid}/task`;
  if (!existsSync(tasks)) return true;
  return readdirSync(tasks).every((tid) => {
    try {
      // "tid (comm) S ...": the state follows the last ')' (comm may contain spaces or parentheses).
      const stat = readFileSync(`${tasks}/${tid}/stat`, 'utf8');
      return /^[Tt]/.test(stat.slice(stat.lastIndexOf(')') + 2));
    } catch {
      return true; // the thread is gone
    }
  });
}

export class MemcachedProcess {
  proc: ChildProcess | null = null;

  constructor(readonly port: number) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  async start(): Promise<void> {
    const args = ['-l', '127.0.0.1', '-p', String(this.port), '-U', '0', '-m', '64'];
    if (process.getuid?.() === 0) args.push('-u', 'nobody');
    const proc = spawn(MEMCACHED ?? 'memcached', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc = proc;
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    const exited = new Promise<never>((_, reject) => proc.once('exit', (code) => reject(new Error(`memcached exited (${code}): ${stderr}`))));
    await Promise.race([waitForPort(this.port), exited]);
    proc.removeAllListeners('exit');
  }

  /** SIGKILL by PID and wait for the exit. */
  async kill(): Promise<void> {
    const proc = this.proc;
    if (proc === null || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    process.kill(proc.pid!, 'SIGCONT'); // a stopped process must run to die cleanly
    process.kill(proc.pid!, 'SIGKILL');
    await gone;
    this.proc = null;
  }

  /**
   * SIGSTOP (the server keeps its socket: connections are accepted by the kernel, nothing is
   * answered), then waits until every thread has stopped. The stop is asynchronous for a
   * multi-threaded process: a worker thread can still answer a command sent right after
   * kill() returns (seen in ~1 of 5 runs of the "hanging server" test).
   */
  async pause(): Promise<void> {
    const pid = this.proc!.pid!;
    process.kill(pid, 'SIGSTOP');
    const deadline = Date.now() + 2000;
    while (!allThreadsStopped(pid)) {
      if (Date.now() > deadline) throw new Error(`memcached (pid ${pid}) did not stop within 2 s of SIGSTOP`);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }

  resume(): void {
    process.kill(this.proc!.pid!, 'SIGCONT');
  }

  /** `stats` as name -> value. */
  async stats(): Promise<Record<string, string>> {
    const text = await memcachedCommand(this.port, 'stats');
    const out: Record<string, string> = {};
    for (const line of text.split('\r\n')) {
      const m = /^STAT (\S+) (.*)$/.exec(line);
      if (m) out[m[1]!] = m[2]!;
    }
    return out;
  }

  /** Every key held, from `lru_crawler metadump all` (URL-encoded by memcached; decoded here). */
  async keys(): Promise<string[]> {
    const text = await memcachedCommand(this.port, 'lru_crawler metadump all');
    const out: string[] = [];
    for (const line of text.split(/\r?\n/)) {
      const m = /^key=(\S+)/.exec(line);
      if (m) out.push(decodeURIComponent(m[1]!));
    }
    return out;
  }

  async get(key: string): Promise<string | null> {
    const text = await memcachedCommand(this.port, `get ${key}`);
    const m = /^VALUE \S+ \d+ \d+\r\n([^\r]*)\r\n/.exec(text);
    return m ? m[1]! : null;
  }
}

export async function startMemcached(): Promise<MemcachedProcess> {
  const m = new MemcachedProcess(await freePort());
  await m.start();
  return m;
}

export class NutcrackerProcess {
  proc: ChildProcess | null = null;

  constructor(readonly port: number, private readonly dir: string) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    if (proc !== null && proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      process.kill(proc.pid!, 'SIGKILL');
      await gone;
    }
    this.proc = null;
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** nutcracker (twemproxy) in front of `servers`, ketama distribution, config in a temp dir. */
export async function startNutcracker(servers: MemcachedProcess[]): Promise<NutcrackerProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'sessionlb-nutcracker-'));
  const port = await freePort();
  const statsPort = await freePort();
  const yaml = [
    'sessionlb:',
    `  listen: 127.0.0.1:${port}`,
    '  hash: fnv1a_64',
    '  distribution: ketama',
    '  timeout: 1000',
    '  auto_eject_hosts: false',
    '  servers:',
    ...servers.map((s) => `    - ${s.address}:1`),
    '',
  ].join('\n');
  const conf = join(dir, 'nutcracker.yml');
  await writeFile(conf, yaml);
  const n = new NutcrackerProcess(port, dir);
  const proc = spawn(NUTCRACKER ?? 'nutcracker', ['-c', conf, '-s', String(statsPort), '-a', '127.0.0.1', '-o', join(dir, 'nutcracker.log'), '-p', join(dir, 'nutcracker.pid')], { stdio: 'ignore' });
  n.proc = proc;
  const exited = new Promise<never>((_, reject) => proc.once('exit', (code) => reject(new Error(`nutcracker exited (${code})`))));
  await Promise.race([waitForPort(port), exited]);
  proc.removeAllListeners('exit');
  return n;
}
