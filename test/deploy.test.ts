/**
 * Issue 14: the deployment files are checked against the code, statically (no Docker engine, no
 * systemd here):
 * - deploy/docker-compose.yml with deploy/sessionlb.json (loaded by the real loader), the PHP
 *   backends (deploy/php/), deploy/prometheus.yml and the root Dockerfile: service names, ports,
 *   mounted files, the admin allow-list and token, the PHP session handler.
 * - deploy/sessionlb.service with deploy/sessionlb.systemd.json (the config it runs): non-root,
 *   SIGHUP reload, sandboxing, the CLI's commands and flags, writable paths.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { BlockList, isIP } from 'node:net';
import { join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, vi } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { loadConfigFile } from '../src/config/load.js';
import { type Config } from '../src/config/model.js';
import { parseDuration } from '../src/nginx-language/units.js';

/**
 * Compose service names resolve only inside the compose network: the loader's DNS lookups of
 * these names get a documentation address (everything else goes to the real resolver).
 */
const fakeHosts = vi.hoisted(() => new Map<string, string>());
vi.mock('node:dns/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:dns/promises')>();
  const realLookup = real.lookup as (hostname: string, options?: unknown) => Promise<unknown>;
  const lookup = (hostname: string, options?: unknown): Promise<unknown> => {
    const address = fakeHosts.get(hostname);
    if (address !== undefined) return Promise.resolve([{ address, family: 4 }]);
    return realLookup(hostname, options);
  };
  return { ...real, default: { ...real, lookup }, lookup };
});

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const inRepo = (path: string): boolean => path === ROOT || path.startsWith(`${ROOT}/`);
const DEPLOY = join(ROOT, 'deploy');
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

const cliSource = read('src/cli.ts');
/** Options the CLI's parser accepts (`a === '--x'`, `a.startsWith('--x=')`). */
const cliFlags = new Set([
  ...[...cliSource.matchAll(/a === '(-{1,2}[\w-]+)'/g)].map((m) => m[1]!),
  ...[...cliSource.matchAll(/a\.startsWith\('(--[\w-]+)='\)/g)].map((m) => m[1]!),
]);
/** Commands `main()` dispatches. */
const cliCommands = new Set([...cliSource.matchAll(/case '([\w-]+)':/g)].map((m) => m[1]!));
/** The options the help text lists for a command ("sessionlb run [--config FILE] [--pretty] ..."). */
function helpFlags(command: string): string[] {
  const line = cliSource.split('\n').find((l) => new RegExp(`^\\s*sessionlb ${command}\\s`).test(l)) ?? '';
  return [...line.matchAll(/[[\s](--[\w-]+)/g)].map((m) => m[1]!); // optional [--flag] and required --flag
}
const cliRunFlags = helpFlags('run');

// ---------------------------------------------------------------------------------------------
// Compose

interface ComposeService {
  image?: string;
  build?: string | { context: string; dockerfile?: string };
  hostname?: string;
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  expose?: string[];
  volumes?: string[];
  networks?: string[] | Record<string, { ipv4_address?: string } | null>;
  depends_on?: string[];
  secrets?: string[];
  read_only?: boolean;
  cap_drop?: string[];
  security_opt?: string[];
  stop_grace_period?: string;
  tmpfs?: string[];
}

interface Compose {
  services: Record<string, ComposeService>;
  networks: Record<string, { internal?: boolean; ipam?: { config?: Array<{ subnet?: string }> } } | null>;
  secrets?: Record<string, { environment?: string; file?: string }>;
}

const compose = parseYaml(read('deploy/docker-compose.yml'), { merge: true }) as Compose;
const services = compose.services;

function service(name: string): ComposeService {
  const s = services[name];
  if (s === undefined) throw new Error(`deploy/docker-compose.yml has no service "${name}"`);
  return s;
}

function networksOf(s: ComposeService): string[] {
  if (s.networks === undefined) return ['default'];
  return Array.isArray(s.networks) ? s.networks : Object.keys(s.networks);
}

function sharesNetwork(a: string, b: string): boolean {
  const nb = networksOf(service(b));
  return networksOf(service(a)).some((n) => nb.includes(n));
}

/** A short-syntax volume "SRC:DST[:MODE]": the host path (absolute) for bind mounts, and the target. */
interface Mount {
  source: string;
  target: string;
  readOnly: boolean;
}

function mountsOf(s: ComposeService): Mount[] {
  return (s.volumes ?? []).map((v) => {
    const [src, target, mode] = v.split(':') as [string, string, string | undefined];
    expect(src.startsWith('.') || src.startsWith('/'), `${v}: only bind mounts of repository files`).toBe(true);
    return { source: resolve(DEPLOY, src), target, readOnly: mode === 'ro' };
  });
}

/** The host path mounted at `target` in service `name`. */
function mountedAt(name: string, target: string): string {
  const m = mountsOf(service(name)).find((x) => x.target === target);
  if (m === undefined) throw new Error(`service ${name} mounts nothing at ${target}`);
  return m.source;
}

/** "HOST:CONTAINER", "IP:HOST:CONTAINER" or "CONTAINER" (tcp only here). */
function publishedPorts(s: ComposeService): Array<{ host: number; container: number; ip: string | null }> {
  return (s.ports ?? []).map((p) => {
    const parts = p.split(':');
    const container = Number(parts.at(-1));
    const host = parts.length >= 2 ? Number(parts.at(-2)) : container;
    return { host, container, ip: parts.length === 3 ? parts[0]! : null };
  });
}

function buildContext(s: ComposeService): string | null {
  if (s.build === undefined) return null;
  return resolve(DEPLOY, typeof s.build === 'string' ? s.build : s.build.context);
}

/** `host:port` split (IPv4 or a name). */
function hostPort(text: string): { host: string; port: number } {
  const i = text.lastIndexOf(':');
  return { host: text.slice(0, i), port: Number(text.slice(i + 1)) };
}

/** `key = value` lines of an ini file (`;` comments, quotes removed). */
function parseIni(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith(';') || line.startsWith('#') || line.startsWith('[')) continue;
    const eq = line.indexOf('=');
    if (eq === -1) continue;
    out.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1'));
  }
  return out;
}

/** Lines of a Dockerfile with the instruction `name` (continuations joined). */
function dockerfileInstructions(text: string, name: string): string[] {
  const joined = text.replace(/\\\n/g, ' ');
  return joined.split('\n').filter((l) => l.trim().toUpperCase().startsWith(`${name} `)).map((l) => l.trim().slice(name.length + 1).trim());
}

const BACKENDS = ['web1', 'web2', 'web3'];
const PHP_FPM = ['php1', 'php2', 'php3'];
for (const [i, name] of ['memcached', ...PHP_FPM, ...BACKENDS, 'sessionlb', 'prometheus'].entries()) {
  fakeHosts.set(name, `192.0.2.${100 + i}`);
}

const COMPOSE_CONFIG_TARGET = '/etc/sessionlb/config.json';

describe('deploy/docker-compose.yml', async () => {
  const config: Config = await loadConfigFile(join(DEPLOY, 'sessionlb.json'));
  const rawConfig = JSON.parse(read('deploy/sessionlb.json')) as Record<string, unknown>;
  const prometheus = parseYaml(read('deploy/prometheus.yml')) as {
    scrape_configs: Array<{
      job_name: string; metrics_path?: string;
      authorization?: { type?: string; credentials_file?: string };
      static_configs: Array<{ targets: string[] }>;
    }>;
    rule_files?: string[];
  };
  const rootDockerfile = read('Dockerfile');

  it('has memcached, three PHP-FPM + web server pairs, sessionlb and Prometheus', () => {
    expect(Object.keys(services).sort()).toEqual(['memcached', ...PHP_FPM, ...BACKENDS, 'prometheus', 'sessionlb'].sort());
  });

  it('every mounted file and build context exists in the repository', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const m of mountsOf(s)) {
        expect(inRepo(m.source), `${name}: ${m.source} is inside the repository`).toBe(true);
        expect(existsSync(m.source), `${name}: ${m.source} exists`).toBe(true);
        expect(statSync(m.source).isFile(), `${name}: ${m.source} is a file`).toBe(true);
        expect(m.readOnly, `${name}: ${m.target} is mounted read-only`).toBe(true);
      }
      const context = buildContext(s);
      if (context !== null) {
        expect(inRepo(context), `${name}: build context ${context} is inside the repository`).toBe(true);
        expect(existsSync(join(context, 'Dockerfile')), `${name}: ${context}/Dockerfile`).toBe(true);
      }
    }
    expect(buildContext(service('sessionlb'))).toBe(ROOT);
    expect(buildContext(service('php1'))).toBe(join(DEPLOY, 'php'));
  });

  it('runs sessionlb with deploy/sessionlb.json, mounted where the image and the command expect it', () => {
    expect(mountedAt('sessionlb', COMPOSE_CONFIG_TARGET)).toBe(join(DEPLOY, 'sessionlb.json'));
    const command = service('sessionlb').command ?? [];
    expect(command.slice(command.indexOf('dist/cli.js'))).toEqual(['dist/cli.js', 'run', '--config', COMPOSE_CONFIG_TARGET]);
    // The image's own CMD runs the same file, so the command only restates it.
    const cmd = JSON.parse(dockerfileInstructions(rootDockerfile, 'CMD')[0]!) as string[];
    expect(cmd).toEqual(command);
    expect(dockerfileInstructions(rootDockerfile, 'COPY').some((c) => c.endsWith(` ${COMPOSE_CONFIG_TARGET}`))).toBe(true);
    expect(cliRunFlags).toEqual(expect.arrayContaining(['--config']));
  });

  it('upstream servers are the web services on their container port, each with its own PHP-FPM', () => {
    const upstream = config.upstreams.get('php')!;
    expect(upstream.sticky?.mode).toBe('learn');
    expect(upstream.servers.map((s) => s.address)).toEqual(BACKENDS.map((b) => `${b}:80`));
    const template = read('deploy/php/nginx.conf.template');
    const listen = /^\s*listen\s+(\d+)\b/m.exec(template);
    const fastcgiPass = /^\s*fastcgi_pass\s+\$\{(\w+)\};/m.exec(template);
    const scriptFilename = /^\s*fastcgi_param\s+SCRIPT_FILENAME\s+(\S+);/m.exec(template);
    expect(listen && fastcgiPass && scriptFilename).toBeTruthy();
    const phpDockerfile = read('deploy/php/Dockerfile');
    const fpmPorts = dockerfileInstructions(phpDockerfile, 'EXPOSE').flatMap((e) => e.split(/\s+/)).map(Number);
    expect(dockerfileInstructions(phpDockerfile, 'FROM')[0]).toMatch(/^php:[\w.-]*fpm/);
    for (const [i, s] of upstream.servers.entries()) {
      const web = BACKENDS[i]!;
      const { host, port } = hostPort(s.address);
      expect(host).toBe(web);
      expect(port).toBe(Number(listen![1]));
      expect(service(web).expose).toEqual([String(port)]);
      expect(sharesNetwork('sessionlb', web)).toBe(true);
      expect(mountedAt(web, '/etc/nginx/templates/default.conf.template')).toBe(join(DEPLOY, 'php/nginx.conf.template'));
      expect(service(web).image).toMatch(/^nginx:/);
      // nginx -> its PHP-FPM: the template's variable names a php service on PHP-FPM's port.
      const fpm = hostPort(service(web).environment?.[fastcgiPass![1]!] ?? '');
      expect(fpm.host).toBe(PHP_FPM[i]);
      expect(fpmPorts).toContain(fpm.port);
      expect(sharesNetwork(web, fpm.host)).toBe(true);
      expect(service(web).depends_on).toContain(fpm.host);
      // The script nginx names is the app mounted into that PHP-FPM container.
      expect(mountedAt(fpm.host, scriptFilename![1]!)).toBe(join(DEPLOY, 'php/index.php'));
      expect(service(fpm.host).hostname).toBe(fpm.host);
    }
    expect(service('sessionlb').depends_on).toEqual(expect.arrayContaining([...BACKENDS, 'memcached']));
  });

  it('the health check path is one the PHP app answers without a session', () => {
    const hc = config.upstreams.get('php')!.healthCheck!;
    expect(hc.type).toBe('http');
    const app = read('deploy/php/index.php');
    expect(app).toContain(`$path === '${hc.path}'`);
    expect(hc.body?.test('ok\n')).toBe(true);
    expect(app.indexOf(`$path === '${hc.path}'`)).toBeLessThan(app.indexOf('session_start()'));
  });

  it('sessionStore is the memcached service and port, on the internal network with the backends', () => {
    expect(config.sessionStore.type).toBe('memcached');
    const mc = service('memcached');
    const command = mc.command ?? [];
    const portFlag = command.indexOf('-p');
    const port = portFlag === -1 ? 11211 : Number(command[portFlag + 1]);
    expect(config.sessionStore.servers).toEqual([`memcached:${port}`]);
    expect(mc.expose).toEqual([String(port)]);
    expect(mc.ports, 'memcached is never published').toBeUndefined();
    for (const name of ['sessionlb', ...PHP_FPM]) expect(sharesNetwork(name, 'memcached'), name).toBe(true);
    for (const n of networksOf(mc)) expect(compose.networks[n]?.internal, `network ${n} is internal`).toBe(true);
    // Every network memcached is on holds only sessionlb, PHP and the web servers.
    const onItsNetworks = Object.keys(services).filter((name) => name !== 'memcached' && sharesNetwork(name, 'memcached'));
    expect(onItsNetworks.sort()).toEqual(['sessionlb', ...PHP_FPM, ...BACKENDS].sort());
  });

  it('PHP stores its sessions in that memcached, with the cookie and lifetime sessionlb expects', () => {
    const ini = parseIni(read('deploy/php/php-session.ini'));
    expect(ini.get('session.save_handler')).toBe('memcached');
    // The memcached extension's save_path: "host:port[,host:port...]".
    expect(ini.get('session.save_path')?.split(',')).toEqual(config.sessionStore.servers);
    const sticky = config.upstreams.get('php')!.sticky!;
    expect(ini.get('session.name') ?? 'PHPSESSID').toBe(sticky.cookie);
    expect(Number(ini.get('session.gc_maxlifetime')) * 1000).toBe(sticky.ttlMs);
    expect(ini.get('session.use_strict_mode')).toBe('1');
    for (const php of PHP_FPM) {
      const target = mountsOf(service(php)).find((m) => m.source === join(DEPLOY, 'php/php-session.ini'))?.target;
      expect(target, `${php} mounts php-session.ini`).toMatch(/^\/usr\/local\/etc\/php\/conf\.d\/[\w.-]+\.ini$/);
      expect(buildContext(service(php))).toBe(join(DEPLOY, 'php'));
    }
    expect(read('deploy/php/Dockerfile')).toMatch(/pecl install memcached/);
  });

  it('publishes exactly the config\'s listen ports, never the admin port', () => {
    const listenPorts = new Set<number>();
    for (const vs of config.servers) for (const l of vs.listen) listenPorts.add(l.port);
    for (const st of config.streams) for (const l of st.listen) listenPorts.add(l.port);
    const published = publishedPorts(service('sessionlb'));
    expect(new Set(published.map((p) => p.container))).toEqual(listenPorts);
    expect(published.every((p) => p.host === p.container)).toBe(true);
    expect(published.map((p) => p.container)).not.toContain(config.admin!.listen.port);
    // Inside the container, listeners must take connections from other containers.
    for (const vs of config.servers) for (const l of vs.listen) expect(l.host).toBe('0.0.0.0');
    expect(dockerfileInstructions(rootDockerfile, 'EXPOSE')[0]!.split(/\s+/).map(Number)).toEqual(expect.arrayContaining([...listenPorts]));
    for (const [name, s] of Object.entries(services)) {
      if (name !== 'sessionlb' && name !== 'prometheus') expect(s.ports, `${name} publishes nothing`).toBeUndefined();
    }
    // Prometheus' UI on the host's loopback only.
    expect(publishedPorts(service('prometheus')).every((p) => p.ip === '127.0.0.1')).toBe(true);
  });

  it('Prometheus scrapes the sessionlb service on the admin port, from the one address admin.allow lets in', () => {
    const admin = config.admin!;
    const job = prometheus.scrape_configs.find((j) => j.job_name === 'sessionlb')!;
    const targets = job.static_configs.flatMap((c) => c.targets).map(hostPort);
    expect(targets).toEqual([{ host: 'sessionlb', port: admin.listen.port }]);
    expect(job.metrics_path ?? '/metrics').toBe('/metrics');
    expect(admin.listen.host).toBe('0.0.0.0');
    expect(sharesNetwork('prometheus', 'sessionlb')).toBe(true);
    // Prometheus' fixed address, in its network's subnet, is allowed; the rest of that subnet is not.
    const prom = service('prometheus');
    const [netName, net] = Object.entries(prom.networks as Record<string, { ipv4_address?: string }>)[0]!;
    const ip = net.ipv4_address!;
    expect(isIP(ip)).toBe(4);
    const [subnet, prefix] = compose.networks[netName]!.ipam!.config![0]!.subnet!.split('/') as [string, string];
    const inSubnet = new BlockList();
    inSubnet.addSubnet(subnet, Number(prefix), 'ipv4');
    expect(inSubnet.check(ip, 'ipv4')).toBe(true);
    expect(admin.allow.check(ip, 'ipv4')).toBe(true);
    const neighbour = ip.replace(/\.(\d+)$/, (_m, last: string) => `.${(Number(last) % 250) + 1}`);
    expect(admin.allow.check(neighbour, 'ipv4')).toBe(false);
    // Every allowed source is loopback or Prometheus.
    expect(admin.allowText.filter((c) => !c.startsWith('127.') && !c.startsWith('::1'))).toEqual([`${ip}/32`]);
    expect(rawConfig.admin).not.toHaveProperty('token');
  });

  it('the admin token comes from the environment, and Prometheus reads the same value as a secret', () => {
    const env = service('sessionlb').environment ?? {};
    expect(env.SESSIONLB_ADMIN_TOKEN).toMatch(/^\$\{SESSIONLB_ADMIN_TOKEN:\?/);
    expect(env.SESSIONLB_HASH_KEY).toMatch(/^\$\{SESSIONLB_HASH_KEY:\?/);
    const loader = read('src/config/load.ts');
    for (const name of Object.keys(env)) expect(loader, `${name} is read by the config loader`).toContain(name);
    const job = prometheus.scrape_configs.find((j) => j.job_name === 'sessionlb')!;
    expect(job.authorization?.type ?? 'Bearer').toBe('Bearer');
    const secretName = service('prometheus').secrets?.[0] ?? '';
    expect(job.authorization?.credentials_file).toBe(`/run/secrets/${secretName}`);
    expect(compose.secrets?.[secretName]?.environment).toBe('SESSIONLB_ADMIN_TOKEN');
  });

  it('Prometheus gets its config and rule files where prometheus.yml names them', () => {
    // The image's default --config.file; rule files are relative to it.
    const configTarget = '/etc/prometheus/prometheus.yml';
    expect(service('prometheus').command).toBeUndefined();
    expect(mountedAt('prometheus', configTarget)).toBe(join(DEPLOY, 'prometheus.yml'));
    for (const rules of prometheus.rule_files ?? []) {
      expect(mountedAt('prometheus', posix.join(posix.dirname(configTarget), rules))).toBe(join(DEPLOY, rules));
    }
    expect(prometheus.rule_files).toEqual(['sessionlb-rules.yml']);
  });

  it('the image health check asks the admin listener from loopback, which admin.allow lets in', () => {
    const env = dockerfileInstructions(rootDockerfile, 'ENV').find((e) => e.startsWith('SESSIONLB_HEALTHCHECK_URL='))!;
    const url = new URL(env.slice('SESSIONLB_HEALTHCHECK_URL='.length));
    expect(Number(url.port)).toBe(config.admin!.listen.port);
    expect(url.pathname).toBe('/healthz');
    expect(config.admin!.allow.check(url.hostname, 'ipv4')).toBe(true);
  });

  it('sessionlb runs unprivileged, read-only, and gets more than shutdownTimeout to stop', () => {
    const s = service('sessionlb');
    expect(dockerfileInstructions(rootDockerfile, 'USER').at(-1)).toBe('node');
    expect(s.read_only).toBe(true);
    expect(s.tmpfs).toContain('/tmp'); // temp files of buffered bodies (the OS temp directory)
    expect(s.cap_drop).toEqual(['ALL']);
    expect(s.security_opt).toContain('no-new-privileges:true');
    expect(parseDuration(s.stop_grace_period ?? '10s')).toBeGreaterThan(config.shutdownTimeoutMs);
    for (const l of config.servers.flatMap((vs) => vs.listen)) expect(l.port, 'no capability to bind below 1024').toBeGreaterThanOrEqual(1024);
  });
});

// ---------------------------------------------------------------------------------------------
// systemd

/** A unit file: section -> key -> every value given (in order). */
type Unit = Map<string, Map<string, string[]>>;

function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | null = null;
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  for (const raw of lines) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = new Map();
      unit.set(header[1]!, section);
      continue;
    }
    const eq = line.indexOf('=');
    if (section === null || eq === -1) throw new Error(`not a unit line: ${line}`);
    const key = line.slice(0, eq).trim();
    const values = section.get(key) ?? [];
    values.push(line.slice(eq + 1).trim());
    section.set(key, values);
  }
  return unit;
}

/** The last value of a key (systemd: the last assignment wins for single-valued keys). */
function value(unit: Unit, section: string, key: string): string | undefined {
  return unit.get(section)?.get(key)?.at(-1);
}

function values(unit: Unit, section: string, key: string): string[] {
  return unit.get(section)?.get(key) ?? [];
}

/** An Exec*= command line: the special prefixes (`-`, `@`, `+`, ...) dropped, split on spaces. */
function execArgs(line: string): string[] {
  return line.replace(/^[-@:+!]+/, '').split(/\s+/).filter((a) => a !== '');
}

/** systemd time spans used here: "40s", "2min", "1min 30s", or bare seconds. */
function seconds(span: string): number {
  let total = 0;
  for (const m of span.matchAll(/(\d+)\s*(ms|s|sec|min|m|h)?/g)) {
    const n = Number(m[1]);
    const unit = m[2] ?? 's';
    total += unit === 'ms' ? n / 1000 : unit === 'min' || unit === 'm' ? n * 60 : unit === 'h' ? n * 3600 : n;
  }
  return total;
}


/** Checks a `node .../dist/cli.js COMMAND --flags` line; returns its config path. */
function checkCliLine(args: string[], command: string, workingDirectory: string): string {
  const script = args.findIndex((a) => a.endsWith('/dist/cli.js'));
  expect(script, `${args.join(' ')} runs dist/cli.js`).toBeGreaterThan(0);
  expect(args[0]).toMatch(/\/node$/);
  // package.json's bin, under the WorkingDirectory.
  const pkg = JSON.parse(read('package.json')) as { bin: Record<string, string> };
  expect(args[script]).toBe(posix.join(workingDirectory, pkg.bin.sessionlb!));
  // node's own options (before the script) must be ones node accepts.
  const nodeOptions = args.slice(1, script);
  if (nodeOptions.length > 0) {
    const r = spawnSync(process.execPath, [...nodeOptions, '-e', ''], { encoding: 'utf8' });
    expect(r.status, `node ${nodeOptions.join(' ')}: ${r.stderr}`).toBe(0);
  }
  expect(args[script + 1]).toBe(command);
  expect(cliCommands).toContain(command);
  const rest = args.slice(script + 2);
  let config: string | null = null;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    expect(cliFlags, `${a} is an option of src/cli.ts`).toContain(a);
    expect(helpFlags(command), `${a} is listed for "sessionlb ${command}"`).toContain(a);
    if (a === '--config') config = rest[++i] ?? null;
  }
  expect(config, `${args.join(' ')} names its config`).not.toBeNull();
  return config!;
}

/** The example config the unit's comments tell users to install as its config file. */
const HOST_CONFIG = 'deploy/sessionlb.systemd.json';

describe('deploy/sessionlb-rules.yml and deploy/grafana/sessionlb.json', () => {
  it('name only metrics sessionlb exports (a renamed metric must not leave a silent alert or an empty panel)', () => {
    const code = ['metrics.ts', 'stream-metrics.ts'].map((f) => read(`src/observability/${f}`)).join('\n');
    const exported = new Set([...code.matchAll(/'(sessionlb_[a-z0-9_]+)'/g)].map((m) => m[1]!));
    const known = (name: string): boolean => exported.has(name) || exported.has(name.replace(/_(bucket|sum|count)$/, ''));
    const named = (text: string): string[] => [...new Set([...text.matchAll(/\b(sessionlb_[a-z0-9_]+)/g)].map((m) => m[1]!))];
    const rules = named(read('deploy/sessionlb-rules.yml'));
    const dashboard = named(read('deploy/grafana/sessionlb.json'));
    expect(rules).toContain('sessionlb_tls_certificate_expiry_timestamp_seconds'); // the 14-day certificate alert (issue 16)
    expect(dashboard).toContain('sessionlb_tls_certificate_expiry_timestamp_seconds');
    expect(rules.filter((n) => !known(n)), 'in the rules, not exported').toEqual([]);
    expect(dashboard.filter((n) => !known(n)), 'in the dashboard, not exported').toEqual([]);
  });
});

describe('deploy/sessionlb.service', async () => {
  const text = read('deploy/sessionlb.service');
  const unit = parseUnit(text);
  const S = 'Service';
  const config = await loadConfigFile(join(ROOT, HOST_CONFIG));
  const raw = JSON.parse(read(HOST_CONFIG)) as Record<string, unknown>;
  const workingDirectory = value(unit, S, 'WorkingDirectory') ?? '/';
  const startArgs = execArgs(value(unit, S, 'ExecStart') ?? '');
  /** ExecStart's --config (checked with the rest of the line in its own test). */
  const configPath = startArgs[startArgs.indexOf('--config') + 1] ?? '';

  /** Directories the service may write under ProtectSystem=strict. */
  function writableDirs(): string[] {
    const dirs: string[] = [];
    const add = (key: string, base: string): void => {
      for (const v of values(unit, S, key)) for (const d of v.split(/\s+/)) if (d !== '') dirs.push(posix.join(base, d));
    };
    add('RuntimeDirectory', '/run');
    add('StateDirectory', '/var/lib');
    add('LogsDirectory', '/var/log');
    add('CacheDirectory', '/var/cache');
    for (const v of values(unit, S, 'ReadWritePaths')) for (const d of v.split(/\s+/)) if (d !== '') dirs.push(d.replace(/^-/, ''));
    if (value(unit, S, 'PrivateTmp') === 'yes') dirs.push('/tmp', '/var/tmp');
    return dirs;
  }
  const writable = (path: string): boolean => writableDirs().some((d) => path.startsWith(`${d}/`));

  it('runs as a non-root user', () => {
    const user = value(unit, S, 'User');
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user);
    expect(['root', '0']).not.toContain(value(unit, S, 'Group') ?? user);
    expect(value(unit, S, 'DynamicUser') ?? 'no').toBe('no');
  });

  it('reloads with SIGHUP to the main process, restarts on failure', () => {
    const reload = values(unit, S, 'ExecReload');
    expect(reload.at(-1)).toBe('/bin/kill -HUP $MAINPID');
    // Validation first, so that `systemctl reload` reports an invalid file (sessionlb would keep the old one anyway).
    for (const line of reload.slice(0, -1)) expect(checkCliLine(execArgs(line), 'check', workingDirectory)).toBe(configPath);
    // The signals of every role are handled in one place (src/process/lifecycle.ts), which the CLI's `run` uses.
    expect(read('src/process/lifecycle.ts')).toMatch(/process\.on\('SIGHUP'/);
    expect(value(unit, S, 'Restart')).toBe('on-failure');
  });

  it('ExecStart runs `sessionlb run --config FILE` with options the CLI accepts', () => {
    expect(checkCliLine(startArgs, 'run', workingDirectory)).toBe(configPath);
    expect(configPath).toBe('/etc/sessionlb/sessionlb.json');
    expect(text).toContain(HOST_CONFIG);
    for (const line of values(unit, S, 'ExecStartPre')) expect(checkCliLine(execArgs(line), 'check', workingDirectory)).toBe(configPath);
  });

  it('is sandboxed, with CAP_NET_BIND_SERVICE as its only capability', () => {
    expect(value(unit, S, 'NoNewPrivileges')).toBe('yes');
    expect(value(unit, S, 'ProtectSystem')).toBe('strict');
    expect(value(unit, S, 'CapabilityBoundingSet')).toBe('CAP_NET_BIND_SERVICE');
    expect(value(unit, S, 'AmbientCapabilities')).toBe('CAP_NET_BIND_SERVICE');
    expect(values(unit, S, 'CapabilityBoundingSet')).toHaveLength(1);
    expect(values(unit, S, 'AmbientCapabilities')).toHaveLength(1);
    // V8 needs writable executable memory for its JIT.
    expect(value(unit, S, 'MemoryDenyWriteExecute') ?? 'no').toBe('no');
    // The capability is needed: the example listens on a port below 1024.
    expect(config.servers.flatMap((vs) => vs.listen).some((l) => l.port < 1024)).toBe(true);
  });

  it('the config file is readable, and pidFile, stateFile, the access log and temp files are writable', () => {
    expect(configPath.startsWith('/etc/')).toBe(true);
    if (value(unit, S, 'ProtectHome') === 'yes') expect(configPath).not.toMatch(/^\/(home|root|run\/user)\//);
    expect(writable(configPath)).toBe(false); // sessionlb never writes its config
    expect(config.pidFile).not.toBeNull();
    expect(config.stateFile).not.toBeNull();
    expect(config.accessLog).not.toBe(false);
    const accessLog = config.accessLog === false ? null : config.accessLog.path;
    for (const path of [config.pidFile!, config.stateFile!, accessLog!]) {
      expect(path.startsWith('/'), path).toBe(true);
      expect(writable(path), `${path} is writable under ProtectSystem=strict`).toBe(true);
    }
    // Bodies are buffered in temp files: the OS temp directory (/tmp) unless the config names one.
    const tempDirs = [raw.clientBodyTempPath, raw.proxyTempPath].map((p) => (typeof p === 'string' ? p : '/tmp'));
    for (const d of tempDirs) expect(writable(`${d}/x`), `${d} is writable`).toBe(true);
    // The pid file lives where only sessionlb writes (`sessionlb reload` signals the pid in it).
    expect(config.pidFile!.startsWith(`/run/${value(unit, S, 'RuntimeDirectory')}/`)).toBe(true);
  });

  it('stops within TimeoutStopSec: shutdownTimeout, plus the primary\'s 5s before it kills a worker', () => {
    expect(value(unit, S, 'KillMode')).toBe('mixed');
    expect(seconds(value(unit, S, 'TimeoutStopSec') ?? '90s')).toBeGreaterThan(config.shutdownTimeoutMs / 1000 + 5);
  });

  it('its example config passes `sessionlb check` (the built CLI)', () => {
    const cli = join(ROOT, 'dist/cli.js');
    const r = spawnSync(process.execPath, [cli, 'check', '--config', join(ROOT, HOST_CONFIG)], { encoding: 'utf8' });
    expect(r.stdout + r.stderr).toContain('configuration OK');
    expect(r.status).toBe(0);
  });

  it('passes systemd-analyze verify (when installed)', () => {
    const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
    if (analyze.status !== 0 || !existsSync(startArgs[0]!)) return;
    const r = spawnSync('systemd-analyze', ['verify', join(DEPLOY, 'sessionlb.service')], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  });
});
